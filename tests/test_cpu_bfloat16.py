"""The native bfloat16 CPU kernels. Dense and grouped layers on AVX512_BF16 (the forward, input
gradient and weight gradient, csrc/cpu/tap_kernels_avx512_bf16.cpp): the float64 oracle, PyTorch's
rounding, channel pairs that never reach into the next group, and the path they take (skipped on
other CPUs). Depthwise layers, in bfloat16 and float16: test_cpu_depthwise_16bit.py."""

import pytest
import torch

import skeleton_cuda
from oracle import check_against_oracle, config_id, cpu_isa_supported, make_tensors, random_configs

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")
needs_avx512_bf16 = pytest.mark.skipif(
    not skeleton_cuda.has_compiled_ops() or not cpu_isa_supported("avx512_bf16"), reason="needs AVX512_BF16"
)

ops = torch.ops.skeleton_cuda

# Odd channels per group (the last pair's partner is zero), column counts that leave edge blocks
# of every width, more grid points than a chunk, strided residue classes with no tap.
SHAPES = [
    dict(n=2, cin=64, cout=64, h=15, w=15, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(n=1, cin=33, cout=100, h=12, w=13, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(n=2, cin=6, cout=20, h=9, w=11, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=False),
    dict(n=1, cin=21, cout=9, h=10, w=17, stride=(3, 1), padding=(0, 3), dilation=(1, 3), groups=3, bias=True),
    dict(n=3, cin=3, cout=17, h=20, w=20, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(n=1, cin=130, cout=48, h=6, w=7, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=False),
]
CONFIGS = SHAPES + [c for c in random_configs(seed=31, count=30) if c["groups"] != c["cin"]][:12]


@pytest.fixture
def native(cpu_isa):
    cpu_isa("avx512_bf16")


@needs_avx512_bf16
@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_matches_float64_oracle(config, memory_format):
    index = CONFIGS.index(config)
    out, _ = check_against_oracle(
        skeleton_cuda.skeleton_conv2d, config, torch.bfloat16, memory_format=memory_format, noncontiguous=index % 3 == 1
    )
    assert out.is_contiguous(memory_format=memory_format) or out.shape[2] * out.shape[3] == 1


@needs_avx512_bf16
@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cout", [48, 20], ids=["full-tiles", "edge-tiles"])
def test_results_round_as_pytorch_rounds(stride, cout):
    # Small integers: every product and sum is exact in float32, so the float64 result rounded by
    # PyTorch is the only right answer, bit for bit. The bias puts results between 256 and 2048,
    # where bfloat16 keeps steps of 2 to 16: most need rounding, ties included. 48 columns fill whole
    # register tiles (rounded in vectors); 20 leave edge tiles (rounded one by one).
    g = torch.Generator().manual_seed(stride)
    x = torch.randint(-3, 4, (2, 10, 5 * stride, 7), generator=g).to(torch.bfloat16)
    w = torch.randint(-3, 4, (cout, 10, 5), generator=g).to(torch.bfloat16)
    b = torch.randint(256, 2048, (cout,), generator=g).to(torch.bfloat16)
    ref = torch.nn.functional.conv2d(x.double(), skeleton_cuda.skeleton_to_dense_weight(w.double()), b.double(), stride, 1)
    out = ops.skeleton_conv2d(x, w, b, [stride] * 2, [1, 1], [1, 1], 1)
    assert (ref.abs() > 256).float().mean() > 0.9  # most results need rounding
    assert torch.equal(out.view(torch.int16), ref.to(torch.bfloat16).view(torch.int16))
    # The input gradient, the same way (its residue classes for stride 2): 10 produced channels.
    gy = torch.randint(-3, 4, out.shape, generator=g).to(torch.bfloat16) * 64
    ref_dx = torch.nn.grad.conv2d_input(x.shape, skeleton_cuda.skeleton_to_dense_weight(w.double()), gy.double(), stride, 1)
    dx, _, _ = ops.skeleton_conv2d_backward(gy, x, w, [stride] * 2, [1, 1], [1, 1], 1, [True, False, False])
    assert torch.equal(dx.view(torch.int16), ref_dx.to(torch.bfloat16).view(torch.int16))


@needs_avx512_bf16
@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("cout", [16, 20], ids=["full-tiles", "edge-tiles"])
def test_nan_results_are_pytorchs_nan(cout):
    # A NaN with every payload bit set: rounded as a number, its float32 form would carry into the
    # sign bit. The kernels give c10::BFloat16's NaN, 0x7FC0.
    x = torch.randn(1, 8, 6, 6).to(torch.bfloat16)
    x.view(torch.int16)[0, 3, 2, 2] = 0x7FFF
    assert x[0, 3, 2, 2].isnan()
    w = torch.randn(cout, 8, 5).to(torch.bfloat16)
    out = ops.skeleton_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)
    nan = torch.zeros(6, 6, dtype=torch.bool)
    nan[2, 2] = nan[1, 2] = nan[3, 2] = nan[2, 1] = nan[2, 3] = True  # the pixels whose cross reads it
    assert torch.equal(out[0].isnan(), nan.expand(cout, 6, 6))
    assert (out[0][:, nan].view(torch.int16) == 0x7FC0).all()


@needs_avx512_bf16
@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("poisoned", [0, 1])
def test_odd_channel_pairs_never_read_the_next_group(poisoned):
    # 3 channels per group: the last pair of a group is (channel 2, zero), never (channel 2, the next
    # group's channel 0), nor, for the last group, the next pixel's channel 0. A NaN there would
    # survive the zero weight. Poisoning one group must leave the other's results finite and exact.
    x = torch.randn(2, 6, 7, 9).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 3, 5).to(torch.bfloat16)
    clean = ops.skeleton_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 2)
    x_poisoned = x.clone()
    x_poisoned[:, 3 * poisoned : 3 * poisoned + 3] = float("nan")
    out = ops.skeleton_conv2d(x_poisoned, w, None, [1, 1], [1, 1], [1, 1], 2)
    kept = slice(4 * (1 - poisoned), 4 * (1 - poisoned) + 4)  # the other group's output channels
    assert torch.equal(out[:, kept], clean[:, kept])
    assert out[:, 4 * poisoned : 4 * poisoned + 4].isnan().all()
    # The input gradient reduces over 4 output channels per group (even), with 3 produced: poison
    # the grad_output of one group.
    gy = torch.randn_like(clean).contiguous(memory_format=torch.channels_last)
    dx_clean = ops.skeleton_conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 2, [True, False, False])[0]
    gy[:, 4 * poisoned : 4 * poisoned + 4] = float("nan")
    dx = ops.skeleton_conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 2, [True, False, False])[0]
    other = slice(3 * (1 - poisoned), 3 * (1 - poisoned) + 3)
    assert torch.equal(dx[:, other], dx_clean[:, other])
    # The weight gradient pairs pixels, not channels, but interleaves whole slabs of channels: the
    # other group's weight gradient must not see the poisoned input.
    gy = torch.randn_like(clean).contiguous(memory_format=torch.channels_last)
    dw_clean = ops.skeleton_conv2d_backward(gy, x, w, [1, 1], [1, 1], [1, 1], 2, [False, True, False])[1]
    dw = ops.skeleton_conv2d_backward(gy, x_poisoned, w, [1, 1], [1, 1], [1, 1], 2, [False, True, False])[1]
    assert torch.equal(dw[kept], dw_clean[kept]) and dw[4 * poisoned : 4 * poisoned + 4].isnan().all()


