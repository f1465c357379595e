"""Batches from in-memory uint8 images, augmented on the training device.

Datasets that fit in memory are kept as uint8 tensors and augmented in batches on the training
device, so that two CPU cores never starve a GPU. The images move to the device
once; each batch is gathered, converted to float, randomly cropped from a reflect-padded copy
and flipped (the WRN recipe, Zagoruyko & Komodakis 2016, https://arxiv.org/abs/1605.07146,
Sec. 4: pad 4, random 32x32 crop, horizontal flip), then normalised.

Reproducibility: the sample order is a permutation drawn from ``(seed, epoch)`` (the same on every
rank, like ``torch.utils.data.DistributedSampler``) and the augmentation draws come from a device
generator seeded from ``(seed, epoch, rank)``. Iterating the same epoch twice gives identical
batches, so a run resumed at an epoch boundary sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..checks import check_int

__all__ = ["DeviceLoader"]

_ORDER_STREAM, _AUGMENT_STREAM = 0, 1


def _derive_seed(*words: int) -> int:
    """A 63-bit seed from integers, decorrelated by numpy's SeedSequence hashing."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class DeviceLoader:
    """Iterate ``(images, labels)`` batches of an in-memory dataset on ``device``.

    Args:
        images: uint8 ``(N, C, H, W)``.
        labels: ``(N,)`` integer labels.
        batch_size: samples per batch.
        device: where images live and batches are made.
        shuffle: new permutation each epoch (a function of ``seed`` and the epoch).
        crop_padding: reflect-pad by this many pixels, then crop back to ``H x W`` at a random
            offset per sample (0 = no crop). Must be smaller than ``H`` and ``W``.
        flip: flip each sample horizontally with probability 1/2.
        normalize: ``(mean, std)`` per channel, for images in [0, 1]; ``None`` keeps [0, 1].
        drop_last: drop the incomplete last batch, and the tail that does not divide evenly
            across ranks; otherwise the last batch is smaller and the rank shards are padded by
            repeating the first samples of the permutation (``DistributedSampler``'s rule).
        seed: base seed of order and augmentation.
        rank, world_size: this process's shard; every rank gets the same number of batches.
        channels_last: yield batches in ``torch.channels_last`` memory format.

    Yields float32 images ``(B, C, H, W)`` and int64 labels ``(B,)``, both on ``device``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        device: str | torch.device = "cpu",
        shuffle: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise ValueError(
                f"labels must be integer ({images.shape[0]},) to match images, got {labels.dtype} {tuple(labels.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError("images is empty: a DeviceLoader needs at least one sample")
        check_int("batch_size", batch_size)
        check_int("world_size", world_size)
        check_int("rank", rank, 0, world_size - 1, note=f"for world_size={world_size}")
        _, channels, height, width = images.shape
        side = min(height, width)
        check_int("crop_padding", crop_padding, 0, side - 1,
                  note=f"for {height}x{width} images (reflect padding needs padding < image side)")
        if drop_last and images.shape[0] < world_size:
            raise ValueError(f"drop_last with {images.shape[0]} samples leaves nothing for world_size={world_size}")

        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.crop_padding = crop_padding
        self.flip = flip
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.epoch = 0

        self.images = images.to(self.device)  # moved once; batches are gathered on the device
        self.labels = labels.to(self.device, torch.int64)
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        if normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in normalize)
            if mean.shape != (channels,) or std.shape != (channels,) or not bool((std > 0).all()):
                raise ValueError(
                    f"normalize must be (mean, std) with {channels} values each and std > 0, got {normalize!r}"
                )
            self.mean = mean.to(self.device).view(1, channels, 1, 1)  # 1, C, 1, 1
            self.std = std.to(self.device).view(1, channels, 1, 1)

        total = images.shape[0]
        # Every rank must see the same number of batches, or DDP's collectives hang.
        self.num_samples = total // world_size if drop_last else -(-total // world_size)
        self.total_size = self.num_samples * world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def indices(self) -> Tensor:
        """This rank's sample indices for the current epoch, in batch order (on the CPU)."""
        total = self.images.shape[0]
        if self.shuffle:
            generator = torch.Generator().manual_seed(_derive_seed(self.seed, self.epoch, _ORDER_STREAM))
            order = torch.randperm(total, generator=generator)
        else:
            order = torch.arange(total)
        if self.total_size > total:  # pad by wrapping around (may wrap more than once)
            order = order.repeat(-(-self.total_size // total))
        order = order[: self.total_size]
        return order[self.rank :: self.world_size]  # num_samples

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.indices().to(self.device)
        generator = None
        if self.crop_padding or self.flip:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(_derive_seed(self.seed, self.epoch, _AUGMENT_STREAM, self.rank))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            batch = self.images[index]  # B, C, H, W uint8
            if generator is not None:
                batch = self._augment(batch, generator)  # on uint8: a quarter of the memory traffic
            batch = batch.float().div_(255.0)  # B, C, H, W in [0, 1]
            if self.mean is not None:
                batch = batch.sub_(self.mean).div_(self.std)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            yield batch, self.labels[index]

    def _augment(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """Random crop of the reflect-padded batch and random horizontal flip, one gather per axis.

        The padding is never materialised: a crop at offset ``o`` of the reflect-padded image
        reads source coordinate ``reflect(o - pad + i)``, so the gathers index the unpadded
        uint8 batch directly (same pixels as ``F.pad(mode="reflect")`` then slicing).
        """
        size, channels, height, width = batch.shape
        pad = self.crop_padding
        # Draw both kinds every batch so the stream does not depend on which are enabled.
        offsets = torch.randint(0, 2 * pad + 1, (2, size), generator=generator, device=self.device)  # 2, B
        flips = torch.rand(size, generator=generator, device=self.device) < 0.5  # B
        rows = offsets[0, :, None] - pad + torch.arange(height, device=self.device)  # B, H
        cols = torch.arange(width, device=self.device).expand(size, width)  # B, W
        if self.flip:
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        cols = offsets[1, :, None] - pad + cols  # B, W
        rows, cols = _reflect(rows, height), _reflect(cols, width)
        batch = batch.gather(2, rows[:, None, :, None].expand(size, channels, height, width))  # B, C, H, W
        return batch.gather(3, cols[:, None, None, :].expand(size, channels, height, width))  # B, C, H, W


def _reflect(coords: Tensor, length: int) -> Tensor:
    """Map coordinates in ``[-(length - 1), 2 (length - 1)]`` into ``[0, length)`` by reflection
    about the edge pixels (``F.pad``'s ``"reflect"`` mode, which does not repeat the edge)."""
    coords = coords.abs()
    return torch.where(coords > length - 1, 2 * (length - 1) - coords, coords)
