"""Models for ``python -m skeleton_cuda.train``: "small", the CIFAR zoo, or any torchvision
classification model, dense or with every 3x3 convolution turned into a skeleton one."""

from torch import nn

from ..convert import convert_model
from ..modules import SkeletonConv2d


def small_cnn(num_classes=10, width=32):
    """A small VGG-style CNN of 3x3 convolutions for quick runs: three stages of two
    conv-BN-ReLU layers (widths w, 2w, 4w) with 2x2 max pooling between them, global average
    pooling and a linear classifier. 0.29M parameters and 39M multiply-adds at 32x32, w=32."""
    layers, in_planes = [], 3
    for stage, planes in enumerate((width, 2 * width, 4 * width)):
        if stage:
            layers.append(nn.MaxPool2d(2))
        for _ in range(2):
            layers += [nn.Conv2d(in_planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
            in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_planes, num_classes)]
    return nn.Sequential(*layers)


def _cifar_zoo():
    try:
        from .. import models
    except ImportError:  # the zoo is optional for the trainer
        return None
    return models


def _zoo_key(name):
    return name.lower().replace("-", "").replace("_", "")


def model_choices():
    """Names --model accepts besides torchvision's: "small" and the CIFAR zoo."""
    zoo = _cifar_zoo()
    return ["small"] + (zoo.model_names() if zoo is not None else [])


CIFAR_PREFIX = "cifar-"  # as skeleton_cuda.profile spells the zoo's models


def resolve_model(name, full_size_images=False):
    """Where ``name`` comes from: ("small", name), ("cifar", zoo name) or ("torchvision", name).

    "cifar-<zoo name>" is the CIFAR zoo's. A bare name is the zoo's if torchvision has no such
    model, and the one of the images' size if both have it (resnet50, vgg16, googlenet, ...):
    torchvision's ImageNet model for full-size images (``full_size_images``: --dataset
    imagefolder), the zoo's 32 x 32 one otherwise."""
    if name == "small":
        return "small", name
    zoo = _cifar_zoo()
    zoo_names = {_zoo_key(n): n for n in zoo.model_names()} if zoo is not None else {}
    key = _zoo_key(name)  # case, "-" and "_" aside: CIFAR-VGG16, cifar_vgg16 and cifar-vgg16 alike
    if key.startswith(_zoo_key(CIFAR_PREFIX)):
        key = key[len(_zoo_key(CIFAR_PREFIX)):]
        if key not in zoo_names:
            raise ValueError(f"unknown model {name!r}: the CIFAR zoo has {', '.join(CIFAR_PREFIX + n for n in zoo_names.values())}")
        return "cifar", zoo_names[key]
    try:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
    except ImportError:  # the zoo and "small" need no torchvision
        torchvision, known = None, []
    in_torchvision = name.lower() in known  # torchvision's names are lower case, and get_model ignores case
    if key in zoo_names and not (in_torchvision and full_size_images):
        return "cifar", zoo_names[key]
    if not in_torchvision:
        raise ValueError(
            f"unknown model {name!r}: expected one of {', '.join(model_choices())}, cifar-<one of those>, or a "
            + (f"torchvision classification model ({', '.join(known[:6])}, ...)" if torchvision is not None
               else "torchvision classification model (torchvision is not installed)")
        )
    return "torchvision", name.lower()


def build_model(name, num_classes, skeleton=False, width=32, full_size_images=False):
    """The model ``name`` (resolve_model says which): "small", a CIFAR zoo model
    (skeleton_cuda.models), or a torchvision classification model built with
    ``torchvision.models.get_model(name, weights=None, num_classes=num_classes)``.
    ``skeleton=True`` converts every 3x3 nn.Conv2d (skeleton_cuda.convert_model: the skeleton
    layers start from the cross of the dense initialisation, so a seed gives the same starting
    point in both forms)."""
    family, resolved = resolve_model(name, full_size_images)
    if family == "small":
        model = small_cnn(num_classes, width)
    elif family == "cifar":
        model = _cifar_zoo().cifar_model(resolved, num_classes=num_classes)
    else:
        import torchvision

        model = torchvision.models.get_model(resolved, weights=None, num_classes=num_classes)
    return convert_model(model, inplace=True) if skeleton else model


def describe(model):
    """Parameter count and the number of dense 3x3 and skeleton convolutions of ``model``."""
    modules = list(model.modules())
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "skeleton_convs": sum(isinstance(m, SkeletonConv2d) for m in modules),
        "dense_3x3_convs": sum(isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3) for m in modules),
    }
