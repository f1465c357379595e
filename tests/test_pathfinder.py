"""Tests of the Pathfinder-style task (aalib.data.pathfinder): the rules of its construction read
back from the generator's record and the images, balance, determinism, the shortcuts it rules out,
its argument checks, the registry, and a model's forward pass on it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aalib.data import (
    PathfinderSamples,
    PathfinderTask,
    build_dataset,
    generate_pathfinder,
    list_datasets,
    pathfinder,
    pathfinder_samples,
)
from aalib.models import build_model

_SMALL = dict(train_size=100, val_size=40, test_size=60)


def _scaled(factor: int, **changes: object) -> PathfinderTask:
    """The default task at ``factor`` times the size, lengths scaled as the module documents."""
    task = PathfinderTask()
    lengths = {name: getattr(task, name) * factor
               for name in ("curve_length", "segment_length", "dash_length", "dash_gap", "dot_radius", "line_width")}
    return PathfinderTask(**{**lengths, "image_size": task.image_size * factor, **changes})  # type: ignore[arg-type]


def _path_samples(curves: torch.Tensor, arc: torch.Tensor) -> torch.Tensor:
    """N, C, len(arc), 2 points at arc lengths ``arc`` along the recorded polylines (N, C, K + 1, 2),
    interpolated here from the vertices alone."""
    vertices = curves.double().reshape(-1, curves.shape[2], 2)  # M, K + 1, 2
    lengths = (vertices[:, 1:] - vertices[:, :-1]).norm(dim=2)  # M, K
    cumulative = torch.cat([torch.zeros(len(vertices), 1, dtype=torch.float64), lengths.cumsum(1)], 1)  # M, K + 1
    query = arc.double().expand(len(vertices), -1).contiguous()  # M, P
    segment = (torch.searchsorted(cumulative.contiguous(), query, right=True) - 1).clamp(0, lengths.shape[1] - 1)
    t = ((query - cumulative.gather(1, segment)) / lengths.gather(1, segment))[..., None]  # M, P, 1
    start = vertices.gather(1, segment[..., None].expand(-1, -1, 2))
    end = vertices.gather(1, (segment + 1)[..., None].expand(-1, -1, 2))
    return (start + t * (end - start)).reshape(*curves.shape[:2], len(arc), 2)


def _pixels(images: torch.Tensor, points: torch.Tensor, slack: float = 0.0) -> torch.Tensor:
    """N, C, P: whether the pixel each point (N, C, P, 2) falls in is lit (> 127) in ``images``; with
    ``slack``, whether any pixel within ``slack`` (per axis) of the point is."""
    sample = torch.arange(len(images))[:, None, None].expand(*points.shape[:3])
    lit = torch.zeros(points.shape[:3], dtype=torch.bool)
    for dy in {-slack, slack}:
        for dx in {-slack, slack}:
            index = (points + torch.tensor([dy, dx], dtype=points.dtype)).round().long()
            lit |= images[:, 0][sample, index[..., 0], index[..., 1]] > 127
    return lit


def _best_threshold_accuracy(values: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the best rule ``label = (value > t)`` or ``label = (value <= t)`` over all t."""
    order = values.argsort()
    ones = labels[order].double()
    ones_at_or_below = torch.cat([torch.zeros(1, dtype=torch.float64), ones.cumsum(0)])  # cut after k values
    below = torch.arange(len(values) + 1, dtype=torch.float64)
    ties = torch.cat([torch.tensor([True]), values[order][1:] != values[order][:-1], torch.tensor([True])])
    correct = (below - ones_at_or_below) + (ones.sum() - ones_at_or_below)  # zeros below the cut + ones above
    accuracy = correct[ties] / len(values)  # only cuts between distinct values are thresholds
    return float(torch.maximum(accuracy, 1 - accuracy).max())


@pytest.fixture(scope="module")
def many() -> PathfinderSamples:
    """2,000 samples of the default task, for the statistical tests."""
    return generate_pathfinder(2000, np.random.default_rng(7))


# ---------------------------------------------------------------------------------------------
# the dataset: registry, balance, determinism