@needs_avx512_bf16
@pytest.mark.usefixtures("native")
def test_native_kernels_run_where_they_should(cpu_isa):
    # VDPBF16PS treats subnormal bfloat16 inputs as zero (as oneDNN's bf16 convolutions do); the
    # float32 path does not. That tells the two apart: dense and grouped layers must take the native
    # kernels for all three passes (with 4 input channels per group, the weight gradient's tiles of
    # all five taps), depthwise layers and the avx512 kernels not.
    tiny = torch.tensor(1e-39).to(torch.bfloat16)  # subnormal
    assert tiny.item() != 0
    x = torch.full((1, 16, 3, 3), tiny.item(), dtype=torch.bfloat16)
    big = torch.full((16, 16, 5), 2.0**100, dtype=torch.bfloat16)
    gy_tiny = torch.full((1, 16, 3, 3), tiny.item(), dtype=torch.bfloat16)

    def results(groups):
        """Whether the forward, the input gradient and the weight gradient saw the subnormals as zero."""
        w = big[:, : 16 // groups]
        y = ops.skeleton_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], groups)
        dx = ops.skeleton_conv2d_backward(gy_tiny, x, w, [1, 1], [1, 1], [1, 1], groups, [True, False, False])[0]
        dw = ops.skeleton_conv2d_backward(big[:1, :1, :1].expand(1, 16, 3, 3), x, w, [1, 1], [1, 1], [1, 1], groups,
                                          [False, True, False])[1]
        return [bool((t == 0).all()) for t in (y, dx, dw)]

    assert results(groups=1) == [True, True, True]
    assert results(groups=2) == [True, True, True]
    assert results(groups=4) == [True, True, True]  # 4 input channels per group
    assert results(groups=16) == [False, False, False]  # depthwise: the float32 kernels
    cpu_isa("avx512")
    assert results(groups=1) == [False, False, False]
