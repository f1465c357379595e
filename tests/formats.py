"""Small datasets written in the real on-disk formats, for tests of loaders and of training.

* CIFAR-100: the official python-pickle layout ``cifar-100-python/{train,test,meta}``.
* Tiny-ImageNet: the official ``tiny-imagenet-200`` folder (``wnids.txt``, ``words.txt``,
  ``train/<wnid>/images/*.JPEG``, ``val/images`` + ``val/val_annotations.txt``, ``test/images``),
  with a greyscale and a CMYK JPEG among the images.
* Fashion-MNIST: the four IDX files (``train-images-idx3-ubyte`` ...), gzipped or not.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def cifar_data(n: int, offset: int) -> np.ndarray:
    """(n, 3072) uint8 images whose first two bytes encode a unique id (offset + i)."""
    rng = np.random.default_rng(offset)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    data[:, 0], data[:, 1] = ids // 256, ids % 256
    return data


def write_cifar100(root: Path, n_train: int = 60, n_test: int = 20, bytes_keys: bool = False) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)

    def key(name: str) -> str | bytes:
        return name.encode() if bytes_keys else name

    records = {
        "train": {key("data"): cifar_data(n_train, 0), key("fine_labels"): [i % 100 for i in range(n_train)],
                  key("coarse_labels"): [i % 20 for i in range(n_train)]},
        "test": {key("data"): cifar_data(n_test, 1000), key("fine_labels"): [(7 * i) % 100 for i in range(n_test)]},
        "meta": {key("fine_label_names"): [f"class{i:02d}" for i in range(100)],
                 key("coarse_label_names"): [f"super{i}" for i in range(20)]},
    }
    for name, record in records.items():
        (folder / name).write_bytes(pickle.dumps(record, protocol=2))  # protocol of the official files
    return folder


WNIDS = ["n03000000", "n01000000", "n02000000"]  # deliberately not sorted: label = line order
CLASS_RGB = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def save_jpeg(path: Path, rgb: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (64, 64), rgb)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format="JPEG", quality=95)


def write_tiny_imagenet(root: Path, per_class: int = 4) -> Path:
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (folder / "words.txt").write_text(
        "n00000000\tentity\n" + "".join(f"{w}\tthing {w[1:3]}, other name\n" for w in sorted(WNIDS))
    )
    for label, wnid in enumerate(WNIDS):
        for i in range(per_class):
            save_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", CLASS_RGB[label])
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    # one greyscale training image (class 1): must be kept and become 3-channel
    save_jpeg(folder / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_grey.JPEG", (90, 90, 90), mode="L")
    lines = []
    for i, label in enumerate([2, 0, 1, 1, 0, 2]):
        save_jpeg(folder / "val" / "images" / f"val_{i}.JPEG", CLASS_RGB[label], mode="CMYK" if i == 2 else "RGB")
        lines.append(f"val_{i}.JPEG\t{WNIDS[label]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (folder / "test" / "images").mkdir(parents=True)
    return folder


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 ``array``: two zero bytes, type 0x08, the dimension count, each
    dimension as a big-endian uint32, then the elements in C order."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fashion_images(n: int, offset: int) -> np.ndarray:
    """(n, 28, 28) uint8 images whose first two pixels encode a unique id (offset + i)."""
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    images[:, 0, 0], images[:, 0, 1] = ids // 256, ids % 256
    return images


def write_fashion_mnist(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> Path:
    """The four Fashion-MNIST IDX files in ``folder`` (``.gz`` when ``gz``); labels cycle through 0-9."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": idx_bytes(fashion_images(n_train, 0)),
        "train-labels-idx1-ubyte": idx_bytes(np.arange(n_train, dtype=np.uint8) % 10),
        "t10k-images-idx3-ubyte": idx_bytes(fashion_images(n_test, 1000)),
        "t10k-labels-idx1-ubyte": idx_bytes((3 * np.arange(n_test, dtype=np.uint8)) % 10),
    }
    for name, data in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder
