"""Bad input gets a clear error that names the argument and what was expected."""

import pytest
import torch

import skeleton_cuda
from skeleton_cuda import SkeletonConv2d, skeleton_conv2d

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")

x = torch.randn(2, 4, 8, 8)
w = torch.randn(6, 4, 5)

CASES = [
    ("dense 3x3 weight", lambda: skeleton_conv2d(x, torch.randn(6, 4, 3, 3)), r"dense 3x3 weight.*dense_to_skeleton_weight"),
    ("9-tap weight", lambda: skeleton_conv2d(x, torch.randn(6, 4, 9)), r"dense 3x3 weight"),
    ("wrong tap count", lambda: skeleton_conv2d(x, torch.randn(6, 4, 4)), r"weight of shape \(C_out, C_in / groups, 5\)"),
    ("channel mismatch", lambda: skeleton_conv2d(x, torch.randn(6, 3, 5)), r"weight.size\(1\) = C_in / groups = 4"),
    ("groups not dividing input", lambda: skeleton_conv2d(x, torch.randn(6, 1, 5), groups=3), r"input channels \(4\).*divisible by groups \(3\)"),
    ("groups not dividing output", lambda: skeleton_conv2d(x, torch.randn(6, 1, 5), groups=4), r"C_out \(6\).*divisible by groups \(4\)"),
    ("mixed dtypes", lambda: skeleton_conv2d(x, w.double()), r"weight to have the input's dtype"),
    ("bias dtype", lambda: skeleton_conv2d(x, w, torch.randn(6, dtype=torch.float64)), r"bias to have the input's dtype"),
    ("bias shape", lambda: skeleton_conv2d(x, w, torch.randn(5)), r"bias of shape \(6\)"),
    ("integer input", lambda: skeleton_conv2d(x.long(), w.long()), r"floating-point input"),
    ("stride 0", lambda: skeleton_conv2d(x, w, stride=0), r"stride >= 1"),
    ("dilation 0", lambda: skeleton_conv2d(x, w, dilation=(1, 0)), r"dilation >= 1"),
    ("negative padding", lambda: skeleton_conv2d(x, w, padding=-1), r"padding >= 0"),
    ("groups 0", lambda: skeleton_conv2d(x, w, groups=0), r"groups >= 1"),
    ("empty output", lambda: skeleton_conv2d(torch.randn(1, 4, 2, 8), w, padding=0), r"output would be empty"),
    ("5-D input", lambda: skeleton_conv2d(x[None], w), r"input to be 4-D"),
    ("2-D input", lambda: skeleton_conv2d(x[0, 0], w), r"input to be 4-D"),
    ("same with stride", lambda: skeleton_conv2d(x, w, stride=2, padding="same"), r"padding='same'.*strided"),
    ("unknown padding string", lambda: skeleton_conv2d(x, w, padding="full"), r"padding must be"),
    ("stride triple", lambda: skeleton_conv2d(x, w, stride=(1, 1, 1)), r"stride to be an int or a pair"),
]


@pytest.mark.parametrize("call,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_functional_errors(call, pattern):
    with pytest.raises((RuntimeError, ValueError, TypeError), match=pattern):
        call()


def test_op_called_directly_checks_argument_lengths():
    with pytest.raises(RuntimeError, match="stride to have 2 values"):
        torch.ops.skeleton_cuda.skeleton_conv2d(x, w, None, [1], [1, 1], [1, 1], 1)


def test_backward_op_checks_grad_output():
    with pytest.raises(RuntimeError, match=r"expected grad_output of shape \(2, 6, 8, 8\)"):
        torch.ops.skeleton_cuda.skeleton_conv2d_backward(
            torch.randn(2, 6, 7, 8), x, w, [1, 1], [1, 1], [1, 1], 1, [True, True, True]
        )


def test_compiled_path_reports_the_same_errors():
    torch._dynamo.reset()
    fn = torch.compile(lambda a, b: skeleton_conv2d(a, b), fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=r"C_in / groups = 4"):
        fn(x, torch.randn(6, 3, 5))


MODULE_CASES = [
    ("kernel 5", lambda: SkeletonConv2d(4, 4, kernel_size=5), r"kernel_size must be 3"),
    ("groups", lambda: SkeletonConv2d(4, 6, groups=4), r"out_channels \(6\) must be divisible by groups \(4\)"),
    ("padding mode", lambda: SkeletonConv2d(4, 4, padding_mode="mirror"), r"padding_mode must be one of"),
    ("same stride", lambda: SkeletonConv2d(4, 4, stride=2, padding="same"), r"padding='same'"),
    ("from 1x1", lambda: SkeletonConv2d.from_conv2d(torch.nn.Conv2d(4, 4, 1)), r"only 3x3 convolutions"),
    ("from linear", lambda: SkeletonConv2d.from_conv2d(torch.nn.Linear(4, 4)), r"expected an nn.Conv2d"),
]


@pytest.mark.parametrize("call,pattern", [c[1:] for c in MODULE_CASES], ids=[c[0] for c in MODULE_CASES])
def test_module_errors(call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()


def test_unsupported_cpu_isa_request_is_refused(monkeypatch):
    monkeypatch.setenv("SKELETON_CUDA_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="SKELETON_CUDA_CPU_ISA must be one of"):
        skeleton_conv2d(x, w)
