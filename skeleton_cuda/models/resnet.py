"""ResNet-50 for CIFAR (bottleneck blocks, 3x3 stem, no initial down-sampling).

Layout: a 3x3 stem convolution (3 -> 64, stride 1) with batch norm, four stages of
[3, 4, 6, 3] bottleneck blocks (1x1 reduce, 3x3, 1x1 expand by 4) at widths 64, 128, 256, 512
and strides 1, 2, 2, 2, a 1x1 projection shortcut where the shape changes, global average
pooling over the final 4x4 map and a linear classifier on 2048 features. All convolutions are
bias-free. This is the usual CIFAR ResNet-50 layout: 23.52M parameters for 10 classes
(paper: 23.51M) and 18.49M once its seventeen 3x3 convolutions keep only their skeleton
(paper: 18.49M); 1297.8 / 1028.6 M multiply-adds (paper, counted with BatchNorm: 1304.73 /
1035.51 MFLOPs).
"""

from torch import nn

from ._common import finish

__all__ = ["Bottleneck", "CifarResNet", "resnet50"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet built from bottleneck blocks; ``blocks`` gives the depth of each stage."""

    def __init__(self, blocks=(3, 4, 6, 3), num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        in_planes = 64
        stages = []
        for planes, count, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
            layers = []
            for i in range(count):
                layers.append(Bottleneck(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


def resnet50(num_classes: int = 10, skeleton: bool = False) -> nn.Module:
    """CIFAR ResNet-50 (bottleneck, [3, 4, 6, 3]); ``skeleton=True`` converts every 3x3 conv."""
    return finish(CifarResNet((3, 4, 6, 3), num_classes), skeleton)