def test_pathfinder_through_registry() -> None:
    assert "pathfinder" in list_datasets()
    splits = build_dataset("pathfinder", **_SMALL, seed=2)
    assert splits.name == "pathfinder" and splits.num_classes == 2 and splits.classes == ["disconnected", "connected"]
    assert splits.train[0].shape == (100, 1, 32, 32) and splits.train[0].dtype == torch.uint8
    assert splits.channels == 1 and len(splits.mean) == 1 and 0 < splits.mean[0] < 0.5 and splits.std[0] > 0
    with pytest.raises(ValueError, match="dash_len.*allowed.*dash_length"):
        build_dataset("pathfinder", dash_len=2)


def test_pathfinder_exactly_balanced_in_every_split() -> None:
    splits = pathfinder(**_SMALL)
    for split, size in (("train", 100), ("val", 40), ("test", 60)):
        labels = getattr(splits, split)[1]
        assert labels.shape == (size,) and labels.dtype == torch.int64 and labels.sum().item() == size // 2


def test_pathfinder_deterministic_per_seed_and_split() -> None:
    first, again, other = pathfinder(**_SMALL, seed=1), pathfinder(**_SMALL, seed=1), pathfinder(**_SMALL, seed=2)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(first, split)[0], getattr(again, split)[0])
        assert torch.equal(getattr(first, split)[1], getattr(again, split)[1])
        assert not torch.equal(getattr(first, split)[0], getattr(other, split)[0])
    assert not torch.equal(first.train[0][:40], first.val[0])  # each split has its own stream
    # the samples are those of the split's stream, with the record, and the task round-trips
    args = dict(_SMALL, seed=1, curve_length=24.0, distractors=2)
    samples = pathfinder_samples("test", **args)
    assert samples.task == PathfinderTask.from_arguments(args) == PathfinderTask(curve_length=24, distractors=2)
    assert torch.equal(samples.images, pathfinder(**args).test[0])
    again = generate_pathfinder(60, np.random.default_rng([1, 2]), samples.task)  # seed 1, split "test"
    assert torch.equal(again.images, samples.images) and torch.equal(again.curves, samples.curves)
    with pytest.raises(TypeError, match="dash_len"):
        pathfinder_samples("test", dash_len=3)  # an argument pathfinder does not take


# ---------------------------------------------------------------------------------------------
# the construction's rules, read back from the record and the images


@pytest.mark.parametrize("factor", [1, 2])
def test_dots_lie_at_the_ends_of_one_curve_or_of_two(factor: int) -> None:
    task = _scaled(factor, noise=0.0, distractors=2)
    samples = generate_pathfinder(200, np.random.default_rng(3), task)
    labels, ends, curves, dots = samples.labels, samples.dot_ends, samples.curves, samples.dots
    assert curves.shape[1] == 2 + task.distractors
    connected = labels == 1
    assert torch.equal(ends[:, 0, 0] == ends[:, 1, 0], connected)  # same curve iff connected
    assert (ends[connected, :, 1] == torch.tensor([0, 1])).all()  # a connected curve's two ends
    assert (ends[~connected, :, 0] < 2).all()  # dots sit on the main curves, never on a distractor
    for k in range(2):
        vertex = torch.where(ends[:, k, 1] == 0, 0, curves.shape[2] - 1)
        assert torch.equal(dots[:, k], curves[torch.arange(len(dots)), ends[:, k, 0], vertex])
    # every dot is drawn: a filled disk of dot_radius at the rounded end (the centre's neighbours lit)
    centres = dots.round().long()
    reach = math.floor(task.dot_radius)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if dy * dy + dx * dx <= task.dot_radius ** 2:
                lit = samples.images[torch.arange(len(dots))[:, None], 0, centres[..., 0] + dy, centres[..., 1] + dx]
                assert (lit == 255).all()


