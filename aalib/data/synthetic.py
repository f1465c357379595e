"""A synthetic task that a network without long-range interactions cannot solve.

The label is a relation between two marks placed farther apart than the Simple-CNN's
receptive field (21 px, :class:`aalib.models.repro.SimpleCNN`). Here: "are the two square
marks the same colour?" (label 1 = same, 0 = different), with ``colours`` = K palette colours.

Why a local network cannot solve it. With global average pooling and a linear head, the logit
difference is a sum over locations of features that each see at most one mark (no
``receptive_field`` x ``receptive_field`` window holds pixels of both marks), so it has the form
``s(a) + s(b) + (terms independent of the label)`` for mark colours ``a``, ``b``. Same pairs give
``2 s(a)`` and different pairs ``s(a) + s(b)``, the midpoint of two same-pair values, so no
threshold separates them (the XOR argument of Minsky & Papert, "Perceptrons", 1969). Such a
model is not held at exactly 50 %, though: "both marks among a subset S of the colours" is
additive and wins on more pairs than it loses. :func:`additive_ceiling` gives the best accuracy
any additive model can reach (2/3 with 4 colours); a layer that attends across the whole image
can compare the two marks directly and reach 100 %.

Construction, per sample:

* background grey, two filled ``mark_size`` squares; colours uniform over the K palette colours,
  the second equal to the first (same) or uniform over the other K - 1 (different), so each
  mark's colour alone is uniform in both classes;
* positions uniform over the pairs that satisfy the rule: along at least one axis the
  coordinates of the marks' nearest pixels differ by at least ``receptive_field``, equivalently
  no ``receptive_field`` x ``receptive_field`` window contains pixels of both marks; with
  ``max_distance``, also along no axis by more than ``max_distance`` (a band of distances: the
  marks' *gap*, the larger of the two nearest-pixel differences, lies in
  ``[receptive_field, max_distance]``). A ``receptive_field`` below the network's own field makes
  the task local: the distance sweep of the trade-off study (:mod:`aalib.study`) moves the band;
* ``distractors`` plus-shaped objects (never a filled square, so they cannot be taken for a
  mark) in random palette colours, each at least one background pixel away from the marks and
  from each other; they carry no label information;
* gaussian pixel noise of std ``noise`` (images in [0, 1]), clipped, stored as uint8;
* classes exactly balanced in every split; each split has its own random stream derived from
  ``(seed, split)``, so the splits are independent and every call is reproducible.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import check_choice, check_float, check_int
from .splits import ImageSplits, channel_stats

__all__ = [
    "CLASSES",
    "COLOUR_NAMES",
    "PALETTE",
    "SPLITS",
    "LongRangeTask",
    "LongRangeSamples",
    "generate_long_range",
    "long_range",
    "long_range_samples",
    "additive_ceiling",
    "mark_gaps",
    "generated_split",
    "generated_splits",
    "split_rng",
    "split_sizes",
]

CLASSES = ["different", "same"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Clearly distinct RGB colours in [0, 1] (saturated hues plus white), all far from the background.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),  # red
    (0.0, 0.8, 0.0),  # green
    (0.1, 0.3, 1.0),  # blue
    (1.0, 0.9, 0.0),  # yellow
    (1.0, 0.0, 1.0),  # magenta
    (0.0, 1.0, 1.0),  # cyan
    (1.0, 1.0, 1.0),  # white
    (1.0, 0.5, 0.0),  # orange
)
COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange")
BACKGROUND = (0.3, 0.3, 0.3)
_MARGIN = 1  # background pixels kept between any two objects, so shapes never merge
_PLACEMENT_TRIES = 200
_MAX_DRAW = 1 << 22


def additive_ceiling(colours: int) -> float:
    """Best test accuracy of a rule ``same iff s(a) + s(b) > t`` on balanced same/different pairs.

    The rule "both colours in a subset S of size m" (s = indicator of S, t = 1.5) is right on a
    fraction ``m / K`` of same pairs and ``1 - m (m - 1) / (K (K - 1))`` of different pairs; the
    best m gives the ceiling (0.75 for K = 2, 2/3 for K = 3 and 4, tending to 0.625). No real-valued
    score does better (checked by random search in tests/test_data.py).
    """
    k = check_int("colours", colours, 2)
    return max(0.5 * (m / k + 1 - m * (m - 1) / (k * (k - 1))) for m in range(1, k + 1))


def min_image_size(receptive_field: int, mark_size: int) -> int:
    """Smallest image side on which two marks can satisfy the distance rule."""
    # top-left corners must differ by receptive_field + mark_size - 1 within [0, S - mark_size]
    return receptive_field + 2 * mark_size - 1


def max_gap(image_size: int, mark_size: int) -> int:
    """Largest gap between two marks' nearest pixels on an ``image_size`` image."""
    return image_size - 2 * mark_size + 1


