"""Accuracy parity: the same network trained dense and with skeleton kernels, same recipe, same seeds.

    python benchmarks/accuracy_parity.py                       # digits, 'small' CNN, 5 seeds (a few CPU minutes)
    python benchmarks/accuracy_parity.py --model wrn40 --dataset cifar10 --data-dir data \\
        --epochs 200 --batch-size 128 --lr 0.1 --seeds 0 1 2 --output accuracy-parity-cifar10-wrn40.json

Each (seed, variant) is one ``python -m skeleton_cuda.train`` run, in this process. For a given
seed the two variants start from the same initial weights (the skeleton model keeps the cross
of the dense initialisation) and see the same data order. The test accuracy reported is the
one after the last epoch (no model selection on the test set). Writes
benchmarks/results/<output> with the per-seed accuracies, their means and sample standard
deviations, the gap (skeleton - dense), the paired per-seed differences, the command and the
versions.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from common import machine_info, write_results  # noqa: E402

from skeleton_cuda.train import main as train  # noqa: E402

VARIANTS = ("dense", "skeleton")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small")
    p.add_argument("--width", type=int, default=16, help="width of the 'small' model")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine may be shared)")
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="accuracy-parity-digits.json", help="file name under benchmarks/results/")
    p.add_argument("--results-dir", default=None, help="write there instead of benchmarks/results/")
    return p.parse_args(argv)


def recipe(args):
    """The training arguments shared by both variants."""
    return ["--model", args.model, "--width", str(args.width), "--dataset", args.dataset, "--data-dir", args.data_dir,
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
            "--weight-decay", str(args.weight_decay), "--device", args.device, "--workers", "0", "--channels-last",
            "--quiet"]


def summarise(values):
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def run(args):
    torch.set_num_threads(args.threads)
    runs = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            for variant in VARIANTS:  # interleaved: a slow spell of the machine hits both alike
                out = os.path.join(scratch, f"{variant}-{seed}")
                flags = recipe(args) + ["--seed", str(seed), "--output", out] + (["--skeleton"] if variant == "skeleton" else [])
                start = time.perf_counter()
                record = train(flags)
                runs[variant].append({
                    "seed": seed, "test_acc": record["test_acc"], "test_loss": record["test_loss"],
                    "train_acc": record["train_acc"], "train_loss": record["train_loss"],
                    "images_per_s": record["images_per_s"], "seconds": time.perf_counter() - start,
                })
                print(f"seed {seed} {variant:8s} test acc {100 * record['test_acc']:.2f}%  "
                      f"train acc {100 * record['train_acc']:.2f}%  ({runs[variant][-1]['seconds']:.0f} s)", flush=True)
        params = {v: _params(os.path.join(scratch, f"{v}-{args.seeds[0]}")) for v in VARIANTS}
    return runs, params


def _params(run_folder):
    with open(os.path.join(run_folder, "config.json")) as f:
        return json.load(f)["params"]


def report(args, runs, params, seconds):
    acc = {v: [r["test_acc"] for r in runs[v]] for v in VARIANTS}
    differences = [s - d for d, s in zip(acc["dense"], acc["skeleton"])]
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    return {
        "question": "Does a network trained with skeleton kernels reach the accuracy of the same network "
                    "with dense 3x3 kernels (same recipe, same seeds)?",
        "dataset": args.dataset, "model": args.model, "width": args.width if args.model == "small" else None,
        "recipe": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
                   "optimizer": "SGD, Nesterov momentum 0.9, cosine schedule", "channels_last": True,
                   "train_command": "python -m skeleton_cuda.train " + " ".join(recipe(args)) + " --seed S [--skeleton]"},
        "seeds": args.seeds,
        "params": params,
        "test_acc": acc,
        "summary": {v: summarise(acc[v]) for v in VARIANTS},
        "gap_skeleton_minus_dense": statistics.fmean(acc["skeleton"]) - statistics.fmean(acc["dense"]),
        "paired_difference": summarise(differences),
        "runs": runs,
        "total_seconds": seconds,
        "threads": args.threads,
        "machine": {**machine_info(device), "sklearn": _version("sklearn"), "torchvision": _version("torchvision")},
    }


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    runs, params = run(args)
    result = report(args, runs, params, time.perf_counter() - start)
    for v in VARIANTS:
        s = result["summary"][v]
        print(f"{v:8s} test acc {100 * s['mean']:.2f} +- {100 * s['std']:.2f}%  over seeds {args.seeds}  "
              f"({params[v] / 1e3:.1f}k parameters)")
    paired = result["paired_difference"]
    print(f"gap (skeleton - dense): {100 * result['gap_skeleton_minus_dense']:+.2f} points; "
          f"paired per seed {100 * paired['mean']:+.2f} +- {100 * paired['std']:.2f}")
    print("wrote", write_results(args.output, result, args.results_dir))
    return result


if __name__ == "__main__":
    main()
