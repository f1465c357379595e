"""Fashion-MNIST from the four official IDX files.

H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms", arXiv:1708.07747, 2017 (https://github.com/zalandoresearch/fashion-mnist):
60,000 training and 10,000 test images of clothes, 28x28 grey, 10 balanced classes.

Where the files are looked for, in order (the first folder that holds all four wins):

1. ``<root>/fashion-mnist/``: the four files, each gzipped (``.gz``) or not;
2. ``<root>/FashionMNIST/raw/``: where torchvision's ``FashionMNIST(download=True)`` puts them;
3. :data:`DEBIAN_FOLDER`, where Debian's package ``dataset-fashion-mnist`` installs them;
4. with ``download=True``, torchvision's ``FashionMNIST`` downloads them into ``<root>`` (2.).

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/) is read by :func:`read_idx`, a
strict reader: magic number, element type, dimensions and payload length are checked, and every
error names the file. Checksums are taken over the *decompressed* bytes (:data:`FASHION_MNIST_FILES`),
since Debian recompresses the ``.gz`` files and their MD5s differ from the upstream archives'.
Train/val: a seeded split of the training file (55k/5k by default); test: the official test file.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checks import check_int, first_line
from .splits import DatasetNotFoundError, ImageSplits, channel_stats, split_indices, take

__all__ = [
    "DEBIAN_FOLDER",
    "DEBIAN_PACKAGE",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "fashion_mnist",
    "find_fashion_mnist",
    "read_idx",
]

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FOLDER = "fashion-mnist"
TORCHVISION_FOLDER = Path("FashionMNIST") / "raw"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_SIDE = 28
# file -> (md5, length in bytes) of the official files, decompressed
FASHION_MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 47_040_016),
    "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60_008),
    "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 7_840_016),
    "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10_008),
}
_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08  # the IDX element type code of unsigned bytes, the only type these files use
_LAYOUT = "\n".join(f"  <folder>/{name}[.gz]" for name in FASHION_MNIST_FILES)


def _how_to_get(root: Path) -> str:
    return (f"install Debian's package `{DEBIAN_PACKAGE}` (apt-get install {DEBIAN_PACKAGE}: files in "
            f"{DEBIAN_FOLDER}/), put the four files into {root / FOLDER}/, or pass download=True "
            "(`download: true`: torchvision's FashionMNIST downloads them)")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzipped (by content, whatever its name)."""
    data = path.read_bytes()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"IDX file '{path}' is a truncated or corrupt gzip file: {error}") from error


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """The uint8 array of one IDX file (gzipped or not) with ``ndim`` dimensions.

    The header is two zero bytes, the element type (0x08: unsigned byte), the number of
    dimensions, then each dimension as a big-endian 32-bit integer; the payload is the elements in
    C order. A wrong magic number, type or dimension count, or a payload of the wrong length is a
    ValueError naming the file.
    """
    path = Path(path)
    return _parse_idx(_read_bytes(path), path, ndim)


