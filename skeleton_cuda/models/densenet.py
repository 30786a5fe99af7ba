"""DenseNet-201 for CIFAR (3x3 stem, no initial down-sampling).

Layout: a 3x3 stem convolution (3 -> 2k channels, k = 32 the growth rate), four dense blocks
of [6, 12, 48, 32] bottleneck layers (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k, the k new
channels concatenated in front of the input) with a transition (BN-ReLU-1x1 conv halving the
channels, 2x2 average pooling) between blocks, then BN-ReLU, global average pooling over the
4x4 map and a linear classifier on 1920 features. Convolutions are bias-free. This is the usual
CIFAR DenseNet-201: 18.10M parameters for 10 classes (paper: 18.10M), 16.50M with skeleton
kernels (paper: 16.50M).
"""

import torch
from torch import nn

from ._common import finish

__all__ = ["CifarDenseNet", "densenet201"]


class DenseLayer(nn.Module):
    def __init__(self, in_planes, growth):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_planes, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x):
        # The body's first ReLU is applied to the normalised copy, never to x itself.
        return torch.cat([self.body(x), x], 1)


class Transition(nn.Sequential):
    def __init__(self, in_planes, out_planes):
        super().__init__(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_planes, out_planes, 1, bias=False),
            nn.AvgPool2d(2),
        )


class CifarDenseNet(nn.Module):
    def __init__(self, blocks=(6, 12, 48, 32), growth=32, reduction=0.5, num_classes=10):
        super().__init__()
        planes = 2 * growth
        layers = [nn.Conv2d(3, planes, 3, padding=1, bias=False)]
        for index, count in enumerate(blocks):
            for _ in range(count):
                layers.append(DenseLayer(planes, growth))
                planes += growth
            if index != len(blocks) - 1:
                out_planes = int(planes * reduction)
                layers.append(Transition(planes, out_planes))
                planes = out_planes
        layers += [nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def densenet201(num_classes: int = 10, skeleton: bool = False) -> nn.Module:
    """CIFAR DenseNet-201 (growth 32, [6, 12, 48, 32]); ``skeleton=True`` converts every 3x3 conv."""
    return finish(CifarDenseNet((6, 12, 48, 32), 32, 0.5, num_classes), skeleton)
