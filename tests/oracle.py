"""The float64 oracle and random layer configurations shared by the tests.

The oracle is the op's definition: a dense 3x3 convolution whose four corners are zero, run by
F.conv2d in float64 with autograd giving every gradient.
"""

import os
import random

import pytest
import torch

import skeleton_cuda
from skeleton_cuda.reference import skeleton_conv2d_reference

# (rtol, atol as a fraction of the largest reference value) per dtype of the op's inputs, and for
# float32 computed on TF32 tensor cores (10 mantissa bits per operand, like float16's; float32 sums).
TOLERANCE = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-4, 2e-5),
    torch.float16: (5e-3, 2e-3),
    torch.bfloat16: (3e-2, 1e-2),
    "tf32": (5e-3, 2e-3),
}


def devices():
    """The devices a device-generic test runs on: the CPU, and CUDA as a case that is skipped
    without a GPU (or without the CUDA kernels), so that a GPU machine runs it too."""
    no_gpu = not (torch.cuda.is_available() and skeleton_cuda.has_cuda_kernels())
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(no_gpu, reason="needs a CUDA GPU"))]


def cpu_isa_supported(isa):
    """Whether this CPU runs the CPU kernel family `isa` (SKELETON_CUDA_CPU_ISA's values)."""
    import skeleton_cuda

    old = os.environ.get("SKELETON_CUDA_CPU_ISA")
    os.environ["SKELETON_CUDA_CPU_ISA"] = isa
    try:
        skeleton_cuda.cpu_kernel_isa()
        return True
    except RuntimeError:
        return False
    finally:
        if old is None:
            del os.environ["SKELETON_CUDA_CPU_ISA"]
        else:
            os.environ["SKELETON_CUDA_CPU_ISA"] = old


