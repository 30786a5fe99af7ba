"""The CPU gather GEMM of layers that reduce over at most 4 channels per group: the forward pass of a
network's first layer (3 input channels) or of narrow groups, and the input gradient of layers with
at most 4 output channels per group. Their tiles reduce over the rows (tap, channel) as one flat
list, from the chunk's values copied into a buffer (csrc/cpu/tap_kernels_impl.h,
few_channel_gemm_items). Against the float64 oracle in every kernel family, dtype and layout; bit for
bit against PyTorch's rounding and its NaN in the AVX512_BF16 kernels."""

import pytest
import torch

import skeleton_cuda
from oracle import (CPU_KERNEL_CASE_IDS, CPU_KERNEL_CASES, check_against_oracle, config_id, cpu_isa_supported, layer,
                    select_cpu_isa)

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")
needs_avx512_bf16 = pytest.mark.skipif(
    not skeleton_cuda.has_compiled_ops() or not cpu_isa_supported("avx512_bf16"), reason="needs AVX512_BF16"
)

ops = torch.ops.skeleton_cuda


# Forward passes of k = 1, 2, 3 and 4 channels per group (5, 10, 15 and 20 flat rows; bfloat16 pads
# 5 and 15 to pairs), output channels filling one vector, less, and several blocks with an edge;
# grid rows shorter and longer than a chunk, and chunks that end mid-row; strides, paddings larger
# than a tap's reach (whole rows and columns of zeros), dilations; groups (each group's channels
# copied on their own, never the next group's).
FORWARD_LAYERS = [
    layer(2, 3, 64, 13, 11),
    layer(1, 3, 16, 40, 37, stride=(2, 1), padding=(2, 1), dilation=(2, 1)),
    layer(3, 1, 20, 9, 15, padding=(0, 2), bias=False),
    layer(4, 2, 5, 7, 6, stride=(1, 2)),
    layer(3, 4, 33, 12, 9, dilation=(1, 3), padding=(1, 3)),
    layer(2, 9, 69, 10, 10, groups=3),
    layer(1, 3, 17, 5, 90, stride=(3, 3), padding=(3, 0)),
    layer(2, 8, 6, 3, 4, padding=(3, 3), groups=2, bias=False),
]

# Input gradients of at most 4 output channels per group: 3 and 1 (bfloat16's odd rows), 4, and 2
# per group in 3 groups; strides 2 and 3, whose residue classes have 1 to 5 taps (and some none),
# with dilations that change which.
INPUT_GRAD_LAYERS = [
    layer(2, 16, 3, 9, 10),
    layer(2, 5, 1, 11, 8, stride=(2, 2), bias=False),
    layer(3, 24, 4, 13, 7, stride=(2, 1), dilation=(1, 2), padding=(1, 2)),
    layer(2, 12, 6, 10, 12, stride=(3, 3), groups=3),
    layer(1, 7, 3, 17, 19, stride=(2, 3), dilation=(2, 1), padding=(2, 1)),
]

def skeleton(x, w, b, stride, padding, dilation, groups):
    return ops.skeleton_conv2d(x, w, b, stride, padding, dilation, groups)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("isa,dtype", CPU_KERNEL_CASES, ids=CPU_KERNEL_CASE_IDS)
@pytest.mark.parametrize("config", FORWARD_LAYERS + INPUT_GRAD_LAYERS, ids=config_id)
def test_few_channel_gemms_match_the_oracle(config, isa, dtype, memory_format, cpu_isa):
    select_cpu_isa(isa, cpu_isa)
    check_against_oracle(skeleton, config, dtype, memory_format=memory_format)


def dense(w):
    return skeleton_cuda.skeleton_to_dense_weight(w.double())