def _parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """:func:`read_idx` on bytes already read (and decompressed) from ``path``."""
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError(f"IDX file '{path}' does not start with the IDX magic number (two zero bytes)")
    if data[2] != _UBYTE:
        raise ValueError(f"IDX file '{path}' holds element type 0x{data[2]:02x}, expected 0x08 (unsigned byte)")
    if data[3] != ndim:
        raise ValueError(f"IDX file '{path}' has {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX file '{path}' is truncated inside its header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"IDX file '{path}' has {len(data)} bytes; its header {shape} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _file(folder: Path, name: str) -> Path | None:
    """``folder/name``, else ``folder/name.gz``, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete(folder: Path) -> dict[str, Path] | None:
    """The four files of ``folder`` (plain or gzipped), or None if any is missing."""
    files = {name: _file(folder, name) for name in FASHION_MNIST_FILES}
    return None if any(path is None for path in files.values()) else files  # type: ignore[return-value]


def _verify_official(files: dict[str, Path], contents: dict[str, bytes]) -> None:
    """md5-check every decompressed file that has the official length; other lengths (small test
    fixtures) are only validated structurally."""
    for name, (md5, length) in FASHION_MNIST_FILES.items():
        data = contents[name]
        if len(data) == length and (got := hashlib.md5(data, usedforsecurity=False).hexdigest()) != md5:
            raise ValueError(f"Fashion-MNIST file '{files[name]}' has the official length but md5 {got} "
                             f"(decompressed), expected {md5}: the file is corrupted; get it again")


def _download(root: Path) -> None:
    """torchvision's FashionMNIST download (md5-checked by torchvision) into ``root/FashionMNIST/raw``."""
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(root), train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise DatasetNotFoundError.for_folder(root / TORCHVISION_FOLDER, f"Fashion-MNIST download failed ({first_line(error)})",
                                              _LAYOUT, _how_to_get(root)) from error


def _split(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of one split, validated."""
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"Fashion-MNIST file '{images_path}' holds {images.shape[1]}x{images.shape[2]} images, "
                         f"expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"Fashion-MNIST files '{images_path}' and '{labels_path}' hold {images.shape[0]} images "
                         f"and {labels.shape[0]} labels (must be equal)")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"Fashion-MNIST file '{labels_path}' has label {labels.max()}, "
                         f"allowed 0-{len(FASHION_MNIST_CLASSES) - 1}")
    tensor = torch.from_numpy(images.copy()).unsqueeze(1)  # N, 1, 28, 28
    return tensor.contiguous(), torch.from_numpy(labels.astype(np.int64))


def _search_folders(root: Path, debian_folder: str | Path | None) -> list[Path]:
    """Where the files are looked for, in order (see the module docstring)."""
    return [root / FOLDER, root / TORCHVISION_FOLDER] + ([Path(debian_folder)] if debian_folder is not None else [])


def find_fashion_mnist(root: str | Path = "data", debian_folder: str | Path | None = DEBIAN_FOLDER) -> dict[str, Path] | None:
    """The four files from the first folder that holds them all (see the module docstring), or None."""
    for folder in _search_folders(Path(root), debian_folder):
        if (files := _complete(folder)) is not None:
            return files
    return None


def fashion_mnist(
    root: str | Path = "data",
    download: bool = False,
    val_size: int = 5000,
    train_size: int | None = None,
    split_seed: int = 0,
    verify: bool = True,
    debian_folder: str | Path | None = DEBIAN_FOLDER,
) -> ImageSplits:
    """Fashion-MNIST (10 classes, 28x28, one grey channel): seeded train/val split of the training
    file, official test file.

    Args:
        root: folder searched first, as ``<root>/fashion-mnist/`` then ``<root>/FashionMNIST/raw/``.
        download: when no folder holds the files, download them with torchvision (into ``root``).
        val_size: images of the training file held out as validation (5000 -> 55k/5k).
        train_size: keep only this many training images (the first of the training split, which
            is in file order), for quick runs; None keeps all. Validation and test are unchanged.
        split_seed: seed of the train/val split; the same seed gives the same split.
        verify: md5-check every file whose decompressed length is the official one; files of other
            lengths (test fixtures) are only validated structurally, which is always done.
        debian_folder: where Debian's ``dataset-fashion-mnist`` puts the files; None skips it.

    Raises:
        DatasetNotFoundError: no folder holds the four files and ``download`` is False (or failed).
        ValueError: a corrupt, truncated or malformed file (the message names it).
    """
    root = Path(root)
    files = find_fashion_mnist(root, debian_folder)
    if files is None and download:
        _download(root)
        files = find_fashion_mnist(root, debian_folder)
    if files is None:
        searched = ", ".join(str(folder) for folder in _search_folders(root, debian_folder))
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found in {searched}. Expected layout:\n{_LAYOUT}\n"
            f"How to get it: {_how_to_get(root)}"
        )
    contents = {name: _read_bytes(path) for name, path in files.items()}
    if verify:
        _verify_official(files, contents)
    arrays = {name: _parse_idx(data, files[name], 3 if "images" in name else 1) for name, data in contents.items()}
    train_images, train_labels = _split(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"],
                                        files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"])
    test = _split(arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"],
                  files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"])
    train_index, val_index = split_indices(train_images.shape[0], val_size, split_seed)
    if train_size is not None:
        check_int("train_size", train_size, 1, len(train_index),
                  note=f"(the training split after val_size={val_size}) or null for all")
        train_index = train_index[:train_size]
    train = take(train_images, train_labels, train_index)
    mean, std = channel_stats(train[0])
    return ImageSplits(
        name="fashion_mnist",
        train=train,
        val=take(train_images, train_labels, val_index),
        test=test,
        num_classes=len(FASHION_MNIST_CLASSES),
        mean=mean,
        std=std,
        classes=list(FASHION_MNIST_CLASSES),
    )
