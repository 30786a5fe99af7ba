"""GPU suite: skeleton kernels against cuDNN's 3x3, side by side in one run.

Implementations: cuDNN 3x3 (nn.Conv2d), the masked 3x3 (a dense weight times a corner mask:
what a paper implementation runs, same cost as cuDNN), the stock decomposition (a 1x3 conv plus
a dilated 2x1 conv: exactly five taps through cuDNN), and ours. Passes: forward, backward
(derived as forward+backward minus forward) and forward + backward (autograd, all gradients).
Precisions: bf16 and fp16 channels_last, bf16 NCHW, and fp32 NCHW with TF32 on (PyTorch's default
for convolutions). Each row records which of our kernels ran ("skeleton_path": "tensor cores" with
SKELETON_CUDA_TENSOR_CORES=1 where they apply, "tensor cores, NCHW kernels" where NCHW layers ran the
tensor cores without converting to channels_last, else "tiled" (the default for dense layers),
"direct" with SKELETON_CUDA_DIRECT_KERNELS=1, or "depthwise").

Dense suite (N=64): 64@56, 128@28, 256@14, 512@7, stride 2 128@56 and 256@28; (N=128): 64@32,
256@8. Depthwise suite (N=64, bf16 channels_last and fp32 NCHW): MobileNetV2's 144@56, 384@14, 960@7,
96@112 stride 2. Achieved TFLOP/s and GB/s are reported against peaks measured in the same run.
"""

import os

import torch
import torch.nn.functional as F

from common import decomposition, geomean, machine_info, print_table, time_interleaved
from skeleton_cuda import skeleton_conv2d, skeleton_to_dense_weight

DENSE = [
    ("64@56", 64, 64, 56, 1), ("128@28", 64, 128, 28, 1), ("256@14", 64, 256, 14, 1), ("512@7", 64, 512, 7, 1),
    ("128@56/s2", 64, 128, 56, 2), ("256@28/s2", 64, 256, 28, 2), ("64@32", 128, 64, 32, 1), ("256@8", 128, 256, 8, 1),
]
DEPTHWISE = [("dw144@56", 64, 144, 56, 1), ("dw384@14", 64, 384, 14, 1), ("dw960@7", 64, 960, 7, 1), ("dw96@112/s2", 64, 96, 112, 2)]
PRECISIONS = {
    "bf16-nhwc": (torch.bfloat16, torch.channels_last),
    "fp16-nhwc": (torch.float16, torch.channels_last),
    "bf16-nchw": (torch.bfloat16, torch.contiguous_format),
    "fp32-nchw": (torch.float32, torch.contiguous_format),
}
IMPLS = ("cudnn3x3", "masked3x3", "decomposition", "skeleton")


def skeleton_path(groups, channels, took_tensor_cores, took_nchw_kernels=(False, False, False)):
    """Which of our kernel families a layer ran (csrc/cuda/skeleton_conv2d_cuda.cu routes them), from
    which passes took the tensor cores, and which of those their NCHW kernels."""
    if groups == channels:
        return "depthwise"
    if all(took_tensor_cores) and not any(took_nchw_kernels):
        return "tensor cores"
    if all(took_nchw_kernels):
        return "tensor cores, NCHW kernels"
    if any(took_tensor_cores):
        return "mixed"
    return "direct" if os.environ.get("SKELETON_CUDA_DIRECT_KERNELS") == "1" else "tiled"


def tensor_core_calls():
    """Calls of our tensor-core path so far (forward, input gradient, weight gradient), then those of
    them that ran the NCHW kernels."""
    ops = torch.ops.skeleton_cuda
    return list(ops.tensor_core_calls()) + list(ops.tensor_core_nchw_calls())


def gather_launches():
    """Gather-GEMM launches of the tensor-core path so far with 128-row and with 64-row tiles."""
    return list(torch.ops.skeleton_cuda.tensor_core_gather_launches())


def row_tiles(launches_128, launches_64):
    """The gather GEMMs' row tiles a layer ran with, from its launches of each: "128", "64", both
    ("128+64": its passes differ in size), or "" (no tensor-core gather GEMM ran)."""
    return "+".join(rows for rows, count in (("128", launches_128), ("64", launches_64)) if count > 0)


