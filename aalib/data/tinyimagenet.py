"""Tiny-ImageNet-200 from the official zip, decoded once and cached as uint8 tensors.

Stanford CS231n, "Tiny ImageNet Visual Recognition Challenge" (200 ImageNet classes, 64x64),
http://cs231n.stanford.edu/tiny-imagenet-200.zip. Layout used::

    tiny-imagenet-200/wnids.txt                  one wnid per line; line order = label
    tiny-imagenet-200/words.txt                  "wnid<TAB>names" for (at least) those wnids
    tiny-imagenet-200/train/<wnid>/images/*.JPEG 500 per class
    tiny-imagenet-200/val/images/*.JPEG          10,000 images
    tiny-imagenet-200/val/val_annotations.txt    "file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1"
    tiny-imagenet-200/test/images/               unlabelled, ignored

Train/val: a seeded split of the official train set; test: the official (labelled) val set.
Departure from the reproduced study: greyscale (and CMYK, palette...) images are converted to
RGB instead of being dropped, so test accuracy is over all 10,000 official val images.
Decoding ~110k JPEGs takes minutes on two cores, so the decoded tensors are cached in
``tiny-imagenet-200/aalib_cache.pt`` together with a fingerprint of the file list (paths, sizes,
``wnids.txt``, annotations); a changed file list rebuilds the cache.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from tqdm.auto import tqdm

from ..io import atomic_write
from .download import download_file, safe_extract
from .splits import DatasetNotFoundError, ImageSplits, channel_stats, split_indices, take

__all__ = ["TINY_IMAGENET_MD5", "TINY_IMAGENET_URL", "tiny_imagenet"]

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
FOLDER = "tiny-imagenet-200"
CACHE_NAME = "aalib_cache.pt"
_CACHE_FORMAT = 1  # bump when the cached content changes meaning
_IMAGE_SUFFIXES = (".jpeg", ".jpg")
_LAYOUT = (
    f"  <root>/{FOLDER}/wnids.txt\n"
    f"  <root>/{FOLDER}/words.txt\n"
    f"  <root>/{FOLDER}/train/<wnid>/images/*.JPEG\n"
    f"  <root>/{FOLDER}/val/images/*.JPEG\n"
    f"  <root>/{FOLDER}/val/val_annotations.txt"
)
_HOW_TO_GET = (
    f"download and unzip {TINY_IMAGENET_URL} (md5 {TINY_IMAGENET_MD5}) into <root>, "
    "or pass download=True (`download: true` in dataset_args)"
)


class _Listing:
    """The labelled files of one copy of the dataset and their fingerprint."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.wnids = self._read_wnids()
        self.names = self._read_words()
        label_of = {wnid: label for label, wnid in enumerate(self.wnids)}
        self.train = self._list_train()
        self.val = self._list_val(label_of)
        self.fingerprint = self._fingerprint()

    def _incomplete(self, problem: str) -> DatasetNotFoundError:
        problem = f"Tiny-ImageNet incomplete ({problem})"
        return DatasetNotFoundError.for_folder(self.folder, problem, _LAYOUT, _HOW_TO_GET)

    def _read_wnids(self) -> list[str]:
        path = self.folder / "wnids.txt"
        if not path.is_file():
            raise self._incomplete("missing wnids.txt")
        wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not wnids or len(set(wnids)) != len(wnids):
            raise ValueError(f"'{path}' must list distinct wnids, one per line; got {len(wnids)} lines")
        return wnids

    def _read_words(self) -> list[str]:
        path = self.folder / "words.txt"
        if not path.is_file():
            raise self._incomplete("missing words.txt")
        words: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid.strip()] = names.strip()
        return [words.get(wnid) or wnid for wnid in self.wnids]

    def _list_train(self) -> list[tuple[str, int]]:
        files: list[tuple[str, int]] = []
        empty: list[str] = []
        for label, wnid in enumerate(self.wnids):
            folder = self.folder / "train" / wnid / "images"
            names = sorted(os.listdir(folder)) if folder.is_dir() else []
            names = [name for name in names if name.lower().endswith(_IMAGE_SUFFIXES)]
            if not names:
                empty.append(wnid)
            files.extend((f"train/{wnid}/images/{name}", label) for name in names)
        if empty:
            raise self._incomplete(f"no train/<wnid>/images/*.JPEG for {len(empty)} wnid(s), e.g. {empty[:3]}")
        return files

    def _list_val(self, label_of: dict[str, int]) -> list[tuple[str, int]]:
        path = self.folder / "val" / "val_annotations.txt"
        if not path.is_file():
            raise self._incomplete("missing val/val_annotations.txt, which holds the labels of the val images")
        files: list[tuple[str, int]] = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2 or fields[1].strip() not in label_of:
                raise ValueError(
                    f"'{path}' line {number}: expected 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1' "
                    f"with a wnid from wnids.txt, got {line!r}"
                )
            files.append((f"val/images/{fields[0].strip()}", label_of[fields[1].strip()]))
        if not files:
            raise self._incomplete("val/val_annotations.txt lists no images")
        missing = [name for name, _ in files if not (self.folder / name).is_file()]
        if missing:
            raise self._incomplete(f"{len(missing)} annotated val image(s) missing, e.g. {missing[:3]}")
        return files

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"aalib tiny-imagenet cache v{_CACHE_FORMAT}\n".encode())
        digest.update("\n".join(self.wnids).encode())
        for split, files in (("train", self.train), ("test", self.val)):
            digest.update(f"\n[{split}]\n".encode())
            for name, label in files:
                size = (self.folder / name).stat().st_size
                digest.update(f"{name}\t{label}\t{size}\n".encode())
        return digest.hexdigest()


