"""GoogLeNet (Inception v1) for CIFAR.

Layout: a 3x3 stem (3 -> 192) instead of the ImageNet 7x7/stride-2 stem and its poolings,
inception modules 3a, 3b, max pooling (3x3, stride 2), 4a-4e, max pooling, 5a, 5b, global
average pooling over the 8x8 map and a linear classifier on 1024 features; no auxiliary heads.
Each inception module has four branches: 1x1; 1x1 reduce then 3x3; 1x1 reduce then two 3x3
(the usual factorisation of the 5x5 branch); 3x3 max pooling then 1x1. Every convolution has a
bias and is followed by batch norm and ReLU. This is the usual CIFAR GoogLeNet: 6.17M
parameters for 10 classes (paper: 6.17M) and 4.44M with skeleton kernels (paper: 4.44M).
"""

import torch
from torch import nn

from ._common import finish

__all__ = ["CifarGoogLeNet", "googlenet"]


def _conv_bn_relu(in_planes, out_planes, kernel_size):
    return [
        nn.Conv2d(in_planes, out_planes, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(inplace=True),
    ]


class Inception(nn.Module):
    def __init__(self, in_planes, n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_planes):
        super().__init__()
        self.branch1 = nn.Sequential(*_conv_bn_relu(in_planes, n1x1, 1))
        self.branch2 = nn.Sequential(*_conv_bn_relu(in_planes, n3x3_reduce, 1), *_conv_bn_relu(n3x3_reduce, n3x3, 3))
        self.branch3 = nn.Sequential(
            *_conv_bn_relu(in_planes, n5x5_reduce, 1),
            *_conv_bn_relu(n5x5_reduce, n5x5, 3),
            *_conv_bn_relu(n5x5, n5x5, 3),
        )
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn_relu(in_planes, pool_planes, 1))
        self.out_planes = n1x1 + n3x3 + n5x5 + pool_planes

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


# name -> (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection)
_MODULES = (
    ("a3", (192, 64, 96, 128, 16, 32, 32)),
    ("b3", (256, 128, 128, 192, 32, 96, 64)),
    ("pool3", None),
    ("a4", (480, 192, 96, 208, 16, 48, 64)),
    ("b4", (512, 160, 112, 224, 24, 64, 64)),
    ("c4", (512, 128, 128, 256, 24, 64, 64)),
    ("d4", (512, 112, 144, 288, 32, 64, 64)),
    ("e4", (528, 256, 160, 320, 32, 128, 128)),
    ("pool4", None),
    ("a5", (832, 256, 160, 320, 32, 128, 128)),
    ("b5", (832, 384, 192, 384, 48, 128, 128)),
)


class CifarGoogLeNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(3, 192, 3))
        body = []
        for name, spec in _MODULES:
            body.append((name, nn.MaxPool2d(3, stride=2, padding=1) if spec is None else Inception(*spec)))
        self.body = nn.Sequential()
        for name, module in body:
            self.body.add_module(name, module)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.body(self.stem(x))).flatten(1))


def googlenet(num_classes: int = 10, skeleton: bool = False) -> nn.Module:
    """CIFAR GoogLeNet; ``skeleton=True`` converts every 3x3 conv."""
    return finish(CifarGoogLeNet(num_classes), skeleton)