def mark_gaps(mark_positions: Tensor, mark_size: int) -> Tensor:
    """N, 2: per axis (y, x), the difference between the coordinates of each sample's two marks'
    nearest pixels (``mark_positions``: N, 2, 2 top-left corners). The distance rule holds for the
    larger of the two, the marks' gap; negative along an axis where the marks overlap."""
    return (mark_positions[:, 0] - mark_positions[:, 1]).abs() - (mark_size - 1)  # N, (y, x)


@dataclass(frozen=True)
class LongRangeTask:
    """What the images of the long-range task look like (the construction is in the module
    docstring); every field is checked on construction. The dataset :func:`long_range` and the
    analysis of its runs (:meth:`from_arguments`) read the task from here."""

    image_size: int = 32  # side S of the square images
    colours: int = 4  # K palette colours the marks use, 2..8
    mark_size: int = 3  # side of the square marks
    receptive_field: int = 21  # no window this wide holds pixels of both marks (the Simple-CNN's)
    distractors: int = 2  # plus-shaped objects per image, random palette colours, label-independent
    noise: float = 0.05  # std of gaussian pixel noise, images in [0, 1]
    distractor_size: int | None = None  # side of a distractor's box; None: max(3, mark_size)
    max_distance: int | None = None  # largest gap between the marks' nearest pixels; None: up to the image

    def __post_init__(self) -> None:
        check_int("colours", self.colours, 2, len(PALETTE))
        check_int("mark_size", self.mark_size)
        check_int("receptive_field", self.receptive_field)
        check_int("distractors", self.distractors, 0)
        if self.distractor_size is None:
            object.__setattr__(self, "distractor_size", max(3, self.mark_size))
        check_int("distractor_size", self.distractor_size, 3)
        check_int("image_size", self.image_size)
        check_float("noise", self.noise, 0.0, strict=False, note="(std of pixel noise, images in [0, 1])")
        needed = min_image_size(self.receptive_field, self.mark_size)
        if self.image_size < needed:
            raise ValueError(
                f"image_size={self.image_size} is too small for receptive_field={self.receptive_field} and "
                f"mark_size={self.mark_size}: two marks need image_size >= {needed} "
                "(= receptive_field + 2 * mark_size - 1) to be a receptive field apart"
            )
        if self.distractor_size > self.image_size:
            raise ValueError(f"distractor_size={self.distractor_size} exceeds image_size={self.image_size}")
        if self.max_distance is not None:
            check_int("max_distance", self.max_distance, self.receptive_field, max_gap(self.image_size, self.mark_size),
                      note="(at least receptive_field, at most the image's largest gap image_size - 2 * mark_size + 1)")

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> LongRangeTask:
        """The task of :func:`long_range` called with ``arguments`` (a run's ``dataset_args``; the
        split sizes and the seed are not part of the task and are ignored)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.name in arguments})


@dataclass(frozen=True)
class LongRangeSamples:
    """One generated split and the generator's record of where everything is."""

    task: LongRangeTask
    images: Tensor  # N, 3, S, S uint8
    labels: Tensor  # N int64: 1 = same colour, 0 = different
    mark_positions: Tensor  # N, 2 marks, (y, x) of the top-left pixel, int64
    mark_colours: Tensor  # N, 2 palette indices, int64
    distractor_positions: Tensor  # N, D, (y, x) top-left of each plus's bounding box
    distractor_colours: Tensor  # N, D palette indices


def _place_marks(rng: np.random.Generator, n: int, task: LongRangeTask) -> np.ndarray:
    """(n, 2, 2) top-left corners, uniform over the ordered pairs that obey the distance rule."""
    high = task.image_size - task.mark_size  # largest top-left coordinate
    apart = task.receptive_field + task.mark_size - 1  # corner difference = nearest-pixel difference + mark_size - 1
    within = high if task.max_distance is None else task.max_distance + task.mark_size - 1
    out = np.empty((n, 2, 2), dtype=np.int64)  # n, mark, (y, x)
    filled, acceptance = 0, 0.5
    while filled < n:
        draw = min(_MAX_DRAW, int((n - filled) / acceptance * 1.2) + 64)
        candidates = rng.integers(0, high + 1, size=(draw, 2, 2))  # draw, mark, (y, x)
        corners = np.abs(candidates[:, 0] - candidates[:, 1])  # draw, (y, x)
        kept_pairs = (corners >= apart).any(axis=1) & (corners <= within).all(axis=1)  # draw
        acceptance = max(kept_pairs.mean(), 1e-4)
        kept = candidates[kept_pairs][: n - filled]
        out[filled : filled + len(kept)] = kept
        filled += len(kept)
    return out