@pytest.mark.parametrize("factor", [1, 2])
def test_a_dot_touches_only_its_own_curve_at_its_end(factor: int) -> None:
    task = _scaled(factor, distractors=3)
    samples = generate_pathfinder(200, np.random.default_rng(4), task)
    arc = torch.linspace(0, task.curve_length, int(task.curve_length * 8) + 1)
    points = _path_samples(samples.curves, arc)  # N, C, P, 2
    distance = (points[:, :, :, None] - samples.dots[:, None, None].double()).norm(dim=4)  # N, C, P, 2 dots
    owner = torch.zeros(distance.shape, dtype=torch.bool)
    exempt = torch.zeros(distance.shape, dtype=torch.bool)
    for k in range(2):
        curve, end = samples.dot_ends[:, k, 0], samples.dot_ends[:, k, 1]
        near_start, near_end = arc <= 2 * task.keep_out, arc >= task.curve_length - 2 * task.keep_out  # P
        near = torch.where(end[:, None] == 0, near_start, near_end)  # N, P
        owner[torch.arange(len(curve)), curve, :, k] = True
        exempt[torch.arange(len(curve)), curve, :, k] = near
    tolerance = 0.06  # the generator checks samples 1 px apart (the chord between them comes this close)
    assert (distance[~owner] >= task.keep_out - tolerance).all()  # other curves keep out of every dot
    assert (distance[owner & ~exempt] >= task.keep_out - tolerance).all()  # no curve loops back to its dot
    assert (distance[owner & exempt].reshape(-1) <= 2 * task.keep_out).any()  # (the exemption is used)


