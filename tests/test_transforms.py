"""Forward-mode AD and the torch.func transforms (skeleton_cuda/transforms.py): every derivative,
of first and second order, in either mode and every nesting, equals nn.Conv2d's with the corners
zeroed, on the CPU and (on a GPU machine) on CUDA tensors; and each takes the path meant for it."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

import skeleton_cuda
from skeleton_cuda.taps import skeleton_to_dense_weight
from skeleton_cuda.transforms import route
from oracle import devices

pytestmark = [
    pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built"),
    # the ops' batching rules (batching.py) leave nothing to torch.func's per-entry fallback
    pytest.mark.filterwarnings("error:There is a performance drop"),
]

# (groups, C_in, C_out, stride, layout): dense NCHW, grouped and strided, depthwise channels_last
LAYERS = [
    (1, 3, 4, 1, torch.contiguous_format),
    (2, 4, 6, 2, torch.channels_last),
    (4, 4, 4, 1, torch.channels_last),
]


def ours(x, w, b, groups, stride):
    return skeleton_cuda.skeleton_conv2d(x, w, b, stride=stride, padding=1, groups=groups)


def dense(x, w, b, groups, stride):
    return F.conv2d(x, skeleton_to_dense_weight(w), b, stride=stride, padding=1, groups=groups)


def derivatives(conv, x, w, b, tangents, groups, stride):
    """The first and second derivatives of `conv` that the transforms compute."""
    f = lambda x, w, b: conv(x, w, b, groups, stride)
    loss = lambda x, w, b: f(x, w, b).sin().sum()
    x1, x_small = x[:1], x[:1, :, :3, :3].contiguous()
    result = {
        "jvp": torch.func.jvp(f, (x, w, b), tangents)[1],
        "jvp of the bias alone": torch.func.jvp(lambda b: f(x, w, b), (b,), (tangents[2],))[1],
        "grad": torch.func.grad(loss, argnums=(0, 1, 2))(x, w, b),
        "jacrev": torch.func.jacrev(lambda w: f(x, w, b))(w),
        "jacfwd": torch.func.jacfwd(lambda w: f(x, w, b))(w),
        "hessian (forward over reverse)": torch.func.hessian(lambda w: loss(x1, w, b))(w),
        "jacrev of jacrev": torch.func.jacrev(torch.func.jacrev(lambda x: loss(x, w, b)))(x_small),
        "jacrev of jacfwd": torch.func.jacrev(torch.func.jacfwd(lambda w: loss(x1, w, b)))(w),
        "jacfwd of jacfwd": torch.func.jacfwd(torch.func.jacfwd(lambda w: loss(x1, w, b)))(w),
        # mixed: the input-weight cross term, which nested forward levels lose through an
        # autograd.Function's jvp
        "jacfwd of jacfwd, x then w": torch.func.jacfwd(torch.func.jacfwd(loss, argnums=0), argnums=1)(x_small, w, b),
        "jacrev of jacfwd, x then w": torch.func.jacrev(torch.func.jacfwd(loss, argnums=0), argnums=1)(x_small, w, b),
        "jacfwd of jacrev, x then w": torch.func.jacfwd(torch.func.jacrev(loss, argnums=0), argnums=1)(x_small, w, b),
        "jacrev of jacrev, x then w": torch.func.jacrev(torch.func.jacrev(loss, argnums=0), argnums=1)(x_small, w, b),
        "vmap of grad": torch.func.vmap(torch.func.grad(lambda xi: loss(xi.unsqueeze(0), w, b)))(x),
    }
    with fwAD.dual_level():
        y = f(fwAD.make_dual(x, tangents[0]), fwAD.make_dual(w, tangents[1]), b)
        result["forward_ad"] = fwAD.unpack_dual(y).tangent
    return result


@pytest.mark.parametrize("groups,cin,cout,stride,layout", LAYERS)
@pytest.mark.parametrize("device", devices())
def test_transforms_match_conv2d(groups, cin, cout, stride, layout, device):
    x = torch.randn(2, cin, 5, 6, dtype=torch.float64, device=device).contiguous(memory_format=layout)
    w = torch.randn(cout, cin // groups, 5, dtype=torch.float64, device=device)
    b = torch.randn(cout, dtype=torch.float64, device=device)
    tangents = (torch.randn_like(x), torch.randn_like(w), torch.randn_like(b))
    got = derivatives(ours, x, w, b, tangents, groups, stride)
    want = derivatives(dense, x, w, b, tangents, groups, stride)
    for name in want:
        g, e = got[name], want[name]
        for a, r in zip(g if isinstance(g, tuple) else (g,), e if isinstance(e, tuple) else (e,)):
            assert a is not None and a.abs().max() > 0, name  # a silent zero tangent was the bug
            torch.testing.assert_close(a, r, rtol=1e-7, atol=1e-9, msg=name)


def test_each_transform_takes_its_path():
    # The ordinary path calls the op directly (no autograd.Function overhead per layer); forward
    # mode anywhere takes the reference implementation; other transforms the ops' Functions.
    assert route() == "op"
    with fwAD.dual_level():
        assert route() == "reference"
    seen = []
    probe = lambda x: seen.append(route()) or x.sum()
    torch.func.grad(probe)(torch.randn(2))
    torch.func.vmap(probe)(torch.randn(2, 2))
    torch.func.jvp(probe, (torch.randn(2),), (torch.randn(2),))
    torch.func.jacfwd(torch.func.grad(probe))(torch.randn(2))
    torch.func.jacrev(torch.func.grad(probe))(torch.randn(2))
    assert seen == ["function", "function", "reference", "reference", "function"]
