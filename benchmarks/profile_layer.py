"""Runs one layer's forward and backward a few times: a small target for Nsight Compute.

    ncu --kernel-name regex:tc_ --launch-skip 3 --launch-count 3 \
        python benchmarks/profile_layer.py --channels 256 --size 14 --dtype bf16

The first iteration warms up (the weight packing, the allocator); profilers skip it with
--launch-skip. It prints which of our kernel families ran (tensor cores, tiled or direct), so a
profile is never read for the wrong kernels.
"""

import argparse
import os

import torch

import skeleton_cuda

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=256, help="input and output channels")
    parser.add_argument("--size", type=int, default=14, help="input height and width")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--nchw", action="store_true", help="NCHW input instead of channels_last")
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("profile_layer.py needs a CUDA GPU")

    dtype = DTYPES[args.dtype]
    memory_format = torch.contiguous_format if args.nchw else torch.channels_last
    x = torch.randn(args.batch, args.channels, args.size, args.size, device="cuda", dtype=dtype)
    x = x.contiguous(memory_format=memory_format).requires_grad_()
    w = (torch.randn(args.channels, args.channels // args.groups, 5, device="cuda", dtype=dtype) * 0.05).requires_grad_()
    ops = torch.ops.skeleton_cuda
    before = list(ops.tensor_core_calls()) + list(ops.tensor_core_nchw_calls())
    before_rows = list(ops.tensor_core_gather_launches())
    for _ in range(args.iterations):
        y = skeleton_cuda.skeleton_conv2d(x, w, None, args.stride, 1, 1, args.groups)
        y.backward(torch.ones_like(y))
    torch.cuda.synchronize()
    after = list(ops.tensor_core_calls()) + list(ops.tensor_core_nchw_calls())
    passes, nchw_passes = [b - a for a, b in zip(before[:3], after[:3])], [b - a for a, b in zip(before[3:], after[3:])]
    cuda_cores = "direct kernels" if os.environ.get("SKELETON_CUDA_DIRECT_KERNELS") == "1" else "tiled kernels"
    path = "tensor cores" if all(passes) else cuda_cores if not any(passes) else f"mixed {passes}"
    if any(nchw_passes):
        path += f" (NCHW kernels in {nchw_passes} calls per pass)"
    rows = [b - a for a, b in zip(before_rows, ops.tensor_core_gather_launches())]
    if any(rows):
        path += f"; gather GEMM launches with 128 / 64-row tiles: {rows[0]} / {rows[1]}"
    print(f"{args.iterations} x forward + backward of {tuple(x.shape)} {args.dtype} on {path}")


if __name__ == "__main__":
    main()
