"""The CUDA kernel files run on the CPU: no GPU needed.

tests/simt/ compiles csrc/cuda/dense_kernels.cu, tiled_kernels.cu, depthwise_kernels.cu,
depthwise_nchw_kernels.cu, partial_sums.cu and (where a CUDA toolkit's headers are found)
tensor_core_kernels.cu as C++ against a small runtime that runs every CUDA thread as a fiber
(barriers, warp shuffles and the warp-collective ldmatrix / mma.sync included), and exposes their
host launchers as torch.ops.skeleton_simt.* on CPU tensors. These tests drive those launchers the
way the CUDA entry points (csrc/cuda/skeleton_conv2d_cuda.cu) do and compare with the float64
oracle: the kernels' index math, tap geometry, weight packing, layouts, pack paths, chunked
reductions and barriers are checked here, in CI, before any GPU runs them. Every tensor the kernels
touch sits between NaN guard zones: a read outside it turns the result into NaN, a write outside it
shows in the guard.

What only a GPU can check (timing, the memory model, the real warp, the real tensor cores) is in
tests/test_cuda.py and tests/test_cuda_tensor_cores.py."""

import os
import shutil
import sys

import pytest
import torch
from torch._prims_common import suggest_memory_format

from oracle import TOLERANCE, config_id, make_tensors, oracle, random_configs, tensor_core_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMT = os.path.join(ROOT, "tests", "simt")
GUARD = 64  # elements of NaN on each side of every tensor (a multiple of 16 bytes for every dtype)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def cuda_headers():
    """The include folder of a CUDA toolkit with cuda_bf16.h (the tensor-core file needs it), or None."""
    from torch.utils import cpp_extension

    for root in (os.environ.get("CUDA_HOME"), cpp_extension.CUDA_HOME, "/usr/local/cuda"):
        if root and os.path.exists(os.path.join(root, "include", "cuda_bf16.h")):
            return os.path.join(root, "include")
    return None


