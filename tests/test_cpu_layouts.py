"""NCHW inputs on the CPU: the kernels' NCHW <-> channels_last transpose (every layer), the
depthwise slabs (NCHW depthwise layers) and the row bands (NCHW dense and grouped layers), against
the float64 oracle and against the same layer given in channels_last, which must produce the same
bits for the output and the input gradient."""

import pytest
import torch

import skeleton_cuda
from oracle import TOLERANCE, check_against_oracle, config_id, cpu_isa_supported, forward_and_grads, make_tensors

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")


def layer(n, cin, cout, h, w, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True):
    return dict(n=n, cin=cin, cout=cout, h=h, w=w, stride=stride, padding=padding, dilation=dilation, groups=groups,
                bias=bias)


# Depthwise layers: slabs of 16 channels with a partial last one (40 on a 30 x 29 plane); two slabs
# of a small plane, 256 channels and 44 (300 on 8 x 8, strided and dilated); input-gradient classes
# with few taps or none (stride 3 across); a single row; one image of one slab, split into row bands
# (strided and dilated down the rows: bands of the input-gradient classes, and halo rows); a plane
# too large for a slab (257 x 256, above 65,536 pixels: the whole tensor is converted). Dense and grouped layers: tiles of the
# transpose with edges both ways, and 3 input channels (a network's first layer, all edge), in one
# or two bands per image; six bands per image with dilated halo rows, over 16 items, so the weight
# gradient's slots sum several bands each; a grouped layer of 6 channels per group (grad_output padded
# to whole blocks in the bands) in bands of strided input-gradient classes; a weight 8 images large,
# whose forward pass and input gradient run in bands and whose weight gradient converts; and one
# 27 images large, whose passes all convert the whole tensors.
LAYERS = [
    layer(2, 40, 40, 30, 29, groups=40),
    layer(1, 300, 300, 8, 8, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=300, bias=False),
    layer(3, 17, 17, 5, 40, stride=(1, 3), padding=(0, 3), dilation=(2, 1), groups=17),
    layer(2, 24, 24, 1, 33, groups=24),
    layer(1, 16, 16, 45, 20, stride=(2, 1), padding=(2, 1), dilation=(2, 1), groups=16),
    layer(1, 2, 2, 257, 256, stride=(2, 1), groups=2),
    layer(2, 19, 21, 13, 21),
    layer(1, 12, 18, 11, 14, stride=(2, 2), groups=3, bias=False),
    layer(2, 3, 16, 17, 17),
    layer(3, 8, 24, 48, 20, padding=(2, 1), dilation=(2, 1)),
    layer(2, 6, 12, 40, 20, stride=(2, 1), groups=2, bias=False),
    layer(2, 32, 32, 4, 5),
    layer(2, 32, 32, 2, 3),
]

# Each instruction set's transpose for 4-, 2- and 8-byte elements (float32, bfloat16 and float16,
# float64), the float16 conversions of the depthwise kernels, and the best kernels in every dtype.
CASES = [("avx512", torch.float32), ("avx2", torch.float32), ("generic", torch.float32),
         ("avx2", torch.bfloat16), ("generic", torch.bfloat16), ("avx2", torch.float16), ("generic", torch.float16),
         ("avx2", torch.float64), ("generic", torch.float64),
         (None, torch.bfloat16), (None, torch.float16), (None, torch.float64)]


def select(isa, cpu_isa):
    if isa is not None:
        if not cpu_isa_supported(isa):
            pytest.skip(f"this CPU lacks {isa}")
        cpu_isa(isa)


@pytest.mark.parametrize("config", LAYERS, ids=config_id)
@pytest.mark.parametrize("isa,dtype", CASES, ids=[f"{isa or 'best'}-{str(d)[6:]}" for isa, d in CASES])
def test_nchw_against_oracle(isa, dtype, config, cpu_isa):
    select(isa, cpu_isa)
    out, _ = check_against_oracle(skeleton_cuda.skeleton_conv2d, config, dtype, memory_format=torch.contiguous_format)
    assert out.is_contiguous()


@pytest.mark.parametrize("config", LAYERS, ids=config_id)
@pytest.mark.parametrize("isa,dtype", CASES, ids=[f"{isa or 'best'}-{str(d)[6:]}" for isa, d in CASES])
def test_nchw_same_bits_as_channels_last(isa, dtype, config, cpu_isa):
    select(isa, cpu_isa)
    x, weight, bias = make_tensors(config, dtype)
    out, grad_output, grads = forward_and_grads(skeleton_cuda.skeleton_conv2d, x, weight, bias, config)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out_cl, _, grads_cl = forward_and_grads(skeleton_cuda.skeleton_conv2d, x_cl, weight, bias, config,
                                            grad_output.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous() and grads[0].is_contiguous()
    assert torch.equal(out, out_cl)
    assert torch.equal(grads[0], grads_cl[0])
    # The weight and bias gradients sum over pixels in another order (per slab or band, per image).
    rtol, atol = TOLERANCE[dtype]
    for grad, grad_cl in zip(grads[1:], grads_cl[1:]):
        if grad is not None:
            scale = max(grad_cl.abs().max().item(), 1.0)
            torch.testing.assert_close(grad.double(), grad_cl.double(), rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("config", [LAYERS[0], LAYERS[1], LAYERS[5], LAYERS[9], LAYERS[10]], ids=config_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_nchw_bits_do_not_depend_on_threads(dtype, config):
    x, weight, bias = make_tensors(config, dtype)
    first = forward_and_grads(skeleton_cuda.skeleton_conv2d, x, weight, bias, config)
    threads = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            again = forward_and_grads(skeleton_cuda.skeleton_conv2d, x, weight, bias, config, first[1])
            assert torch.equal(first[0], again[0])
            for a, b in zip(first[2], again[2]):
                assert (a is None and b is None) or torch.equal(a, b)
    finally:
        torch.set_num_threads(threads)
