"""The opt-in tensor-core kernels (csrc/cuda/tensor_core_kernels.cu): with SKELETON_CUDA_TENSOR_CORES=1,
bfloat16 / float16 layers whose channels per group are multiples of 8, and float32 layers with multiples
of 4 while TF32 is allowed for convolutions (torch.backends.cudnn.allow_tf32, the flag nn.Conv2d obeys),
run as implicit GEMMs on mma.sync.

The GPU tests compare the output and every gradient with the float64 oracle, check bitwise
determinism, that the variable really routes to the tensor cores (torch.ops.skeleton_cuda.
tensor_core_calls counts the calls that took that path) and that everything else falls back to the
CUDA-core kernels. They are skipped without a CUDA GPU of compute capability 8.0 or newer.

test_emulator_runs_the_block_bodies needs no GPU: it compiles tests/tensor_core_emulator.cpp,
which runs the kernels' block bodies on the CPU with cp.async, ldmatrix and mma.sync emulated from
the PTX ISA, and checks them against a float64 reference.
"""

import contextlib
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch._prims_common import suggest_memory_format

import skeleton_cuda
from oracle import (
    assert_close_to_oracle,
    check_against_oracle,
    config_id,
    forward_and_grads,
    make_tensors,
    oracle,
    tensor_core_configs,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = "SKELETON_CUDA_TENSOR_CORES"

HAS_SM80 = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
needs_sm80 = pytest.mark.skipif(not HAS_SM80, reason="needs a CUDA GPU of compute capability 8.0 or newer")

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def precision(dtype):
    """The oracle tolerance of a dtype on the tensor cores: float32 runs as TF32."""
    return "tf32" if dtype == torch.float32 else dtype


def FORWARD(*args):
    return torch.ops.skeleton_cuda.skeleton_conv2d(*args)


def BACKWARD(*args):
    return torch.ops.skeleton_cuda.skeleton_conv2d_backward(*args)


@pytest.fixture
def tensor_cores(monkeypatch):
    """Turns the tensor-core path on for one test (the variable is read at every call), with TF32
    allowed for float32 convolutions (PyTorch's default, set here in case the session changed it)."""
    assert skeleton_cuda.has_cuda_kernels(), "skeleton_cuda was built without CUDA kernels (FORCE_CUDA=1)"
    monkeypatch.setenv(ENV, "1")
    with allow_tf32(True):
        yield


@contextlib.contextmanager
def allow_tf32(allowed):
    """Sets the TF32 flag of cuDNN convolutions for a block, through the newest API this PyTorch has."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        old = conv.fp32_precision
        conv.fp32_precision = "tf32" if allowed else "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = allowed
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


def calls():
    """(forward, input gradient, weight gradient) calls that took the tensor-core path so far."""
    return tuple(torch.ops.skeleton_cuda.tensor_core_calls())


def delta(before):
    return tuple(b - a for a, b in zip(before, calls()))


def output_shape(config):
    """(N, C_out, H_out, W_out) of a layer configuration."""
    size = [(n + 2 * p - 2 * d - 1) // s + 1 for n, s, p, d in
            zip((config["h"], config["w"]), config["stride"], config["padding"], config["dilation"])]
    return (config["n"], config["cout"], *size)


def nchw_calls():
    """Of those, the calls that ran the NCHW kernels (tensor_core_nchw.cuh)."""
    return tuple(torch.ops.skeleton_cuda.tensor_core_nchw_calls())


ROWS_ENV = "SKELETON_CUDA_GATHER_ROWS"
ROW_TILES = ["128", "64"]


def gather_launches():
    """Gather-GEMM launches so far with (128-row, 64-row) tiles."""
    return tuple(torch.ops.skeleton_cuda.tensor_core_gather_launches())


CONFIGS = tensor_core_configs(seed=11, count=32)
FLOAT32_CONFIGS = tensor_core_configs(seed=12, count=12, unit=4)
LARGE = [
    dict(n=4, cin=64, cout=64, h=56, w=56, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(n=4, cin=256, cout=256, h=14, w=14, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=False),
    dict(n=2, cin=128, cout=256, h=29, w=29, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(n=2, cin=192, cout=96, h=27, w=31, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=4, bias=True),
]
FORMATS = [torch.contiguous_format, torch.channels_last]


def run_op_and_check(config, dtype, memory_format, noncontiguous=False):
    before = calls()
    check_against_oracle(
        skeleton_cuda.skeleton_conv2d,
        config,
        dtype,
        "cuda",
        memory_format=memory_format,
        noncontiguous=noncontiguous,
        precision=precision(dtype),
    )
    assert delta(before) == (1, 1, 1), "the tensor-core kernels did not run every pass"


# ---- correctness ---------------------------------------------------------------------------------


@needs_sm80
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_float64_oracle(config, dtype, tensor_cores, monkeypatch):
    # Memory format and gather row tile alternate over the configurations: all four pairs occur.
    index = CONFIGS.index(config)
    monkeypatch.setenv(ROWS_ENV, ROW_TILES[(index // 2) % 2])
    run_op_and_check(config, dtype, FORMATS[index % 2], noncontiguous=index % 5 == 4)


@needs_sm80
@pytest.mark.parametrize("config", FLOAT32_CONFIGS, ids=config_id)
def test_float32_channels_in_fours(config, tensor_cores):
    # float32 copies 4 channels per 16 bytes: counts like 4, 12 or 20 per group take the TF32 path.
    memory_format = FORMATS[FLOAT32_CONFIGS.index(config) % 2]
    run_op_and_check(config, torch.float32, memory_format)


@needs_sm80
@pytest.mark.parametrize("rows", ROW_TILES, ids=["rows128", "rows64"])
@pytest.mark.parametrize("memory_format", FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", LARGE, ids=config_id)
def test_larger_layers(config, dtype, memory_format, rows, tensor_cores, monkeypatch):
    monkeypatch.setenv(ROWS_ENV, rows)
    before = gather_launches()
    run_op_and_check(config, dtype, memory_format)
    ran = tuple(b - a for a, b in zip(before, gather_launches()))
    assert ran[ROW_TILES.index(rows)] > 0 and sum(ran) == ran[ROW_TILES.index(rows)], "the forced row tile did not run"


# ---- the gather GEMMs' row tiles (128 or 64 rows, chosen per layer) --------------------------------


@needs_sm80
@pytest.mark.parametrize("memory_format", FORMATS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_row_tiles_agree_bitwise(dtype, memory_format, tensor_cores, monkeypatch):
    # Each output sums the same K steps in the same order with either row tile: the choice, which
    # depends on the GPU's SM count, must never change a result bit.
    monkeypatch.setenv("SKELETON_CUDA_TENSOR_CORES_NCHW", "1")  # NCHW: the NCHW kernels for every type
    for config in LARGE[:2] + CONFIGS[:2]:
        x, weight, bias = make_tensors(config, dtype, "cuda", memory_format)
        generator = torch.Generator().manual_seed(1)
        grad_output = torch.randn(*output_shape(config), generator=generator).to("cuda", dtype)
        grad_output = grad_output.contiguous(memory_format=memory_format)
        results = {}
        for rows in ROW_TILES:
            monkeypatch.setenv(ROWS_ENV, rows)
            before = gather_launches()
            out, _, grads = forward_and_grads(skeleton_cuda.skeleton_conv2d, x, weight, bias, config, grad_output)
            ran = tuple(b - a for a, b in zip(before, gather_launches()))
            assert ran[ROW_TILES.index(rows)] > 0 and sum(ran) == ran[ROW_TILES.index(rows)], f"{rows} rows: ran {ran}"
            results[rows] = [out, *grads]
        names = ("output", "grad_input", "grad_weight", "grad_bias")
        for name, a, b in zip(names, *results.values()):
            assert (a is None and b is None) or torch.equal(a, b), f"{name} differs between the row tiles"


@needs_sm80
def test_row_tile_default(tensor_cores, monkeypatch):
    # Unforced, a gather GEMM takes 128-row tiles when that gives every SM at least 8 blocks, and
    # 64-row tiles below (tensor_core_kernels.cu: gather_rows_for).
    monkeypatch.delenv(ROWS_ENV, raising=False)
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    batch = -(-8 * sms * 128 // (56 * 56))  # 64 channels @ 56 x 56: one column tile, 8 blocks per SM
    x = torch.randn(batch, 64, 56, 56, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 5, device="cuda", dtype=torch.bfloat16)
    for images, expected in ((batch, (1, 0)), (1, (0, 1))):
        before = gather_launches()
        FORWARD(x[:images], w, None, [1, 1], [1, 1], [1, 1], 1)
        assert tuple(b - a for a, b in zip(before, gather_launches())) == expected, f"batch {images}"


@needs_sm80
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_result_conventions(dtype, channels_last, tensor_cores):
    # Same conventions as the CUDA-core kernels: output and grad_input in the input's memory format,
    # grad_weight contiguous in the weight's dtype, masked-out gradients as empty (0,) tensors;
    # a channels_last input whose data is not 16-byte aligned is copied, not misread.
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 11, 13, generator=gen).to("cuda", dtype)
    if channels_last:
        flat = torch.empty(x.numel() + 1, device="cuda", dtype=dtype)[1:]
        x = flat.as_strided(x.shape, (11 * 13 * 16, 1, 13 * 16, 16)).copy_(x)
        assert x.data_ptr() % 16 != 0 and x.is_contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 16, 5, generator=gen).to("cuda", dtype)
    b = torch.randn(24, generator=gen).to("cuda", dtype)
    args = ([1, 2], [1, 1], [1, 1], 1)
    y = FORWARD(x, w, b, *args)
    assert y.dtype == dtype and y.is_contiguous(memory_format=suggest_memory_format(x))
    dy = torch.randn(y.shape, generator=gen).to("cuda", dtype)
    for mask in ([True, True, True], [True, False, False], [False, True, False]):
        dx, dw, db = BACKWARD(dy, x, w, *args, mask)
        if mask[0]:
            assert dx.dtype == dtype and dx.is_contiguous(memory_format=suggest_memory_format(x))
        else:
            assert dx.shape == (0,)
        if mask[1]:
            assert dw.dtype == dtype and dw.is_contiguous() and dw.shape == w.shape
        else:
            assert dw.shape == (0,)
        assert db.shape == ((24,) if mask[2] else (0,))
    # And the values, through the oracle, from the misaligned input.
    config = dict(stride=(1, 2), padding=(1, 1), dilation=(1, 1), groups=1)
    ref_y, _, (ref_dx, ref_dw, _) = oracle(x, w, b, config, dy)
    dx, dw, _ = BACKWARD(dy, x, w, *args, [True, True, False])
    assert_close_to_oracle(y, ref_y, dtype, "output", precision(dtype))
    assert_close_to_oracle(dx, ref_dx, dtype, "grad_input", precision(dtype))
    assert_close_to_oracle(dw, ref_dw, dtype, "grad_weight", precision(dtype))


@needs_sm80
def test_empty_batch(tensor_cores):
    x = torch.empty(0, 16, 9, 10, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(16, 16, 5, device="cuda", dtype=torch.bfloat16)
    args = ([2, 1], [1, 1], [1, 1], 1)
    assert FORWARD(x, w, None, *args).shape == (0, 16, 5, 10)
    dy = torch.empty(0, 16, 5, 10, device="cuda", dtype=torch.bfloat16)
    dx, dw, _ = BACKWARD(dy, x, w, *args, [True, True, False])
    assert dx.shape == x.shape
    assert torch.equal(dw, torch.zeros_like(w))  # a sum over no pixels


# ---- determinism ---------------------------------------------------------------------------------


@needs_sm80
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bitwise_deterministic(dtype, tensor_cores):
    # Many pixel chunks per weight-gradient element: an unordered reduction would change low bits.
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(8, 64, 56, 56, generator=gen).to("cuda", dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 5, generator=gen).to("cuda", dtype)
    b = torch.randn(64, generator=gen).to("cuda", dtype)
    dy = torch.randn(8, 64, 56, 56, generator=gen).to("cuda", dtype)
    args = ([1, 1], [1, 1], [1, 1], 1)

    def run():
        return (FORWARD(x, w, b, *args), *BACKWARD(dy, x, w, *args, [True, True, True]))

    before = calls()
    first = run()
    assert delta(before) == (1, 1, 1)
    for _ in range(2):
        for name, a, b_ in zip(["output", "grad_input", "grad_weight", "grad_bias"], first, run()):
            assert torch.equal(a, b_), f"{name} differs between runs"


# ---- NCHW: the NCHW kernels, or the conversion to channels_last -----------------------------------


@needs_sm80
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", LARGE[:2] + CONFIGS[:4], ids=config_id)
def test_nchw_runs_in_place_and_matches_channels_last(config, dtype, tensor_cores, monkeypatch):
    # NCHW layers run the NCHW kernels (no conversion); SKELETON_CUDA_TENSOR_CORES_NCHW=0 converts
    # to channels_last instead. Both feed the same operands to the same mma sequence, so their
    # results must be bitwise identical, and both must match the oracle.
    x, weight, bias = make_tensors(config, dtype, "cuda", torch.contiguous_format)
    results = {}
    generator = torch.Generator().manual_seed(1)
    grad_output = torch.randn(*output_shape(config), generator=generator).to("cuda", dtype)
    for native in (True, False):
        monkeypatch.setenv("SKELETON_CUDA_TENSOR_CORES_NCHW", "1" if native else "0")
        before_all, before_nchw = calls(), nchw_calls()
        out, _, grads = forward_and_grads(skeleton_cuda.skeleton_conv2d, x, weight, bias, config, grad_output)
        assert delta(before_all) == (1, 1, 1)
        ran_nchw = tuple(b - a for a, b in zip(before_nchw, nchw_calls()))
        assert ran_nchw == ((1, 1, 1) if native else (0, 0, 0))
        assert out.is_contiguous() and grads[0].is_contiguous()
        results[native] = [out, *grads]
    ref_out, _, ref_grads = oracle(x, weight, bias, config, grad_output)
    names = ("output", "grad_input", "grad_weight", "grad_bias")
    for name, actual, ref in zip(names, results[True], [ref_out, *ref_grads]):
        if ref is not None:
            assert_close_to_oracle(actual, ref, dtype, name, precision(dtype))
    for name, a, b in zip(names, results[True], results[False]):
        assert (a is None and b is None) or torch.equal(a, b), f"{name}: the NCHW kernels and the channels_last ones disagree"


@needs_sm80
def test_nchw_default_route(tensor_cores, monkeypatch):
    # Without SKELETON_CUDA_TENSOR_CORES_NCHW, float32 NCHW layers run the NCHW kernels and 16-bit
    # ones convert (their NCHW kernels are opt-in until a GPU benchmark says they pay).
    monkeypatch.delenv("SKELETON_CUDA_TENSOR_CORES_NCHW", raising=False)
    config = CONFIGS[0]
    for dtype, expected in ((torch.float32, (1, 1, 1)), (torch.bfloat16, (0, 0, 0)), (torch.float16, (0, 0, 0))):
        before_all, before_nchw = calls(), nchw_calls()
        run_op_and_check(config, dtype, torch.contiguous_format)
        assert delta(before_all) == (1, 1, 1)
        assert tuple(b - a for a, b in zip(before_nchw, nchw_calls())) == expected, dtype


# ---- where users put it: CUDA graphs, torch.compile ------------------------------------------------


@needs_sm80
@pytest.mark.parametrize("dtype, memory_format", [(torch.bfloat16, torch.channels_last),
                                                  (torch.float32, torch.contiguous_format)], ids=["bf16-nhwc", "fp32-nchw"])
def test_cuda_graph_capture(dtype, memory_format, tensor_cores):
    # The tensor-core host code allocates (packed weights, partials) and queries the device; under
    # capture every launch must go to the capturing stream, and a replay on new values must match
    # eager execution bit for bit.
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 32, 20, 20, generator=gen).to("cuda", dtype).contiguous(memory_format=memory_format)
    w = torch.randn(48, 32, 5, generator=gen).to("cuda", dtype)
    b = torch.randn(48, generator=gen).to("cuda", dtype)
    dy = torch.randn(2, 48, 10, 20, generator=gen).to("cuda", dtype).contiguous(memory_format=memory_format)
    args = ([2, 1], [1, 1], [1, 1], 1)

    def run():
        return (FORWARD(x, w, b, *args), *BACKWARD(dy, x, w, *args, [True, True, True]))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        before = calls()
        run()
        assert delta(before) == (1, 1, 1)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    x.copy_(torch.randn(x.shape, generator=gen).to("cuda", dtype))
    dy.copy_(torch.randn(dy.shape, generator=gen).to("cuda", dtype))
    graph.replay()
    torch.cuda.synchronize()
    for name, got, want in zip(("output", "grad_input", "grad_weight", "grad_bias"), captured, run()):
        assert torch.equal(got, want), f"{name}: graph replay differs from eager"


@needs_sm80
@pytest.mark.parametrize("dtype, memory_format", [(torch.bfloat16, torch.channels_last),
                                                  (torch.float32, torch.contiguous_format)], ids=["bf16-nhwc", "fp32-nchw"])
def test_torch_compile_fullgraph(dtype, memory_format, tensor_cores):
    torch._dynamo.reset()
    layer = skeleton_cuda.SkeletonConv2d(16, 24, padding=1).to("cuda", dtype)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 16, 12, 10, device="cuda", dtype=dtype).contiguous(memory_format=memory_format)
    x.requires_grad_()
    before = calls()
    out = compiled(x)
    out.sum().backward()
    assert delta(before) == (1, 1, 1), "the compiled layer did not run the tensor cores"
    compiled_grads = [x.grad.clone(), layer.weight.grad.clone()]
    x.grad, layer.weight.grad = None, None
    eager = layer(x)
    eager.sum().backward()
    assert torch.equal(out, eager)
    assert torch.equal(compiled_grads[0], x.grad) and torch.equal(compiled_grads[1], layer.weight.grad)


# ---- routing and fallback ------------------------------------------------------------------------


@needs_sm80
def test_variable_routes_to_tensor_cores(monkeypatch):
    assert skeleton_cuda.has_cuda_kernels()
    config = layer(n=2, cout=32, h=9, w=11)
    for value in (None, "0", ""):  # unset or not "1": the CUDA-core kernels, as before
        if value is None:
            monkeypatch.delenv(ENV, raising=False)
        else:
            monkeypatch.setenv(ENV, value)
        before = calls()
        check_against_oracle(skeleton_cuda.skeleton_conv2d, config, torch.bfloat16, "cuda")
        assert delta(before) == (0, 0, 0)
    monkeypatch.setenv(ENV, "1")
    run_op_and_check(config, torch.bfloat16, torch.channels_last)
    # Read at every call: switching it off again takes effect at once.
    monkeypatch.setenv(ENV, "0")
    before = calls()
    check_against_oracle(skeleton_cuda.skeleton_conv2d, config, torch.bfloat16, "cuda")
    assert delta(before) == (0, 0, 0)


def layer(**changes):
    """A small layer configuration for the oracle helpers, with `changes` applied."""
    config = dict(n=1, cin=16, cout=16, h=7, w=7, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True)
    config.update(changes)
    return config


@needs_sm80
@pytest.mark.parametrize(
    "config, dtype",
    [
        (layer(n=2, cin=6, cout=6, h=9, w=9), torch.bfloat16),  # 6 channels: not a multiple of 8
        (layer(cin=8, cout=12, w=9, stride=(2, 1), padding=(1, 0), bias=False), torch.float16),  # 12 outputs
        (layer(groups=4), torch.bfloat16),  # 4 channels per group
        (layer(groups=16), torch.float16),  # depthwise
        (layer(cin=6, cout=8), torch.float32),  # 6 channels: not a multiple of 4
        (layer(groups=8), torch.float32),  # 2 channels per group
        (layer(), torch.float64),  # no tensor-core kernel for float64
    ],
    ids=["channels6", "cout12", "4_per_group", "depthwise", "float32_channels6", "float32_2_per_group", "float64"],
)
def test_unsupported_layers_fall_back(config, dtype, tensor_cores):
    before = calls()
    check_against_oracle(skeleton_cuda.skeleton_conv2d, config, dtype, "cuda")
    assert delta(before) == (0, 0, 0)


@needs_sm80
def test_float32_needs_tf32_allowed(tensor_cores):
    # TF32 keeps 10 of float32's 23 mantissa bits: with it disallowed for convolutions (as a user
    # does to get nn.Conv2d's full float32 precision) float32 layers keep the exact CUDA-core kernels.
    config = layer(n=2, cin=16, cout=24, h=9, w=11)
    run_op_and_check(config, torch.float32, torch.channels_last)
    with allow_tf32(False):
        before = calls()
        check_against_oracle(skeleton_cuda.skeleton_conv2d, config, torch.float32, "cuda")  # float32 tolerance
        assert delta(before) == (0, 0, 0)


@pytest.mark.skipif(not skeleton_cuda.has_cuda_kernels(), reason="built without CUDA kernels")
def test_tf32_flag_is_the_one_nn_conv2d_obeys():
    # Needs the CUDA build, not a GPU: the op reads the flag cuDNN convolutions read, at every call.
    for allowed in (False, True, False):
        with allow_tf32(allowed):
            assert torch.ops.skeleton_cuda.conv_allows_tf32() is allowed
    if hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"):
        # The per-operator flag: TF32 for recurrent layers says nothing about convolutions.
        rnn = torch.backends.cudnn.rnn
        old = rnn.fp32_precision
        try:
            with allow_tf32(False):
                rnn.fp32_precision = "tf32"
                assert torch.ops.skeleton_cuda.conv_allows_tf32() is False
        finally:
            rnn.fp32_precision = old


# ---- without a GPU: the block bodies on the emulator ---------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the emulator's fibers use glibc's ucontext")
def test_emulator_runs_the_block_bodies(tmp_path):
    source = os.path.join(ROOT, "tests", "tensor_core_emulator.cpp")
    if not os.path.exists(source):
        pytest.skip("sources not available (installed package)")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    binary = str(tmp_path / "tc_emulator")
    build = subprocess.run(
        [compiler, "-std=c++17", "-O2", "-I", os.path.join(ROOT, "csrc"), source, "-o", binary],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "ucontext" in build.stderr:
        pytest.skip("this C library has no ucontext (the emulator's fibers)")
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([binary, "quick"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "ALL OK" in run.stdout, (run.stdout + run.stderr)[-4000:]
