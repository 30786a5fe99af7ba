"""CIFAR versions of the architectures in the skeleton-kernel paper (Zhuang et al., Table 1).

Every model takes 32x32 inputs with a 3x3 stem and no initial down-sampling, and is built by
``cifar_model(name, num_classes=10, skeleton=False)`` or by its constructor
(``resnet50(num_classes=10, skeleton=False)``, ...). ``skeleton=True`` returns the model with
every 3x3 ``nn.Conv2d`` replaced by a ``SkeletonConv2d`` (``skeleton_cuda.convert_model``).

``PAPER_TABLE1`` holds the paper's parameter counts (millions, 10 classes) and MFLOPs for the
dense and skeleton models; ``skeleton_cuda.profile`` prints them next to measured values.
"""

from .densenet import densenet201
from .googlenet import googlenet
from .inception import inceptionv3
from .mobilenetv2 import mobilenetv2
from .resnet import resnet50
from .vgg import vgg16
from .wide_resnet import wrn40

__all__ = [
    "CIFAR_MODELS",
    "PAPER_TABLE1",
    "cifar_model",
    "densenet201",
    "googlenet",
    "inceptionv3",
    "mobilenetv2",
    "model_names",
    "resnet50",
    "vgg16",
    "wrn40",
]

CIFAR_MODELS = {
    "resnet50": resnet50,
    "mobilenetv2": mobilenetv2,
    "densenet201": densenet201,
    "wrn40": wrn40,
    "vgg16": vgg16,
    "googlenet": googlenet,
    "inceptionv3": inceptionv3,
}

# Zhuang et al., Table 1 (CIFAR-10): parameters in millions and MFLOPs, dense and skeleton.
PAPER_TABLE1 = {
    "resnet50": {"label": "ResNet-50", "params": (23.51, 18.49), "mflops": (1304.73, 1035.51)},
    "mobilenetv2": {"label": "MobileNetV2", "params": (2.30, 2.27), "mflops": (94.60, 91.60)},
    "densenet201": {"label": "DenseNet-201", "params": (18.10, 16.50), "mflops": (1379.50, 1169.0)},
    "wrn40": {"label": "Wide-ResNet-40-2", "params": (2.25, 1.26), "mflops": (358.30, 200.47)},
    "vgg16": {"label": "VGG-16", "params": (14.73, 8.19), "mflops": (314.03, 174.71)},
    "googlenet": {"label": "GoogLeNet", "params": (6.17, 4.44), "mflops": (1529.42, 1059.31)},
    "inceptionv3": {"label": "Inception-v3", "params": (22.13, 18.65), "mflops": (3399.40, 2838.04)},
}


def model_names():
    """The names ``cifar_model`` accepts, in the paper's order."""
    return list(CIFAR_MODELS)


def cifar_model(name: str, num_classes: int = 10, skeleton: bool = False):
    """Builds the CIFAR model ``name`` (one of ``model_names()``), dense or with skeleton kernels."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in CIFAR_MODELS:
        raise ValueError(f"cifar_model: unknown model {name!r}; expected one of {', '.join(CIFAR_MODELS)}")
    return CIFAR_MODELS[key](num_classes=num_classes, skeleton=skeleton)
