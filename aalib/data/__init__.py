"""Datasets of the study kit, held in memory as uint8 tensors.

* ``cifar100``: CIFAR-100 from the official python archive (Krizhevsky 2009).
* ``tiny_imagenet``: Tiny-ImageNet-200 (CS231n), decoded once and cached.
* ``fashion_mnist``: Fashion-MNIST (Xiao et al. 2017) from the official IDX files, for instance
  those of Debian's package ``dataset-fashion-mnist``.
* ``long_range``: a synthetic "same colour?" task whose two marks lie farther apart than a
  local network's receptive field.
* ``pathfinder``: a synthetic Pathfinder-style task (Linsley et al. 2018): are two dots the two
  ends of one dashed curve?

``build_dataset(name, **kwargs)`` returns :class:`ImageSplits`; :class:`DeviceLoader` batches and
augments them on the training device.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

from ..checks import check_arguments
from .cifar import cifar100
from .download import ChecksumError, download_file, safe_extract
from .fashion_mnist import FASHION_MNIST_CLASSES, fashion_mnist, find_fashion_mnist, read_idx
from .loader import DeviceLoader
from .pathfinder import (
    PATHFINDER_CLASSES,
    PathfinderSamples,
    PathfinderTask,
    generate_pathfinder,
    pathfinder,
    pathfinder_samples,
)
from .safe_pickle import UnsafePickleError, load_restricted
from .splits import DatasetNotFoundError, ImageSplits, channel_stats
from .synthetic import (
    COLOUR_NAMES,
    LongRangeSamples,
    LongRangeTask,
    additive_ceiling,
    generate_long_range,
    long_range,
    long_range_samples,
    mark_gaps,
)
from .tinyimagenet import tiny_imagenet

__all__ = [
    "ChecksumError",
    "DatasetNotFoundError",
    "DeviceLoader",
    "FASHION_MNIST_CLASSES",
    "ImageSplits",
    "COLOUR_NAMES",
    "LongRangeSamples",
    "LongRangeTask",
    "additive_ceiling",
    "UnsafePickleError",
    "build_dataset",
    "check_dataset_arguments",
    "dataset_arguments",
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
    "mark_gaps",
    "PATHFINDER_CLASSES",
    "PathfinderSamples",
    "PathfinderTask",
    "generate_pathfinder",
    "pathfinder",
    "pathfinder_samples",
    "safe_extract",
    "tiny_imagenet",
]

_DATASETS: dict[str, Callable[..., ImageSplits]] = {
    "cifar100": cifar100,
    "fashion_mnist": fashion_mnist,
    "long_range": long_range,
    "pathfinder": pathfinder,
    "tiny_imagenet": tiny_imagenet,
}


def list_datasets() -> list[str]:
    """Names :func:`build_dataset` accepts, sorted."""
    return sorted(_DATASETS)


def _builder(name: str) -> Callable[..., ImageSplits]:
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(list_datasets())}")
    return _DATASETS[name]


def dataset_arguments(name: str) -> list[str]:
    """The keyword arguments the builder of dataset ``name`` takes (what ``build_dataset`` accepts)."""
    params = inspect.signature(_builder(name)).parameters.values()
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def check_dataset_arguments(name: str, arguments: Iterable[str]) -> None:
    """ValueError naming the arguments dataset ``name`` does not take, and the ones it does."""
    check_arguments(f"dataset {name!r}", arguments, dataset_arguments(name))


def build_dataset(name: str, **kwargs: object) -> ImageSplits:
    """Build the dataset registered as ``name`` with builder arguments ``kwargs``.

    An unknown name, or an argument the builder does not take (a typo in a config's
    ``dataset_args``), is a ValueError listing the allowed values.
    """
    check_dataset_arguments(name, kwargs)
    return _DATASETS[name](**kwargs)
