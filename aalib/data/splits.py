"""The in-memory dataset record shared by every builder, and the helpers that fill it.

Every dataset of the kit fits in memory as ``uint8`` tensors (CIFAR-100: 180 MB, Tiny-ImageNet:
1.3 GB), so a builder returns whole splits and :class:`aalib.data.loader.DeviceLoader` augments
them in batches on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..checks import check_int

__all__ = ["DatasetNotFoundError", "ImageSplits", "channel_stats", "split_indices"]

# Chunk for the float64 statistics pass: 4096 CIFAR images are 100 MB in float64.
_STATS_CHUNK = 4096


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or incomplete and downloading is off."""

    @classmethod
    def for_folder(cls, folder: Path, problem: str, layout: str, how_to_get: str) -> "DatasetNotFoundError":
        """One message naming the folder, what is wrong, the expected layout and how to get it."""
        return cls(
            f"{problem} in dataset folder '{folder}'.\n"
            f"Expected layout:\n{layout}\n"
            f"How to get it: {how_to_get}"
        )


@dataclass(frozen=True)
class ImageSplits:
    """Train/val/test splits of one image-classification dataset, held in memory.

    Images are ``uint8`` tensors ``(N, C, H, W)``, contiguous, with the same ``C`` (3 for colour
    images, 1 for grey ones) in every split; labels are ``int64`` ``(N,)``.
    ``mean`` and ``std`` are per-channel statistics of the *train* split with images scaled to
    ``[0, 1]`` (population std), ready for ``DeviceLoader(normalize=(mean, std))``.
    """

    name: str  # registry name, e.g. "cifar100"
    train: tuple[Tensor, Tensor]  # images (N, C, H, W) uint8, labels (N,) int64
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    num_classes: int
    mean: tuple[float, ...]  # per-channel mean of train images in [0, 1], C values
    std: tuple[float, ...]  # per-channel std of train images in [0, 1], C values
    classes: list[str] = field(default_factory=list)  # class names, index = label

    def __post_init__(self) -> None:
        channels = self.train[0].shape[1] if self.train[0].dim() == 4 else None
        for split in ("train", "val", "test"):
            images, labels = getattr(self, split)
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != channels:
                raise ValueError(
                    f"{self.name} {split} images must be uint8 (N, C, H, W) with the train split's C={channels}, "
                    f"got {images.dtype} {tuple(images.shape)}"
                )
            if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
                raise ValueError(
                    f"{self.name} {split} labels must be int64 ({images.shape[0]},), "
                    f"got {labels.dtype} {tuple(labels.shape)}"
                )
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean and std need {channels} values (one per channel), "
                             f"got {len(self.mean)} and {len(self.std)}")
        if self.classes and len(self.classes) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.classes)} class names for num_classes={self.num_classes}")

    @property
    def channels(self) -> int:
        """Channels ``C`` of every image."""
        return int(self.train[0].shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every image."""
        height, width = self.train[0].shape[-2:]
        return int(height), int(width)

    def __repr__(self) -> str:  # the default repr would print whole tensors
        sizes = ", ".join(f"{s}={getattr(self, s)[0].shape[0]}" for s in ("train", "val", "test"))
        return f"ImageSplits(name={self.name!r}, {sizes}, num_classes={self.num_classes}, image_size={self.image_size})"


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``uint8`` images ``(N, C, H, W)`` scaled to [0, 1].

    Accumulated in float64 over chunks so that 100k Tiny-ImageNet images need no 10 GB copy.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats needs a non-empty (N, C, H, W) tensor, got {tuple(images.shape)}")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].to(torch.float64).div_(255.0)
        chunk = chunk.transpose(0, 1).reshape(channels, -1)  # C, n*H*W
        total += chunk.sum(dim=1)
        total_sq += chunk.square().sum(dim=1)
    count = images.numel() // channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())  # type: ignore[return-value]


def split_indices(total: int, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded split of ``range(total)`` into (train, val) index tensors, each sorted.

    Sorting keeps the file order inside each split, so the split depends only on
    ``(total, val_size, seed)`` and memory access stays sequential.
    """
    check_int("val_size", val_size, 0, total - 1, note=f"(a set of {total} samples keeps at least one for training)")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=generator)
    val, _ = perm[:val_size].sort()
    train, _ = perm[val_size:].sort()
    return train, val


def take(images: Tensor, labels: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ``index`` of a split as fresh contiguous tensors."""
    return images[index].contiguous(), labels[index].contiguous()
