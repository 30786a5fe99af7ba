"""Distributed data parallel set-up for torchrun (``python -m torch.distributed.run``): the
process's place in the job from WORLD_SIZE / RANK / LOCAL_RANK, gloo on CPU, nccl on CUDA."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def env_from_os(environ=os.environ):
    """The job as torchrun describes it in the environment; a single process without it."""
    world_size = int(environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistEnv()
    return DistEnv(int(environ["RANK"]), int(environ.get("LOCAL_RANK", environ["RANK"])), world_size)


def resolve_device(choice, env):
    """torch.device for --device auto|cpu|cuda; one GPU per process (LOCAL_RANK) under torchrun."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("skeleton_cuda.train: --device cuda, but PyTorch sees no CUDA GPU")
    device = torch.device("cuda", env.local_rank if env.enabled else torch.cuda.current_device())
    torch.cuda.set_device(device)
    return device


def init(env, device):
    """Joins the process group (nccl for CUDA, gloo for CPU) when the job has several processes."""
    if env.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, **kwargs)


def cleanup(finished=False):
    """Leaves the process group. After a finished run, every process first waits for the others at
    a barrier: with gloo, a process that destroys its group while a peer's last collective is
    still being torn down can abort ("terminate called without an active exception", seen about
    once in 20 two-process CPU runs here). After an error there is no barrier: a failed process
    must not wait for peers that may never arrive."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values, env, device):
    """Sums a list of numbers over all processes (float64 on ``device``, as nccl needs)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if env.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def gather_objects(obj, env):
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not env.enabled:
        return [obj]
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