@pytest.mark.parametrize("factor", [1, 2])
def test_curves_are_smooth_walks_inside_the_image(factor: int) -> None:
    task = _scaled(factor, distractors=2, max_turn=40.0)
    curves = generate_pathfinder(200, np.random.default_rng(5), task).curves.double()  # N, C, K + 1, 2
    assert (curves >= task.margin - 1e-4).all() and (curves <= task.image_size - 1 - task.margin + 1e-4).all()
    steps = curves[:, :, 1:] - curves[:, :, :-1]  # N, C, K, 2
    lengths = steps.norm(dim=3)
    assert torch.allclose(lengths[..., :-1], torch.tensor(task.segment_length, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(lengths.sum(dim=2), torch.tensor(task.curve_length, dtype=torch.float64), atol=1e-3)
    heading = torch.atan2(steps[..., 0], steps[..., 1])
    turn = torch.remainder(heading[..., 1:] - heading[..., :-1] + math.pi, 2 * math.pi) - math.pi
    assert turn.abs().max() <= math.radians(task.max_turn) + 1e-3
    assert turn.abs().max() >= 0.9 * math.radians(task.max_turn)  # the bound is reached: turns span it


def test_dashes_are_lit_where_the_record_says_and_gaps_are_dark() -> None:
    task = PathfinderTask(noise=0.0)
    samples = generate_pathfinder(300, np.random.default_rng(6), task)
    arc = torch.linspace(0, task.curve_length, int(task.curve_length * 8) + 1)
    points = _path_samples(samples.curves, arc)
    period = task.dash_length + task.dash_gap
    phase = torch.remainder(arc[None, None] + samples.dash_phases[..., None].double(), period)  # N, C, P
    lit = _pixels(samples.images, points)
    # every dash is drawn: the generator lights the pixels of path samples 0.25 px apart, so a point
    # between two of them next to a pixel corner may fall in the unlit pixel across the corner
    inner = (phase > 0.25) & (phase < task.dash_length - 0.25)
    assert _pixels(samples.images, points, slack=0.15)[inner].all()
    middle = (phase - (task.dash_length + task.dash_gap / 2)).abs() < 0.07  # the middles of the gaps
    away = (points[:, :, :, None] - samples.dots[:, None, None].double()).norm(dim=4).amin(dim=3) > task.keep_out
    assert (~lit[middle & away]).float().mean() > 0.85  # and gaps are dark (bar crossings and pixel corners)


@pytest.mark.parametrize("dash_length, dash_gap", [(6.0, 6.0), (9.0, 3.0), (3.0, 6.0)])
def test_lit_fraction_of_the_path_is_the_dash_fraction(dash_length: float, dash_gap: float) -> None:
    """At 3x the size with 1 px lines, pixels are small beside the dashes: the fraction of path
    samples that fall on a lit pixel is the dash fraction (plus the pixel corners at dash ends)."""
    task = _scaled(3, noise=0.0, line_width=1, dash_length=dash_length, dash_gap=dash_gap)
    samples = generate_pathfinder(100, np.random.default_rng(8), task)
    arc = torch.linspace(0, task.curve_length, int(task.curve_length * 4) + 1)
    points = _path_samples(samples.curves, arc)
    away = (points[:, :, :, None] - samples.dots[:, None, None].double()).norm(dim=4).amin(dim=3) > task.keep_out
    fraction = _pixels(samples.images, points)[away].float().mean().item()
    nominal = dash_length / (dash_length + dash_gap)
    assert nominal - 0.02 <= fraction <= nominal + 0.12


def test_the_task_scales_with_its_lengths() -> None:
    """Doubling the image and the lengths keeps the task: the same geometry relative to the image."""
    measured = []
    for factor in (1, 2):
        samples = generate_pathfinder(1000, np.random.default_rng(9), _scaled(factor))
        size = samples.task.image_size
        distance = (samples.dots[:, 0] - samples.dots[:, 1]).norm(dim=1).mean().item() / size
        measured.append((distance, (samples.images > 127).float().mean().item()))
    (distance_32, ink_32), (distance_64, ink_64) = measured
    assert abs(distance_32 - distance_64) < 0.03 and abs(ink_32 - ink_64) / ink_32 < 0.1


# ---------------------------------------------------------------------------------------------
# shortcuts ruled out


def test_dot_distance_does_not_tell_the_classes_apart(many: PathfinderSamples) -> None:
    distance = (many.dots[:, 0] - many.dots[:, 1]).norm(dim=1)
    assert _best_threshold_accuracy(distance, many.labels) <= 0.56
    # (and the dots are far apart: beyond the Simple-CNN's 21 px receptive field in most samples)
    assert distance.median() > 21


def test_ink_does_not_tell_the_classes_apart(many: PathfinderSamples) -> None:
    ink = (many.images > 127).sum(dim=(1, 2, 3)).double()
    assert _best_threshold_accuracy(ink, many.labels) <= 0.56


def test_best_threshold_accuracy_finds_a_separating_threshold() -> None:
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    assert _best_threshold_accuracy(torch.tensor([1.0, 2, 3, 4, 2, 5]), labels) == 1.0
    assert _best_threshold_accuracy(-torch.tensor([1.0, 2, 3, 4, 2, 5]), labels) == 1.0
    assert _best_threshold_accuracy(torch.ones(6), labels) == 0.5  # ties: no threshold splits them


# ---------------------------------------------------------------------------------------------
# arguments


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(train_size=101), "train_size=101 must be even"),
        (dict(curve_length=-1.0), r"curve_length must be a finite number > 0, got -1.0"),
        (dict(dash_gap=float("nan")), r"dash_gap must be a finite number > 0, got nan"),
        (dict(max_turn=200), r"max_turn must be a finite number >= 0 and <= 180, got 200"),
        (dict(noise=-0.1), r"noise must be a finite number >= 0, got -0.1"),
        (dict(distractors=-1), r"distractors must be an int >= 0, got -1"),
        (dict(line_width=1.5), r"line_width must be a positive int, got 1.5"),
        (dict(image_size=0), r"image_size must be a positive int, got 0"),
        (dict(image_size=5), r"image_size must be >= 6 \(= 1 \+ 2 \* max\(dot_radius, line_width / 2\) \+ "
                             r"segment_length\), got 5"),
        (dict(image_size=12), "cannot draw curves of curve_length=28 with max_turn=30 inside a 12x12 image"),
        (dict(curve_length=10.0), r"curve_length must be >= 4 \* \(2 \* dot_radius \+ line_width\) = 16"),
        (dict(curve_length=200.0, train_size=2, val_size=0, test_size=0), "cannot draw curves of curve_length=200"),
        (dict(seed=-1), "seed must be an int >= 0, got -1"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        pathfinder(**{**_SMALL, **kwargs})
    assert "\n" not in str(caught.value)


def test_bad_split_and_odd_n() -> None:
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'val', 'test'\), got 'dev'"):
        pathfinder_samples("dev")
    with pytest.raises(ValueError, match="n=3 must be even"):
        generate_pathfinder(3, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# a model runs on it


@pytest.mark.parametrize("attention", [None, "softmax", "linear"])
def test_simple_cnn_runs_on_pathfinder(attention: str | None) -> None:
    splits = pathfinder(train_size=8, val_size=0, test_size=0)
    images = splits.train[0].float() / 255
    images = (images - splits.mean[0]) / splits.std[0]  # B, 1, 32, 32
    model = build_model("repro_simple_cnn", num_classes=2, in_channels=1, attention=attention).eval()
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (8, 2) and torch.isfinite(logits).all()
