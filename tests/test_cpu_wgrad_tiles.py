"""The CPU weight gradient's tile shapes. Layers with at most 4 input channels per group (a
network's first layer on RGB or grayscale images, narrow groups): tiles of all five taps at once,
one vector of output channels wide (float32 and float64 multiply-adds, pairs of pixels in the
AVX512_BF16 kernels), with channels_last batches split into fixed slots of images. Layers whose
channels leave a short last tile per tap (16 = 14 + 2): tiles of 8 rows. Against the float64 oracle
in every kernel family, dtype and layout, and bit for bit across thread counts."""

import pytest
import torch

import skeleton_cuda
from oracle import (CPU_KERNEL_CASE_IDS, CPU_KERNEL_CASES, check_against_oracle, config_id, layer, make_tensors,
                    select_cpu_isa)

pytestmark = pytest.mark.skipif(not skeleton_cuda.has_compiled_ops(), reason="compiled ops not built")

ops = torch.ops.skeleton_cuda


# k = 1, 2, 3 and 4 input channels per group (5, 10, 15 and 20 rows: one tile on AVX-512, two on
# AVX2 and the generic kernels for k = 3 and 4); output channels filling one vector, less than one
# (grad_output padded), and several; batches of one image, of 3 (a slot each), of 17 and 20 (more
# than the 16 slots, some of two images); chunks of 128 pixels with an odd remainder (the bfloat16 kernels' last pixel
# pair); strides, paddings and dilations; three groups (each group's input gathered on its own);
# and k = 5, the first layer past the threshold, on the general tiles.
LAYERS = [
    layer(2, 3, 64, 13, 11),
    layer(1, 3, 16, 40, 37, stride=(2, 1), padding=(2, 1), dilation=(2, 1)),
    layer(3, 1, 20, 9, 15, padding=(0, 2), bias=False),
    layer(20, 2, 5, 7, 6, stride=(1, 2)),
    layer(3, 4, 33, 12, 9, dilation=(1, 3), padding=(1, 3)),
    layer(2, 9, 24, 10, 10, groups=3),
    layer(17, 12, 12, 5, 7, stride=(2, 2), groups=3, bias=False),
    layer(2, 5, 16, 9, 9),
]

# Short tiles of 8 rows: 16 input channels at one and two vectors of outputs (14 + 2 and 12 + 4 rows
# otherwise), 20 (14 + 6), 32 at two vectors (12 + 12 + 8; the bfloat16 kernels keep 12), and 24 at
# two vectors, which keeps its tiles of 12 (12 + 12).
SHORT_TILE_LAYERS = [
    layer(2, 16, 16, 9, 10),
    layer(3, 16, 32, 7, 8, stride=(2, 1)),
    layer(2, 20, 9, 8, 8, groups=1, bias=False),
    layer(2, 32, 32, 6, 7, dilation=(2, 1), padding=(2, 1)),
    layer(1, 48, 48, 5, 5, groups=2),
]

def skeleton(x, w, b, stride, padding, dilation, groups):
    return ops.skeleton_conv2d(x, w, b, stride, padding, dilation, groups)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("isa,dtype", CPU_KERNEL_CASES, ids=CPU_KERNEL_CASE_IDS)
@pytest.mark.parametrize("config", LAYERS + SHORT_TILE_LAYERS, ids=config_id)
def test_few_channel_and_short_tile_layers_match_the_oracle(config, isa, dtype, memory_format, cpu_isa):
    select_cpu_isa(isa, cpu_isa)
    check_against_oracle(skeleton, config, dtype, memory_format=memory_format)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_many_groups_of_few_channels_on_tiny_images(dtype):
    # 16 images of 64 groups of 4 -> 4 channels at 1 x 2: the slots' sums would outweigh the input,
    # so they are not split into slots; still the oracle's result.
    check_against_oracle(skeleton, layer(16, 256, 256, 1, 2, groups=64), dtype, memory_format=torch.channels_last)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_few_channel_weight_gradient_does_not_depend_on_the_threads(dtype, memory_format):
    config = layer(20, 3, 48, 23, 19, stride=(2, 1))
    x, w, _ = make_tensors(config, dtype, memory_format=memory_format)
    gy = torch.randn(20, 48, 12, 19).to(dtype).contiguous(memory_format=memory_format)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(ops.skeleton_conv2d_backward(gy, x, w, [2, 1], [1, 1], [1, 1], 1, [False, True, False])[1])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])
