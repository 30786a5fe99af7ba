"""last.pt: everything needed to continue a run where it stopped (model, optimizer,
scheduler, grad scaler, epoch, random number generator states). Plain tensors and Python
containers only, so it loads with ``torch.load(..., weights_only=True)``."""

import os
import random

import torch

try:
    import numpy as np
except ImportError:  # numpy is optional for the trainer
    np = None


def rng_state():
    """The generators a training run draws from (torch CPU and CUDA, Python, numpy)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "cuda": None, "numpy": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("numpy") is not None and np is not None:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached_gaussian"]))


def _tuples(value):
    # random.setstate wants tuples; a round trip through some loaders gives lists.
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save(path, payload):
    """Writes atomically: a run killed while saving leaves the previous last.pt intact."""
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)
