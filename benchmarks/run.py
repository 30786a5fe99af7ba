"""The main benchmark: skeleton kernels against the 3x3 convolution of the vendor library.

    python benchmarks/run.py            # the GPU suite when a GPU is present, else the CPU suite
    python benchmarks/run.py --device cpu --rounds 40
    python benchmarks/run.py --device cuda --rounds 15 --precision bf16-nhwc --precision fp32-nchw

Prints the table and writes benchmarks/results/<device>-<name>.json (plus, for the GPU suite, a
PNG plot of the ratios when matplotlib is installed). The JSON is rewritten after every layer with the rows so far
and "partial": true, so a run cut short (a GPU lease's time limit) keeps what it measured.
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from common import write_results  # noqa: E402
from gpu_suite import PRECISIONS as GPU_PRECISIONS  # noqa: E402


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--rounds", type=int, default=None, help="repetitions per measurement (median taken)")
    parser.add_argument("--output", default=None, help="JSON file name under benchmarks/results/")
    parser.add_argument("--precision", action="append", choices=list(GPU_PRECISIONS), default=None,
                        help="GPU suite: only these dense precisions (repeat the option; default all)")
    args = parser.parse_args()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        import gpu_suite as suite
    else:
        import cpu_suite as suite
    def file_name(machine):
        return args.output or f"{device}-{slug(machine.get('gpu') or machine.get('cpu', 'cpu'))}.json"

    # The rows so far after every layer ("partial": true), so that a run stopped by a time limit
    # (a GPU lease) leaves what it measured; the complete result replaces it at the end.
    kwargs = {"on_row": lambda partial: write_results(file_name(partial["machine"]), partial)}
    if args.rounds:
        kwargs["rounds"] = args.rounds
    if args.precision:
        if device != "cuda":
            parser.error("--precision selects layers of the GPU suite; this run is on the CPU")
        kwargs["precisions"] = args.precision
    print(f"skeleton_cuda benchmark on {device}", flush=True)
    result = suite.run(**kwargs)
    suite.show(result)
    name = file_name(result["machine"])
    print("wrote", write_results(name, result))
    if hasattr(suite, "plot"):
        path = suite.plot(result, os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name[:-5] + ".png"))
        if path:
            print("wrote", path)


if __name__ == "__main__":
    main()
