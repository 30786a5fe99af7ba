"""The op as PyTorch sees it: gradcheck, opcheck (schemas, fake kernels, autograd registration),
torch.compile(fullgraph=True) without recompilation, autocast."""

import pytest
import torch

import skeleton_cuda
from skeleton_cuda import SkeletonConv2d

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")

GRADCHECK_CONFIGS = [
    # (n, cin, cout, h, w, stride, padding, dilation, groups, bias)
    (2, 3, 4, 6, 5, (1, 1), (1, 1), (1, 1), 1, True),
    (1, 4, 6, 7, 8, (2, 1), (0, 2), (1, 2), 2, False),
    (2, 5, 5, 6, 7, (2, 2), (1, 1), (1, 1), 5, True),
    (1, 2, 3, 9, 5, (3, 2), (2, 0), (2, 1), 1, True),
]


@pytest.mark.parametrize("config", GRADCHECK_CONFIGS)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_gradcheck(config, memory_format):
    n, cin, cout, h, w, stride, padding, dilation, groups, has_bias = config
    x = torch.randn(n, cin, h, w, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    weight = torch.randn(cout, cin // groups, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(cout, dtype=torch.float64, requires_grad=True) if has_bias else None

    def fn(x, weight, bias):
        return skeleton_cuda.skeleton_conv2d(x, weight, bias, stride, padding, dilation, groups)

    assert torch.autograd.gradcheck(fn, (x, weight, bias))


def _sample_args(memory_format=torch.contiguous_format, requires_grad=True):
    x = torch.randn(2, 6, 9, 8).contiguous(memory_format=memory_format).requires_grad_(requires_grad)
    w = torch.randn(4, 3, 5, requires_grad=requires_grad)
    b = torch.randn(4, requires_grad=requires_grad)
    return x, w, b


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck_forward(memory_format, with_bias):
    x, w, b = _sample_args(memory_format)
    args = (x, w, b if with_bias else None, [2, 1], [1, 2], [1, 2], 2)
    torch.library.opcheck(torch.ops.skeleton_cuda.skeleton_conv2d.default, args)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("mask", [[True, True, True], [True, False, False], [False, True, True]])
def test_opcheck_backward(memory_format, mask):
    x, w, _ = _sample_args(memory_format, requires_grad=False)
    grad_output = torch.randn(2, 4, 5, 8).contiguous(memory_format=memory_format)
    args = (grad_output, x, w, [2, 1], [1, 2], [1, 2], 2, mask)
    torch.library.opcheck(torch.ops.skeleton_cuda.skeleton_conv2d_backward.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_opcheck_depthwise(memory_format, dtype):
    # NCHW depthwise layers take their own CPU path (slabs), and 16-bit ones run on their own bits;
    # their outputs' layout must match the fake kernels' (a transposed bfloat16 grad_weight did not).
    x = torch.randn(2, 6, 9, 8).to(dtype).contiguous(memory_format=memory_format)
    w, b = torch.randn(6, 1, 5).to(dtype), torch.randn(6).to(dtype)
    torch.library.opcheck(torch.ops.skeleton_cuda.skeleton_conv2d.default, (x, w, b, [2, 1], [1, 2], [1, 2], 6))
    grad_output = torch.randn(2, 6, 5, 8).to(dtype).contiguous(memory_format=memory_format)
    torch.library.opcheck(torch.ops.skeleton_cuda.skeleton_conv2d_backward.default,
                          (grad_output, x, w, [2, 1], [1, 2], [1, 2], 6, [True, True, True]))


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = SkeletonConv2d(3, 8, stride=2)
        self.b = SkeletonConv2d(8, 8, groups=8, padding_mode="reflect")
        self.c = SkeletonConv2d(8, 4, dilation=2, padding="same", bias=False)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_compile_fullgraph_matches_eager_without_recompiling(memory_format):
    torch._dynamo.reset()
    net = _Net()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x1 = torch.randn(2, 3, 16, 16).contiguous(memory_format=memory_format)
    x2 = torch.randn(2, 3, 16, 16).contiguous(memory_format=memory_format)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for x in (x1, x2):
            xc = x.clone().requires_grad_()
            xe = x.clone().requires_grad_()
            out_c = compiled(xc)
            out_e = net(xe)
            torch.testing.assert_close(out_c, out_e)
            out_c.sum().backward()
            grads_c = [p.grad.clone() for p in net.parameters()]
            net.zero_grad()
            out_e.sum().backward()
            grads_e = [p.grad.clone() for p in net.parameters()]
            net.zero_grad()
            torch.testing.assert_close(xc.grad, xe.grad)
            for gc, ge in zip(grads_c, grads_e):
                torch.testing.assert_close(gc, ge)


def test_compile_inductor_cpu():
    torch._dynamo.reset()
    net = _Net()
    compiled = torch.compile(net, fullgraph=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(compiled(x), net(x), rtol=1e-4, atol=1e-5)


def test_autocast_cpu_runs_in_bfloat16_like_conv2d():
    x = torch.randn(2, 4, 8, 8)
    w = torch.randn(6, 4, 5, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = skeleton_cuda.skeleton_conv2d(x, w, b)
        dense = torch.nn.functional.conv2d(x, skeleton_cuda.skeleton_to_dense_weight(w), b, padding=1)
    assert out.dtype == dense.dtype == torch.bfloat16
    reference = skeleton_cuda.skeleton_conv2d(x.bfloat16(), w.bfloat16(), b.bfloat16())
    torch.testing.assert_close(out, reference)
    out.float().sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32
    assert b.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_empty_batch_grad_weight_is_contiguous_whatever_the_weight(dtype):
    # With no images the weight gradient is zeros; zeros_like(weight) kept a transposed weight's strides.
    weight = torch.randn(4, 6, 5).to(dtype).transpose(0, 1)  # (6, 4, 5), not contiguous
    x, grad_output = torch.randn(0, 4, 5, 5).to(dtype), torch.randn(0, 6, 5, 5).to(dtype)
    _, grad_weight, _ = torch.ops.skeleton_cuda.skeleton_conv2d_backward(
        grad_output, x, weight, [1, 1], [1, 1], [1, 1], 1, [True, True, True])
    assert grad_weight.shape == weight.shape and grad_weight.is_contiguous() and not grad_weight.any()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_compiled_mobilenet_block_trains_under_autocast(memory_format):
    # The AMP recipe on the CPU: float32 parameters, bfloat16 autocast, a depthwise layer between
    # dense ones, compiled with inductor, which checks every output's strides against the fake
    # kernels' (a bfloat16 depthwise grad_weight came back transposed and failed that check).
    torch._dynamo.reset()
    net = torch.nn.Sequential(SkeletonConv2d(4, 16), torch.nn.ReLU(), SkeletonConv2d(16, 16, groups=16),
                              torch.nn.ReLU(), SkeletonConv2d(16, 8, stride=2, bias=False))
    x = torch.randn(2, 4, 12, 12).contiguous(memory_format=memory_format)

    def step(model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().square().mean()
        loss.backward()
        grads = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        return loss, grads

    loss_c, grads_c = step(torch.compile(net, fullgraph=True))
    loss_e, grads_e = step(net)
    torch.testing.assert_close(loss_c, loss_e)
    for gc, ge in zip(grads_c, grads_e):
        assert gc.dtype == torch.float32
        torch.testing.assert_close(gc, ge)


@pytest.mark.parametrize("config", GRADCHECK_CONFIGS[:3])
def test_gradgradcheck(config):
    n, cin, cout, h, w, stride, padding, dilation, groups, has_bias = config
    x = torch.randn(n, cin, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(cout, cin // groups, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(cout, dtype=torch.float64, requires_grad=True) if has_bias else None

    def fn(x, weight, bias):
        return skeleton_cuda.skeleton_conv2d(x, weight, bias, stride, padding, dilation, groups)

    assert torch.autograd.gradgradcheck(fn, (x, weight, bias))


def test_gradient_penalty_matches_dense_reference():
    # The typical use of double backward: a penalty on the input gradient's norm.
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)

    def penalty(conv):
        (gx,) = torch.autograd.grad(conv(x, w).tanh().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), w)[0]

    ours = penalty(lambda x, w: skeleton_cuda.skeleton_conv2d(x, w))
    dense = penalty(lambda x, w: torch.nn.functional.conv2d(x, skeleton_cuda.skeleton_to_dense_weight(w), padding=1))
    torch.testing.assert_close(ours, dense)
