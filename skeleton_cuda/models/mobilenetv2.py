"""MobileNetV2 for CIFAR (3x3 stem at stride 1, no initial down-sampling).

Layout: a 3x3 stem (3 -> 32, stride 1), seventeen inverted-residual blocks given as
(expansion t, output channels c, repeats n, stride s):
(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
(6, 320, 1, 1) -- the second stage keeps stride 1 (ImageNet uses 2) so a 32x32 image ends on a
4x4 map -- then a 1x1 convolution to 1280 channels, global average pooling and a linear
classifier. Every block has its 1x1 expansion convolution (also where t = 1), and stride-1
blocks add a shortcut, a 1x1 projection with batch norm where the channel count changes. This is
the usual CIFAR MobileNetV2 (2.30M parameters for 10 classes, as in the paper).

Only the stem and the 3x3 depthwise convolutions have a skeleton, so the reduction is small:
2.30M -> 2.27M parameters.
"""

from torch import nn

from ._common import finish

__all__ = ["CifarMobileNetV2", "InvertedResidual", "mobilenetv2"]

# (expansion, out_channels, repeats, first stride)
CIFAR_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    def __init__(self, in_planes, out_planes, expansion, stride):
        super().__init__()
        hidden = expansion * in_planes
        self.stride = stride
        self.body = nn.Sequential(
            nn.Conv2d(in_planes, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        )
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.body(x)
        if self.stride == 1:
            out = out + self.shortcut(x)
        return out


class CifarMobileNetV2(nn.Module):
    def __init__(self, num_classes=10, settings=CIFAR_SETTINGS):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        in_planes = 32
        blocks = []
        for expansion, out_planes, repeats, stride in settings:
            for i in range(repeats):
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, stride if i == 0 else 1))
                in_planes = out_planes
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(in_planes, 1280, 1, bias=False),
            nn.BatchNorm2d(1280),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


def mobilenetv2(num_classes: int = 10, skeleton: bool = False) -> nn.Module:
    """CIFAR MobileNetV2; ``skeleton=True`` converts the stem and the depthwise 3x3 convs."""
    return finish(CifarMobileNetV2(num_classes), skeleton)
