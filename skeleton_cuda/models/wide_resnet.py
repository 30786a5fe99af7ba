"""Wide-ResNet-40-2 for CIFAR (Zagoruyko & Komodakis), the paper's "Wide-ResNet40".

Layout: a 3x3 stem (3 -> 16), three groups of (40 - 4) / 6 = 6 pre-activation basic blocks
(BN-ReLU-3x3 conv, dropout, BN-ReLU-3x3 conv) at widths 16k, 32k, 64k (k = 2: 32, 64, 128),
the first block of the second and third group down-sampling by 2, a 1x1 projection of the
block input where the shape changes, then BN-ReLU, global average pooling over the 8x8 map and
a linear classifier.

Two details follow the widely used CIFAR WRN training code rather than the original Torch
model, because the paper's numbers pin them down:

* the down-sampling block strides in its *second* 3x3 conv (the first runs at the input
  resolution), and
* the convolutions carry a bias.

With both, the model has 2.246M parameters for 10 classes (paper: 2.25M), 1.257M with skeleton
kernels (paper: 1.26M), and 358.30 / 200.47 MFLOPs under the paper's counting (see
skeleton_cuda.profile) -- the paper's numbers to the last digit. The original layout
(``stride_in_first_conv=True, conv_bias=False``) has 2.244M / 1.254M parameters but only
329.0 / 184.1 MFLOPs, 8% below the paper, so it cannot be the model the paper measured.
"""

from torch import nn

from ._common import finish

__all__ = ["WideResNet", "wrn40"]


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, dropout=0.0, conv_bias=True, stride_in_first_conv=False):
        super().__init__()
        first_stride, second_stride = (stride, 1) if stride_in_first_conv else (1, stride)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=first_stride, padding=1, bias=conv_bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=second_stride, padding=1, bias=conv_bias)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=conv_bias)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.dropout(self.conv1(self.relu(self.bn1(x))))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """WRN-depth-k for 32x32 inputs; see the module docstring for the two layout options."""

    def __init__(
        self,
        depth=40,
        widen_factor=2,
        num_classes=10,
        dropout=0.0,
        conv_bias=True,
        stride_in_first_conv=False,
    ):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet: depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=conv_bias)
        in_planes = widths[0]
        groups = []
        for width, stride in zip(widths[1:], (1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(
                    WideBasicBlock(in_planes, width, stride if i == 0 else 1, dropout, conv_bias, stride_in_first_conv)
                )
                in_planes = width
            groups.append(nn.Sequential(*blocks))
        self.group1, self.group2, self.group3 = groups
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.group3(self.group2(self.group1(self.stem(x))))
        x = self.relu(self.bn(x))
        return self.fc(self.pool(x).flatten(1))


def wrn40(num_classes: int = 10, skeleton: bool = False, widen_factor: int = 2, dropout: float = 0.0) -> nn.Module:
    """CIFAR Wide-ResNet-40-k (k = 2 by default); ``skeleton=True`` converts every 3x3 conv."""
    return finish(WideResNet(40, widen_factor, num_classes, dropout), skeleton)
