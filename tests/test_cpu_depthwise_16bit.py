"""bfloat16 and float16 depthwise layers on the CPU: the float32 depthwise kernels convert the
16-bit activations in registers (tap_kernels_impl.h: load_elems / store_elems; float16 through
F16C on the AVX2 and AVX-512 kernels, through integer and float operations on the bits in the
generic ones). That must change nothing but the bytes moved: the output and all three gradients
are the float32 path's, rounded by PyTorch, bit for bit, on every instruction set and in both
layouts (NCHW runs in slabs)."""

import pytest
import torch

import skeleton_cuda
from oracle import config_id, cpu_isa_supported, make_tensors

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")

ops = torch.ops.skeleton_cuda
ISAS = ["avx512_bf16", "avx512", "avx2", "generic"]
DTYPES = [torch.bfloat16, torch.float16]
LAYOUTS = [torch.channels_last, torch.contiguous_format]

DEPTHWISE = [
    dict(n=2, cin=95, cout=95, h=9, w=29, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=95, bias=True),
    dict(n=1, cin=95, cout=95, h=12, w=40, stride=(2, 2), padding=(0, 3), dilation=(2, 3), groups=95, bias=False),
    dict(n=3, cin=7, cout=7, h=5, w=6, stride=(1, 2), padding=(2, 1), dilation=(1, 1), groups=7, bias=True),
    dict(n=1, cin=64, cout=64, h=14, w=14, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=64, bias=True),
    # 48 = one group of 32 bfloat16 channel pairs (AVX-512) + 16: the pair path's single-group blocks
    dict(n=2, cin=48, cout=48, h=7, w=9, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=48, bias=True),
]


def select(isa, cpu_isa):
    if not cpu_isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    cpu_isa(isa)


def assert_same_bits(got, want, name):
    """got is want (a float32 result) rounded by PyTorch: the same bits, except that a NaN need
    only stay a NaN (its bits differ inside PyTorch itself: c10's scalar rounding and ATen's
    vectorized copies give different NaNs)."""
    want = want.to(got.dtype)
    assert got.shape == want.shape, name
    assert torch.equal(got.isnan(), want.isnan()), name
    finite = ~want.isnan()
    assert torch.equal(got.view(torch.int16)[finite], want.view(torch.int16)[finite]), name


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS, ids=["nhwc", "nchw"])
@pytest.mark.parametrize("config", DEPTHWISE, ids=config_id)
def test_is_the_float32_result_rounded(isa, dtype, layout, config, cpu_isa):
    select(isa, cpu_isa)
    x, w, b = make_tensors(config, dtype, memory_format=layout)
    x.view(torch.int16)[0, 0, 0, 0] = 0x7FFF  # a NaN with every payload bit set, in both formats
    args = (list(config["stride"]), list(config["padding"]), list(config["dilation"]), config["groups"])
    y = ops.skeleton_conv2d(x, w, b, *args)
    gy = torch.randn(y.shape).to(dtype).contiguous(memory_format=layout)
    grads = ops.skeleton_conv2d_backward(gy, x, w, *args, [True, True, b is not None])
    f32 = lambda t: None if t is None else t.float()
    y32 = ops.skeleton_conv2d(f32(x), f32(w), f32(b), *args)
    grads32 = ops.skeleton_conv2d_backward(f32(gy), f32(x), f32(w), *args, [True, True, b is not None])
    for name, got, want in zip(("output", "grad_input", "grad_weight", "grad_bias"), (y, *grads), (y32, *grads32)):
        if want.numel() == 0:
            continue
        assert got.dtype == dtype, name
        assert_same_bits(got, want, name)
        assert got.isnan().any() == (name in ("output", "grad_weight")), name
    assert y.is_contiguous(memory_format=layout) and grads[0].is_contiguous(memory_format=layout)
    assert grads[1].is_contiguous()  # as the fake kernel says (torch.compile checks it)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=["nhwc", "nchw"])
def test_float16_rounding_over_its_whole_range(isa, layout, cpu_isa):
    # Results from float16 subnormals (below 2^-14, rounded to multiples of 2^-24) through the
    # normal range to overflow (65520 and up rounds to Inf), ties included: inputs of every float16
    # exponent times small integer weights, whose products and sums are exact in float32, so only
    # the final rounding can differ.
    select(isa, cpu_isa)
    g = torch.Generator().manual_seed(7)
    C = 40  # 2 vectors of 16 (or 5 of 8) and a remainder: vector and scalar rounding
    exponents = torch.randint(-24, 16, (2, C, 1, 1), generator=g).float()
    x = (torch.randint(-2047, 2048, (2, C, 12, 11), generator=g).float() * torch.exp2(exponents - 10)).half()
    x = x.contiguous(memory_format=layout)
    w = torch.randint(-3, 4, (C, 1, 5), generator=g).half()
    b = torch.randint(-4, 5, (C,), generator=g).half() * 2.0**-20
    y = ops.skeleton_conv2d(x, w, b, [1, 1], [1, 1], [1, 1], C)
    want = ops.skeleton_conv2d(x.float(), w.float(), b.float(), [1, 1], [1, 1], [1, 1], C)
    assert_same_bits(y, want, "output")
    magnitudes = want.abs()
    assert (magnitudes < 2.0**-14).float().mean() > 0.02  # subnormal results
    assert (magnitudes >= 65520).float().mean() > 0.02 and y.isinf().any()  # overflow to Inf


@pytest.mark.parametrize("isa", ISAS)
def test_every_float16_value_passes_through_unchanged(isa, cpu_isa):
    # The centre tap alone, weight 1 and the others 0: each output is its input, for all 65,536
    # float16 bit patterns (subnormals, Inf and NaN included), as in float32: but for -0 (0 + -0 is
    # +0) and Inf (0 * a NaN neighbour is NaN). Inf and NaN fill whole planes in this order, so no
    # finite value has one for a neighbour.
    select(isa, cpu_isa)
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16)
    x = every.reshape(8, 64, 16, 8).contiguous(memory_format=torch.channels_last)
    w = torch.zeros(64, 1, 5, dtype=torch.float16)
    w[:, 0, 2] = 1
    y = ops.skeleton_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 64)
    assert_same_bits(y, ops.skeleton_conv2d(x.float(), w.float(), None, [1, 1], [1, 1], [1, 1], 64), "output")
    kept = torch.isfinite(x) & (x != 0)
    assert torch.equal(y.view(torch.int16)[kept], x.view(torch.int16)[kept])
    assert kept.sum() == 65536 - 2048 - 2  # everything but Inf / NaN and the two zeros