def measure_peaks(device):
    """Dense bf16 matmul rate and device-to-device copy bandwidth of this GPU, measured now."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    t = time_interleaved({"mm": lambda: a @ b}, device, rounds=20)["mm"]
    src = torch.empty(2**28, device=device, dtype=torch.float32)  # 1 GiB
    dst = torch.empty_like(src)
    c = time_interleaved({"copy": lambda: dst.copy_(src)}, device, rounds=20)["copy"]
    return {"bf16_matmul_tflops": round(2 * 8192**3 / t / 1e9, 1), "copy_gbps": round(2 * src.numel() * 4 / c / 1e6, 1)}


def implementations(x, w5, bias, stride, groups):
    """name -> callable(input) computing the layer; every weight is a leaf requiring grad."""
    memory_format = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    w3 = skeleton_to_dense_weight(w5.detach()).contiguous(memory_format=memory_format).requires_grad_()
    mask = torch.zeros(3, 3, device=x.device, dtype=x.dtype)
    mask[[0, 1, 1, 1, 2], [1, 0, 1, 2, 1]] = 1
    w_full = torch.randn_like(w3).requires_grad_()
    decomp = decomposition(x, w5, bias, stride, groups)
    return {
        "cudnn3x3": lambda inp: F.conv2d(inp, w3, bias, stride, 1, 1, groups),
        "masked3x3": lambda inp: F.conv2d(inp, w_full * mask, bias, stride, 1, 1, groups),
        "decomposition": decomp,
        "skeleton": lambda inp: skeleton_conv2d(inp, w5, bias, stride, 1, 1, groups),
    }


def time_layer(n, channels, size, stride, groups, dtype, memory_format, device, rounds):
    x = torch.randn(n, channels, size, size, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    x.requires_grad_()
    w5 = (torch.randn(channels, channels // groups, 5, device=device, dtype=dtype) * 0.05).requires_grad_()
    impls = implementations(x, w5, None, stride, groups)
    with torch.no_grad():
        gy = torch.randn_like(impls["cudnn3x3"](x))

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(x)
        return run

    def forward_backward(fn):
        def run():
            fn(x).backward(gy)
        return run

    before, before_rows = tensor_core_calls(), gather_launches()
    fwd = time_interleaved({k: forward(f) for k, f in impls.items()}, device, rounds, inner=5)
    both = time_interleaved({k: forward_backward(f) for k, f in impls.items()}, device, rounds, inner=3)
    took = [b > a for a, b in zip(before, tensor_core_calls())]
    launches = [b - a for a, b in zip(before_rows, gather_launches())]
    out_size = gy.shape[-1]
    taps = {"cudnn3x3": 9, "masked3x3": 9, "decomposition": 5, "skeleton": 5}
    macs_per_tap = n * out_size * out_size * channels * (channels // groups)
    element = torch.finfo(dtype).bits // 8
    moved = (x.numel() + gy.numel()) * element  # input read and output written once
    row = {"skeleton_path": skeleton_path(groups, channels, took[:3], took[3:]), "gather_rows": row_tiles(*launches)}
    for impl in IMPLS:
        row[f"fwd_{impl}_ms"] = round(fwd[impl], 4)
        row[f"bwd_{impl}_ms"] = round(max(both[impl] - fwd[impl], 0.0), 4)
        row[f"fwdbwd_{impl}_ms"] = round(both[impl], 4)
        row[f"fwd_{impl}_tflops"] = round(2 * macs_per_tap * taps[impl] / fwd[impl] / 1e9, 1)
        row[f"fwd_{impl}_gbps"] = round(moved / fwd[impl] / 1e6, 1)
    for impl in ("masked3x3", "decomposition", "skeleton"):
        row[f"fwd_speedup_{impl}"] = round(fwd["cudnn3x3"] / fwd[impl], 3)
        row[f"fwdbwd_speedup_{impl}"] = round(both["cudnn3x3"] / both[impl], 3)
        row[f"bwd_speedup_{impl}"] = round((both["cudnn3x3"] - fwd["cudnn3x3"]) / max(both[impl] - fwd[impl], 1e-9), 3)
    return row


def run(rounds=50, precisions=None, on_row=None):
    """The whole suite, or its dense layers in the named `precisions` only (keys of PRECISIONS; the
    depthwise suite always runs, bf16 channels_last and fp32 NCHW). on_row(partial result) after
    every layer, so that a run cut off by a time limit still leaves its finished rows."""
    device = torch.device("cuda")
    dense_precisions = {name: PRECISIONS[name] for name in (precisions or PRECISIONS)}
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    peaks = measure_peaks(device)
    machine = machine_info(device)
    rows = []
    # Depthwise: bf16 channels_last (issue 3's goals) and fp32 NCHW, PyTorch's default (its own kernels).
    depthwise_precisions = {name: PRECISIONS[name] for name in ("bf16-nhwc", "fp32-nchw")}
    for suite, layers, suite_precisions in (("dense", DENSE, dense_precisions), ("depthwise", DEPTHWISE, depthwise_precisions)):
        for precision, (dtype, memory_format) in suite_precisions.items():
            for name, n, channels, size, stride in layers:
                groups = channels if suite == "depthwise" else 1
                row = {"suite": suite, "precision": precision, "layer": name, "batch": n}
                row.update(time_layer(n, channels, size, stride, groups, dtype, memory_format, device, rounds))
                rows.append(row)
                print(f"  {suite:9s} {precision:9s} {name:12s} fwd {row['fwd_speedup_skeleton']:.2f}x "
                      f"fwd+bwd {row['fwdbwd_speedup_skeleton']:.2f}x", flush=True)
                if on_row is not None:
                    on_row({"machine": machine, "peaks": peaks, "rounds": rounds, "rows": rows, "partial": True})
                torch.cuda.empty_cache()
    summary = {}
    for suite in ("dense", "depthwise"):
        for precision in PRECISIONS:
            part = [r for r in rows if r["suite"] == suite and r["precision"] == precision]
            if not part:
                continue
            for key in ("fwd_speedup_skeleton", "bwd_speedup_skeleton", "fwdbwd_speedup_skeleton",
                        "fwd_speedup_decomposition", "fwdbwd_speedup_decomposition"):
                summary[f"{suite}/{precision}/{key}_geomean"] = round(geomean([r[key] for r in part]), 3)
                summary[f"{suite}/{precision}/{key}_min"] = round(min(r[key] for r in part), 3)
    return {"machine": machine, "peaks": peaks, "rounds": rounds, "rows": rows, "summary": summary}


def show(result):
    print("peaks:", result["peaks"])
    print_table(
        result["rows"],
        ["suite", "precision", "layer", "skeleton_path", "fwd_cudnn3x3_ms", "fwd_skeleton_ms", "fwd_speedup_skeleton",
         "fwd_speedup_decomposition", "bwd_speedup_skeleton", "fwdbwd_speedup_skeleton",
         "fwd_skeleton_tflops", "fwd_skeleton_gbps"],
    )
    for key, value in result["summary"].items():
        print(f"{key}: {value}")


def plot(result, path):
    """Bar chart of ours and the decomposition relative to cuDNN 3x3 (1.0 = equal)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return None
    rows = result["rows"]
    labels = [f"{r['layer']}\n{r['precision']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.7), 4.5))
    xs = range(len(rows))
    for offset, key, label in ((-0.3, "fwd_speedup_skeleton", "ours fwd"), (-0.1, "fwdbwd_speedup_skeleton", "ours fwd+bwd"),
                               (0.1, "fwd_speedup_decomposition", "1x3+2x1 fwd"), (0.3, "fwdbwd_speedup_decomposition", "1x3+2x1 fwd+bwd")):
        ax.bar([x + offset for x in xs], [r[key] for r in rows], width=0.2, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("speed vs cuDNN 3x3 (x)")
    ax.set_title(f"skeleton_cuda on {result['machine'].get('gpu')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