@pytest.fixture(scope="module")
def simt():
    """Builds the kernels for the CPU runtime once per session (the tensor-core file too where a
    CUDA toolkit's headers are found); torch.ops.skeleton_simt afterwards."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the runtime's fibers use glibc's ucontext")
    if not os.path.exists(os.path.join(SIMT, "kernels_on_cpu.cpp")):
        pytest.skip("sources not available (installed package)")
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler")
    from torch.utils import cpp_extension

    headers = cuda_headers()
    flags = ["-O1", "-DSKELETON_SIMT_EMULATOR", "-Wno-unknown-pragmas", "-fvisibility=hidden"]
    cpp_extension.load(
        name="skeleton_simt_tc" if headers else "skeleton_simt",
        sources=[os.path.join(SIMT, "kernels_on_cpu.cpp"), os.path.join(SIMT, "simt_runtime.cpp")],
        extra_cflags=flags + (["-DSKELETON_SIMT_TENSOR_CORES"] if headers else []),
        extra_include_paths=[headers] if headers else [],
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.skeleton_simt


# ---- guarded tensors -------------------------------------------------------------------------------


class Guarded:
    """A tensor laid out as `like` (its sizes and memory format), inside a flat buffer with GUARD
    NaNs before and after it (`offset` more elements before: a misaligned start)."""

    def __init__(self, values, memory_format, offset=0):
        contiguous = values.contiguous(memory_format=memory_format)
        self.before = GUARD + offset
        self.buffer = torch.full((self.before + contiguous.numel() + GUARD,), float("nan"), dtype=values.dtype)
        self.tensor = self.buffer[self.before : self.before + contiguous.numel()].as_strided(
            contiguous.shape, contiguous.stride()
        )
        self.tensor.copy_(contiguous)

    def assert_guards_intact(self, what):
        for zone in (self.buffer[: self.before], self.buffer[self.before + self.tensor.numel() :]):
            assert torch.isnan(zone.float()).all(), f"{what}: a kernel wrote outside the tensor"


def empty_guarded(shape, dtype, memory_format, offset=0):
    return Guarded(torch.full(shape, float("nan"), dtype=dtype), memory_format, offset)


def shape_list(x, weight, out_hw, config):
    """The ConvShape the CUDA entry points build (csrc/cuda/skeleton_conv2d_cuda.cu: make_shape)."""
    return [x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), out_hw[0], out_hw[1], config["groups"],
            *config["stride"], *config["padding"], *config["dilation"]]


# ---- the CUDA entry points' dispatch, on the CPU runtime -----------------------------------------------


def run_layer(ops, x, weight, bias, grad_output, config, offset=0, family="tiled"):
    """Output, grad_input, grad_weight and (depthwise layers) grad_bias as the CUDA backend computes
    them: depthwise layers (on the NCHW depthwise kernels with family "nchw"), and dense / grouped
    ones on the tiled or tensor-core kernels (family "tensor_core"), on channels_last-contiguous
    buffers; on the NCHW tensor-core kernels (family "tensor_core_nchw") and the NCHW depthwise
    kernels on contiguous NCHW buffers; dense / grouped ones on the direct kernels (family "dense")
    on the caller's layout."""
    depthwise = weight.size(1) == 1 and weight.size(0) == config["groups"]
    kind = ("depthwise_nchw" if family == "nchw" else "depthwise") if depthwise else family
    out_hw = grad_output.shape[2:]
    shape = shape_list(x, weight, out_hw, config)
    layout = {
        "dense": suggest_memory_format(x),
        "tensor_core_nchw": torch.contiguous_format,
        "depthwise_nchw": torch.contiguous_format,
    }.get(kind, torch.channels_last)
    xg = Guarded(x, layout, offset)
    dyg = Guarded(grad_output, layout, offset)
    wg = Guarded(weight, torch.contiguous_format)
    x_arg, w_arg = xg.tensor, wg.tensor
    if kind == "dense" and not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x_arg, w_arg = x, weight  # the dense path reads any strides: pass the strided tensors (unguarded)
    bg = Guarded(bias, torch.contiguous_format) if bias is not None else None
    yg = empty_guarded(grad_output.shape, x.dtype, layout, offset)
    dxg = empty_guarded(x.shape, x.dtype, layout, offset)
    getattr(ops, f"{kind}_forward")(x_arg, w_arg, bg.tensor if bg else None, yg.tensor, shape)
    getattr(ops, f"{kind}_input_grad")(dyg.tensor, w_arg, dxg.tensor, shape)
    grad_weight = getattr(ops, f"{kind}_weight_grad")(dyg.tensor, x_arg, shape)
    # The launchers' contract (csrc/cuda/launchers.cuh): the weight's shape, dtype and layout.
    assert grad_weight.shape == weight.shape and grad_weight.dtype == weight.dtype and grad_weight.is_contiguous()
    yg.assert_guards_intact("output")
    dxg.assert_guards_intact("grad_input")
    grad_bias = None
    if depthwise:  # the weight gradient with the bias sums riding along: the same weight bits
        grad_weight_too, grad_bias = getattr(ops, f"{kind}_weight_and_bias_grad")(dyg.tensor, x_arg, shape)
        assert torch.equal(grad_weight_too, grad_weight)
        assert grad_bias.shape == (weight.size(0),) and grad_bias.dtype == weight.dtype
    return yg.tensor, dxg.tensor, grad_weight, grad_bias


def output_size(config):
    return [
        (size + 2 * p - 2 * d - 1) // s + 1
        for size, s, p, d in zip((config["h"], config["w"]), config["stride"], config["padding"], config["dilation"])
    ]