@needs_avx512_bf16
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("cout", [64, 20], ids=["full-tiles", "edge-tiles"])
def test_first_layer_results_round_as_pytorch_rounds(cout, memory_format, cpu_isa):
    # As test_cpu_bfloat16's test of the general tiles: small integers make every product and sum
    # exact in float32, so PyTorch's rounding of the float64 result is the only right answer; the
    # bias puts most results where bfloat16 must round. 3 input channels: pairs of flat rows that
    # span two taps, and the last row partnered with zeros.
    cpu_isa("avx512_bf16")
    g = torch.Generator().manual_seed(cout)
    x = torch.randint(-8, 9, (2, 3, 9, 14), generator=g).to(torch.bfloat16).contiguous(memory_format=memory_format)
    w = torch.randint(-3, 4, (cout, 3, 5), generator=g).to(torch.bfloat16)
    b = torch.randint(256, 2048, (cout,), generator=g).to(torch.bfloat16)
    ref = torch.nn.functional.conv2d(x.double(), dense(w), b.double(), 1, 1)
    out = ops.skeleton_conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 1)
    assert (ref.abs() > 256).float().mean() > 0.9
    assert torch.equal(out.view(torch.int16), ref.to(torch.bfloat16).view(torch.int16))
    # The input gradient of a layer with 3 output channels (stride 2: residue classes of 1 to 4
    # taps), grad_output scaled so that the sums need rounding.
    w3 = torch.randint(-3, 4, (3, 24, 5), generator=g).to(torch.bfloat16)
    x3 = torch.randn(2, 24, 11, 12).to(torch.bfloat16).contiguous(memory_format=memory_format)
    gy = (torch.randint(-8, 9, (2, 3, 6, 6), generator=g) * 37).to(torch.bfloat16).contiguous(memory_format=memory_format)
    ref_dx = torch.nn.grad.conv2d_input(x3.shape, dense(w3), gy.double(), 2, 1)
    dx = ops.skeleton_conv2d_backward(gy, x3, w3, [2, 2], [1, 1], [1, 1], 1, [True, False, False])[0]
    assert (ref_dx.abs() > 256).float().mean() > 0.5
    assert torch.equal(dx.view(torch.int16), ref_dx.to(torch.bfloat16).view(torch.int16))


@needs_avx512_bf16
@pytest.mark.parametrize("cout", [16, 20], ids=["full-tiles", "edge-tiles"])
def test_first_layer_nan_results_are_pytorchs_nan(cout, cpu_isa):
    # A NaN with every payload bit set in one input channel of a 3-channel image: exactly the pixels
    # whose cross reads it are NaN, and that NaN is c10::BFloat16's, 0x7FC0.
    cpu_isa("avx512_bf16")
    x = torch.randn(1, 3, 6, 7).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.view(torch.int16)[0, 2, 2, 3] = 0x7FFF
    w = torch.randn(cout, 3, 5).to(torch.bfloat16)
    out = ops.skeleton_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)
    nan = torch.zeros(6, 7, dtype=torch.bool)
    nan[2, 3] = nan[1, 3] = nan[3, 3] = nan[2, 2] = nan[2, 4] = True
    assert torch.equal(out[0].isnan(), nan.expand(cout, 6, 7))
    assert (out[0][:, nan].view(torch.int16) == 0x7FC0).all()


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_layer_without_input_channels_gives_its_bias_bit_for_bit(dtype, memory_format):
    # Nothing to reduce (k = 0, outside these tiles): the output is the bias, subnormal values
    # included. The bfloat16 kernels round their sums with VCVTNEPS2BF16, which would flush those to
    # zero; a tile that sums nothing must round as PyTorch does. (With k >= 1, VDPBF16PS already
    # flushes a subnormal bias in its sums, as oneDNN's bfloat16 convolutions do.)
    x = torch.randn(2, 0, 5, 6).to(dtype).contiguous(memory_format=memory_format)
    w = torch.randn(4, 0, 5).to(dtype)
    b = torch.tensor([1e-39, -2e-39, 1.0, 3e-40]).to(dtype)
    assert (b[[0, 1, 3]] != 0).all()
    y = ops.skeleton_conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 1)
    assert torch.equal(y, b.view(1, -1, 1, 1).expand_as(y))  # compares values: a flushed subnormal is 0