def _overlaps(pos: np.ndarray, size: int, other: np.ndarray, other_size: int) -> np.ndarray:
    """Whether boxes at ``pos`` and ``other`` (both (n, 2)) come closer than ``_MARGIN`` pixels."""
    return np.all(
        (pos < other + other_size + _MARGIN) & (other < pos + size + _MARGIN), axis=1
    )  # n


def _place_distractors(rng: np.random.Generator, marks: np.ndarray, count: int, image_size: int, mark_size: int,
                       size: int) -> np.ndarray:
    """(n, count, 2) top-left corners of distractor boxes, clear of the marks and of each other."""
    n = marks.shape[0]
    out = np.zeros((n, count, 2), dtype=np.int64)
    for j in range(count):
        pending = np.arange(n)
        for _ in range(_PLACEMENT_TRIES):
            candidates = rng.integers(0, image_size - size + 1, size=(len(pending), 2))
            clash = _overlaps(candidates, size, marks[pending, 0], mark_size)
            clash |= _overlaps(candidates, size, marks[pending, 1], mark_size)
            for k in range(j):
                clash |= _overlaps(candidates, size, out[pending, k], size)
            out[pending[~clash], j] = candidates[~clash]
            pending = pending[clash]
            if len(pending) == 0:
                break
        else:
            raise ValueError(
                f"cannot place distractors={count} of size {size} clear of the marks in a "
                f"{image_size}x{image_size} image; use fewer distractors or a larger image_size"
            )
    return out


def _axis_masks(start: np.ndarray, length: int, image_size: int) -> np.ndarray:
    """(n, S) bool: coordinates in ``[start, start + length)``."""
    coords = np.arange(image_size)
    return (coords >= start[:, None]) & (coords < start[:, None] + length)


def _square_mask(pos: np.ndarray, size: int, image_size: int) -> np.ndarray:
    rows, cols = _axis_masks(pos[:, 0], size, image_size), _axis_masks(pos[:, 1], size, image_size)
    return rows[:, :, None] & cols[:, None, :]  # n, S, S


