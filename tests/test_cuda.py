"""The CUDA kernels of skeleton_conv2d: the float64 oracle, result layouts, determinism, autocast,
torch.compile, CUDA graphs and int64 indexing. Skipped where there is no CUDA GPU.

The oracle is always the same: a dense 3x3 convolution with zero corners (reference.py) computed in
float64 on the CPU, from the very values (already rounded to the tested dtype) the kernels see.
"""

import itertools
import random

import pytest
import torch
from torch._prims_common import suggest_memory_format

import skeleton_cuda
from oracle import check_input_without_rows, check_layer_without_channels
from skeleton_cuda.reference import skeleton_conv2d_reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = torch.device("cuda")
FORWARD = torch.ops.skeleton_cuda.skeleton_conv2d
BACKWARD = torch.ops.skeleton_cuda.skeleton_conv2d_backward

# Largest error allowed, as a fraction of the largest magnitude in the reference tensor. 16-bit
# results are rounded once from a float32 accumulator (half an ulp: 2^-11 for float16, 2^-8 for
# bfloat16); an indexing bug gives errors of order 1.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 5e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}
DTYPES = list(TOLERANCE)


@pytest.fixture(autouse=True)
def _default_routing(monkeypatch):
    # These tests are of the default kernels, at float32 tolerances that assume no TF32: a routing
    # switch left in the environment (the runbook's benchmark stages set them) must not leak in.
    # Tests of the other routes set it themselves.
    for name in ("SKELETON_CUDA_TENSOR_CORES", "SKELETON_CUDA_DIRECT_KERNELS", "SKELETON_CUDA_WIDE_INDEX"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _kernels_built():
    # On a GPU machine a build without CUDA kernels is a failure, not a reason to skip: the public
    # function would silently fall back to the dense reference.
    assert skeleton_cuda.has_cuda_kernels(), "skeleton_cuda was built without CUDA kernels (FORCE_CUDA=1)"


def assert_matches(actual, expected, dtype, what):
    expected = expected.detach().to("cpu", torch.float64)
    actual = actual.detach().to("cpu", torch.float64)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if expected.numel() == 0:
        return
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * max(scale, 1e-6), (
        f"{what} ({dtype}): max error {error:.3e} vs max |reference| {scale:.3e}, "
        f"allowed {TOLERANCE[dtype]:.1e} relative"
    )


def oracle(x, w, b, dy, stride, padding, dilation, groups):
    """Output and (grad_input, grad_weight, grad_bias) in float64 on the CPU."""
    x64 = x.detach().to("cpu", torch.float64).requires_grad_()
    w64 = w.detach().to("cpu", torch.float64).requires_grad_()
    b64 = None if b is None else b.detach().to("cpu", torch.float64).requires_grad_()
    y = skeleton_conv2d_reference(x64, w64, b64, stride, padding, dilation, groups)
    leaves = [x64, w64] + ([b64] if b64 is not None else [])
    grads = torch.autograd.grad(y, leaves, dy.detach().to("cpu", torch.float64))
    return y, grads[0], grads[1], grads[2] if b64 is not None else None


# ---- inputs in many layouts ----------------------------------------------------------------------


def make_tensor(shape, layout, dtype, gen):
    """A CUDA tensor of `shape` with random values, laid out as `layout` says."""
    n, c, h, w = shape

    def randn(*size):
        # Draw on the CPU (reproducible), move while dense (strides kept), then take views on the GPU.
        return torch.randn(*size, generator=gen).to(CUDA, dtype)

    if layout == "contiguous":
        return randn(n, c, h, w)
    if layout == "channels_last":
        return randn(n, h, w, c).permute(0, 3, 1, 2)
    if layout == "sliced":  # every other column, storage offset 1
        return randn(n, c, h, 2 * w + 1)[..., 1::2]
    if layout == "transposed":  # H and W strides swapped
        return randn(n, c, w, h).transpose(2, 3)
    if layout == "channels_last_offset":  # channels_last-contiguous, data pointer off by one element
        flat = randn(n * h * w * c + 1)[1:]
        return flat.as_strided((n, c, h, w), (h * w * c, 1, w * c, c))
    if layout == "expanded":  # stride 0: what y.sum().backward() hands the backward
        return randn(1, c, 1, 1).expand(n, c, h, w)
    raise ValueError(layout)


INPUT_LAYOUTS = ["contiguous", "channels_last", "sliced", "transposed", "channels_last_offset"]
GRAD_LAYOUTS = INPUT_LAYOUTS + ["expanded"]


def random_config(rng):
    kind = rng.choice(["dense", "grouped", "depthwise", "depthwise", "multiplier"])
    if kind == "dense":
        groups, cin, cout = 1, rng.randint(1, 7), rng.randint(1, 7)
    elif kind == "grouped":
        groups = rng.choice([2, 3])
        cin, cout = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    elif kind == "depthwise":  # multiples of 8 take the 16-byte pack kernels, the rest V = 1
        groups = cin = cout = rng.choice([1, 3, 5, 8, 16, 24, 40, 64])
    else:  # groups == C_in but two output channels per group: the dense kernels
        groups = cin = rng.choice([2, 4])
        cout = 2 * cin
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    dilation = (rng.randint(1, 3), rng.randint(1, 3))
    # The padded input must hold the dilated 3x3 extent (2 * dilation + 1).
    height = rng.randint(max(1, 2 * dilation[0] + 1 - 2 * padding[0]), 19)
    width = rng.randint(max(1, 2 * dilation[1] + 1 - 2 * padding[1]), 19)
    return {
        "kind": kind,
        "batch": rng.randint(1, 3),
        "cin": cin,
        "cout": cout,
        "groups": groups,
        "size": (height, width),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "bias": rng.random() < 0.75,
        "layout": rng.choice(INPUT_LAYOUTS),
        "grad_layout": rng.choice(GRAD_LAYOUTS),
        "strided_weight": rng.random() < 0.25,
    }


CONFIGS = [random_config(random.Random(seed)) for seed in range(48)]


def make_case(cfg, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h, w = cfg["size"]
    x = make_tensor((cfg["batch"], cfg["cin"], h, w), cfg["layout"], dtype, gen)
    cin_g = cfg["cin"] // cfg["groups"]
    if cfg["strided_weight"]:
        weight = torch.randn(cfg["cout"], cin_g, 7, generator=gen).to(CUDA, dtype)[..., 1:6]
    else:
        weight = torch.randn(cfg["cout"], cin_g, 5, generator=gen).to(CUDA, dtype)
    bias = torch.randn(2 * cfg["cout"], generator=gen).to(CUDA, dtype)[::2] if cfg["bias"] else None
    out_h, out_w = skeleton_cuda.ops.output_size(h, w, cfg["stride"], cfg["padding"], cfg["dilation"])
    dy = make_tensor((cfg["batch"], cfg["cout"], out_h, out_w), cfg["grad_layout"], dtype, gen)
    return x, weight, bias, dy


def conv_args(cfg):
    return [list(cfg["stride"]), list(cfg["padding"]), list(cfg["dilation"]), cfg["groups"]]


# ---- correctness against the oracle ------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_matches_float64_oracle(index, dtype):
    cfg = CONFIGS[index]
    x, w, b, dy = make_case(cfg, dtype, seed=index)
    args = conv_args(cfg)
    ref_y, ref_dx, ref_dw, ref_db = oracle(x, w, b, dy, *args)

    y = FORWARD(x, w, b, *args)
    assert y.dtype == dtype and y.device == x.device
    assert y.is_contiguous(memory_format=suggest_memory_format(x)), f"output strides {y.stride()} for {cfg}"
    assert_matches(y, ref_y, dtype, f"output {cfg}")

    dx, dw, db = BACKWARD(dy, x, w, *args, [True, True, b is not None])
    assert dx.dtype == dtype and dw.dtype == dtype
    assert dx.is_contiguous(memory_format=suggest_memory_format(x)), f"grad_input strides {dx.stride()}"
    assert dw.is_contiguous()
    assert_matches(dx, ref_dx, dtype, f"grad_input {cfg}")
    assert_matches(dw, ref_dw, dtype, f"grad_weight {cfg}")
    if b is not None:
        assert db.dtype == dtype
        assert_matches(db, ref_db, dtype, f"grad_bias {cfg}")
    else:
        assert db.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("index", range(0, len(CONFIGS), 3))
def test_direct_kernels_match_float64_oracle(index, dtype, monkeypatch):
    # Dense layers run the tiled kernels by default; SKELETON_CUDA_DIRECT_KERNELS=1 selects the
    # direct ones, the fallback for layers beyond the tiled kernels' 32-bit coordinates.
    monkeypatch.setenv("SKELETON_CUDA_DIRECT_KERNELS", "1")
    test_matches_float64_oracle(index, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "kind, cin, cout, groups",
    [("dense", 16, 24, 1), ("grouped", 32, 16, 4), ("depthwise", 48, 48, 48), ("depthwise_odd", 13, 13, 13)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_larger_layers_through_autograd(kind, cin, cout, groups, dtype, channels_last):
    # Enough pixels for several reduction chunks and grid-stride iterations; through autograd and
    # the public function, as a model would call it.
    gen = torch.Generator().manual_seed(cin * 7 + cout)
    x = torch.randn(3, cin, 37, 29, generator=gen).to(CUDA, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(cout, cin // groups, 5, generator=gen).to(CUDA, dtype)
    b = torch.randn(cout, generator=gen).to(CUDA, dtype)
    args = ([2, 1], [1, 2], [1, 2], groups)
    x.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    y = skeleton_cuda.skeleton_conv2d(x, w, b, *args)
    dy = torch.randn(y.shape, generator=gen).to(CUDA, dtype)
    y.backward(dy)
    ref_y, ref_dx, ref_dw, ref_db = oracle(x, w, b, dy, *args)
    assert_matches(y, ref_y, dtype, "output")
    assert_matches(x.grad, ref_dx, dtype, "grad_input")
    assert_matches(w.grad, ref_dw, dtype, "grad_weight")
    assert_matches(b.grad, ref_db, dtype, "grad_bias")


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    for cin, cout, groups, stride, padding, dilation in [
        (3, 2, 1, (1, 2), (1, 0), (1, 2)),
        (4, 4, 2, (2, 2), (2, 1), (2, 1)),
        (3, 3, 3, (1, 1), (1, 1), (1, 1)),
        (2, 4, 2, (3, 1), (0, 2), (1, 3)),
    ]:
        x = torch.randn(2, cin, 8, 7, generator=gen, dtype=torch.float64).to(CUDA).requires_grad_()
        w = torch.randn(cout, cin // groups, 5, generator=gen, dtype=torch.float64).to(CUDA).requires_grad_()
        b = torch.randn(cout, generator=gen, dtype=torch.float64).to(CUDA).requires_grad_()
        args = (list(stride), list(padding), list(dilation), groups)
        assert torch.autograd.gradcheck(lambda x, w, b: FORWARD(x, w, b, *args), (x, w, b))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("depthwise", [False, True])
def test_opcheck(depthwise, channels_last):
    c = 8
    x = torch.randn(2, c, 10, 9, device=CUDA)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1 if depthwise else c, 5, device=CUDA)
    b = torch.randn(c, device=CUDA)
    args = ([1, 2], [1, 1], [1, 1], c if depthwise else 1)
    torch.library.opcheck(FORWARD, (x, w, b, *args))
    torch.library.opcheck(FORWARD, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), *args))
    dy = torch.randn(2, c, 10, 5, device=CUDA)
    torch.library.opcheck(BACKWARD, (dy, x.detach(), w.detach(), *args, [True, True, True]))


# ---- result conventions ----------------------------------------------------------------------


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("mask", list(itertools.product([False, True], repeat=3)))
def test_output_mask(mask, depthwise):
    gen = torch.Generator().manual_seed(1)
    c = 16
    x = torch.randn(2, c, 11, 12, generator=gen).to(CUDA)
    w = torch.randn(c, 1 if depthwise else c, 5, generator=gen).to(CUDA)
    dy = torch.randn(2, c, 11, 12, generator=gen).to(CUDA)
    args = ([1, 1], [1, 1], [1, 1], c if depthwise else 1)
    full = BACKWARD(dy, x, w, *args, [True, True, True])
    part = BACKWARD(dy, x, w, *args, list(mask))
    for wanted, got, expected in zip(mask, part, full):
        if wanted:
            assert torch.equal(got, expected)
        else:
            assert got.shape == (0,)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("depthwise", [False, True])
def test_empty_batch(depthwise, channels_last):
    c = 8
    x = torch.empty(0, c, 9, 10, device=CUDA)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1 if depthwise else c, 5, device=CUDA)
    b = torch.randn(c, device=CUDA)
    args = ([2, 1], [1, 1], [1, 1], c if depthwise else 1)
    y = FORWARD(x, w, b, *args)
    assert y.shape == (0, c, 5, 10)
    dy = torch.empty(0, c, 5, 10, device=CUDA)
    dx, dw, db = BACKWARD(dy, x, w, *args, [True, True, True])
    assert dx.shape == x.shape
    # Sums over no pixels are zeros, not uninitialised memory.
    assert torch.equal(dw, torch.zeros_like(w))
    assert torch.equal(db, torch.zeros_like(b))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("depthwise", [False, True])
def test_input_without_rows(depthwise, channels_last):
    # The CPU op's check (test_cpu_oracle.py) on the GPU. The depthwise kernels used to build a
    # divisor from the 0 (SIGFPE). An empty tensor suggests NCHW whatever its strides, so both cases
    # take the NCHW depthwise kernels here; the channels_last launcher's case is in
    # test_cuda_kernels_on_cpu.py.
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    check_input_without_rows(8 if depthwise else 1, device=CUDA, memory_format=memory_format)


def test_pack_and_scalar_depthwise_paths_agree():
    # 16 float32 channels: aligned channels_last tensors take the 4-channel pack kernels, the same
    # values one element off alignment the scalar ones. Per element both add the same products in
    # the same order, so output and input gradient agree bitwise.
    gen = torch.Generator().manual_seed(3)
    n, c, h, w = 2, 16, 13, 15
    args = ([1, 1], [1, 1], [2, 1], c)  # output 11 x 15

    def pair(height, width):
        aligned = torch.randn(n, height, width, c, generator=gen).to(CUDA).permute(0, 3, 1, 2)
        flat = torch.empty(n * height * width * c + 1, device=CUDA)[1:]
        offset = flat.as_strided(aligned.shape, (height * width * c, 1, width * c, c))
        offset.copy_(aligned)
        assert offset.data_ptr() % 16 != 0 and offset.is_contiguous(memory_format=torch.channels_last)
        return aligned, offset

    x, x_offset = pair(h, w)
    dy, dy_offset = pair(11, 15)
    weight = torch.randn(c, 1, 5, generator=gen).to(CUDA)
    bias = torch.randn(c, generator=gen).to(CUDA)
    assert torch.equal(FORWARD(x, weight, bias, *args), FORWARD(x_offset, weight, bias, *args))
    packed = BACKWARD(dy, x, weight, *args, [True, True, True])
    scalar = BACKWARD(dy_offset, x_offset, weight, *args, [True, True, True])
    assert torch.equal(packed[0], scalar[0])
    # The weight-gradient blocks differ in shape (channel packs x pixel lanes), so the sums are
    # grouped differently: equal up to rounding.
    torch.testing.assert_close(packed[1], scalar[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[2], scalar[2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_index_paths_agree(stride, memory_format, monkeypatch):
    # The depthwise kernels (both layouts) divide indices by multiply-high and shift below 2^31
    # elements and by 64-bit division beyond (SKELETON_CUDA_WIDE_INDEX=1 forces the latter): the
    # same quotients, so the same bits in every result.
    gen = torch.Generator().manual_seed(4)
    c = 24
    x = torch.randn(2, c, 17, 19, generator=gen).to(CUDA).contiguous(memory_format=memory_format)
    weight = torch.randn(c, 1, 5, generator=gen).to(CUDA)
    bias = torch.randn(c, generator=gen).to(CUDA)
    args = ([stride, stride], [1, 2], [1, 2], c)
    results = {}
    for index in ("0", "1"):
        monkeypatch.setenv("SKELETON_CUDA_WIDE_INDEX", index)
        y = FORWARD(x, weight, bias, *args)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(CUDA)
        results[index] = (y, *BACKWARD(dy, x, weight, *args, [True, True, True]))
    for name, narrow, wide in zip(("output", "grad_input", "grad_weight", "grad_bias"), results["0"], results["1"]):
        assert torch.equal(narrow, wide), name


def test_wrong_device_is_an_error():
    x = torch.randn(1, 4, 8, 8, device=CUDA)
    w = torch.randn(4, 4, 5)
    with pytest.raises(RuntimeError, match="expected weight on the input's device"):
        FORWARD(x, w, None, [1, 1], [1, 1], [1, 1], 1)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_runs_on_the_tensors_device():
    # The current device is 0; the tensors live on device 1: the kernels must follow the tensors.
    device = torch.device("cuda", 1)
    gen = torch.Generator().manual_seed(4)
    for groups, cin, cout in [(1, 6, 5), (8, 8, 8)]:
        x = torch.randn(2, cin, 12, 12, generator=gen).to(device)
        w = torch.randn(cout, cin // groups, 5, generator=gen).to(device)
        dy = torch.randn(2, cout, 12, 12, generator=gen).to(device)
        args = ([1, 1], [1, 1], [1, 1], groups)
        y = FORWARD(x, w, None, *args)
        dx, dw, _ = BACKWARD(dy, x, w, *args, [True, True, False])
        ref_y, ref_dx, ref_dw, _ = oracle(x, w, None, dy, *args)
        assert y.device == device
        assert_matches(y, ref_y, torch.float32, "output on cuda:1")
        assert_matches(dx, ref_dx, torch.float32, "grad_input on cuda:1")
        assert_matches(dw, ref_dw, torch.float32, "grad_weight on cuda:1")


# ---- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["dense", "depthwise", "depthwise-nchw"])
def test_bitwise_deterministic(kind, dtype):
    # Large enough for many partial sums per weight element; an unordered (atomic) reduction
    # would change the float32 low bits between runs.
    gen = torch.Generator().manual_seed(5)
    c = 32 if kind == "dense" else 96
    groups = 1 if kind == "dense" else c
    memory_format = torch.contiguous_format if kind == "depthwise-nchw" else torch.channels_last
    x = torch.randn(8, c, 56, 56, generator=gen).to(CUDA, dtype).contiguous(memory_format=memory_format)
    w = torch.randn(c, c // groups, 5, generator=gen).to(CUDA, dtype)
    b = torch.randn(c, generator=gen).to(CUDA, dtype)
    dy = torch.randn(8, c, 56, 56, generator=gen).to(CUDA, dtype)
    args = ([1, 1], [1, 1], [1, 1], groups)

    def run():
        return (FORWARD(x, w, b, *args), *BACKWARD(dy, x, w, *args, [True, True, True]))

    first = run()
    for _ in range(3):
        again = run()
        for name, a, b_ in zip(["output", "grad_input", "grad_weight", "grad_bias"], first, again):
            assert torch.equal(a, b_), f"{name} differs between runs"


# ---- launches ----------------------------------------------------------------------------------


def kernels_launched(fn):
    """Names of the GPU kernels fn() launches, from the profiler (None where it records none).
    CPU activity is recorded too: with CUDA alone some builds' traces come back without kernels."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    not_kernels = ("memcpy", "memset", "context sync", "stream sync", "event sync", "stream wait event")
    names = [
        e.name
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not getattr(e, "is_user_annotation", False)
        and not e.name.lower().startswith(not_kernels)
    ]
    return names or None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_depthwise_launches(memory_format, dtype):
    # Small depthwise layers are bound by launches as much as by memory. NCHW: the forward is one
    # kernel (the (C, 1, 5) weight read in place, warp-uniform), the backward three (input
    # gradient; weight-gradient partials carrying the bias sums; one pass that adds them and writes
    # both gradients in the weight's layout and dtype). channels_last adds one small copy to each,
    # the weight as [5][C] (depthwise_kernels.cu says why). No layout conversion in either.
    c = 64
    x = torch.randn(4, c, 28, 28, device=CUDA, dtype=dtype).contiguous(memory_format=memory_format)
    w = torch.randn(c, 1, 5, device=CUDA, dtype=dtype)
    b = torch.randn(c, device=CUDA, dtype=dtype)
    dy = torch.randn(4, c, 28, 28, device=CUDA, dtype=dtype).contiguous(memory_format=memory_format)
    args = ([1, 1], [1, 1], [1, 1], c)
    forward = kernels_launched(lambda: FORWARD(x, w, b, *args))
    if forward is None:
        pytest.skip("the profiler recorded no GPU kernels here")
    backward = kernels_launched(lambda: BACKWARD(dy, x, w, *args, [True, True, True]))
    assert backward is not None, "the profiler recorded the forward's kernels but none of the backward's"
    weight_copy = 1 if memory_format == torch.channels_last else 0
    assert len(forward) == 1 + weight_copy, forward
    assert len(backward) == 3 + weight_copy, backward


# ---- integration: autocast, torch.compile, CUDA graphs ------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("groups", [1, 16])
def test_autocast(dtype, groups):
    gen = torch.Generator().manual_seed(6)
    layer = skeleton_cuda.SkeletonConv2d(16, 16, stride=1, padding=1, groups=groups).to(CUDA)
    x = torch.randn(2, 16, 14, 14, generator=gen).to(CUDA).requires_grad_()
    with torch.autocast("cuda", dtype=dtype):
        y = layer(x)
    assert y.dtype == dtype
    dy = torch.randn(y.shape, generator=gen).to(CUDA, dtype)
    y.backward(dy)
    # Parameters and input stay float32 and so do their gradients.
    assert x.grad.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype == torch.float32
    ref_y, ref_dx, ref_dw, ref_db = oracle(
        x.to(dtype), layer.weight.to(dtype), layer.bias.to(dtype), dy, [1, 1], [1, 1], [1, 1], groups
    )
    assert_matches(y, ref_y, dtype, "autocast output")
    assert_matches(x.grad, ref_dx, dtype, "autocast grad_input")
    assert_matches(layer.weight.grad, ref_dw, dtype, "autocast grad_weight")
    assert_matches(layer.bias.grad, ref_db, dtype, "autocast grad_bias")


@pytest.mark.parametrize("groups", [1, 8])
def test_torch_compile_fullgraph(groups):
    torch._dynamo.reset()
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("inductor")

    def block(x, w, b):
        return torch.relu(torch.ops.skeleton_cuda.skeleton_conv2d(x, w, b, [2, 1], [1, 1], [1, 1], groups)) * 2.0

    compiled = torch.compile(block, fullgraph=True, backend=counter)
    gen = torch.Generator().manual_seed(7)
    for _ in range(2):  # new values, same shapes: no recompilation
        x = torch.randn(2, 8, 13, 12, generator=gen).to(CUDA).requires_grad_()
        w = torch.randn(8, 8 // groups, 5, generator=gen).to(CUDA).requires_grad_()
        b = torch.randn(8, generator=gen).to(CUDA).requires_grad_()
        out = compiled(x, w, b)
        expected = block(x, w, b)
        torch.testing.assert_close(out, expected)
        grads = torch.autograd.grad(out.sum(), (x, w, b))
        expected_grads = torch.autograd.grad(expected.sum(), (x, w, b))
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want)
    assert counter.frame_count == 1


def test_torch_compile_public_function():
    # The module and functional API must stay one graph too, not only the raw op.
    torch._dynamo.reset()
    layer = skeleton_cuda.SkeletonConv2d(8, 8, padding=1).to(CUDA)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 8, 10, 10, device=CUDA)
    torch.testing.assert_close(compiled(x), layer(x))


@pytest.mark.parametrize("groups", [1, 32])
def test_cuda_graph_capture(groups):
    # Kernels launched on anything but the current stream break capture; a replay must then
    # match eager execution on the new values bit for bit (the kernels are deterministic).
    gen = torch.Generator().manual_seed(8)
    c = 32
    x = torch.randn(2, c, 20, 20, generator=gen).to(CUDA).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c // groups, 5, generator=gen).to(CUDA)
    b = torch.randn(c, generator=gen).to(CUDA)
    dy = torch.randn(2, c, 20, 20, generator=gen).to(CUDA)
    args = ([1, 1], [1, 1], [1, 1], groups)

    def run():
        return (FORWARD(x, w, b, *args), *BACKWARD(dy, x, w, *args, [True, True, True]))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()

    x.copy_(torch.randn(x.shape, generator=gen).to(CUDA))
    dy.copy_(torch.randn(dy.shape, generator=gen).to(CUDA))
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip(captured, run()):
        assert torch.equal(got, want)


# ---- int64 indexing --------------------------------------------------------------------------


def _sum_f64(a, b, rows=2048):
    """sum(a * b) in float64 for two (H, W) float32 CUDA views, in slices of rows."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for r in range(0, a.shape[0], rows):
        total += (a[r : r + rows].double() * b[r : r + rows].double()).sum()
    return total.item()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["depthwise", "depthwise-nchw", "dense", "dense-direct"])
def test_int64_indexing(kind, monkeypatch):
    # Tensors of more than 2^31 elements: with 32-bit offsets the tail of the image would be read
    # and written at wrapped addresses (wrong values or an illegal access). The dense layer has
    # fewer grid points than the tiled kernels' limit, so they take it; "dense-direct" forces the
    # direct kernels (dense_kernels.cu), which exist for layers past that limit.
    # Peak: depthwise and direct about 24 GiB (x, dy, dx: 8.1 GiB each); tiled about 41 GiB (their
    # channels_last copies of the NCHW x and dy on top of them).
    needed = 48 if kind == "dense" else 28
    if kind == "dense-direct":
        monkeypatch.setenv("SKELETON_CUDA_DIRECT_KERNELS", "1")
    free, _ = torch.cuda.mem_get_info()
    if free < needed * 2**30:
        pytest.skip(f"needs {needed} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    if kind == "depthwise":
        c, size, groups = 8, 16500, 8
        shape_nhwc = (1, size, size, c)
        x = torch.randn(shape_nhwc, device=CUDA).permute(0, 3, 1, 2)  # channels_last
    elif kind == "depthwise-nchw":  # the NCHW depthwise kernels (depthwise_nchw_kernels.cu)
        c, size, groups = 8, 16500, 8
        x = torch.randn(1, c, size, size, device=CUDA)
    else:
        c, size, groups = 2, 33000, 1
        x = torch.randn(1, c, size, size, device=CUDA)
    assert x.numel() > 2**31
    gen = torch.Generator().manual_seed(9)
    w = torch.randn(c, c // groups, 5, generator=gen).to(CUDA)
    b = torch.randn(c, generator=gen).to(CUDA)
    args = ([1, 1], [1, 1], [1, 1], groups)

    y = FORWARD(x, w, b, *args)
    assert y.shape == x.shape
    # With padding 1, output rows 0..6 depend only on input rows 0..7, and the last 7 output rows
    # on the last 8 input rows: compare those against the oracle on 8-row crops.
    head = oracle(x[:, :, :8], w, b, torch.zeros(1, c, 8, size), *args)[0]
    tail = oracle(x[:, :, -8:], w, b, torch.zeros(1, c, 8, size), *args)[0]
    assert_matches(y[:, :, :7], head[:, :, :7], torch.float32, "output head")
    assert_matches(y[:, :, -7:], tail[:, :, 1:], torch.float32, "output tail")
    del y

    dy = torch.randn_like(x)  # same layout as x
    dx, dw, _ = BACKWARD(dy, x, w, *args, [True, True, False])
    # Input-gradient rows 1..7 of a crop see the same grad_output rows as the full tensor's.
    tail_dx = oracle(x[:, :, -8:], w, None, dy[:, :, -8:], *args)[1]
    head_dx = oracle(x[:, :, :8], w, None, dy[:, :, :8], *args)[1]
    assert_matches(dx[:, :, -7:], tail_dx[:, :, 1:], torch.float32, "grad_input tail")
    assert_matches(dx[:, :, :7], head_dx[:, :, :7], torch.float32, "grad_input head")
    del dx

    # Weight gradient: for stride 1, padding 1, dilation 1 each tap is a sum of products of dy
    # and x shifted by one pixel (T, L, C, R, B).
    shifts = [
        (lambda d: d[1:, :], lambda v: v[:-1, :]),  # T reads the row above
        (lambda d: d[:, 1:], lambda v: v[:, :-1]),  # L
        (lambda d: d, lambda v: v),  # C
        (lambda d: d[:, :-1], lambda v: v[:, 1:]),  # R
        (lambda d: d[:-1, :], lambda v: v[1:, :]),  # B
    ]
    pixels = size * size
    per_group = c // groups  # input and output channels per group
    for co in range(c):
        for ci_local in range(per_group):
            ci = (co // per_group) * per_group + ci_local
            for t, (cut_dy, cut_x) in enumerate(shifts):
                expected = _sum_f64(cut_dy(dy[0, co]), cut_x(x[0, ci]))
                got = dw[co, ci_local, t].item()
                # float32 partial sums over ~2.7e8 products of unit normals: error far below 1e-4 sqrt(P).
                assert abs(got - expected) <= 1e-4 * pixels**0.5, (co, ci_local, t, got, expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels", [(0, 4), (4, 0)], ids=["no-input-channels", "no-output-channels"])
def test_layers_without_channels(channels, dtype, memory_format):
    # The tiled kernels' routing divided by a count of 0 column tiles, and launched 0 blocks.
    check_layer_without_channels(*channels, dtype, device=CUDA, memory_format=memory_format)