def check_layer(ops, config, dtype, memory_format, offset=0, noncontiguous=False, family="tiled", precision=None):
    x, weight, bias = make_tensors(config, dtype, memory_format=memory_format, noncontiguous=noncontiguous)
    generator = torch.Generator().manual_seed(1)
    grad_output = torch.randn(config["n"], config["cout"], *output_size(config), generator=generator).to(dtype)
    ref_y, _, (ref_dx, ref_dw, _) = oracle(x, weight, bias, config, grad_output)
    y, dx, dw, db = run_layer(ops, x, weight, bias, grad_output, config, offset, family)
    rtol, atol_fraction = TOLERANCE[precision or dtype]
    checks = [("output", y, ref_y), ("grad_input", dx, ref_dx), ("grad_weight", dw, ref_dw)]
    if db is not None:  # the bias gradient is the sum of grad_output over (N, H, W), bias or not
        checks.append(("grad_bias", db, grad_output.to(torch.float64).sum((0, 2, 3))))
    for name, actual, expected in checks:
        expected = expected.detach()
        atol = atol_fraction * max(expected.abs().max().item(), 1.0)
        torch.testing.assert_close(actual.to(torch.float64).reshape(expected.shape), expected, rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")
    return y, dx, dw


CONFIGS = random_configs(seed=31, count=24, max_channels=20, max_size=11)


def is_depthwise(config):
    return config["groups"] == config["cin"] == config["cout"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_kernels_match_float64_oracle(simt, config, dtype):
    # Depthwise layers on the depthwise kernels, the others on the tiled kernels (the default).
    index = CONFIGS.index(config)
    memory_format = torch.channels_last if index % 2 else torch.contiguous_format
    check_layer(simt, config, dtype, memory_format)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", [c for c in CONFIGS if not is_depthwise(c)], ids=config_id)
def test_direct_kernels_match_float64_oracle(simt, config, dtype):
    # The fallback for layers beyond the tiled kernels: any layout, strided inputs read in place.
    index = CONFIGS.index(config)
    memory_format = torch.channels_last if index % 2 else torch.contiguous_format
    check_layer(simt, config, dtype, memory_format, noncontiguous=index % 5 == 3 and config["groups"] == 1,
                family="dense")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", [c for c in CONFIGS if is_depthwise(c)], ids=config_id)
def test_nchw_depthwise_kernels_match_float64_oracle(simt, config, dtype):
    # Depthwise layers of NCHW activations, read and written in place by their own kernels.
    check_layer(simt, config, dtype, torch.contiguous_format, family="nchw")


@pytest.mark.parametrize("family", ["nhwc", "nchw"])
@pytest.mark.parametrize("index", ["narrow", "wide"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_depthwise_pack_and_scalar_paths(simt, dtype, index, family, monkeypatch):
    # channels_last: 16 channels split into 16-byte packs; a misaligned start (offset 1) takes the
    # scalar kernels. NCHW: element-wise kernels, aligned or not. Both index paths: multiply-high
    # division (layers below 2^31 elements) and the 64-bit one, which SKELETON_CUDA_WIDE_INDEX=1
    # forces on these small layers.
    monkeypatch.setenv("SKELETON_CUDA_WIDE_INDEX", "1" if index == "wide" else "0")
    for config in (
        dict(n=2, cin=16, cout=16, h=9, w=10, stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=16, bias=True),
        dict(n=3, cin=24, cout=24, h=11, w=7, stride=(3, 2), padding=(2, 0), dilation=(2, 3), groups=24, bias=False),
    ):
        for offset in (0, 1):
            check_layer(simt, config, dtype, torch.channels_last, offset=offset, family=family)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_depthwise_reads_a_misaligned_weight(simt, dtype):
    """A (C, 1, 5) weight one element off a 16-byte boundary (a view): the channels_last kernels
    read their [5][C] copy of it as 16-byte packs, the NCHW ones the weight itself, element by
    element. Results as with the aligned weight, bit for bit, and nothing read outside the view."""
    config = dict(n=2, cin=16, cout=16, h=7, w=9, stride=(1, 2), padding=(1, 1), dilation=(1, 1), groups=16,
                  bias=True)
    x, weight, bias = make_tensors(config, dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn(2, 16, *output_size(config)).to(dtype).contiguous(memory_format=torch.channels_last)
    shape = shape_list(x, weight, output_size(config), config)
    for kind, layout in (("depthwise", torch.channels_last), ("depthwise_nchw", torch.contiguous_format)):
        x_l, dy_l = x.contiguous(memory_format=layout), dy.contiguous(memory_format=layout)
        results = []
        for offset in (0, 1):
            w = Guarded(weight, torch.contiguous_format, offset)
            y = torch.empty_like(dy_l)
            dx = torch.empty_like(x_l)
            getattr(simt, f"{kind}_forward")(x_l, w.tensor, bias, y, shape)
            getattr(simt, f"{kind}_input_grad")(dy_l, w.tensor, dx, shape)
            assert not (y.isnan().any() or dx.isnan().any()), f"{kind}: read outside the weight"
            results.append((y, dx))
        for a, b in zip(*results):
            assert torch.equal(a, b), kind


def test_fast_division_is_exact(simt):
    # The depthwise kernels' multiply-high division (csrc/cuda/index_division.cuh) against plain
    # division: every divisor 1..4096 with edge dividends, powers of two and their neighbours up to
    # 2^31 - 1, and random pairs; the op returns the number of wrong quotients.
    assert simt.fast_division_mismatches(200000) == 0


@pytest.mark.parametrize(
    "config",
    [
        # Many pixel chunks in the weight-gradient reductions (several blocks along grid y).
        dict(n=3, cin=4, cout=6, h=30, w=31, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
        dict(n=4, cin=8, cout=8, h=33, w=30, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=8, bias=False),
        # More channel packs than one block's lanes (depthwise weight gradient: grid x > 1).
        dict(n=1, cin=520, cout=520, h=5, w=4, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=520, bias=True),
        # Tiled: 2 column tiles (72 outputs), a K tail (40 = 5 x 8 channels), 200 weight-gradient
        # rows (4 row tiles), stride 2; and 2 groups of 24 -> 72 channels.
        dict(n=2, cin=40, cout=72, h=9, w=10, stride=(2, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
        dict(n=1, cin=48, cout=144, h=7, w=9, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=True),
    ],
    ids=["chunks", "depthwise_chunks", "depthwise_wide", "tiles", "grouped_tiles"],
)
@pytest.mark.parametrize("family", ["tiled", "dense", "nchw"])
def test_tiles_and_chunks(simt, config, family):
    if family == "dense" and is_depthwise(config):
        pytest.skip("depthwise layers have their own kernels")
    if family == "nchw" and not is_depthwise(config):
        pytest.skip("the NCHW depthwise kernels are for depthwise layers")
    check_layer(simt, config, torch.float32, torch.channels_last, family=family)


def test_weight_gradient_reorder_index_paths(simt, monkeypatch):
    # finish_weight_grad places tap-major partials ([G][5][C_in/G][C_out/G]) into the weight's
    # order with multiply-high division, or 64-bit division (SKELETON_CUDA_WIDE_INDEX=1): the same
    # places, so the same bits, and both right.
    config = dict(n=1, cin=48, cout=144, h=7, w=9, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=True)
    results = []
    for index in ("0", "1"):
        monkeypatch.setenv("SKELETON_CUDA_WIDE_INDEX", index)
        results.append(check_layer(simt, config, torch.float32, torch.channels_last, family="tiled")[2])
    assert torch.equal(results[0], results[1])


def test_weight_gradient_does_not_depend_on_thread_order(simt):
    # The runtime runs the threads in a different random order every launch: the fixed-order
    # reductions must give the same bits anyway.
    for groups in (1, 12):
        config = dict(n=2, cin=12, cout=12, h=21, w=20, stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                      groups=groups, bias=False)
        for family in ("tiled", "dense") + (("nchw",) if groups == 12 else ()):  # depthwise: both layouts
            first = check_layer(simt, config, torch.float32, torch.channels_last, family=family)
            second = check_layer(simt, config, torch.float32, torch.channels_last, family=family)
            for a, b in zip(first, second):
                assert torch.equal(a, b)


@pytest.mark.parametrize(
    "case, message",
    [("barrier", "deadlock"), ("shuffle", "different shuffles")],
)
def test_runtime_reports_kernel_bugs(simt, case, message):
    # The runtime itself: a barrier that a thread skips, and lanes of a warp that ask for different
    # shuffles, are errors, not results.
    with pytest.raises(RuntimeError, match=message):
        simt.runtime_self_test(case)


# ---- the tensor-core file, host launchers included, with mma.sync and ldmatrix emulated -------------

TC_CONFIGS = tensor_core_configs(seed=41, count=8) + tensor_core_configs(seed=42, count=4, unit=4)


@pytest.fixture(params=["128", "64"], ids=["rows128", "rows64"])
def gather_rows(request, monkeypatch):
    """Forces the gather GEMMs' row tile (SKELETON_CUDA_GATHER_ROWS): these small layers would
    all take 64-row tiles on their own."""
    monkeypatch.setenv("SKELETON_CUDA_GATHER_ROWS", request.param)
    return int(request.param)


def gather_launches(simt):
    return dict(zip((128, 64), simt.tensor_core_gather_launches()))


def assert_only_tile_ran(simt, before, rows):
    """Since `before` (gather_launches), gather GEMMs ran with `rows`-row tiles, and only those."""
    after = gather_launches(simt)
    ran = {tile: after[tile] - before[tile] for tile in after}
    assert ran[rows] > 0 and sum(ran.values()) == ran[rows], f"expected {rows}-row tiles only, ran {ran}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("config", TC_CONFIGS, ids=config_id)
def test_tensor_core_launchers_match_float64_oracle(simt, config, dtype, gather_rows):
    if not hasattr(simt, "tensor_core_forward"):
        pytest.skip("no CUDA toolkit headers (cuda_bf16.h): the tensor-core file was not built")
    x, weight, _ = make_tensors(config, dtype)
    shape = shape_list(x, weight, output_size(config), config)
    if not simt.tensor_core_eligible(shape, dtype):
        assert dtype != torch.float32 and (config["cin"] // config["groups"]) % 8, "an eligible layer was refused"
        pytest.skip("channels per group not a multiple of 8: float32 only")
    before = gather_launches(simt)
    check_layer(simt, config, dtype, torch.channels_last, family="tensor_core",
                precision="tf32" if dtype == torch.float32 else None)
    assert_only_tile_ran(simt, before, gather_rows)



# Besides the random layers: 2 column tiles (72 outputs), a K tail (40 = 2 x 16 + 8 channels),
# 200 weight-gradient rows (2 row tiles), several pixel chunks, stride 2.
NCHW_TC_CONFIGS = TC_CONFIGS + [
    dict(n=2, cin=40, cout=72, h=19, w=21, stride=(2, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
]


@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "offset-by-one-element"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("config", NCHW_TC_CONFIGS, ids=config_id)
def test_nchw_tensor_core_launchers_match_float64_oracle(simt, config, dtype, offset, gather_rows):
    """NCHW activations read and written in place (tensor_core_nchw.cuh): element-wise copies, so a
    start that is not 16-byte aligned is fine."""
    if not hasattr(simt, "tensor_core_nchw_forward"):
        pytest.skip("no CUDA toolkit headers (cuda_bf16.h): the tensor-core file was not built")
    x, weight, _ = make_tensors(config, dtype)
    if not simt.tensor_core_eligible(shape_list(x, weight, output_size(config), config), dtype):
        assert dtype != torch.float32 and (config["cin"] // config["groups"]) % 8, "an eligible layer was refused"
        pytest.skip("channels per group not a multiple of 8: float32 only")
    before = gather_launches(simt)
    check_layer(simt, config, dtype, torch.contiguous_format, offset=offset, family="tensor_core_nchw",
                precision="tf32" if dtype == torch.float32 else None)
    assert_only_tile_ran(simt, before, gather_rows)


def bitwise_cases(dtype):
    """(config, (input, weight, bias, grad_output)) of the layers the bitwise-agreement tests run: 2
    column tiles, a K tail and stride 2, then three random ones."""
    for config in NCHW_TC_CONFIGS[-1:] + TC_CONFIGS[:3]:
        x, weight, bias = make_tensors(config, dtype)
        generator = torch.Generator().manual_seed(3)
        grad_output = torch.randn(config["n"], config["cout"], *output_size(config), generator=generator).to(dtype)
        yield config, (x, weight, bias, grad_output)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_nchw_and_channels_last_tensor_cores_agree_bitwise(simt, dtype):
    """Both layouts feed the same operands to the same sequence of mma, so their results must be
    identical, not merely close: a difference would mean a fragment or a K step read differently."""
    if not hasattr(simt, "tensor_core_nchw_forward"):
        pytest.skip("no CUDA toolkit headers (cuda_bf16.h): the tensor-core file was not built")
    for config, tensors in bitwise_cases(dtype):
        nhwc = run_layer(simt, *tensors, config, family="tensor_core")
        nchw = run_layer(simt, *tensors, config, family="tensor_core_nchw")
        for name, a, b in zip(("output", "grad_input", "grad_weight"), nhwc, nchw):
            assert torch.equal(a, b), f"{name} differs between the layouts ({config_id(config)})"


@pytest.mark.parametrize("family", ["tensor_core", "tensor_core_nchw"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_row_tiles_agree_bitwise(simt, dtype, family, monkeypatch):
    """Every output of a gather GEMM sums the same K steps in the same order with 128-row and with
    64-row tiles, so which one a layer gets can never change a result bit."""
    if not hasattr(simt, "tensor_core_forward"):
        pytest.skip("no CUDA toolkit headers (cuda_bf16.h): the tensor-core file was not built")
    for config, tensors in bitwise_cases(dtype):
        results = {}
        for rows in ("128", "64"):
            monkeypatch.setenv("SKELETON_CUDA_GATHER_ROWS", rows)
            before = gather_launches(simt)
            results[rows] = run_layer(simt, *tensors, config, family=family)
            assert_only_tile_ran(simt, before, int(rows))
        for name, a, b in zip(("output", "grad_input", "grad_weight"), results["128"], results["64"]):
            assert torch.equal(a, b), f"{name} differs between the row tiles ({config_id(config)})"


def test_row_tile_choice(simt, monkeypatch):
    """128-row tiles while they give every SM at least 8 blocks (two rounds of the 4 resident ones),
    64-row tiles below; SKELETON_CUDA_GATHER_ROWS forces either, and other values are ignored."""
    if not hasattr(simt, "tensor_core_gather_rows"):
        pytest.skip("no CUDA toolkit headers (cuda_bf16.h): the tensor-core file was not built")
    monkeypatch.delenv("SKELETON_CUDA_GATHER_ROWS", raising=False)
    sms = 132
    # rows x n per group -> blocks of 128 rows: ceil(rows / 128) * groups * ceil(n / 64)
    assert simt.tensor_core_gather_rows(8 * sms * 128, 1, 64, sms) == 128  # exactly 8 blocks per SM
    assert simt.tensor_core_gather_rows(8 * sms * 128 - 128, 1, 64, sms) == 64  # one block fewer
    assert simt.tensor_core_gather_rows(4 * sms * 128, 2, 64, sms) == 128  # groups multiply the blocks
    assert simt.tensor_core_gather_rows(4 * sms * 128, 1, 128, sms) == 128  # so do column tiles
    assert simt.tensor_core_gather_rows(64 * 56 * 56, 1, 64, sms) == 128  # 64 ch @ 56 x 56, batch 64
    assert simt.tensor_core_gather_rows(64 * 7 * 7, 1, 512, sms) == 64  # 512 ch @ 7 x 7, batch 64
    assert simt.tensor_core_gather_rows(64 * 7 * 7, 1, 512, 16) == 128  # ... on a GPU with 16 SMs
    for forced, small, large in (("64", 64, 64), ("128", 128, 128), ("96", 64, 128), ("", 64, 128)):
        monkeypatch.setenv("SKELETON_CUDA_GATHER_ROWS", forced)
        assert simt.tensor_core_gather_rows(64 * 7 * 7, 1, 512, sms) == small, forced
        assert simt.tensor_core_gather_rows(64 * 56 * 56, 1, 64, sms) == large, forced


def test_tensor_cores_refuse_layers_of_2_31_grid_points(simt):
    # The gather GEMMs and weight gradients divide pixels in 32 bits (gather_map.cuh:
    # kMaxGridPoints = 2^31 - 2^20): a layer with more pixels goes elsewhere. Only the shape is
    # asked about; nothing is allocated.
    if not hasattr(simt, "tensor_core_eligible"):
        pytest.skip("no CUDA toolkit headers (cuda_bf16.h): the tensor-core file was not built")
    # [batch, C_in, H, W, C_out, H_out, W_out, groups, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w]
    below = [2**15 - 17, 64, 256, 256, 64, 256, 256, 1, 1, 1, 1, 1, 1, 1]  # 2^31 - 2^20 - 2^16 pixels
    at = [2**15 - 16, 64, 256, 256, 64, 256, 256, 1, 1, 1, 1, 1, 1, 1]  # 2^31 - 2^20 pixels
    assert simt.tensor_core_eligible(below, torch.bfloat16)
    assert not simt.tensor_core_eligible(at, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_tensor_cores_copy_a_weight_view_already_in_their_order(simt, dtype):
    """A weight that is a view laid out as the kernels read it ([5][C_out][C_in] for the forward,
    [5][C_in][C_out] for the input gradient), 3 elements into its storage: contiguous() returns that
    storage itself, not 16-byte aligned, so the launchers must copy it (they used to stop on an
    internal assert). Results equal those of the contiguous weight, bit for bit."""
    if not hasattr(simt, "tensor_core_forward"):
        pytest.skip("no CUDA toolkit headers (cuda_bf16.h): the tensor-core file was not built")
    config = dict(n=2, cin=16, cout=24, h=9, w=7, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=False)
    x, weight, _ = make_tensors(config, dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous()
    dy = torch.randn(2, 24, 9, 7).to(dtype).contiguous(memory_format=torch.channels_last)
    shape = shape_list(x, weight, [9, 7], config)
    forward_view = torch.empty(3 + weight.numel(), dtype=dtype)[3:].view(5, 24, 16).permute(1, 2, 0)
    input_grad_view = torch.empty(3 + weight.numel(), dtype=dtype)[3:].view(5, 16, 24).permute(2, 1, 0)
    for view in (forward_view, input_grad_view):
        view.copy_(weight)
    results = {}
    for name, w_forward, w_input_grad in (("contiguous", weight, weight), ("views", forward_view, input_grad_view)):
        y = torch.empty(2, 24, 9, 7, dtype=dtype).contiguous(memory_format=torch.channels_last)
        dx = torch.empty_like(x)
        simt.tensor_core_forward(x, w_forward, None, y, shape)
        simt.tensor_core_input_grad(dy, w_input_grad, dx, shape)
        results[name] = (y, dx)
    for a, b in zip(results["contiguous"], results["views"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", ["tiled", "dense", "depthwise", "nchw"])
def test_input_without_rows(simt, family):
    """An input of 0 rows that the padding turns into an output of 2 (as F.conv2d allows): the
    output is the bias alone and the weight gradient zeros. The depthwise kernels' divisors of the
    input's size used to be built from that 0, a division by zero on the host (SIGFPE)."""
    groups = 4 if family in ("depthwise", "nchw") else 1
    config = dict(n=1, cin=4, cout=4, h=0, w=5, stride=(1, 1), padding=(2, 2), dilation=(1, 1), groups=groups,
                  bias=True)
    x = torch.randn(1, 4, 0, 5)
    weight, bias = torch.randn(4, 4 // groups, 5), torch.randn(4)
    grad_output = torch.randn(1, 4, *output_size(config))
    assert grad_output.shape == (1, 4, 2, 7)
    # (F.conv2d, the oracle, refuses inputs without rows on the CPU: the answer is written out here.)
    y, dx, dw, db = run_layer(simt, x, weight, bias, grad_output, config, family=family)
    torch.testing.assert_close(y, bias.view(1, -1, 1, 1).expand(1, 4, 2, 7).contiguous(), rtol=0, atol=0)
    assert dx.shape == x.shape
    assert dw.shape == weight.shape and not dw.any()
    if db is not None:
        torch.testing.assert_close(db, grad_output.sum((0, 2, 3)))


@pytest.mark.parametrize("family", ["tiled", "dense"])
@pytest.mark.parametrize("channels", [(0, 4), (4, 0)], ids=["no-input-channels", "no-output-channels"])
def test_layers_without_channels(simt, family, channels):
    """A layer of 0 input or 0 output channels (which nn.Conv2d and the CPU path accept): the
    output is the bias alone, the gradients zeros or empty; no launch of 0 blocks, which is an
    error on a GPU and in the CPU runtime, and no division by a count of 0 column tiles."""
    cin, cout = channels
    config = dict(n=2, cin=cin, cout=cout, h=5, w=6, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True)
    x = torch.randn(2, cin, 5, 6)
    weight, bias = torch.randn(cout, cin, 5), torch.randn(cout)
    grad_output = torch.randn(2, cout, 5, 6)
    if family == "tiled":
        assert simt.tiled_eligible(shape_list(x, weight, [5, 6], config))
    y, dx, dw, _ = run_layer(simt, x, weight, bias, grad_output, config, family=family)
    torch.testing.assert_close(y, bias.view(1, -1, 1, 1).expand(2, cout, 5, 6).contiguous(), rtol=0, atol=0)
    assert dx.shape == x.shape and not dx.any()
    assert dw.shape == weight.shape and not dw.any()


@pytest.mark.parametrize("family", ["tiled", "tensor_core", "tensor_core_nchw", "dense", "depthwise", "nchw"])
def test_stride_beyond_the_image(simt, family):
    """A stride far beyond the image (legal: a 1 x 1 output). The gather GEMMs' input gradient runs
    one problem per residue class of the stride that holds pixels: all stride_h x stride_w of them,
    as before, took seconds and gigabytes of host memory at stride 4096, and would not end at 2^20."""
    if family.startswith("tensor_core") and not hasattr(simt, "tensor_core_forward"):
        pytest.skip("no CUDA toolkit headers (cuda_bf16.h): the tensor-core file was not built")
    groups = 8 if family in ("depthwise", "nchw") else 1
    config = dict(n=2, cin=8, cout=8, h=3, w=5, stride=(1 << 20, 1 << 19), padding=(1, 1), dilation=(1, 1),
                  groups=groups, bias=True)
    dtype = torch.bfloat16 if family.startswith("tensor_core") else torch.float32
    check_layer(simt, config, dtype, torch.channels_last, family=family)