def random_configs(seed, count, max_channels=24, max_size=13):
    """Valid layer configurations (non-empty output) covering strides, paddings, dilations,
    groups (grouped and depthwise), odd sizes and batch sizes."""
    rng = random.Random(seed)
    configs = []
    while len(configs) < count:
        kind = rng.choice(["dense", "dense", "grouped", "depthwise"])
        groups = 1
        if kind == "grouped":
            groups = rng.choice([2, 3, 4])
            cin = groups * rng.randint(1, max_channels // groups)
            cout = groups * rng.randint(1, max_channels // groups)
        elif kind == "depthwise":
            cin = cout = groups = rng.randint(1, max_channels)
        else:
            cin, cout = rng.randint(1, max_channels), rng.randint(1, max_channels)
        config = dict(
            n=rng.choice([1, 2, 3]),
            cin=cin,
            cout=cout,
            h=rng.randint(1, max_size),
            w=rng.randint(1, max_size),
            stride=(rng.randint(1, 3), rng.randint(1, 3)),
            padding=(rng.randint(0, 3), rng.randint(0, 3)),
            dilation=(rng.randint(1, 3), rng.randint(1, 3)),
            groups=groups,
            bias=rng.random() < 0.7,
        )
        out = [
            (size + 2 * p - 2 * d - 1) // s + 1 if size + 2 * p >= 2 * d + 1 else 0
            for size, s, p, d in zip((config["h"], config["w"]), config["stride"], config["padding"], config["dilation"])
        ]
        if min(out) > 0:
            configs.append(config)
    return configs


def tensor_core_configs(seed, count, unit=8):
    """Layer configurations the tensor cores take: channels per group multiples of `unit` (8 for every
    dtype, 4 for float32 only), strides 1-3, paddings 0-2, dilations 1-3, groups 1/2/4, odd spatial
    sizes, non-empty output."""
    rng = random.Random(seed)
    configs = []
    while len(configs) < count:
        groups = rng.choice([1, 2, 4])
        config = dict(
            n=rng.choice([1, 2, 3]),
            cin=groups * unit * rng.randint(1, 4),
            cout=groups * unit * rng.randint(1, 4),
            h=rng.randrange(1, 24, 2),
            w=rng.randrange(1, 24, 2),
            stride=(rng.randint(1, 3), rng.randint(1, 3)),
            padding=(rng.randint(0, 2), rng.randint(0, 2)),
            dilation=(rng.randint(1, 3), rng.randint(1, 3)),
            groups=groups,
            bias=rng.random() < 0.7,
        )
        if all(
            size + 2 * p >= 2 * d + 1
            for size, p, d in zip((config["h"], config["w"]), config["padding"], config["dilation"])
        ):
            configs.append(config)
    return configs


def layer(n, cin, cout, h, w, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True):
    """One layer configuration, as random_configs makes them."""
    return dict(n=n, cin=cin, cout=cout, h=h, w=w, stride=stride, padding=padding, dilation=dilation, groups=groups,
                bias=bias)


# The CPU kernel families a test of one kernel shape runs it in, as (SKELETON_CUDA_CPU_ISA or None
# for the best this CPU has, dtype): the best kernels (AVX512_BF16's pairs on bfloat16) and each
# family's float32, float64 and float16 paths.
CPU_KERNEL_CASES = [(None, torch.float32), (None, torch.bfloat16), (None, torch.float16), (None, torch.float64),
                    ("avx512", torch.float32), ("avx512", torch.bfloat16), ("avx2", torch.float32),
                    ("avx2", torch.float64), ("generic", torch.float32), ("generic", torch.bfloat16),
                    ("generic", torch.float64)]
CPU_KERNEL_CASE_IDS = [f"{i or 'best'}-{str(d)[6:]}" for i, d in CPU_KERNEL_CASES]


def select_cpu_isa(isa, cpu_isa):
    """Selects kernel family `isa` with the cpu_isa fixture (None: the best), or skips the test."""
    if isa is not None:
        if not cpu_isa_supported(isa):
            pytest.skip(f"this CPU lacks {isa}")
        cpu_isa(isa)


def config_id(config):
    return "n{n}-c{cin}x{cout}-{h}x{w}-s{stride[0]}{stride[1]}-p{padding[0]}{padding[1]}-d{dilation[0]}{dilation[1]}-g{groups}".format(
        **config
    )


def make_tensors(config, dtype, device="cpu", memory_format=torch.contiguous_format, noncontiguous=False, seed=0):
    """Input, weight, bias (or None) and a grad_output for `config`."""
    generator = torch.Generator().manual_seed(seed)
    c = config

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    if noncontiguous:
        # Every other column of a wider tensor, and a weight read through a transpose.
        x = randn(c["n"], c["cin"], c["h"], 2 * c["w"])[..., ::2]
        weight = randn(c["cin"] // c["groups"], c["cout"], 5).transpose(0, 1)
    else:
        x = randn(c["n"], c["cin"], c["h"], c["w"])
        weight = randn(c["cout"], c["cin"] // c["groups"], 5)
    bias = randn(c["cout"]) if c["bias"] else None
    x = x.to(device=device, dtype=dtype)
    if memory_format is torch.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.to(device=device, dtype=dtype)
    bias = bias.to(device=device, dtype=dtype) if bias is not None else None
    return x, weight, bias


def forward_and_grads(fn, x, weight, bias, config, grad_output=None):
    """Runs fn(input, weight, bias, stride, padding, dilation, groups) and its backward; returns
    (output, grad_output, [grad_input, grad_weight, grad_bias])."""
    x = x.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    if bias is not None:
        bias = bias.detach().requires_grad_()
    out = fn(x, weight, bias, config["stride"], config["padding"], config["dilation"], config["groups"])
    if grad_output is None:
        generator = torch.Generator().manual_seed(1)
        grad_output = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.device, out.dtype)
    out.backward(grad_output)
    grads = [x.grad, weight.grad, bias.grad if bias is not None else None]
    return out, grad_output, grads


def oracle(x, weight, bias, config, grad_output):
    """Output and gradients of the float64 dense-with-zero-corners convolution, on the CPU."""
    as64 = lambda t: None if t is None else t.detach().to("cpu", torch.float64)
    return forward_and_grads(
        skeleton_conv2d_reference, as64(x), as64(weight), as64(bias), config, as64(grad_output)
    )


def assert_close_to_oracle(actual, expected, dtype, what, precision=None):
    """precision: the TOLERANCE key when it is not the dtype ("tf32")."""
    rtol, atol_fraction = TOLERANCE[precision or dtype]
    expected = expected.detach().cpu()
    actual = actual.detach().cpu().to(torch.float64)
    atol = atol_fraction * max(expected.abs().max().item(), 1.0) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def check_against_oracle(
    fn, config, dtype, device="cpu", memory_format=torch.contiguous_format, noncontiguous=False, precision=None
):
    """The op's output and all three gradients agree with the float64 oracle (within the tolerance of
    `precision`, default the dtype's); returns the output."""
    x, weight, bias = make_tensors(config, dtype, device, memory_format, noncontiguous)
    out, grad_output, grads = forward_and_grads(fn, x, weight, bias, config)
    ref_out, _, ref_grads = oracle(x, weight, bias, config, grad_output)
    assert out.dtype == dtype and out.device == x.device
    assert out.shape == ref_out.shape
    assert_close_to_oracle(out, ref_out, dtype, "output", precision)
    for name, grad, ref in zip(("grad_input", "grad_weight", "grad_bias"), grads, ref_grads):
        if ref is None:
            assert grad is None
            continue
        assert grad.shape == ref.shape, name
        assert_close_to_oracle(grad, ref, dtype, name, precision)
    return out, x


def check_layer_without_channels(cin, cout, dtype, device="cpu", memory_format=torch.contiguous_format):
    """A layer of 0 input or 0 output channels (the argument checks accept both): the output is the
    bias alone, grad_input and grad_weight zeros of their shapes, grad_bias the sum of grad_output."""
    x = torch.randn(2, cin, 6, 5, device=device).to(dtype).contiguous(memory_format=memory_format).requires_grad_()
    weight = torch.randn(cout, cin, 5, device=device).to(dtype).requires_grad_()
    bias = torch.randn(cout, device=device).to(dtype).requires_grad_()
    y = skeleton_cuda.skeleton_conv2d(x, weight, bias)
    assert y.shape == (2, cout, 6, 5)
    assert torch.equal(y, bias.view(1, -1, 1, 1).expand(2, cout, 6, 5))
    grad_output = torch.randn_like(y)
    y.backward(grad_output)
    assert x.grad.shape == x.shape and not x.grad.any()
    assert weight.grad.shape == weight.shape and not weight.grad.any()
    torch.testing.assert_close(bias.grad.float(), grad_output.float().sum((0, 2, 3)), rtol=1e-2, atol=1e-2)


def check_input_without_rows(groups, device="cpu", memory_format=torch.contiguous_format):
    """An input of 0 rows that padding 2 turns into a 2-row output: the bias alone, grad_input
    empty, grad_weight zeros, grad_bias the sum of grad_output. (F.conv2d, the oracle, refuses such
    an input on the CPU, so the answer is written out.) 8 channels, dense (groups 1) or depthwise."""
    x = torch.empty(1, 8, 0, 5, device=device).contiguous(memory_format=memory_format)
    w = torch.randn(8, 8 // groups, 5, device=device)
    b = torch.randn(8, device=device)
    args = ([1, 1], [2, 2], [1, 1], groups)
    y = torch.ops.skeleton_cuda.skeleton_conv2d(x, w, b, *args)
    assert torch.equal(y, b.view(1, 8, 1, 1).expand(1, 8, 2, 7))
    dy = torch.randn(1, 8, 2, 7, device=device)
    dx, dw, db = torch.ops.skeleton_cuda.skeleton_conv2d_backward(dy, x, w, *args, [True, True, True])
    assert dx.shape == x.shape
    assert torch.equal(dw, torch.zeros_like(w))
    torch.testing.assert_close(db, dy.sum((0, 2, 3)))
