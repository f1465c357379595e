"""CIFAR-100 from the official python archive.

A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech. report, 2009;
files from https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-100 python version").
Layout: ``root/cifar-100-python/{train,test,meta}``, each a pickled dict; ``train``/``test`` hold
``data`` (uint8 ``(N, 3072)``, the 1024 red, then green, then blue values of a 32x32 image, rows
first) and ``fine_labels``; ``meta`` holds ``fine_label_names``.

torchvision's ``CIFAR100`` is not used: it unpickles with ``pickle.load`` (runs code from an
untrusted file) and its md5 check rejects small test fixtures. Here the pickles go through
:mod:`aalib.data.safe_pickle` and the structure is validated with errors that name the file.
Train/val: a seeded split of the official training file (45k/5k by default, as the reproduced
study); test: the official test file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .download import download_file, file_md5, safe_extract
from .safe_pickle import UnsafePickleError, load_restricted
from .splits import DatasetNotFoundError, ImageSplits, channel_stats, split_indices, take

__all__ = ["CIFAR100_FILES", "CIFAR100_MD5", "CIFAR100_URL", "cifar100"]

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"
NUM_CLASSES = 100
IMAGE_SHAPE = (3, 32, 32)
# file -> (md5, size in bytes) of the official extracted files. Sizes from the git-annex keys of
# a public mirror (datasets-mila/datasets--cifar100); the size of `meta` is not recorded there,
# so `meta` is checked whenever `train` is the official one (see cifar100's `verify`).
CIFAR100_FILES: dict[str, tuple[str, int | None]] = {
    "train": ("16019d7e3df5f24257cddd939b257f8d", 155_249_918),
    "test": ("f0ef6b0ae62326f3e7ffdfab6717acfc", 31_049_707),
    "meta": ("7973b15100ade9c7d40fb424638fde48", None),
}
# What a truncated or garbled pickle raises while loading.
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError)
_LAYOUT = f"  <root>/{FOLDER}/train\n  <root>/{FOLDER}/test\n  <root>/{FOLDER}/meta"
_HOW_TO_GET = (
    f"download and extract {CIFAR100_URL} (md5 {CIFAR100_MD5}) into <root>, "
    "or pass download=True (`download: true` in dataset_args)"
)


def _missing(folder: Path) -> list[str]:
    return [name for name in CIFAR100_FILES if not (folder / name).is_file()]


def _verify_official(folder: Path) -> None:
    """md5-check the files of an official-size copy; small fixtures (other sizes) are skipped."""
    official = (folder / "train").stat().st_size == CIFAR100_FILES["train"][1]
    for name, (md5, size) in CIFAR100_FILES.items():
        path = folder / name
        applies = path.stat().st_size == size if size is not None else official
        if applies and (got := file_md5(path)) != md5:
            raise ValueError(
                f"CIFAR-100 file '{path}' has the official size but md5 {got}, expected {md5}: "
                f"the file is corrupted; delete it and extract {CIFAR100_URL} again"
            )


def _load_dict(path: Path) -> dict[str, Any]:
    """Unpickle one CIFAR file (restricted), with str keys whether the pickle used bytes or str."""
    try:
        obj = load_restricted(path)
    except UnsafePickleError as error:
        raise UnsafePickleError(f"CIFAR-100 file '{path}': {error}") from error
    except _CORRUPT as error:
        raise ValueError(f"CIFAR-100 file '{path}' is truncated or corrupt: {type(error).__name__}: {error}") from error
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR-100 file '{path}' holds a {type(obj).__name__}, expected a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in obj.items()}


def _require(path: Path, record: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in record]
    if missing:
        raise ValueError(f"CIFAR-100 file '{path}' lacks key(s) {missing}; it has {sorted(record)}")


def _load_images(path: Path) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and fine labels (N,) int64 of one data file, validated."""
    record = _load_dict(path)
    _require(path, record, ("data", "fine_labels"))
    data, labels = record["data"], record["fine_labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"CIFAR-100 file '{path}': 'data' must be a uint8 (N, 3072) array, got {described}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"CIFAR-100 file '{path}': 'fine_labels' is not a list of ints ({error})") from error
    if labels.shape != (data.shape[0],):
        raise ValueError(
            f"CIFAR-100 file '{path}': {labels.size} fine_labels for {data.shape[0]} images (must be equal)"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"CIFAR-100 file '{path}': fine_labels span [{labels.min()}, {labels.max()}], "
            f"allowed [0, {NUM_CLASSES - 1}]"
        )
    images = torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy())  # N, 3, 32, 32 (channel planes)
    return images.contiguous(), torch.from_numpy(labels)


def _load_class_names(path: Path) -> list[str]:
    record = _load_dict(path)
    _require(path, record, ("fine_label_names",))
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in record["fine_label_names"]]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"CIFAR-100 file '{path}': {len(names)} fine_label_names, expected {NUM_CLASSES}")
    return names


def cifar100(
    root: str | Path = "data",
    download: bool = False,
    val_size: int = 5000,
    split_seed: int = 0,
    verify: bool = True,
) -> ImageSplits:
    """CIFAR-100 (100 fine classes, 32x32): seeded train/val split of the training file, official test.

    Args:
        root: folder holding ``cifar-100-python/``.
        download: fetch and extract the official archive (md5-checked) when files are missing.
        val_size: images of the training file held out as validation (5000 -> 45k/5k).
        split_seed: seed of the train/val split; the same seed gives the same split.
        verify: md5-check the extracted files *that have the official size* (``train``
            155,249,918 bytes, ``test`` 31,049,707 bytes; ``meta``, whose size is not pinned,
            whenever ``train`` has the official size). A wrong checksum on an official-size file
            is an error; files of other sizes, such as test fixtures, are only validated
            structurally. Structure (keys, shapes, label count and range) is always validated.

    Raises:
        DatasetNotFoundError: files missing and ``download`` is False.
        ValueError: a corrupt, truncated or malformed file (the message names it).
    """
    root = Path(root)
    folder = root / FOLDER
    if _missing(folder) and download:
        archive = download_file(CIFAR100_URL, root / "cifar-100-python.tar.gz", CIFAR100_MD5)
        safe_extract(archive, root)
    if missing := _missing(folder):
        problem = "CIFAR-100 not found" if not folder.is_dir() else f"CIFAR-100 incomplete (missing {missing})"
        raise DatasetNotFoundError.for_folder(folder, problem, _LAYOUT, _HOW_TO_GET)
    if verify:
        _verify_official(folder)

    classes = _load_class_names(folder / "meta")
    train_images, train_labels = _load_images(folder / "train")
    test_images, test_labels = _load_images(folder / "test")
    train_index, val_index = split_indices(train_images.shape[0], val_size, split_seed)
    train = take(train_images, train_labels, train_index)
    val = take(train_images, train_labels, val_index)
    mean, std = channel_stats(train[0])
    return ImageSplits(
        name="cifar100",
        train=train,
        val=val,
        test=(test_images, test_labels),
        num_classes=NUM_CLASSES,
        mean=mean,
        std=std,
        classes=classes,
    )
