"""A Pathfinder-style task: are the two dots the two ends of one dashed curve?

After the Pathfinder challenge of Linsley et al. 2018 ("Learning long-range spatial dependencies
with horizontal gated-recurrent units", NeurIPS) as Long Range Arena uses it (Tay et al. 2021,
"Long Range Arena: A Benchmark for Efficient Transformers", ICLR): grey images with two dots and
several dashed curves; label 1 ("connected") when the dots lie at the two ends of one curve, 0
("disconnected") when they lie at ends of two different curves. LRA's Table 1, Pathfinder at
32x32 (1,024 tokens): Transformer 71.40 %, Linear Transformer 75.30 %, Performer 77.05 %,
Linformer 76.34 %. Those models are sequence Transformers on the flattened pixels, not the
convolution-attention hybrids of this kit, so their numbers frame ours without being comparable.

Construction, per sample (coordinates in pixels, pixel ``(y, x)`` centred at ``(y, x)``):

* a curve is a polyline of arc length ``curve_length`` made of ``segment_length`` segments (the
  last one shortened to fit); it starts at a point with a uniform heading, and the heading turns by
  a uniform angle in ``[-max_turn, max_turn]`` degrees at each joint, so curves are smooth. A curve
  that leaves the box ``[margin, image_size - 1 - margin]`` (``margin = max(dot_radius,
  line_width / 2)``) or comes closer than ``keep_out = 2 dot_radius + line_width`` to a dot it does
  not end at (or loops back to its own dot) is redrawn, so every curve lies inside the image and a
  dot touches only its own curve, at that curve's end;
* the dots are first fixed by a "joining" curve W, drawn from a uniform start in both classes:
  the dots sit at W's two ends. Connected: W is the first main curve, the second main curve starts
  at a uniform point. Disconnected: W is not drawn; the two main curves start at the two dots and
  each is kept clear of the other dot (a W from whose ends these two cannot be drawn is redrawn,
  in both classes alike). So the dots' positions, hence their distance, have the same
  distribution in both classes (a threshold on the distance is at chance), and both classes have
  two dots, two main curves and ``distractors`` distractor curves (uniform starts, clear of both
  dots), two dotted curve ends and the same number of free ones, so counting cannot tell them apart;
* curves are drawn dashed, ``line_width`` pixels wide: along the arc length, ``dash_length`` on,
  ``dash_gap`` off, from a uniform phase per curve (so the dash pattern at a dot says nothing about
  the curve's other end); curves may cross, as in Pathfinder;
* the dots are filled disks of radius ``dot_radius`` at the rounded curve ends (3 x 3 squares at
  the default 1.5); white (1) on black (0), gaussian pixel noise of std ``noise``, clipped to
  [0, 1], stored as uint8 with one channel;
* classes exactly balanced in every split; each split draws from its own stream derived from
  ``(seed, split)`` (as :mod:`aalib.data.synthetic`), so every call is reproducible.

Scale: at ``image_size`` 64 the same task (the same shapes, twice as large) is the defaults with
``curve_length``, ``segment_length``, ``dash_length``, ``dash_gap``, ``dot_radius`` and
``line_width`` doubled; ``max_turn``, ``distractors`` and ``noise`` stay as they are.

Why a local network cannot solve it. What a window smaller than the curves sees has nearly the
same distribution in both classes: a dot with one curve end leaving it, free ends, dashes,
crossings. The label is a property of a whole curve (whether the dot's curve ends at the other
dot), so a network must follow the contour from one dot across the image: by chaining local steps
through many layers or a recurrence (Linsley et al.'s hGRU), or by interactions across the image
such as attention. A network whose receptive field is smaller than the curve's extent, with a
global average pool and a linear head, adds up local evidence that carries almost no label
information. Known limit: a few pixels from a dot, the other dot's curve of a disconnected image
passes a little less often than the free main curve of a connected one (it starts a curve length
away), a weak local cue.

Rank and lookups (an argument for a different task; not implemented). Shen et al.'s linear
attention (Shen et al. 2021, "Efficient Attention: Attention with Linear Complexities", WACV,
Eq. 4; :mod:`aalib.attention`) computes ``rho_q(Q) (rho_k(K)^T V)`` per head, whose implied map
``A = rho_q(Q) rho_k(K)^T`` is N x N with rank at most dkh, nonnegative rows summing to 1. If each
of M queries put more than half its weight on its own distinct key, the M x M block of A on those
queries and keys would be strictly diagonally dominant, hence invertible, so M <= dkh: one head of
linear attention cannot route more than dkh distinct queries each to its own key at once, Nh heads
not more than dk (no permutation- or identity-like lookup over N >> dkh positions; in the
Simple-LAACNN, dkh = 16 at 16 x 16, N = 256). Softmax's entrywise exp of a rank-dkh logit matrix
is not limited that way: with ``q_i = beta u_i`` and ``k_i = u_i`` for N distinct unit vectors
(dkh = 2 suffices), each query's largest logit is its own key's, and as beta grows the N x N map
approaches the identity (a permutation, with the keys permuted). Pathfinder is not obviously such
a task: contour following is local chaining, and the final decision needs one dot's lookup of one
far end, a demand of rank one. A task that is: M > dkh marked pairs (each query mark and its
partner share a code, e.g. a shape), with a label that depends on every query reading its own
partner, e.g. "every query mark has its partner's colour".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import check_float, check_int
from .splits import ImageSplits
from .synthetic import generated_split, generated_splits

__all__ = [
    "PATHFINDER_CLASSES",
    "PathfinderTask",
    "PathfinderSamples",
    "generate_pathfinder",
    "pathfinder",
    "pathfinder_samples",
]

PATHFINDER_CLASSES = ["disconnected", "connected"]
_SAMPLES_PER_PIXEL = 4  # path samples per pixel of arc length, for drawing and the clearance test
_REPEATS = 16  # candidates drawn at a time for each curve still to be drawn
_ROUNDS = 64  # rounds of candidates before giving up on a curve
_ANCHORED_ROUNDS = 4  # rounds for a curve from a dot before the dots are redrawn


@dataclass(frozen=True)
class PathfinderTask:
    """What the images of the Pathfinder-style task look like (the construction is in the module
    docstring); every field is checked on construction. Lengths are in pixels: scale
    ``curve_length``, ``segment_length``, ``dash_length``, ``dash_gap``, ``dot_radius`` and
    ``line_width`` with ``image_size`` to keep the task the same at another size."""

    image_size: int = 32  # side S of the square images
    curve_length: float = 28.0  # arc length of every curve
    segment_length: float = 2.0  # length of the curves' straight segments (the walk's step)
    max_turn: float = 30.0  # largest turn between two segments, degrees
    dash_length: float = 2.0  # arc length of a dash
    dash_gap: float = 2.0  # arc length of the gap between two dashes
    distractors: int = 1  # curves besides the two main ones, touching no dot
    dot_radius: float = 1.5  # radius of the filled dots (1.5: 3 x 3 squares)
    line_width: int = 1  # width of the curves
    noise: float = 0.05  # std of gaussian pixel noise, images in [0, 1]

    def __post_init__(self) -> None:
        check_int("image_size", self.image_size)
        check_int("distractors", self.distractors, 0)
        check_int("line_width", self.line_width)
        for name in ("curve_length", "segment_length", "dash_length", "dash_gap", "dot_radius"):
            check_float(name, getattr(self, name), 0.0)
        check_float("max_turn", self.max_turn, 0.0, 180.0, strict=False)
        check_float("noise", self.noise, 0.0, strict=False)
        if self.curve_length < 4 * self.keep_out:
            raise ValueError(
                f"curve_length must be >= 4 * (2 * dot_radius + line_width) = {4 * self.keep_out:g} so that a "
                f"curve's two dots lie apart, got {self.curve_length!r}"
            )
        if self.image_size - 1 - 2 * self.margin < self.segment_length:  # the box must hold a segment
            raise ValueError(
                f"image_size must be >= {math.ceil(1 + 2 * self.margin + self.segment_length)} "
                f"(= 1 + 2 * max(dot_radius, line_width / 2) + segment_length), got {self.image_size!r}"
            )

    @property
    def margin(self) -> float:
        """Distance the curves keep from the image's border, so that dots and lines fit inside."""
        return max(self.dot_radius, self.line_width / 2)

    @property
    def keep_out(self) -> float:
        """Distance a curve keeps from the centre of a dot it does not end at."""
        return 2 * self.dot_radius + self.line_width

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> PathfinderTask:
        """The task of :func:`pathfinder` called with ``arguments`` (a run's ``dataset_args``; the
        split sizes and the seed are not part of the task and are ignored)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.name in arguments})


@dataclass(frozen=True)
class PathfinderSamples:
    """One generated split and the generator's record of every curve and dot."""

    task: PathfinderTask
    images: Tensor  # N, 1, S, S uint8
    labels: Tensor  # N int64: 1 = connected, 0 = disconnected
    curves: Tensor  # N, 2 + distractors, K + 1 vertices, (y, x) float32; curves 0 and 1 are the main ones
    dash_phases: Tensor  # N, 2 + distractors: arc length s is lit iff (s + phase) % (dash + gap) < dash
    dots: Tensor  # N, 2 dots, (y, x) float32: the exact curve ends the dots are centred on
    dot_ends: Tensor  # N, 2 dots, (curve index, end: 0 first vertex, 1 last), int64


