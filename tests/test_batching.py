"""torch.vmap over the ops (skeleton_cuda/batching.py): every combination of vmapped and shared
arguments equals a loop over the entries, with no per-entry fallback (PyTorch warns when it runs
one), and per-sample gradients (vmap of grad) equal nn.Conv2d's; on the CPU and (on a GPU machine)
on CUDA tensors."""

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

import skeleton_cuda
from skeleton_cuda.taps import skeleton_to_dense_weight
from oracle import devices

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")

ops = torch.ops.skeleton_cuda
ARGS = ([2, 1], [1, 1], [1, 2])  # stride, padding, dilation
LAYERS = [(1, 3, 4), (2, 4, 6), (4, 4, 4)]  # (groups, C_in, C_out): dense, grouped, depthwise
ENTRIES, IMAGES = 3, 2


def vmapped_and_looped(f, tensors, vmapped):
    """f under torch.vmap over the entries of the tensors flagged in `vmapped` (the others shared),
    and the same entry by entry; fails on PyTorch's per-entry fallback warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="There is a performance drop")
        got = torch.vmap(f, in_dims=tuple(0 if v else None for v in vmapped))(*tensors)
    entries = [f(*[t[i] if v else t for t, v in zip(tensors, vmapped)]) for i in range(ENTRIES)]
    if isinstance(got, tuple):
        return got, tuple(torch.stack(parts) for parts in zip(*entries))
    return got, torch.stack(entries)


@pytest.mark.parametrize("groups,cin,cout", LAYERS)
@pytest.mark.parametrize("vmapped", [v for v in itertools.product([0, 1], repeat=3) if any(v)],
                         ids=lambda v: "".join("xwb"[i] for i in range(3) if v[i]))
@pytest.mark.parametrize("device", devices())
def test_forward(groups, cin, cout, vmapped, device):
    tensors = [torch.randn(ENTRIES, IMAGES, cin, 6, 7, dtype=torch.float64, device=device),
               torch.randn(ENTRIES, cout, cin // groups, 5, dtype=torch.float64, device=device),
               torch.randn(ENTRIES, cout, dtype=torch.float64, device=device)]
    tensors = [t if v else t[0] for t, v in zip(tensors, vmapped)]
    got, want = vmapped_and_looped(lambda x, w, b: ops.skeleton_conv2d(x, w, b, *ARGS, groups), tensors, vmapped)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("groups,cin,cout", LAYERS)
@pytest.mark.parametrize("mask", [[True, True, True], [True, False, False], [False, True, True]], ids=str)
@pytest.mark.parametrize("vmapped", [v for v in itertools.product([0, 1], repeat=3) if any(v)],
                         ids=lambda v: "".join(("dy", "x", "w")[i] for i in range(3) if v[i]))
@pytest.mark.parametrize("device", devices())
def test_backward(groups, cin, cout, mask, vmapped, device):
    x = torch.randn(ENTRIES, IMAGES, cin, 6, 7, dtype=torch.float64, device=device)
    w = torch.randn(ENTRIES, cout, cin // groups, 5, dtype=torch.float64, device=device)
    out_hw = ops.skeleton_conv2d(x[0], w[0], None, *ARGS, groups).shape[2:]
    dy = torch.randn(ENTRIES, IMAGES, cout, *out_hw, dtype=torch.float64, device=device)
    tensors = [t if v else t[0] for t, v in zip((dy, x, w), vmapped)]
    backward = lambda dy, x, w: ops.skeleton_conv2d_backward(dy, x, w, *ARGS, groups, mask)
    got, want = vmapped_and_looped(backward, tensors, vmapped)
    for wanted, g, e in zip(mask, got, want):
        if wanted:
            torch.testing.assert_close(g, e)


@pytest.mark.parametrize("groups,cin,cout", LAYERS)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("device", devices())
def test_per_sample_gradients(groups, cin, cout, memory_format, device):
    # The torch.func recipe (as in differentially private training): vmap of grad over the samples.
    samples = torch.randn(5, cin, 8, 7, dtype=torch.float64, device=device).contiguous(memory_format=memory_format)
    w = torch.randn(cout, cin // groups, 5, dtype=torch.float64, device=device)
    b = torch.randn(cout, dtype=torch.float64, device=device)

    def per_sample(conv):
        loss = lambda w, b, sample: conv(sample.unsqueeze(0), w, b).square().sum()
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="There is a performance drop")
            return torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(None, None, 0))(w, b, samples)

    got = per_sample(lambda x, w, b: skeleton_cuda.skeleton_conv2d(x, w, b, stride=2, groups=groups))
    want = per_sample(lambda x, w, b: F.conv2d(x, skeleton_to_dense_weight(w), b, stride=2, padding=1, groups=groups))
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("images", [0, 1], ids=["no-images", "one-image"])
@pytest.mark.parametrize("device", devices())
def test_entries_without_images(images, device):
    # Entries of 0 images (a batch of 0 per entry): empty results of the right shapes, as F.conv2d
    # gives under vmap; the folds must not infer a size from 0 elements.
    x = torch.randn(ENTRIES, images, 4, 6, 7, dtype=torch.float64, device=device)
    w = torch.randn(ENTRIES, 6, 2, 5, dtype=torch.float64, device=device)
    got, want = vmapped_and_looped(lambda x, w: ops.skeleton_conv2d(x, w, None, *ARGS, 2), [x, w], [1, 1])
    assert got.shape == want.shape == (ENTRIES, images, 6, 3, 5)
    torch.testing.assert_close(got, want)
    dy = torch.randn(ENTRIES, images, 6, 3, 5, dtype=torch.float64, device=device)
    backward = lambda dy, x, w: ops.skeleton_conv2d_backward(dy, x, w, *ARGS, 2, [True, True, True])
    got, want = vmapped_and_looped(backward, [dy, x, w], [1, 1, 1])
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e)
