"""Train a classifier, dense or with skeleton kernels: ``python -m skeleton_cuda.train``.

Examples::

    # a quick run on synthetic data (nothing to download)
    python -m skeleton_cuda.train --model small --dataset synthetic --epochs 2 --output runs/smoke
    # CIFAR-10 (a torchvision-format folder: data/cifar-10-batches-py), skeleton ResNet-50, bf16
    python -m skeleton_cuda.train --model resnet50 --skeleton --dataset cifar10 --data-dir data \\
        --epochs 200 --amp bf16 --channels-last --output runs/r50-skeleton
    # continue it after an interruption
    python -m skeleton_cuda.train ...same arguments... --resume
    # two processes (CPU: gloo, GPUs: nccl); --batch-size is per process
    torchrun --standalone --nproc_per_node 2 -m skeleton_cuda.train --dataset synthetic --output runs/ddp

The output folder gets last.pt (resumable checkpoint), best.pt (the model with the best test
accuracy), metrics.jsonl (one JSON line per epoch), curves.png (with matplotlib) and
config.json (the arguments and versions). Nothing is downloaded at run time.
"""

import argparse
import json
import os
import random
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .training import checkpoint, distributed, metrics
from .training.data import DATASETS, DatasetUnavailable, load_datasets, make_loaders
from .training.loop import evaluate, grad_scaler, train_one_epoch, warmup_cosine
from .training.models import build_model, describe, model_choices, resolve_model

# Arguments that must match between a run and its --resume (others, like --epochs, may change).
_RESUME_MUST_MATCH = ("model", "skeleton", "dataset", "width")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m skeleton_cuda.train",
        description="Train an image classifier with dense or skeleton 3x3 convolutions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="small",
                   help=f"{', '.join(model_choices())} (the CIFAR zoo; also as cifar-<name>), or a torchvision "
                        "classification model name (e.g. resnet18). A name both have (resnet50, vgg16, ...) is "
                        "torchvision's for --dataset imagefolder and the zoo's 32x32 model for the others")
    p.add_argument("--width", type=int, default=32, help="channel width of the 'small' model")
    p.add_argument("--skeleton", action="store_true", help="convert every 3x3 convolution to a SkeletonConv2d")
    p.add_argument("--dataset", choices=DATASETS, default="cifar10")
    p.add_argument("--data-dir", default="data",
                   help="CIFAR: the folder holding cifar-10-batches-py / cifar-100-python; imagefolder: the folder with train/ and val/")
    p.add_argument("--image-size", type=int, default=224, help="crop size for --dataset imagefolder")
    p.add_argument("--epochs", type=int, default=30,
                   help="total epochs (a resumed run continues up to it, on the schedule of the new total)")
    p.add_argument("--batch-size", type=int, default=128, help="per process")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of SGD with Nesterov momentum (cosine schedule)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear learning-rate warm-up")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="autocast dtype (fp16 adds a GradScaler; CPU autocast supports bf16)")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and inputs (the kernels' native layout)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per training process")
    p.add_argument("--output", default=None, help="output folder (default: runs/<dataset>-<model>-<dense|skeleton>)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    args = p.parse_args(argv)
    if args.output is None:
        args.output = os.path.join("runs", f"{args.dataset}-{args.model}-{'skeleton' if args.skeleton else 'dense'}")
    if args.epochs < 1 or args.batch_size < 1 or args.workers < 0:
        p.error("--epochs and --batch-size must be >= 1 and --workers >= 0")
    return args


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def versions():
    from . import __version__, cpu_kernel_isa, has_compiled_ops, has_cuda_kernels

    try:  # only the CIFAR and ImageFolder datasets and torchvision's models need it
        import torchvision

        torchvision_version = torchvision.__version__
    except ImportError:
        torchvision_version = None
    return {
        "torch": torch.__version__, "torchvision": torchvision_version, "skeleton_cuda": __version__,
        "compiled_ops": has_compiled_ops(), "cuda_kernels": has_cuda_kernels(), "cpu_kernels": cpu_kernel_isa(),
    }


class Run:
    """One training run: the objects it builds, and the epoch loop."""

    def __init__(self, args, env):
        self.args, self.env = args, env
        self.device = distributed.resolve_device(args.device, env)
        distributed.init(env, self.device)
        self.say = print if env.is_main and not args.quiet else (lambda *a, **k: None)
        self.paths = {name: os.path.join(args.output, name)
                      for name in ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "config.json")}

        seed_everything(args.seed)  # the same initial weights on every process
        self.data = load_datasets(args.dataset, args.data_dir, args.image_size)
        full_size = args.dataset == "imagefolder"
        try:
            self.model_family = resolve_model(args.model, full_size)[0]
            model = build_model(args.model, self.data.num_classes, skeleton=args.skeleton, width=args.width,
                                full_size_images=full_size)
        except ValueError as error:
            raise SystemExit(f"skeleton_cuda.train: {error}") from None
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.info = describe(self.model)
        seed_everything(args.seed + env.rank)  # a different augmentation stream per process

        self.train_loader, self.test_loader, self.train_sampler = make_loaders(
            self.data, args.batch_size, args.workers, env, self.device.type == "cuda", args.seed
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=args.momentum,
                                         weight_decay=args.weight_decay, nesterov=args.momentum > 0)
        self.scheduler = self._schedule(first_step=0)
        self.scaler = grad_scaler(self.device, args.amp)
        self.start_epoch, self.best_acc = 0, 0.0
        if args.resume:
            self._resume()
        self.train_model = DistributedDataParallel(self.model) if env.enabled else self.model
        self.eval_model = self.model  # unwrapped: evaluation needs no collective calls
        if args.compile:
            self.train_model = torch.compile(self.train_model)
            self.eval_model = torch.compile(self.model)

    def _schedule(self, first_step):
        """The warm-up + cosine schedule of this run's --epochs and steps per epoch, its next step
        `first_step` (and the optimizer's learning rate set for it)."""
        steps = len(self.train_loader)
        factor = warmup_cosine(self.args.epochs * steps, round(self.args.warmup_epochs * steps))
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.args.lr
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor, last_epoch=first_step - 1)

    # --- checkpoints ---------------------------------------------------------------------------

    def _resume(self):
        path = self.paths["last.pt"]
        if not os.path.exists(path):
            raise SystemExit(f"skeleton_cuda.train: --resume, but there is no checkpoint {path!r}")
        state = checkpoint.load(path)
        saved = state["args"]
        changed = [k for k in _RESUME_MUST_MATCH if saved.get(k) != getattr(self.args, k)]
        if changed:
            raise SystemExit(
                "skeleton_cuda.train: --resume with different "
                + ", ".join(f"--{k.replace('_', '-')} ({saved.get(k)!r} -> {getattr(self.args, k)!r})" for k in changed)
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # the momentum buffers
        # This run's optimizer settings, and its schedule from the epoch reached: the batch size, the
        # number of processes (so the steps per epoch) and --epochs may all differ from the saved run's.
        for group in self.optimizer.param_groups:
            group.update(momentum=self.args.momentum, weight_decay=self.args.weight_decay,
                         nesterov=self.args.momentum > 0)
        self.start_epoch, self.best_acc = state["epoch"], state["best_acc"]
        self.scheduler = self._schedule(first_step=self.start_epoch * len(self.train_loader))
        if state["scaler"]:  # empty when the saved run had no fp16 loss scaling: start afresh
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if len(rng) == self.env.world_size:
            checkpoint.set_rng_state(rng[self.env.rank])
        else:  # another number of processes: the old streams do not map onto the new ones
            seed_everything(self.args.seed + 1000 * self.start_epoch + self.env.rank)
        self.say(f"resumed from {path} after epoch {self.start_epoch}")

    def _save(self, epoch, rng_states):
        payload = {
            "epoch": epoch, "best_acc": self.best_acc, "args": vars(self.args),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng_states,
        }
        checkpoint.save(self.paths["last.pt"], payload)

    # --- the loop ------------------------------------------------------------------------------

    def _prepare_output(self):
        os.makedirs(self.args.output, exist_ok=True)
        if not self.args.resume and os.path.exists(self.paths["metrics.jsonl"]):
            os.remove(self.paths["metrics.jsonl"])  # a fresh run starts a fresh record
        config = {"args": vars(self.args), "world_size": self.env.world_size, "device": str(self.device),
                  "num_classes": self.data.num_classes, "train_images": len(self.data.train),
                  "test_images": len(self.data.test), **self.info, "versions": versions()}
        with open(self.paths["config.json"], "w") as f:
            json.dump(config, f, indent=1)

    def _epoch(self, epoch):
        args, env, show = self.args, self.env, self.env.is_main and not self.args.quiet
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        train, train_seconds = train_one_epoch(
            self.train_model, self.train_loader, self.criterion, self.optimizer, self.scheduler, self.scaler,
            self.device, args.amp, args.channels_last, f"epoch {epoch + 1}/{args.epochs} train", show,
        )
        test = evaluate(self.eval_model, self.test_loader, self.criterion, self.device, args.amp,
                        args.channels_last, f"epoch {epoch + 1}/{args.epochs} test", show)
        (train_loss, train_correct, train_n, test_loss, test_correct, test_n, seconds) = distributed.all_reduce_sum(
            train + test + [train_seconds], env, self.device
        )
        return {
            "epoch": epoch + 1, "model": args.model, "skeleton": args.skeleton, "dataset": args.dataset,
            "train_loss": train_loss / train_n, "train_acc": train_correct / train_n,
            "test_loss": test_loss / test_n, "test_acc": test_correct / test_n,
            "images_per_s": train_n / (seconds / env.world_size), "epoch_time_s": time.perf_counter() - start,
            "lr": lr, "train_images": int(train_n), "test_images": int(test_n), "world_size": env.world_size,
        }

    def fit(self):
        args, env = self.args, self.env
        if env.is_main:
            self._prepare_output()
        self.say(
            f"{args.model} ({self.model_family}, {'skeleton' if args.skeleton else 'dense'}): "
            f"{self.info['params'] / 1e6:.3f}M parameters, "
            f"{self.info['skeleton_convs']} skeleton / {self.info['dense_3x3_convs']} dense 3x3 convolutions; "
            f"{args.dataset}: {len(self.data.train)} train / {len(self.data.test)} test images; "
            f"{self.device}, {env.world_size} process(es), amp {args.amp}"
        )
        record = None
        for epoch in range(self.start_epoch, args.epochs):
            record = self._epoch(epoch)
            rng_states = distributed.gather_objects(checkpoint.rng_state(), env)
            if env.is_main:
                self._record(record, rng_states)
        if record is None:
            self.say(f"nothing to do: the run in {args.output} already has {self.start_epoch} of {args.epochs} epochs")
            history = metrics.read(self.paths["metrics.jsonl"]) if env.is_main else []
            record = history[-1] if history else None
        return record

    def _record(self, record, rng_states):
        if record["test_acc"] > self.best_acc:
            self.best_acc = record["test_acc"]
            checkpoint.save(self.paths["best.pt"], {"epoch": record["epoch"], "args": vars(self.args),
                                                    "test_acc": self.best_acc, "model": self.model.state_dict()})
        self._save(record["epoch"], rng_states)
        metrics.append(self.paths["metrics.jsonl"], record)
        note = metrics.plot_curves(metrics.read(self.paths["metrics.jsonl"]), self.paths["curves.png"])
        if note and record["epoch"] == self.start_epoch + 1:
            self.say(f"note: {note}")
        self.say(
            f"epoch {record['epoch']}/{self.args.epochs}  train loss {record['train_loss']:.4f} "
            f"acc {100 * record['train_acc']:.2f}%  test loss {record['test_loss']:.4f} "
            f"acc {100 * record['test_acc']:.2f}%  {record['images_per_s']:.0f} img/s  "
            f"{record['epoch_time_s']:.1f} s  lr {record['lr']:.4g}",
            flush=True,
        )


def main(argv=None):
    """Runs the training the arguments describe; returns the last epoch's metrics (rank 0)."""
    args = parse_args(argv)
    env = distributed.env_from_os()
    finished = False
    try:
        result = Run(args, env).fit()
        finished = True
        return result
    except DatasetUnavailable as error:
        raise SystemExit(f"skeleton_cuda.train: {error}") from None
    finally:
        distributed.cleanup(finished)


if __name__ == "__main__":
    main()