class _Geometry:
    """The task's segment lengths and fixed arc-length grid (where each path sample falls)."""

    def __init__(self, task: PathfinderTask) -> None:
        self.segments = math.ceil(task.curve_length / task.segment_length - 1e-9)  # K
        lengths = np.full(self.segments, task.segment_length, dtype=np.float32)
        lengths[-1] = task.curve_length - (self.segments - 1) * task.segment_length
        self.lengths = lengths  # K
        count = math.ceil(task.curve_length * _SAMPLES_PER_PIXEL) + 1
        self.arc = np.linspace(0.0, task.curve_length, count, dtype=np.float32)  # P
        self.segment = np.minimum((self.arc / task.segment_length).astype(np.int64), self.segments - 1)  # P
        self.along = self.arc - self.segment * np.float32(task.segment_length)  # P: arc length into its segment

    def path(self, vertices: np.ndarray, headings: np.ndarray, every: int = 1) -> np.ndarray:
        """(m, P / every, 2) path samples at every ``every``-th arc length of ``arc``."""
        segment, along = self.segment[::every], self.along[::every]
        angle = headings[:, segment]  # m, P / every: heading of each sample's segment
        directions = np.stack([np.sin(angle), np.cos(angle)], axis=2)  # m, P / every, (y, x)
        return vertices[:, segment] + directions * along[None, :, None]


