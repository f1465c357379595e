"""Datasets of the study kit, held in memory as uint8 tensors.

* ``cifar100``: CIFAR-100 from the official python archive (Krizhevsky 2009).
* ``tiny_imagenet``: Tiny-ImageNet-200 (CS231n), decoded once and cached.
* ``fashion_mnist``: Fashion-MNIST (Xiao et al. 2017) from the official IDX files, for instance
  those of Debian's package ``dataset-fashion-mnist``.
* ``long_range``: a synthetic "same colour?" task whose two marks lie farther apart than a
  local network's receptive field.

``build_dataset(name, **kwargs)`` returns :class:`ImageSplits`; :class:`DeviceLoader` batches and
augments them on the training device.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .cifar import cifar100
from .download import ChecksumError, download_file, safe_extract
from .fashion_mnist import FASHION_MNIST_CLASSES, fashion_mnist, find_fashion_mnist, read_idx
from .loader import DeviceLoader
from .safe_pickle import UnsafePickleError, load_restricted
from .splits import DatasetNotFoundError, ImageSplits, channel_stats
from .synthetic import COLOUR_NAMES, LongRangeSamples, additive_ceiling, generate_long_range, long_range, long_range_samples
from .tinyimagenet import tiny_imagenet

__all__ = [
    "ChecksumError",
    "DatasetNotFoundError",
    "DeviceLoader",
    "FASHION_MNIST_CLASSES",
    "ImageSplits",
    "COLOUR_NAMES",
    "LongRangeSamples",
    "additive_ceiling",
    "UnsafePickleError",
    "build_dataset",
    "channel_stats",
    "cifar100",
    "download_file",
    "fashion_mnist",
    "find_fashion_mnist",
    "generate_long_range",
    "list_datasets",
    "load_restricted",
    "read_idx",
    "long_range",
    "long_range_samples",
    "safe_extract",
    "tiny_imagenet",
]

_DATASETS: dict[str, Callable[..., ImageSplits]] = {
    "cifar100": cifar100,
    "fashion_mnist": fashion_mnist,
    "long_range": long_range,
    "tiny_imagenet": tiny_imagenet,
}


def list_datasets() -> list[str]:
    """Names :func:`build_dataset` accepts, sorted."""
    return sorted(_DATASETS)


def build_dataset(name: str, **kwargs: object) -> ImageSplits:
    """Build the dataset registered as ``name`` with builder arguments ``kwargs``.

    An unknown name, or an argument the builder does not take (a typo in a config's
    ``dataset_args``), is a ValueError listing the allowed values.
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {list_datasets()}")
    builder = _DATASETS[name]
    allowed = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for dataset {name!r}; allowed: {allowed}")
    return builder(**kwargs)
