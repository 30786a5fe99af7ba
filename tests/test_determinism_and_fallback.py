"""Bitwise reproducibility of the CPU kernels, and the pure-PyTorch fallback."""

import os
import subprocess
import sys

import pytest
import torch

import skeleton_cuda
from oracle import check_against_oracle, random_configs


def _grads(x, w, b, **kw):
    x = x.clone().requires_grad_()
    w = w.clone().requires_grad_()
    b = b.clone().requires_grad_()
    out = skeleton_cuda.skeleton_conv2d(x, w, b, **kw)
    out.backward(torch.ones_like(out) * 0.1 + out.detach() * 0.01)
    return [out, x.grad, w.grad, b.grad]


# (channels, groups, size): one output block; several blocks of a layer whose weight is smaller than
# its input (the gather GEMMs' threads split the pixels) and of one whose weight is larger (they
# split the blocks); depthwise.
LAYERS = {"dense": (64, 1, 20), "blocks-split-by-pixels": (160, 1, 20), "blocks-split-by-items": (160, 1, 4),
          "depthwise": (64, 64, 20)}


@pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bfloat16: native kernels where the CPU has them
def test_bitwise_identical_run_to_run_and_across_thread_counts(layer, dtype):
    channels, groups, size = layer
    x = torch.randn(4, channels, size, size).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels // groups, 5).to(dtype)
    b = torch.randn(channels).to(dtype)
    first = _grads(x, w, b, groups=groups, stride=1)
    second = _grads(x, w, b, groups=groups, stride=1)
    threads = torch.get_num_threads()
    others = []
    try:
        for count in (1, 3):  # 3: ranges that end inside a chunk or a block on any machine
            torch.set_num_threads(count)
            others.append(_grads(x, w, b, groups=groups, stride=1))
    finally:
        torch.set_num_threads(threads)
    for results in [second] + others:
        for a, c in zip(first, results):
            assert torch.equal(a, c)


def test_compiled_kernels_are_loaded():
    # Guards against testing the fallback by accident (e.g. the source tree shadowing the build).
    if os.environ.get("SKELETON_CUDA_ALLOW_FALLBACK") == "1":
        pytest.skip("SKELETON_CUDA_ALLOW_FALLBACK=1")
    assert skeleton_cuda.has_compiled_ops(), "skeleton_cuda._C is missing: build with pip install --no-build-isolation ."


@pytest.mark.parametrize("config", random_configs(seed=5, count=6))
def test_reference_fallback_matches_the_oracle(config, monkeypatch):
    monkeypatch.setattr(skeleton_cuda.ops, "HAS_COMPILED_OPS", False)
    check_against_oracle(skeleton_cuda.skeleton_conv2d, config, torch.float32)


def test_missing_extension_warns_once_and_falls_back(tmp_path):
    # A copy of the Python package without _C (under another name, so no installed copy or
    # editable-install hook can supply one): importing warns, and the op still works.
    package = os.path.dirname(skeleton_cuda.__file__)
    target = tmp_path / "skeleton_cuda_without_kernels"
    target.mkdir()
    for name in os.listdir(package):
        if name.endswith(".py"):
            (target / name).write_text(open(os.path.join(package, name)).read())
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import skeleton_cuda_without_kernels as skeleton_cuda, torch\n"
        "    m = skeleton_cuda.SkeletonConv2d(3, 4)\n"
        "    y = m(torch.randn(1, 3, 8, 8)); y = m(torch.randn(1, 3, 8, 8))\n"
        "assert not skeleton_cuda.has_compiled_ops()\n"
        "assert y.shape == (1, 4, 8, 8)\n"
        "messages = [str(w.message) for w in caught if 'compiled kernels could not be loaded' in str(w.message)]\n"
        "assert len(messages) == 1, messages\n"
        "print('fallback ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout
