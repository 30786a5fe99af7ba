"""Training-step time of whole models: dense vs skeleton, side by side in one run.

    python benchmarks/end_to_end.py                 # GPU configuration when a GPU is present
    python benchmarks/end_to_end.py --device cpu    # a CPU-sized configuration
    python benchmarks/end_to_end.py --device cpu --amp bf16   # ... under CPU autocast
    python benchmarks/end_to_end.py --device cpu --memory-format nchw   # PyTorch's default layout

A step is forward, cross-entropy, backward and an SGD update, on random ImageNet- or CIFAR-sized
batches, channels_last (or NCHW with --memory-format nchw; bf16 autocast on the GPU, --amp on either). Three variants of each model run interleaved:
  dense     the model as torchvision / the CIFAR zoo builds it
  skeleton  convert_model(dense): every 3x3 conv replaced
  1x1       every 3x3 conv replaced by a 1x1 conv of the same shape: the time the rest of the
            model takes plus a near-free stand-in for the 3x3 layers
The bound is what the skeleton variant could reach if its layers cost exactly 5/9 of the 3x3
layers' time: t_dense / (t_1x1 + 5/9 * (t_dense - t_1x1)); the 3x3 share is
(t_dense - t_1x1) / t_dense.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

from common import keep_freed_memory, machine_info, print_table, time_interleaved, write_results  # noqa: E402
from skeleton_cuda import convert_model  # noqa: E402
from skeleton_cuda.models import cifar_model  # noqa: E402

# (label, builder, batch, image size)
GPU_CONFIGS = [
    ("vgg16", lambda: torchvision.models.vgg16(), 64, 224),
    ("resnet18", lambda: torchvision.models.resnet18(), 256, 224),
    ("resnet50", lambda: torchvision.models.resnet50(), 128, 224),
]
CPU_CONFIGS = [
    ("cifar-vgg16", lambda: cifar_model("vgg16"), 32, 32),
    ("cifar-wrn40", lambda: cifar_model("wrn40"), 32, 32),
    ("resnet18", lambda: torchvision.models.resnet18(), 8, 112),
    ("resnet50", lambda: torchvision.models.resnet50(), 4, 112),
    ("cifar-mobilenetv2", lambda: cifar_model("mobilenetv2"), 32, 32),
]
MEMORY_FORMATS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


def one_by_one(model):
    """Every 3x3 nn.Conv2d replaced by a 1x1 conv with the same channels, stride and groups
    (padding 0), so every output keeps its shape."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3):
            setattr(model, name, nn.Conv2d(child.in_channels, child.out_channels, 1, child.stride, 0,
                                           groups=child.groups, bias=child.bias is not None))
        else:
            one_by_one(child)
    return model


def variants(builder):
    torch.manual_seed(0)
    dense = builder()
    return {"dense": dense, "skeleton": convert_model(dense), "1x1": one_by_one(builder())}


def training_step(model, batch, size, device, amp_dtype, compile_model, memory_format=torch.channels_last):
    model = model.to(device).to(memory_format=memory_format).train()
    runner = torch.compile(model) if compile_model else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    with torch.no_grad():
        classes = model.eval()(x[:2]).shape[1]
    model.train()
    target = torch.randint(0, classes, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(runner(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def run(device, modes, rounds, steps, amp_dtype=None, on_row=None, memory_format="channels_last"):
    """on_row(partial result) after every model and mode (see benchmarks/run.py)."""
    configs = GPU_CONFIGS if device.type == "cuda" else CPU_CONFIGS
    allocator = keep_freed_memory() if device.type == "cpu" else None
    machine = machine_info(device)
    if allocator:
        machine["allocator"] = allocator
    rows = []
    for label, builder, batch, size in configs:
        for mode in modes:
            models = variants(builder)
            steps_fn = {k: training_step(m, batch, size, device, amp_dtype, mode == "compile", MEMORY_FORMATS[memory_format])
                        for k, m in models.items()}
            times = time_interleaved(steps_fn, device, rounds=rounds, inner=steps, warmup=3)
            dense, skeleton, floor = times["dense"], times["skeleton"], times["1x1"]
            bound_time = floor + 5 / 9 * max(dense - floor, 0.0)
            row = {
                "model": label, "mode": mode, "batch": batch, "image": size,
                "dense_ms": round(dense, 2), "skeleton_ms": round(skeleton, 2), "1x1_ms": round(floor, 2),
                "dense_img_s": round(batch / dense * 1e3, 1), "skeleton_img_s": round(batch / skeleton * 1e3, 1),
                "speedup": round(dense / skeleton, 3),
                "share_3x3": round(max(dense - floor, 0.0) / dense, 3),
                "bound": round(dense / bound_time, 3),
            }
            row["of_bound"] = round(row["speedup"] / row["bound"], 3)
            rows.append(row)
            print(f"  {label:12s} {mode:7s} dense {dense:.1f} ms  skeleton {skeleton:.1f} ms  "
                  f"{row['speedup']:.2f}x (bound {row['bound']:.2f}x)", flush=True)
            if on_row is not None:
                on_row({"machine": machine, "amp": str(amp_dtype), "memory_format": memory_format, "rounds": rounds,
                        "steps_per_round": steps, "rows": rows, "partial": True})
            del models, steps_fn
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"machine": machine, "amp": str(amp_dtype), "memory_format": memory_format, "rounds": rounds,
            "steps_per_round": steps, "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--modes", default=None, help="comma list of eager,compile (default: both on GPU, eager on CPU)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per variant per round")
    parser.add_argument("--amp", choices=list(AMP), default=None,
                        help="autocast dtype (default: bf16 on the GPU, none on the CPU)")
    parser.add_argument("--memory-format", choices=list(MEMORY_FORMATS), default="channels_last",
                        help="layout of the model and its input (default channels_last)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    on_gpu = device.type == "cuda"
    modes = (args.modes or ("eager,compile" if on_gpu else "eager")).split(",")
    amp = args.amp or ("bf16" if on_gpu else "none")
    suffix = ("" if amp == ("bf16" if on_gpu else "none") else "-" + amp) + (
        "" if args.memory_format == "channels_last" else "-" + args.memory_format)
    name = args.output or f"end-to-end-{device.type}{suffix}.json"
    # The rows so far after every model ("partial": true): a run cut short keeps what it measured.
    result = run(device, modes, args.rounds or (10 if on_gpu else 5), args.steps or (5 if on_gpu else 2), AMP[amp],
                 on_row=lambda partial: write_results(name, partial), memory_format=args.memory_format)
    print_table(result["rows"], ["model", "mode", "batch", "image", "dense_ms", "skeleton_ms", "1x1_ms", "speedup",
                                 "share_3x3", "bound", "of_bound"])
    print("wrote", write_results(name, result))


if __name__ == "__main__":
    main()
