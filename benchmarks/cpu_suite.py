"""CPU suite: skeleton kernels vs oneDNN's 3x3 (what F.conv2d / nn.Conv2d runs), float32 and
bfloat16 (what CPU autocast runs), channels_last and NCHW, on the layers of the operator issue.

Dense layers (N=8): 64 ch @56x56, 128 @28, 256 @14, 512 @7. Depthwise (N=8, MobileNetV2):
144 @56, 384 @14, 960 @7, 96 @112 stride 2. First layers (3 input channels, RGB images): 3 -> 16
and 3 -> 64 @32 (N=32, CIFAR networks), 3 -> 64 @112 (N=8). Passes: forward; backward = input +
weight gradients (the backward ops called directly, as autograd would; for first layers the weight
gradient alone, as nothing needs the image's gradient); forward + backward.
"""

import torch
import torch.nn.functional as F

from common import decomposition, dense_3x3, geomean, keep_freed_memory, machine_info, print_table, time_interleaved

DENSE = [("64@56", 8, 64, 56, 1), ("128@28", 8, 128, 28, 1), ("256@14", 8, 256, 14, 1), ("512@7", 8, 512, 7, 1)]
DEPTHWISE = [("dw144@56", 8, 144, 56, 1), ("dw384@14", 8, 384, 14, 1), ("dw960@7", 8, 960, 7, 1), ("dw96@112/s2", 8, 96, 112, 2)]
# (name, batch, output channels, size, stride); 3 input channels.
FIRST = [("3->16@32", 32, 16, 32, 1), ("3->64@32", 32, 64, 32, 1), ("3->64@112", 8, 64, 112, 1)]
# (dtype, memory format of the activations); NCHW is PyTorch's default layout.
PRECISIONS = {
    "fp32-nhwc": (torch.float32, torch.channels_last),
    "bf16-nhwc": (torch.bfloat16, torch.channels_last),
    "fp32-nchw": (torch.float32, torch.contiguous_format),
    "bf16-nchw": (torch.bfloat16, torch.contiguous_format),
}


def layer_candidates(n, channels, size, stride, groups, dtype=torch.float32, memory_format=torch.channels_last,
                     in_channels=None):
    """in_channels: a first layer's (its backward is then the weight gradient alone)."""
    cin = channels if in_channels is None else in_channels
    x = torch.randn(n, cin, size, size).to(dtype).contiguous(memory_format=memory_format)
    w5 = (torch.randn(channels, cin // groups, 5) * 0.1).to(dtype)
    dense_fwd, w3 = dense_3x3(x, w5, None, stride, groups)
    out_size = (size + 2 - 3) // stride + 1
    gy = torch.randn(n, channels, out_size, out_size).to(dtype).contiguous(memory_format=memory_format)
    mask = [in_channels is None, True, False]
    ours_fwd = lambda: torch.ops.skeleton_cuda.skeleton_conv2d(x, w5, None, [stride] * 2, [1, 1], [1, 1], groups)
    ours_bwd = lambda: torch.ops.skeleton_cuda.skeleton_conv2d_backward(
        gy, x, w5, [stride] * 2, [1, 1], [1, 1], groups, mask
    )
    dense_bwd = lambda: torch.ops.aten.convolution_backward(
        gy, x, w3, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], groups, mask
    )
    decomp = decomposition(x, w5, None, stride, groups)
    return {
        "forward": {"dense3x3": lambda: dense_fwd(x), "decomposition": lambda: decomp(x), "skeleton": ours_fwd},
        "backward": {"dense3x3": dense_bwd, "skeleton": ours_bwd},
    }


def run(rounds=25, on_row=None):
    """The suite; on_row(partial result) after every layer (as the GPU suite)."""
    torch.manual_seed(0)
    allocator = keep_freed_memory()
    machine = machine_info(torch.device("cpu"))
    machine["allocator"] = allocator or "default"
    rows = []
    with torch.no_grad():
        for precision, (dtype, memory_format) in PRECISIONS.items():
            for suite, layers in (("dense", DENSE), ("depthwise", DEPTHWISE), ("first", FIRST)):
                for name, n, channels, size, stride in layers:
                    groups = channels if suite == "depthwise" else 1
                    candidates = layer_candidates(n, channels, size, stride, groups, dtype, memory_format,
                                                  in_channels=3 if suite == "first" else None)
                    # Several calls per candidate per round: the first call after another implementation
                    # can pay for its allocator churn (page faults of freed large buffers); the median
                    # over rounds of the mean of `inner` calls is robust to that.
                    times = {p: time_interleaved(c, torch.device("cpu"), rounds, inner=3) for p, c in candidates.items()}
                    row = {"suite": suite, "precision": precision, "layer": name, "batch": n}
                    for impl in ("dense3x3", "decomposition", "skeleton"):
                        for p in ("forward", "backward"):
                            if impl in times[p]:
                                row[f"{p}_{impl}_ms"] = round(times[p][impl], 3)
                    row["fwd_speedup"] = round(times["forward"]["dense3x3"] / times["forward"]["skeleton"], 3)
                    row["decomp_fwd_speedup"] = round(times["forward"]["dense3x3"] / times["forward"]["decomposition"], 3)
                    row["bwd_speedup"] = round(times["backward"]["dense3x3"] / times["backward"]["skeleton"], 3)
                    total_dense = times["forward"]["dense3x3"] + times["backward"]["dense3x3"]
                    total_ours = times["forward"]["skeleton"] + times["backward"]["skeleton"]
                    row["fwd_bwd_speedup"] = round(total_dense / total_ours, 3)
                    rows.append(row)
                    print(f"  {precision} {suite:9s} {name:12s} fwd {row['fwd_speedup']:.2f}x  bwd {row['bwd_speedup']:.2f}x",
                          flush=True)
                    if on_row is not None:
                        on_row({"machine": machine, "rounds": rounds, "inner": 3, "rows": rows, "partial": True})
    summary = {}
    for precision in PRECISIONS:
        for suite in ("dense", "depthwise", "first"):
            part = [r for r in rows if r["suite"] == suite and r["precision"] == precision]
            for key in ("fwd_speedup", "decomp_fwd_speedup", "bwd_speedup", "fwd_bwd_speedup"):
                summary[f"{suite}/{precision}/{key}_geomean"] = round(geomean([r[key] for r in part]), 3)
    return {"machine": machine, "rounds": rounds, "inner": 3, "rows": rows, "summary": summary}


def show(result):
    print_table(
        result["rows"],
        ["suite", "precision", "layer", "forward_dense3x3_ms", "forward_decomposition_ms", "forward_skeleton_ms", "fwd_speedup",
         "backward_dense3x3_ms", "backward_skeleton_ms", "bwd_speedup", "fwd_bwd_speedup"],
    )
    for key, value in result["summary"].items():
        print(f"{key}: {value}")
