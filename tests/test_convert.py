"""convert_model / to_dense_model on real architectures."""

import pytest
import torch
import torchvision
from torch import nn

from skeleton_cuda import SkeletonConv2d, convert_model, to_dense_model


def count(model, kind, kernel=None):
    return sum(1 for m in model.modules() if type(m) is kind and (kernel is None or m.kernel_size == kernel))


def test_resnet18_converts_runs_forward_and_backward():
    dense = torchvision.models.resnet18(num_classes=10)
    n3x3 = count(dense, nn.Conv2d, (3, 3))
    model = convert_model(dense)
    assert count(dense, nn.Conv2d, (3, 3)) == n3x3, "the given model must be left as it was"
    assert count(model, nn.Conv2d, (3, 3)) == 0
    assert count(model, SkeletonConv2d) == n3x3 == 16
    assert count(model, nn.Conv2d, (7, 7)) == 1 and count(model, nn.Conv2d, (1, 1)) == 3
    params = sum(p.numel() for p in model.parameters())
    # Every 3x3 weight loses its 4 corners.
    removed = sum(m.weight.numel() * 4 // 9 for m in dense.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert params == sum(p.numel() for p in dense.parameters()) - removed
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_converted_and_converted_back_gives_the_same_outputs():
    model = convert_model(torchvision.models.resnet18(num_classes=10)).eval().double()
    back = to_dense_model(model)
    assert count(back, SkeletonConv2d) == 0 and count(back, nn.Conv2d, (3, 3)) == 16
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    torch.testing.assert_close(back(x), model(x))


def test_inplace_and_shared_modules():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Conv2d(4, 2, 1))
    converted = convert_model(model, inplace=True)
    assert converted is model
    assert isinstance(model[0], SkeletonConv2d) and model[0] is model[2]
    assert isinstance(model[3], nn.Conv2d)


def test_top_level_conv_and_subclasses():
    assert isinstance(convert_model(nn.Conv2d(3, 3, 3)), SkeletonConv2d)

    class Standardized(nn.Conv2d):
        def forward(self, x):
            w = self.weight - self.weight.mean()
            return self._conv_forward(x, w, self.bias)

    model = nn.Sequential(Standardized(3, 3, 3))
    assert type(convert_model(model)[0]) is Standardized, "a conv with its own forward is left alone"


@pytest.mark.parametrize("name", ["mobilenet_v2", "vgg11"])
def test_other_torchvision_models(name):
    model = convert_model(torchvision.models.get_model(name, num_classes=10))
    out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 10)
