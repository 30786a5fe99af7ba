"""Timing, machine description and result files shared by the benchmark suites.

Every figure is a median over many repetitions, and the implementations being compared run
interleaved (one call of each per round), so a slow spell of the machine hits them alike.
"""

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import skeleton_cuda
from skeleton_cuda import skeleton_to_dense_weight

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def keep_freed_memory():
    """Asks glibc to keep freed memory for reuse instead of returning it to the OS.

    Otherwise a large result buffer is unmapped when freed and page-faulted in again by the next
    call, and which implementation pays for that depends on the allocator's history (on this
    project's VM it moved the depthwise forward between 0.5x and 1.1x of oneDNN from one run to the
    next). Applies to every implementation alike; jemalloc or tcmalloc give PyTorch the same.
    Returns a description for the results file, or None where mallopt is unavailable.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        big = 1 << 30
        if libc.mallopt(m_trim_threshold, big) and libc.mallopt(m_mmap_threshold, 1 << 25):
            return "glibc mallopt: M_TRIM_THRESHOLD=1 GiB, M_MMAP_THRESHOLD=32 MiB (freed buffers reused)"
    except OSError:
        pass
    return None


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(candidates, device, rounds, inner=1, warmup=3):
    """Median milliseconds per call of each candidate (name -> zero-argument callable).

    Each round runs every candidate `inner` times back to back, in turn; GPU calls are timed
    with CUDA events.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(inner):
                    fn()
                end.record()
                end.synchronize()
                samples[name].append(start.elapsed_time(end) / inner)
            else:
                begin = time.perf_counter()
                for _ in range(inner):
                    fn()
                samples[name].append((time.perf_counter() - begin) * 1e3 / inner)
    return {name: statistics.median(values) for name, values in samples.items()}


# ---------------------------------------------------------------------------------------------
# The implementations compared, as (forward, backward) pairs over the same tensors.

def dense_3x3(x, w5, bias, stride, groups):
    """nn.Conv2d's path (cuDNN / oneDNN) with the full 3x3 kernel: what the layer costs today."""
    w3 = skeleton_to_dense_weight(w5).contiguous(memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
    return lambda inp, w=w3: F.conv2d(inp, w, bias, stride, 1, 1, groups), w3


def decomposition(x, w5, bias, stride, groups):
    """The stock decomposition: a 1x3 conv (L, C, R) plus a dilated 2x1 conv (T, B): exactly the
    five taps, through the vendor library."""
    horizontal = w5[:, :, 1:4].unsqueeze(2).contiguous()  # (C_out, C_in/g, 1, 3)
    vertical = w5[:, :, [0, 4]].unsqueeze(3).contiguous()  # (C_out, C_in/g, 2, 1)

    def run(inp):
        a = F.conv2d(inp, horizontal, bias, stride, (0, 1), 1, groups)
        return a + F.conv2d(inp, vertical, None, stride, (1, 0), (2, 1), groups)

    return run


def machine_info(device):
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "skeleton_cuda": skeleton_cuda.__version__,
        "compiled_ops": skeleton_cuda.has_compiled_ops(),
        "device": device.type,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            sm_count=props.multi_processor_count,
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        cpu = platform.processor()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        info.update(cpu=cpu, threads=torch.get_num_threads(), cpu_kernels=skeleton_cuda.cpu_kernel_isa())
    return info


def write_results(name, payload, folder=None):
    """Writes payload as JSON to folder/name (default benchmarks/results/); returns the path."""
    folder = folder or RESULTS
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
    return path


def print_table(rows, columns):
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(str(c).rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).rjust(w) for c, w in zip(columns, widths)))