def _decode(path: Path) -> np.ndarray:
    """One image as an RGB uint8 (H, W, 3) array; greyscale/CMYK/palette images converted."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"cannot decode Tiny-ImageNet image '{path}': {error}") from error


def _decode_all(folder: Path, files: list[str], desc: str, progress: bool) -> Tensor:
    """Decode ``files`` (paths relative to ``folder``) into one uint8 (N, 3, H, W) tensor."""
    first = _decode(folder / files[0])
    height, width = first.shape[:2]
    out = np.empty((len(files), height, width, 3), dtype=np.uint8)  # N, H, W, 3

    def decode_into(index: int) -> None:
        array = first if index == 0 else _decode(folder / files[index])
        if array.shape != first.shape:
            raise ValueError(
                f"Tiny-ImageNet image '{folder / files[index]}' is {array.shape[1]}x{array.shape[0]}, "
                f"expected {width}x{height} like the others"
            )
        out[index] = array

    # PIL releases the GIL while decoding, so threads use every core without pickling arrays.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(decode_into, range(len(files)), chunksize=256), total=len(files), desc=desc,
                      unit="img", disable=not progress):
            pass
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # N, 3, H, W


def _load_cache(path: Path, fingerprint: str) -> dict[str, Tensor] | None:
    if not path.is_file():
        return None
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: rebuild rather than fail
        warnings.warn(f"ignoring unreadable Tiny-ImageNet cache '{path}' ({error}); rebuilding it", stacklevel=3)
        return None
    if not isinstance(cache, dict) or cache.get("format") != _CACHE_FORMAT or cache.get("fingerprint") != fingerprint:
        return None
    return cache


def _save_cache(path: Path, cache: dict[str, object]) -> None:
    """Write atomically (temp file + os.replace); a read-only folder only loses the cache."""
    try:
        atomic_write(path, lambda handle: torch.save(cache, handle), binary=True)
    except OSError as error:
        warnings.warn(
            f"cannot write Tiny-ImageNet cache in '{path.parent}' ({error}); decoding each time", stacklevel=3
        )


def _load_official(folder: Path, listing: _Listing, cache: bool, progress: bool) -> dict[str, Tensor]:
    """Official train and val sets as tensors, from the cache when its fingerprint matches."""
    cache_path = folder / CACHE_NAME
    if cache and (cached := _load_cache(cache_path, listing.fingerprint)) is not None:
        return cached
    decoded: dict[str, object] = {"format": _CACHE_FORMAT, "fingerprint": listing.fingerprint}
    for split, files in (("train", listing.train), ("test", listing.val)):
        decoded[f"{split}_images"] = _decode_all(folder, [name for name, _ in files], f"decode {split}", progress)
        decoded[f"{split}_labels"] = torch.tensor([label for _, label in files], dtype=torch.int64)
    if cache:
        _save_cache(cache_path, decoded)
    return decoded  # type: ignore[return-value]


def tiny_imagenet(
    root: str | Path = "data",
    download: bool = False,
    val_size: int = 10000,
    split_seed: int = 0,
    cache: bool = True,
    progress: bool = True,
) -> ImageSplits:
    """Tiny-ImageNet-200 (200 classes, 64x64): seeded train/val split of the official train set,
    the official val set as test.

    Args:
        root: folder holding ``tiny-imagenet-200/``.
        download: fetch (md5-checked) and extract the official zip when the folder is missing or
            incomplete.
        val_size: official train images held out as validation (10000 -> 90k/10k).
        split_seed: seed of the train/val split.
        cache: read/write the decoded tensors in ``tiny-imagenet-200/aalib_cache.pt``.
        progress: show a tqdm bar while decoding.

    Raises:
        DatasetNotFoundError: folder missing or incomplete (e.g. no ``val/val_annotations.txt``)
            and ``download`` is False.
        ValueError: malformed ``wnids.txt`` / annotations, or an undecodable image (named).
    """
    root = Path(root)
    folder = root / FOLDER
    try:
        listing = _Listing(folder)
    except DatasetNotFoundError:
        if not download:
            if not folder.is_dir():
                raise DatasetNotFoundError.for_folder(folder, "Tiny-ImageNet not found", _LAYOUT, _HOW_TO_GET) from None
            raise
        archive = download_file(TINY_IMAGENET_URL, root / "tiny-imagenet-200.zip", TINY_IMAGENET_MD5)
        safe_extract(archive, root)
        listing = _Listing(folder)

    official = _load_official(folder, listing, cache, progress)
    train_index, val_index = split_indices(official["train_images"].shape[0], val_size, split_seed)
    train = take(official["train_images"], official["train_labels"], train_index)
    val = take(official["train_images"], official["train_labels"], val_index)
    mean, std = channel_stats(train[0])
    return ImageSplits(
        name="tiny_imagenet",
        train=train,
        val=val,
        test=(official["test_images"].contiguous(), official["test_labels"]),
        num_classes=len(listing.wnids),
        mean=mean,
        std=std,
        classes=listing.names,
    )
