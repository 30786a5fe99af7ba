"""The run's record: one JSON line per epoch in metrics.jsonl, and curves.png drawn from it."""

import json
import os


def append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(records, path):
    """Loss and accuracy per epoch (train and test) into ``path``; returns None if drawn, else
    a note saying why not (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no curves.png (pip install matplotlib); metrics.jsonl has the numbers"
    epochs = [r["epoch"] for r in records]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("test", "--")):
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in records], style, marker=".", label=split)
        acc_ax.plot(epochs, [100 * r[f"{split}_acc"] for r in records], style, marker=".", label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    if records:
        last = records[-1]
        fig.suptitle(f"{last.get('model', '')} ({'skeleton' if last.get('skeleton') else 'dense'}) on {last.get('dataset', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
