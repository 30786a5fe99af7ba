"""CPU kernels against the float64 oracle: output and all three gradients."""

import pytest
import torch

import skeleton_cuda
from oracle import (check_against_oracle, check_input_without_rows, check_layer_without_channels, config_id,
                    cpu_isa_supported, random_configs)

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")

ISAS = ["avx512", "avx2", "generic"]


RANDOM = random_configs(seed=2024, count=24)

# Shapes that reach every code path of the kernels: wide blocks (64 output channels), channel
# counts that leave tails in the block and in the register tile, more pixels than one work item
# or one weight-gradient pass, depthwise with vector and scalar channel tails. 95 depthwise
# channels take every block width of every instruction set (AVX-512: 4 vectors, 1, scalars; AVX2
# and the baseline: 2, 1, scalars), and rows of 29 and 40 points several interior chunks of 8 with a
# remainder, behind border columns whose taps leave the image (the last: strided residue classes of
# 1 and 2 taps in the input gradient, and columns no tap reaches).
LARGER = [
    dict(n=2, cin=64, cout=64, h=15, w=15, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(n=1, cin=70, cout=100, h=12, w=13, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(n=2, cin=48, cout=40, h=11, w=9, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=False),
    dict(n=3, cin=3, cout=17, h=20, w=20, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(n=2, cin=70, cout=70, h=17, w=16, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=70, bias=True),
    dict(n=1, cin=33, cout=33, h=9, w=21, stride=(2, 3), padding=(1, 2), dilation=(1, 2), groups=33, bias=False),
    dict(n=2, cin=16, cout=32, h=7, w=7, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=16, bias=True),
    dict(n=1, cin=8, cout=200, h=6, w=30, stride=(3, 1), padding=(0, 3), dilation=(1, 3), groups=1, bias=True),
    dict(n=2, cin=95, cout=95, h=9, w=29, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=95, bias=True),
    dict(n=1, cin=95, cout=95, h=12, w=40, stride=(2, 2), padding=(0, 3), dilation=(2, 3), groups=95, bias=False),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("config", RANDOM + LARGER, ids=config_id)
def test_float32_each_isa(isa, config, cpu_isa):
    if not cpu_isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    cpu_isa(isa)
    index = (RANDOM + LARGER).index(config)
    memory_format = torch.channels_last if index % 2 else torch.contiguous_format
    out, x = check_against_oracle(
        skeleton_cuda.skeleton_conv2d, config, torch.float32, memory_format=memory_format, noncontiguous=index % 3 == 0
    )
    if memory_format is torch.channels_last and config["cout"] > 1 and out.shape[2] * out.shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("config", random_configs(seed=7, count=16) + LARGER[:3], ids=config_id)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_float64(config, memory_format):
    check_against_oracle(skeleton_cuda.skeleton_conv2d, config, torch.float64, memory_format=memory_format)


# bfloat16 on the best ISA (native kernels where the CPU has AVX512_BF16, tests/test_cpu_bfloat16.py)
# and computed in float32 (the avx2 kernels, which every other CPU runs).
@pytest.mark.parametrize("dtype,isa", [(torch.bfloat16, None), (torch.bfloat16, "avx2"), (torch.float16, None)],
                         ids=["bfloat16", "bfloat16-in-float32", "float16"])
@pytest.mark.parametrize("config", random_configs(seed=11, count=8) + LARGER[:2], ids=config_id)
def test_reduced_precision(dtype, isa, config, cpu_isa):
    if isa is not None:
        if not cpu_isa_supported(isa):
            pytest.skip(f"this CPU lacks {isa}")
        cpu_isa(isa)
    check_against_oracle(skeleton_cuda.skeleton_conv2d, config, dtype, memory_format=torch.channels_last)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_output_keeps_input_memory_format(memory_format):
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=memory_format)
    w = torch.randn(16, 8, 5)
    out = skeleton_cuda.skeleton_conv2d(x, w)
    assert out.is_contiguous(memory_format=memory_format)
    grad_input, _, _ = torch.ops.skeleton_cuda.skeleton_conv2d_backward(
        torch.ones_like(out), x, w, [1, 1], [1, 1], [1, 1], 1, [True, True, False]
    )
    assert grad_input.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("groups", [1, 4], ids=["dense", "depthwise"])
def test_empty_batch(groups):
    x = torch.randn(0, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 4 // groups, 5, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    out = skeleton_cuda.skeleton_conv2d(x, w, b, groups=groups)
    assert out.shape == (0, 4, 8, 8)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w))
    assert torch.equal(b.grad, torch.zeros_like(b))


def test_backward_output_mask():
    x = torch.randn(2, 6, 7, 7)
    w = torch.randn(5, 6, 5)
    gy = torch.randn(2, 5, 7, 7)
    full = torch.ops.skeleton_cuda.skeleton_conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 1, [True, True, True])
    for mask in ([True, False, False], [False, True, False], [False, False, True]):
        grads = torch.ops.skeleton_cuda.skeleton_conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 1, mask)
        for wanted, grad, reference in zip(mask, grads, full):
            if wanted:
                assert torch.equal(grad, reference)
            else:
                assert grad.shape == (0,)


def test_unbatched_input():
    x = torch.randn(3, 10, 11)
    w = torch.randn(4, 3, 5)
    out = skeleton_cuda.skeleton_conv2d(x, w, stride=2)
    assert out.shape == (4, 5, 6)
    torch.testing.assert_close(out, skeleton_cuda.skeleton_conv2d(x[None], w, stride=2)[0])


@pytest.mark.parametrize("padding", ["same", "valid", 0, (2, 1)])
def test_padding_forms(padding):
    x = torch.randn(1, 4, 9, 8, dtype=torch.float64)
    w = torch.randn(6, 4, 5, dtype=torch.float64)
    out = skeleton_cuda.skeleton_conv2d(x, w, dilation=2, padding=padding)
    ref = torch.nn.functional.conv2d(x, skeleton_cuda.skeleton_to_dense_weight(w), dilation=2, padding=padding)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("channels", [(0, 4), (4, 0)], ids=["no-input-channels", "no-output-channels"])
def test_layers_without_channels(channels, dtype, memory_format):
    check_layer_without_channels(*channels, dtype, memory_format=memory_format)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("groups", [1, 8], ids=["dense", "depthwise"])
def test_input_without_rows(groups, memory_format):
    # tests/test_cuda.py runs the same check on the GPU.
    check_input_without_rows(groups, memory_format=memory_format)


@pytest.mark.parametrize("groups", [1, 2, 8], ids=["dense", "grouped", "depthwise"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_stride_beyond_the_image(groups, dtype, memory_format):
    # Legal (a 1 x 1 output). The input gradient runs one tap map per residue class of the stride
    # that holds pixels: looping over all stride_h x stride_w of them took 4 s at stride 4096.
    config = dict(n=2, cin=8, cout=8, h=3, w=5, stride=(1 << 20, 1 << 19), padding=(1, 1), dilation=(1, 1),
                  groups=groups, bias=True)
    check_against_oracle(skeleton_cuda.skeleton_conv2d, config, dtype, memory_format=memory_format)
