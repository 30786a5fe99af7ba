"""VGG-16 for CIFAR (with batch norm, one linear classifier).

Layout: thirteen 3x3 convolutions (with bias) each followed by batch norm and ReLU, in five
groups of widths 64, 128, 256, 512, 512 separated by 2x2 max pooling, which leaves a 1x1x512
map for a 32x32 image, then a single linear classifier 512 -> num_classes (the CIFAR form: the
ImageNet model's three large fully connected layers are dropped). 14.73M parameters for 10
classes and 8.19M with skeleton kernels, as in the paper.
"""

from torch import nn

from ._common import finish

__all__ = ["CifarVGG", "vgg16"]

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class CifarVGG(nn.Module):
    def __init__(self, layout=VGG16_LAYOUT, num_classes=10):
        super().__init__()
        layers = []
        in_planes = 3
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(in_planes, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                in_planes = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # 1x1 already at 32x32; keeps other sizes working
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def vgg16(num_classes: int = 10, skeleton: bool = False) -> nn.Module:
    """CIFAR VGG-16 with batch norm; ``skeleton=True`` converts every 3x3 conv."""
    return finish(CifarVGG(VGG16_LAYOUT, num_classes), skeleton)