def _plus_mask(pos: np.ndarray, size: int, image_size: int) -> np.ndarray:
    """A plus sign in a ``size`` box: centred arms ``size // 3`` thick, empty corners."""
    arm = max(1, size // 3)
    offset = (size - arm) // 2
    rows, cols = _axis_masks(pos[:, 0], size, image_size), _axis_masks(pos[:, 1], size, image_size)
    row_arm = _axis_masks(pos[:, 0] + offset, arm, image_size)
    col_arm = _axis_masks(pos[:, 1] + offset, arm, image_size)
    return (rows[:, :, None] & col_arm[:, None, :]) | (row_arm[:, :, None] & cols[:, None, :])  # n, S, S


def generate_long_range(n: int, rng: np.random.Generator, task: LongRangeTask = LongRangeTask()) -> LongRangeSamples:
    """Generate ``n`` samples of ``task`` (``n`` even, half of each class) from ``rng``."""
    check_int("n", n, 0)
    if n % 2:
        raise ValueError(f"n={n} must be even so that the two classes are exactly balanced")
    image_size, colours, mark_size, distractors = task.image_size, task.colours, task.mark_size, task.distractors
    distractor_size, noise = task.distractor_size, task.noise

    labels = rng.permutation(np.repeat(np.array([0, 1]), n // 2))  # n
    first = rng.integers(0, colours, size=n)
    shift = rng.integers(1, colours, size=n)  # uniform over the other K - 1 colours
    second = np.where(labels == 1, first, (first + shift) % colours)
    mark_colours = np.stack([first, second], axis=1)  # n, 2
    marks = _place_marks(rng, n, task)
    spots = _place_distractors(rng, marks, distractors, image_size, mark_size, distractor_size)
    spot_colours = rng.integers(0, colours, size=(n, distractors))

    # Paint an object-index map, then look every pixel's colour up in a per-sample table.
    objects = np.zeros((n, image_size, image_size), dtype=np.int64)  # n, S, S; 0 = background
    for k in range(distractors):
        objects[_plus_mask(spots[:, k], distractor_size, image_size)] = 1 + k
    for k in range(2):
        objects[_square_mask(marks[:, k], mark_size, image_size)] = 1 + distractors + k
    palette = np.asarray(PALETTE, dtype=np.float32)  # K, 3
    table = np.concatenate(
        [
            np.broadcast_to(np.asarray(BACKGROUND, dtype=np.float32), (n, 1, 3)),
            palette[spot_colours],  # n, D, 3
            palette[mark_colours],  # n, 2, 3
        ],
        axis=1,
    )  # n, 1 + D + 2, 3
    images = table[np.arange(n)[:, None, None], objects]  # n, S, S, 3
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # n, 3, S, S
    if noise > 0:
        images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(noise)
    pixels = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)

    return LongRangeSamples(
        task=task,
        images=torch.from_numpy(pixels),
        labels=torch.from_numpy(labels.astype(np.int64)),
        mark_positions=torch.from_numpy(marks),
        mark_colours=torch.from_numpy(mark_colours.astype(np.int64)),
        distractor_positions=torch.from_numpy(spots),
        distractor_colours=torch.from_numpy(spot_colours.astype(np.int64)),
    )


def split_sizes(train_size: int, val_size: int, test_size: int) -> dict[str, int]:
    """Samples per split, each even (exactly balanced classes), at least 2 for training."""
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    for name, size in sizes.items():
        check_int(f"{name}_size", size, 2 if name == "train" else 0)
        if size % 2:
            raise ValueError(f"{name}_size={size} must be even so that the two classes are exactly balanced")
    return sizes


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The random stream of ``split`` under base ``seed``: one independent stream per (seed, split),
    so the splits are independent and each is reproducible on its own."""
    return np.random.default_rng([check_int("seed", seed, 0), SPLITS.index(check_choice("split", split, SPLITS))])


def generated_splits(name: str, classes: Sequence[str], task: Any, generate: Callable[..., Any], train_size: int,
                     val_size: int, test_size: int, seed: int) -> ImageSplits:
    """:class:`ImageSplits` of a generated task: each split ``generate(size, split_rng(seed, split),
    task)`` (an object with ``images`` and ``labels``), sizes even (:func:`split_sizes`), the
    channel statistics taken over the training split."""
    sizes = split_sizes(train_size, val_size, test_size)
    splits = {split: generate(sizes[split], split_rng(seed, split), task) for split in SPLITS}
    mean, std = channel_stats(splits["train"].images)
    return ImageSplits(name=name, train=(splits["train"].images, splits["train"].labels),
                       val=(splits["val"].images, splits["val"].labels),
                       test=(splits["test"].images, splits["test"].labels),
                       num_classes=len(classes), mean=mean, std=std, classes=list(classes))


def generated_split(builder: Callable[..., ImageSplits], task_type: Any, generate: Callable[..., Any], split: str,
                    arguments: Mapping[str, Any]) -> Any:
    """The exact samples (``generate``'s record) of split ``split`` of ``builder(**arguments)``, a
    dataset built by :func:`generated_splits` from a task of ``task_type`` (its ``from_arguments``
    reads the task's fields); an argument ``builder`` does not take is a TypeError."""
    check_choice("split", split, SPLITS)
    given = inspect.signature(builder).bind(**arguments)
    given.apply_defaults()
    values = given.arguments
    sizes = split_sizes(values["train_size"], values["val_size"], values["test_size"])
    return generate(sizes[split], split_rng(values["seed"], split), task_type.from_arguments(values))


_TASK = LongRangeTask()  # the defaults of long_range's task arguments


def long_range(
    image_size: int = _TASK.image_size,
    colours: int = _TASK.colours,
    mark_size: int = _TASK.mark_size,
    receptive_field: int = _TASK.receptive_field,
    distractors: int = _TASK.distractors,
    noise: float = _TASK.noise,
    train_size: int = 8000,
    val_size: int = 1000,
    test_size: int = 2000,
    seed: int = 0,
    distractor_size: int | None = None,
    max_distance: int | None = None,
) -> ImageSplits:
    """The "same colour?" long-range task as :class:`ImageSplits` (2 classes: different, same).

    Args:
        image_size, colours, mark_size, receptive_field, distractors, noise, distractor_size,
            max_distance: the task, :class:`LongRangeTask`
            (``image_size >= receptive_field + 2 * mark_size - 1``).
        train_size, val_size, test_size: samples per split, even (exactly balanced classes).
        seed: base seed; each split draws from its own stream derived from ``(seed, split)``.
    """
    task = LongRangeTask(image_size=image_size, colours=colours, mark_size=mark_size, receptive_field=receptive_field,
                         distractors=distractors, noise=noise, distractor_size=distractor_size, max_distance=max_distance)
    return generated_splits("long_range", CLASSES, task, generate_long_range, train_size, val_size, test_size, seed)


def long_range_samples(split: str, **arguments: Any) -> LongRangeSamples:
    """The exact samples of split ``split`` of ``long_range(**arguments)``, with the mark and
    distractor positions (a run's ``dataset_args`` regenerate its test images, for instance)."""
    return generated_split(long_range, LongRangeTask, generate_long_range, split, arguments)
