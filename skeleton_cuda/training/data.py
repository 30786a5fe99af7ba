"""Data sets for ``python -m skeleton_cuda.train``: CIFAR-10/100, ImageFolder, scikit-learn's
digits and a synthetic one.

Nothing is downloaded at run time. A data set that is not on disk raises ``DatasetUnavailable``
with a message that says how to provide it.
"""

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

DATASETS = ("cifar10", "cifar100", "imagefolder", "digits", "synthetic")

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DIGITS_SIZE = 32  # the 8x8 digits are upsampled to CIFAR's size
DIGITS_TEST_FRACTION = 0.25  # fixed, stratified split: 1347 train / 450 test images
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_CLASSES = 512, 256, 10


class DatasetUnavailable(RuntimeError):
    """The data set is not on this machine (or a package it needs is missing); the message says
    how to provide it."""


@dataclass
class DataSets:
    train: Dataset
    test: Dataset
    num_classes: int


class TensorImages(Dataset):
    """Images held in one (N, C, H, W) tensor, with an optional per-image transform."""

    def __init__(self, images, labels, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def load_datasets(name, data_dir="data", image_size=224):
    """The train and test sets of data set ``name`` (one of DATASETS)."""
    if name in ("cifar10", "cifar100"):
        return _cifar(name, data_dir)
    if name == "imagefolder":
        return _image_folder(data_dir, image_size)
    if name == "digits":
        return _digits()
    if name == "synthetic":
        return _synthetic()
    raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")


# --- CIFAR -----------------------------------------------------------------------------------

def _cifar(name, root):
    from torchvision import datasets, transforms

    cls, folder, mean, std = {
        "cifar10": (datasets.CIFAR10, "cifar-10-batches-py", CIFAR10_MEAN, CIFAR10_STD),
        "cifar100": (datasets.CIFAR100, "cifar-100-python", CIFAR100_MEAN, CIFAR100_STD),
    }[name]
    normalize = transforms.Normalize(mean, std)
    train_tf = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
    )
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    try:
        train = cls(root, train=True, transform=train_tf, download=False)
        test = cls(root, train=False, transform=test_tf, download=False)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
        raise DatasetUnavailable(
            f"{cls.__name__.replace('CIFAR', 'CIFAR-')} was not found under {os.path.abspath(root)!r} (expected the folder "
            f"{os.path.join(root, folder)!r}; torchvision said: {error}). Nothing is downloaded at run "
            f"time. On a machine with internet run\n"
            f"    python -c \"import torchvision; torchvision.datasets.{cls.__name__}('data', download=True)\"\n"
            f"copy the resulting data/{folder} folder to this machine and pass its parent with --data-dir."
        ) from None
    return DataSets(train, test, len(train.classes))


# --- ImageFolder -----------------------------------------------------------------------------

def _image_folder(root, image_size):
    from torchvision import datasets, transforms

    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    missing = [d for d in (train_dir, val_dir) if not os.path.isdir(d)]
    if missing:
        raise DatasetUnavailable(
            f"--dataset imagefolder needs {train_dir!r} and {val_dir!r}, one subfolder of images per "
            f"class in each (torchvision ImageFolder layout, e.g. ImageNet's train/ and val/); "
            f"missing: {', '.join(repr(m) for m in missing)}. Pass their parent with --data-dir."
        )
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
    )
    test_tf = transforms.Compose(
        [transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size), transforms.ToTensor(), normalize]
    )
    train = datasets.ImageFolder(train_dir, transform=train_tf)
    test = datasets.ImageFolder(val_dir, transform=test_tf)
    if train.classes != test.classes:
        raise DatasetUnavailable(f"{train_dir!r} and {val_dir!r} have different class folders")
    return DataSets(train, test, len(train.classes))


# --- scikit-learn digits ---------------------------------------------------------------------

def digits_tensors():
    """scikit-learn's bundled 8x8 digits as (images, labels) for the fixed train and test split:
    images (N, 3, 32, 32) in [0, 1] (bilinear upsampling, grey replicated to 3 channels)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DatasetUnavailable(
            "--dataset digits uses the digits shipped inside scikit-learn: pip install scikit-learn"
        ) from None
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    images = F.interpolate(images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = images.clamp_(0, 1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def _digits():
    from torchvision.transforms import v2

    (train_x, train_y), (test_x, test_y) = digits_tensors()
    mean, std = train_x.mean().item(), train_x.std().item()
    normalize = v2.Normalize([mean] * 3, [std] * 3)
    # Small shifts only: flipping a digit changes what it is.
    train_tf = v2.Compose([v2.RandomCrop(DIGITS_SIZE, padding=2), normalize])
    return DataSets(TensorImages(train_x, train_y, train_tf), TensorImages(test_x, test_y, normalize), 10)


# --- synthetic -------------------------------------------------------------------------------

def synthetic_tensors(count, classes=SYNTHETIC_CLASSES, size=32, seed=0):
    """Random images that a small CNN can learn: a smooth random pattern per class plus noise."""
    generator = torch.Generator().manual_seed(1234)  # the same patterns for every split and seed
    patterns = F.interpolate(torch.randn(classes, 3, 4, 4, generator=generator), size=(size, size), mode="bilinear")
    generator.manual_seed(seed)
    labels = torch.randint(classes, (count,), generator=generator)
    images = patterns[labels] + 0.5 * torch.randn(count, 3, size, size, generator=generator)
    return images, labels


def _synthetic():
    train = TensorImages(*synthetic_tensors(SYNTHETIC_TRAIN, seed=1))
    test = TensorImages(*synthetic_tensors(SYNTHETIC_TEST, seed=2))
    return DataSets(train, test, SYNTHETIC_CLASSES)


# --- loaders ---------------------------------------------------------------------------------

class ShardSampler(Sampler):
    """Every world_size-th index from rank on, in order: each test image is seen exactly once
    over all processes (DistributedSampler would pad with repeats)."""

    def __init__(self, length, rank, world_size):
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_loaders(datasets, batch_size, workers, dist, pin_memory, seed):
    """(train_loader, test_loader, train_sampler); batch_size is per process. train_sampler is
    the DistributedSampler whose set_epoch must be called each epoch, or None."""
    common = {"batch_size": batch_size, "num_workers": workers, "pin_memory": pin_memory,
              "persistent_workers": workers > 0}
    if dist.enabled:
        train_sampler = DistributedSampler(
            datasets.train, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed
        )
        train = DataLoader(datasets.train, sampler=train_sampler, **common)
        test_sampler = ShardSampler(len(datasets.test), dist.rank, dist.world_size)
    else:
        train_sampler = None
        train = DataLoader(datasets.train, shuffle=True, **common)
        test_sampler = None
    test = DataLoader(datasets.test, sampler=test_sampler, shuffle=False, **common)
    return train, test, train_sampler