def _walk(rng: np.random.Generator, starts: np.ndarray, task: PathfinderTask,
          geometry: _Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (m, K + 1, 2) and segment headings (m, K), radians, of m random curves from
    ``starts`` (m, 2): a uniform first heading, then uniform turns in ``[-max_turn, max_turn]``."""
    m = starts.shape[0]
    turns = (rng.random((m, geometry.segments), dtype=np.float32) * 2 - 1) * np.float32(math.radians(task.max_turn))
    turns[:, 0] = rng.random(m, dtype=np.float32) * np.float32(2 * math.pi)
    headings = np.cumsum(turns, axis=1)  # m, K
    vertices = np.empty((m, geometry.segments + 1, 2), dtype=np.float32)  # m, K + 1, (y, x)
    vertices[:, 0] = starts
    vertices[:, 1:, 0] = starts[:, :1] + np.cumsum(np.sin(headings) * geometry.lengths, axis=1)
    vertices[:, 1:, 1] = starts[:, 1:] + np.cumsum(np.cos(headings) * geometry.lengths, axis=1)
    return vertices, headings


def _inside(vertices: np.ndarray, task: PathfinderTask) -> np.ndarray:
    """(m,) whether every vertex, hence the whole polyline, lies in the box (it is convex)."""
    low, high = task.margin, task.image_size - 1 - task.margin
    return ((vertices >= low) & (vertices <= high)).all(axis=(1, 2))


def _clear(vertices: np.ndarray, headings: np.ndarray, dots: np.ndarray, own: np.ndarray, task: PathfinderTask,
           geometry: _Geometry) -> np.ndarray:
    """(m,) whether curves keep ``keep_out`` from ``dots`` (m, D, 2), where ``own`` (m, D) says
    which end each dot sits on (-1 none, 0 the first vertex, 1 the last); within ``2 keep_out`` of
    arc length of its own dot a curve is exempt. Checked on path samples at most 1 px apart: between
    two of them the curve comes at most ``keep_out - sqrt(keep_out ** 2 - 1 / 4)`` closer (0.03 px
    at the default ``keep_out`` of 4)."""
    every = _SAMPLES_PER_PIXEL
    points = geometry.path(vertices, headings, every)  # m, Q, 2
    offset = points[:, None] - dots[:, :, None]  # m, D, Q, 2
    far = (offset ** 2).sum(axis=3) >= np.float32(task.keep_out ** 2)  # m, D, Q
    exempt_arc = 2 * task.keep_out
    near_start = geometry.arc[::every] <= exempt_arc  # Q
    near_end = geometry.arc[::every] >= task.curve_length - exempt_arc  # Q
    exempt = np.where((own == 0)[:, :, None], near_start, np.where((own == 1)[:, :, None], near_end, False))  # m, D, Q
    return (far | exempt).all(axis=(1, 2))


def _draw(rng: np.random.Generator, task: PathfinderTask, geometry: _Geometry, m: int, starts: np.ndarray | None,
          dots: np.ndarray | None, own: np.ndarray | None,
          rounds: int = _ROUNDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (m, K + 1, 2), path samples (m, P, 2) and success (m,) of ``m`` curves, each redrawn
    until it lies inside the box and clear of the dots (rejection sampling, ``_REPEATS`` candidates
    a round, at most ``rounds`` rounds; a curve that found none is left unset and not successful).

    ``starts`` (m, 2) fixes the first vertices (None: uniform in the box); ``dots`` (m, D, 2) and
    ``own`` (m, D) are the dots to keep clear of (None: the curve's own two ends are its dots)."""
    low, high = task.margin, task.image_size - 1 - task.margin
    vertices = np.zeros((m, geometry.segments + 1, 2), dtype=np.float32)
    points = np.zeros((m, len(geometry.arc), 2), dtype=np.float32)
    drawn = np.zeros(m, dtype=bool)
    pending = np.arange(m)
    for _ in range(rounds):
        if len(pending) == 0:
            break
        candidate = np.repeat(pending, _REPEATS)  # c: the curve each candidate is for
        if starts is None:
            first = rng.uniform(low, high, size=(len(candidate), 2)).astype(np.float32)
        else:
            first = starts[candidate]
        v, h = _walk(rng, first, task, geometry)
        ok = _inside(v, task)
        inside = np.flatnonzero(ok)
        v_in, h_in = v[inside], h[inside]
        if dots is None:  # the joining curve: its two ends are the dots
            ends, ends_own = v_in[:, [0, -1]], np.broadcast_to(np.array([0, 1]), (len(inside), 2))
        else:
            ends, ends_own = dots[candidate[inside]], own[candidate[inside]]
        ok[inside] = _clear(v_in, h_in, ends, ends_own, task, geometry)
        ok = ok.reshape(len(pending), _REPEATS)
        done = ok.any(axis=1)  # pending curves with an acceptable candidate: take the first one
        chosen = (np.arange(len(pending)) * _REPEATS + ok.argmax(axis=1))[done]
        vertices[pending[done]] = v[chosen]
        points[pending[done]] = geometry.path(v[chosen], h[chosen])
        drawn[pending[done]] = True
        pending = pending[~done]
    return vertices, points, drawn


def _cannot_draw(task: PathfinderTask) -> ValueError:
    return ValueError(
        f"cannot draw curves of curve_length={task.curve_length:g} with max_turn={task.max_turn:g} inside a "
        f"{task.image_size}x{task.image_size} image clear of the dots; use shorter curves, a larger max_turn "
        "or a larger image_size"
    )


def _dotted_curves(rng: np.random.Generator, task: PathfinderTask, geometry: _Geometry,
                   n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(vertices, path samples) of the joining curve W and of the two curves that start at its ends
    and keep clear of the other end, for ``n`` samples. The dots are W's ends; a W from whose ends
    either curve cannot be drawn is redrawn, in both classes alike, so the dots' distribution is the
    same in both."""
    curves = [(np.zeros((n, geometry.segments + 1, 2), dtype=np.float32),
               np.zeros((n, len(geometry.arc), 2), dtype=np.float32)) for _ in range(3)]
    pending = np.arange(n)
    for _ in range(_ROUNDS):
        joining = _draw(rng, task, geometry, len(pending), None, None, None)
        if not joining[2].all():
            raise _cannot_draw(task)
        dots = joining[0][:, [0, -1]]  # m, 2, 2
        results = [joining]
        for end, owned in ((0, [0, -1]), (1, [-1, 0])):
            own = np.broadcast_to(np.array(owned), (len(pending), 2))
            results.append(_draw(rng, task, geometry, len(pending), dots[:, end], dots, own, _ANCHORED_ROUNDS))
        done = results[1][2] & results[2][2]
        for (vertices, points), (v, p, _) in zip(curves, results):
            vertices[pending[done]], points[pending[done]] = v[done], p[done]
        pending = pending[~done]
        if len(pending) == 0:
            return curves
    raise _cannot_draw(task)


def _render(points: np.ndarray, lit: np.ndarray, dots: np.ndarray, task: PathfinderTask) -> np.ndarray:
    """(n, S, S) float32 images: lit path samples (n, C, P) of ``points`` (n, C, P, 2) as
    ``line_width`` squares, then disks of ``dot_radius`` at the rounded ``dots`` (n, 2, 2)."""
    n, size, width = points.shape[0], task.image_size, task.line_width
    corner = np.rint(points - (width - 1) / 2).astype(np.int64)  # n, C, P, 2: top-left pixel of each stamp
    sample = np.broadcast_to(np.arange(n)[:, None, None], lit.shape)[lit]  # L
    corner = corner[lit]  # L, 2
    flat = np.zeros(n * size * size, dtype=np.float32)
    for dy in range(width):
        for dx in range(width):
            flat[(sample * size + corner[:, 0] + dy) * size + corner[:, 1] + dx] = 1.0
    images = flat.reshape(n, size, size)  # n, S, S
    centres = np.rint(dots)  # n, 2, 2
    grid = np.arange(size, dtype=np.float64)
    for k in range(2):
        rows = (grid[None, :] - centres[:, k, 0, None]) ** 2  # n, S
        cols = (grid[None, :] - centres[:, k, 1, None]) ** 2  # n, S
        images[rows[:, :, None] + cols[:, None, :] <= task.dot_radius ** 2] = 1.0
    return images


def generate_pathfinder(n: int, rng: np.random.Generator, task: PathfinderTask = PathfinderTask()) -> PathfinderSamples:
    """Generate ``n`` samples of ``task`` (``n`` even, half of each class) from ``rng``."""
    check_int("n", n, 0)
    if n % 2:
        raise ValueError(f"n={n} must be even so that the two classes are exactly balanced")
    geometry = _Geometry(task)
    labels = rng.permutation(np.repeat(np.array([0, 1]), n // 2))  # n
    connected = labels == 1

    # Connected: W and a free curve; disconnected: the curves from W's two ends (both drawn for all).
    (joining, joining_points), (first, first_points), (second, second_points) = _dotted_curves(rng, task, geometry, n)
    dots = joining[:, [0, -1]]  # n, 2, 2: W's two ends
    count = n * (1 + task.distractors)
    free, free_points, drawn = _draw(rng, task, geometry, count, None, np.repeat(dots, 1 + task.distractors, axis=0),
                                     np.full((count, 2), -1))
    if not drawn.all():
        raise _cannot_draw(task)
    free = free.reshape(n, 1 + task.distractors, *free.shape[1:])  # n, 1 + D, K + 1, 2
    free_points = free_points.reshape(n, 1 + task.distractors, *free_points.shape[1:])  # n, 1 + D, P, 2

    pick = connected[:, None, None]
    main0 = np.where(pick, joining, first)
    main1 = np.where(pick, free[:, 0], second)
    curves = np.concatenate([main0[:, None], main1[:, None], free[:, 1:]], axis=1)  # n, C, K + 1, 2
    points = np.concatenate([np.where(pick, joining_points, first_points)[:, None],
                             np.where(pick, free_points[:, 0], second_points)[:, None], free_points[:, 1:]], axis=1)
    dot_ends = np.where(connected[:, None, None], np.array([[0, 0], [0, 1]]), np.array([[0, 0], [1, 0]]))  # n, 2, 2

    period = task.dash_length + task.dash_gap
    phases = rng.uniform(0.0, period, size=curves.shape[:2])  # n, C
    lit = (geometry.arc[None, None, :] + phases[:, :, None]) % period < task.dash_length  # n, C, P
    images = _render(points, lit, dots, task)
    if task.noise > 0:
        images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(task.noise)
    pixels = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)[:, None]  # n, 1, S, S

    return PathfinderSamples(
        task=task,
        images=torch.from_numpy(pixels),
        labels=torch.from_numpy(labels.astype(np.int64)),
        curves=torch.from_numpy(curves),
        dash_phases=torch.from_numpy(phases),
        dots=torch.from_numpy(np.ascontiguousarray(dots)),
        dot_ends=torch.from_numpy(dot_ends.astype(np.int64)),
    )


_TASK = PathfinderTask()  # the defaults of pathfinder's task arguments


def pathfinder(
    image_size: int = _TASK.image_size,
    curve_length: float = _TASK.curve_length,
    segment_length: float = _TASK.segment_length,
    max_turn: float = _TASK.max_turn,
    dash_length: float = _TASK.dash_length,
    dash_gap: float = _TASK.dash_gap,
    distractors: int = _TASK.distractors,
    dot_radius: float = _TASK.dot_radius,
    line_width: int = _TASK.line_width,
    noise: float = _TASK.noise,
    train_size: int = 8000,
    val_size: int = 1000,
    test_size: int = 2000,
    seed: int = 0,
) -> ImageSplits:
    """The Pathfinder-style task as :class:`ImageSplits` (grey, 2 classes: disconnected, connected).

    Args:
        image_size, curve_length, segment_length, max_turn, dash_length, dash_gap, distractors,
            dot_radius, line_width, noise: the task, :class:`PathfinderTask`.
        train_size, val_size, test_size: samples per split, even (exactly balanced classes).
        seed: base seed; each split draws from its own stream derived from ``(seed, split)``.
    """
    task = PathfinderTask(image_size=image_size, curve_length=curve_length, segment_length=segment_length,
                          max_turn=max_turn, dash_length=dash_length, dash_gap=dash_gap, distractors=distractors,
                          dot_radius=dot_radius, line_width=line_width, noise=noise)
    return generated_splits("pathfinder", PATHFINDER_CLASSES, task, generate_pathfinder, train_size, val_size,
                            test_size, seed)


def pathfinder_samples(split: str, **arguments: Any) -> PathfinderSamples:
    """The exact samples of split ``split`` of ``pathfinder(**arguments)``, with every curve and dot
    (a run's ``dataset_args`` regenerate its test images, for instance)."""
    return generated_split(pathfinder, PathfinderTask, generate_pathfinder, split, arguments)
