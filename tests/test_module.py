"""SkeletonConv2d behaves like nn.Conv2d(kernel_size=3) with zero corners."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skeleton_cuda import SkeletonConv2d, dense_to_skeleton_weight, skeleton_to_dense_weight


def dense_twin(module):
    """nn.Conv2d computing exactly what `module` should."""
    return module.to_conv2d()


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same", "valid"])
def test_padding_modes_match_conv2d(padding_mode, padding):
    torch.manual_seed(0)
    m = SkeletonConv2d(4, 6, padding=padding, dilation=(1, 2), padding_mode=padding_mode, dtype=torch.float64)
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(m(x), dense_twin(m)(x))


def test_attributes_mirror_conv2d():
    m = SkeletonConv2d(8, 16, stride=2, padding=(1, 2), dilation=3, groups=4, bias=False)
    assert (m.in_channels, m.out_channels, m.kernel_size) == (8, 16, (3, 3))
    assert (m.stride, m.padding, m.dilation, m.groups) == ((2, 2), (1, 2), (3, 3), 4)
    assert m.weight.shape == (16, 2, 5) and m.bias is None
    assert "skeleton" in repr(m) and "groups=4" in repr(m)
    assert sum(p.numel() for p in m.parameters()) == 16 * 2 * 5


def test_integer_like_arguments_as_conv2d_takes_them():
    # numpy integers (layers built from a config file) and one-element sequences: every layer
    # nn.Conv2d accepts must convert, and the attributes hold Python ints, as the op's schema wants.
    np = pytest.importorskip("numpy")
    conv = nn.Conv2d(np.int64(4), np.int64(8), 3, stride=np.int64(2), padding=(np.int32(1),), groups=np.int64(2))
    m = SkeletonConv2d.from_conv2d(conv)
    assert (m.stride, m.padding, m.groups, m.in_channels) == ((2, 2), (1, 1), 2, 4)
    assert all(type(v) is int for v in (*m.stride, *m.padding, *m.dilation, m.groups, m.in_channels, m.out_channels))
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(m(x), F.conv2d(x, skeleton_to_dense_weight(m.weight), m.bias, 2, 1, 1, 2))
    from skeleton_cuda import skeleton_conv2d

    out = skeleton_conv2d(x, m.weight, m.bias, stride=(2,), padding=np.int64(1), dilation=[1], groups=np.int64(2))
    torch.testing.assert_close(out, m(x))
    assert SkeletonConv2d(4, 8, stride=np.array([2, 1]), padding=torch.Size([1])).stride == (2, 1)  # any iterable
    for bad in (1.5, (1, 2, 3), "2", None):
        with pytest.raises(TypeError, match="stride"):
            SkeletonConv2d(4, 8, stride=bad)


def test_initialisation_uses_fan_in_of_five_taps():
    m = SkeletonConv2d(64, 64)
    bound = 1 / math.sqrt(64 * 5)  # kaiming_uniform(a=sqrt(5)) gives 1/sqrt(fan_in), as nn.Conv2d
    assert m.weight.abs().max() <= bound
    assert m.weight.abs().max() > 0.9 * bound
    assert m.bias.abs().max() <= bound


def test_factory_kwargs():
    m = SkeletonConv2d(3, 5, dtype=torch.float64, device="cpu")
    assert m.weight.dtype == torch.float64 and m.bias.dtype == torch.float64


def test_from_conv2d_keeps_the_cross_and_to_conv2d_restores_it():
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2).double()
    with torch.no_grad():
        for r, c in ((0, 0), (0, 2), (2, 0), (2, 2)):
            conv.weight[:, :, r, c] = 0  # a kernel that already is a skeleton
    conv.eval()
    skeleton = SkeletonConv2d.from_conv2d(conv)
    assert not skeleton.training
    assert torch.equal(skeleton.weight, dense_to_skeleton_weight(conv.weight))
    x = torch.randn(2, 6, 11, 11, dtype=torch.float64)
    torch.testing.assert_close(skeleton(x), conv(x))
    back = skeleton.to_conv2d()
    assert isinstance(back, nn.Conv2d) and back.stride == (2, 2) and back.groups == 2
    assert torch.equal(back.weight, conv.weight)
    torch.testing.assert_close(back(x), conv(x))


def test_from_conv2d_drops_the_corners():
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    skeleton = SkeletonConv2d.from_conv2d(conv)
    dense = skeleton_to_dense_weight(skeleton.weight)
    assert torch.count_nonzero(dense[:, :, [0, 0, 2, 2], [0, 2, 0, 2]]) == 0
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    expected = F.conv2d(x, dense, conv.bias, padding=1)
    torch.testing.assert_close(skeleton(x), expected)


def test_loads_a_dense_state_dict():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    m = SkeletonConv2d(4, 4)
    m.load_state_dict(conv.state_dict())
    assert torch.equal(m.weight, dense_to_skeleton_weight(conv.weight))
    assert torch.equal(m.bias, conv.bias)


def test_weight_conversions_round_trip():
    w = torch.randn(7, 3, 5)
    assert torch.equal(dense_to_skeleton_weight(skeleton_to_dense_weight(w)), w)
    with pytest.raises(ValueError):
        dense_to_skeleton_weight(torch.randn(2, 2, 5))
    with pytest.raises(ValueError):
        skeleton_to_dense_weight(torch.randn(2, 2, 9))


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    net = nn.Sequential(SkeletonConv2d(3, 8), nn.ReLU(), SkeletonConv2d(8, 1))
    x = torch.randn(8, 3, 10, 10)
    target = F.avg_pool2d(x.mean(1, keepdim=True), 3, 1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
