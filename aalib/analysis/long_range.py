"""What a run of the long-range task gets right: per colour pair, per distance, per position.

The task (:func:`aalib.data.long_range`) asks whether two marks have the same colour. A run's test
top-1 says how often it is right; this module says *where*: every test image is regenerated with
its marks' colours and positions (:func:`aalib.data.long_range_samples`), the run's model predicts
it, and the hits are grouped by colour pair, by the distance between the marks and by where the
first mark lies. A model that tells only some colours apart, for example, is right on every pair
that involves them and calls every other pair "same": with K colours its accuracy sits at a
plateau set by how many colours it merged, whatever its training loss does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from ..config import TrainConfig
from ..data import COLOUR_NAMES, ImageSplits, LongRangeTask, long_range_samples, mark_gaps
from ..models import attention_layers
from ..runs import Run
from ..verdict import ModelVerdict
from .maps import collect_attention_maps
from .plots import plot_context_maps
from .sources import from_run
from .views import attention_figure, image_layer_maps

__all__ = [
    "Case",
    "Diagnosis",
    "colour_pair_accuracy",
    "colour_pair_figure",
    "diagnose",
    "distance_accuracy",
    "geometry_figure",
    "image_results",
]

@torch.no_grad()
def image_results(run: Run, *, which: str = "last", batch_size: int = 500, splits: ImageSplits | None = None) -> pd.DataFrame:
    """One row per test image of a long-range run: label, the marks' colours (palette indices and
    names) and positions, their distance, the prediction and whether it is right.

    ``distance`` is the larger axis gap between the marks' nearest pixels (the distance rule
    keeps it at least ``receptive_field``); ``apart`` says along which axis the rule holds
    (``"rows"``: one mark above the other, ``"columns"``: side by side, or ``"both axes"``).
    ``which`` picks ``last.pt`` (the weights behind the reported test top-1) or ``best.pt``; ``splits`` (the run's dataset, for its normalisation)
    saves rebuilding it. Raises ValueError for a run of another dataset.
    """
    if run.config.dataset != "long_range":
        raise ValueError(f"{run.path}: image_results needs a long_range run, this one trained on {run.config.dataset!r}")
    samples = long_range_samples("test", **run.config.dataset_args)
    splits = run.dataset() if splits is None else splits
    model = run.model(which)
    x = samples.images.float().div(255.0)  # N, 3, S, S
    if run.config.normalize:
        mean = torch.tensor(splits.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(splits.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - mean) / std
    predicted = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    positions = samples.mark_positions.numpy()  # N, 2 marks, (y, x)
    gap = mark_gaps(samples.mark_positions, samples.task.mark_size).numpy()  # N, (y, x)
    colours = samples.mark_colours.numpy()
    return pd.DataFrame({
        "label": samples.labels.numpy(),
        "colour_a": colours[:, 0],
        "colour_b": colours[:, 1],
        "name_a": [COLOUR_NAMES[c] for c in colours[:, 0]],
        "name_b": [COLOUR_NAMES[c] for c in colours[:, 1]],
        "y_a": positions[:, 0, 0], "x_a": positions[:, 0, 1],
        "y_b": positions[:, 1, 0], "x_b": positions[:, 1, 1],
        "distance": gap.max(axis=1),
        "apart": np.select([gap.min(axis=1) >= samples.task.receptive_field, gap[:, 0] > gap[:, 1]],
                           ["both axes", "rows"], "columns"),
        "predicted": predicted.numpy(),
        "correct": (predicted == samples.labels).numpy(),
    })


def colour_pair_accuracy(predictions: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) per unordered colour pair: a K x K table by colour name (upper triangle
    and diagonal filled; the diagonal holds the "same" pairs)."""
    names = sorted(set(predictions["name_a"]) | set(predictions["name_b"]), key=COLOUR_NAMES.index)
    low = np.minimum(predictions["colour_a"], predictions["colour_b"])
    high = np.maximum(predictions["colour_a"], predictions["colour_b"])
    frame = pd.DataFrame({"first": [COLOUR_NAMES[c] for c in low], "second": [COLOUR_NAMES[c] for c in high],
                          "correct": predictions["correct"]})
    table = frame.pivot_table(index="first", columns="second", values="correct", aggfunc="mean") * 100
    return table.reindex(index=names, columns=names)


def distance_accuracy(predictions: pd.DataFrame, bins: int = 4) -> pd.DataFrame:
    """Test accuracy (%) and image count per range of mark distance (``bins`` equal-count bins)."""
    groups = pd.qcut(predictions["distance"], q=bins, duplicates="drop")
    table = predictions.groupby(groups, observed=True)["correct"].agg(["mean", "size"])
    return pd.DataFrame({"distance": [f"{int(math.ceil(b.left))}-{int(b.right)}" for b in table.index],
                         "top1": 100 * table["mean"].to_numpy(), "images": table["size"].to_numpy()})


def colour_pair_figure(predictions: Mapping[str, pd.DataFrame]) -> Figure:
    """One heatmap of :func:`colour_pair_accuracy` per run (titles: the mapping's keys)."""
    fig = Figure(figsize=(3.6 * len(predictions) + 0.8, 3.4), layout="constrained")
    axes = fig.subplots(1, len(predictions), squeeze=False)[0]
    for ax, (title, frame) in zip(axes, predictions.items()):
        sns.heatmap(colour_pair_accuracy(frame), vmin=0, vmax=100, annot=True, fmt=".0f", cmap="viridis",
                    cbar=ax is axes[-1], square=True, ax=ax)
        ax.set(title=f"{title}: {100 * frame['correct'].mean():.1f} %", xlabel="colour", ylabel="colour")
    fig.suptitle("test accuracy (%) per colour pair (diagonal: same colour)", fontsize=10)
    return fig


def geometry_figure(predictions: Mapping[str, pd.DataFrame]) -> Figure:
    """Test accuracy against the marks' distance (left) and by the axis along which they lie
    apart (right), one line or bar colour per run."""
    by_distance = pd.concat([distance_accuracy(frame).assign(run=title) for title, frame in predictions.items()],
                            ignore_index=True)
    by_axis = pd.concat([frame.groupby("apart")["correct"].mean().mul(100).rename("top1").reset_index().assign(run=title)
                         for title, frame in predictions.items()], ignore_index=True)
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    sns.lineplot(by_distance, x="distance", y="top1", hue="run", marker="o", sort=False, ax=left)
    left.set(xlabel="distance between the marks' nearest pixels (px)", ylabel="test top-1 (%)", ylim=(0, 102))
    sns.barplot(by_axis, x="apart", y="top1", hue="run", ax=right)
    right.set(xlabel="the marks lie apart along", ylabel="test top-1 (%)", ylim=(0, 102))
    for ax in (left, right):
        ax.legend(fontsize="small")
    return fig


@dataclass
class Case:
    """A model whose seeds disagree: one seed that failed and one that solved the task."""

    model: str
    failed: Run
    solved: Run
    failed_top1: float
    solved_top1: float

    def titles(self) -> tuple[str, str]:
        return (f"{self.model}, seed {self.failed.config.seed} (failed)",
                f"{self.model}, seed {self.solved.config.seed} (solved)")


@dataclass
class Diagnosis:
    """Figures, one-sentence captions and plain findings on the seeds that failed."""

    cases: list[Case] = field(default_factory=list)
    seeds: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per seed of the diagnosed models
    figures: dict[str, Figure] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


def _pair_sentence(title: str, frame: pd.DataFrame) -> str:
    table = colour_pair_accuracy(frame)
    cells = [(f"{a}-{b}", table.loc[a, b]) for a in table.index for b in table.columns if not math.isnan(table.loc[a, b])]
    low = [(pair, value) for pair, value in cells if value < 50]
    rest = [value for _, value in cells if value >= 50]
    text = f"{title} ({100 * frame['correct'].mean():.2f} %)"
    if low:
        listed = ", ".join(f"{pair} {value:.0f} %" for pair, value in low)
        others = "100 %" if rest and min(rest) == 100 else f"at least {min(rest, default=0):.0f} %"
        return f"{text} is below 50 % on {len(low)} of {len(cells)} colour pairs ({listed}) and {others} on the others"
    return f"{text} is right on at least {min(rest):.0f} % of every colour pair"


def _outcome_curves_figure(cases: list[Case], runs: Sequence[Run], verdicts: Mapping[str, ModelVerdict],
                           label: Callable[[TrainConfig], str]) -> Figure:
    fig = Figure(figsize=(5.5 * len(cases), 3.6), layout="constrained")
    axes = fig.subplots(1, len(cases), squeeze=False)[0]
    for ax, case in zip(axes, cases):
        verdict = verdicts[case.model]
        outcome = dict(zip(verdict.seeds, verdict.outcomes))
        rows = [{"epoch": m["epoch"], "val_top1": m["val_top1"], "seed": run.config.seed,
                 "outcome": outcome.get(run.config.seed, "unfinished")}
                for run in runs if label(run.config) == case.model for m in run.metrics]
        sns.lineplot(pd.DataFrame(rows), x="epoch", y="val_top1", hue="outcome", units="seed", estimator=None,
                     marker="o", ax=ax)
        ax.axhline(verdict.landmarks.ceiling, color="grey", linestyle="--", label="best additive rule")
        ax.set(title=f"{case.model}: every seed", ylabel="validation top-1 (%)", ylim=(40, 101))
        ax.legend(fontsize="x-small")
    return fig


def failing_pairs(frame: pd.DataFrame) -> list[str]:
    """The colour pairs (``"green-blue"``) a run gets right on fewer than half of the images."""
    table = colour_pair_accuracy(frame)
    return [f"{a}-{b}" for a in table.index for b in table.columns
            if not math.isnan(table.loc[a, b]) and table.loc[a, b] < 50]


def explained_top1(frame: pd.DataFrame, pairs: list[str]) -> float:
    """Test top-1 (%) of a model that is wrong on every image of the colour ``pairs`` and right on
    all others: what losing those pairs alone costs (a model that merges colours calls their
    different pairs "same")."""
    low = np.minimum(frame["colour_a"], frame["colour_b"])
    high = np.maximum(frame["colour_a"], frame["colour_b"])
    names = pd.Series([f"{COLOUR_NAMES[a]}-{COLOUR_NAMES[b]}" for a, b in zip(low, high)], index=frame.index)
    return 100 * (1 - names.isin(pairs).mean())


_PEAK_IMAGES = 16  # test images the context-map peak is taken over


def _context_peak(run: Run, splits: ImageSplits) -> tuple[float, float]:
    """How peaked the last LAA layer's global context maps are: the median, over its maps and the
    first test images, of each map's largest weight; and that weight for a uniform map
    (1 / positions). NaNs for a model without linear attention."""
    source = from_run(run, _PEAK_IMAGES, which="last", splits=splits)
    layers = collect_attention_maps(source.model, source.inputs())
    context = layers[-1].context if layers else None
    if context is None:
        return math.nan, math.nan
    maps = context.flatten(3)  # images, heads, dkh, positions
    return float(maps.max(-1).values.median()), 1 / maps.shape[-1]


def _dataset(run: Run, cache: dict[str, ImageSplits]) -> ImageSplits:
    """The run's dataset, built once per dataset configuration."""
    key = json.dumps([run.config.dataset, run.config.dataset_args], sort_keys=True)
    if key not in cache:
        cache[key] = run.dataset()
    return cache[key]


def _seed_rows(model: str, runs: Sequence[Run], verdict: ModelVerdict, label: Callable[[TrainConfig], str],
               predictions: dict[str, pd.DataFrame], datasets: dict[str, ImageSplits]) -> list[dict]:
    outcome = dict(zip(verdict.seeds, verdict.outcomes))
    rows = []
    for run in sorted((r for r in runs if label(r.config) == model and r.config.seed in outcome), key=lambda r: r.config.seed):
        splits = _dataset(run, datasets)
        frame = predictions[f"{model}, seed {run.config.seed}"] = image_results(run, splits=splits)
        pairs = failing_pairs(frame)
        peak, uniform = _context_peak(run, splits)
        rows.append({"model": model, "seed": run.config.seed, "outcome": outcome[run.config.seed],
                     "top1": 100 * frame["correct"].mean(), "failing_pairs": ", ".join(pairs) or "none",
                     "explained_top1": explained_top1(frame, pairs), "context_peak": peak, "context_uniform": uniform})
    return rows


def _seeds_sentence(model: str, rows: pd.DataFrame) -> str:
    """``"Simple-LAACNN: seed 0 74.05 %: fails green-blue, ... (wrong on those pairs only would give 74.05 %), ..."``."""
    parts = []
    for row in rows.itertuples():
        text = f"seed {row.seed} {row.top1:.2f} %: " + ("no colour pair below 50 %" if row.failing_pairs == "none" else
                f"fails {row.failing_pairs} (wrong on those pairs only would give {row.explained_top1:.2f} %)")
        if not math.isnan(row.context_peak):
            text += f", context-map peak {row.context_peak:.3f}"
        parts.append(text)
    uniform = rows["context_uniform"].dropna()
    tail = (f" (context-map peak: the median largest weight of the last LAA layer's global context maps over "
            f"{_PEAK_IMAGES} test images; a uniform map gives {uniform.iloc[0]:.3f})") if len(uniform) else ""
    return f"{model}: " + "; ".join(parts) + tail


def _curves_sentence(model: str, verdict: ModelVerdict, runs: Sequence[Run], label: Callable[[TrainConfig], str]) -> str:
    """``"Simple-LAACNN: last-epoch validation top-1 99.6-100.0 % (solved), 76.2 and 75.9 % (failed)"``."""
    outcome = dict(zip(verdict.seeds, verdict.outcomes))
    last = {"solved": [], "failed": []}
    for run in runs:
        if label(run.config) == model and run.metrics and run.config.seed in outcome:
            last["solved" if outcome[run.config.seed] == "solved" else "failed"].append(run.metrics[-1]["val_top1"])
    parts = [f"{min(v):.1f}-{max(v):.1f} % ({k})" if len(v) > 1 else f"{v[0]:.1f} % ({k})" for k, v in last.items() if v]
    return f"{model}: last-epoch validation top-1 {', '.join(parts)}"


def _explained_image(case: Case, failed: pd.DataFrame, solved: pd.DataFrame) -> int:
    """The first test image the failed seed gets wrong and the solved seed right (else image 0)."""
    both = np.flatnonzero(~failed["correct"].to_numpy() & solved["correct"].to_numpy())
    return int(both[0]) if len(both) else 0


def diagnose(runs: Sequence[Run], verdicts: Sequence[ModelVerdict], *,
             label: Callable[[TrainConfig], str]) -> Diagnosis:
    """Why some seeds fail: for every long-range model with solved and failed seeds, its learning
    curves by outcome; for every finished seed the colour pairs it gets wrong, the accuracy those
    pairs explain and how peaked its global context maps are (:attr:`Diagnosis.seeds`); for its
    worst failed and best solved seed the accuracy per colour pair, by distance and axis, and
    (attention models) the attention maps of a query on a mark of an image the failed seed gets
    wrong, with LAA's global context maps (of the first LAA model among them, else the first). ``label`` names a run's model as the verdicts do.
    Empty when no model's seeds disagree."""
    by_model = {v.model: v for v in verdicts}
    result = Diagnosis()
    for verdict in verdicts:
        failed = [(s, t) for s, t, o in zip(verdict.seeds, verdict.top1, verdict.outcomes) if o != "solved"]
        solved = [(s, t) for s, t, o in zip(verdict.seeds, verdict.top1, verdict.outcomes) if o == "solved"]
        if not failed or not solved:
            continue
        pick = {run.config.seed: run for run in runs if label(run.config) == verdict.model}
        worst, best = min(failed, key=lambda st: st[1]), max(solved, key=lambda st: st[1])
        result.cases.append(Case(verdict.model, pick[worst[0]], pick[best[0]], worst[1], best[1]))
    if not result.cases:
        return result

    result.figures["outcome_curves"] = _outcome_curves_figure(result.cases, runs, by_model, label)
    result.captions["outcome_curves"] = "Validation top-1 per epoch of every seed, coloured by outcome; " + "; ".join(
        _curves_sentence(case.model, by_model[case.model], runs, label) for case in result.cases) + "."
    cached: dict[str, pd.DataFrame] = {}
    datasets: dict[str, ImageSplits] = {}
    rows = [row for case in result.cases
            for row in _seed_rows(case.model, runs, by_model[case.model], label, cached, datasets)]
    result.seeds = pd.DataFrame(rows)
    predictions = {}
    for case in result.cases:
        for title, run in zip(case.titles(), (case.failed, case.solved)):
            predictions[title] = cached[f"{case.model}, seed {run.config.seed}"]
    result.figures["colour_pairs"] = colour_pair_figure(predictions)
    result.captions["colour_pairs"] = "; ".join(_pair_sentence(t, f) for t, f in predictions.items()) + "."
    result.figures["geometry"] = geometry_figure(predictions)
    ranges = []
    for title, frame in predictions.items():
        values = list(distance_accuracy(frame)["top1"]) + list(frame.groupby("apart")["correct"].mean() * 100)
        ranges.append(f"{title} {min(values):.1f}-{max(values):.1f} %")
    result.captions["geometry"] = "Test top-1 over the distance bins and separating axes stays within: " + "; ".join(ranges) + "."
    for case in result.cases:
        result.findings.append(_seeds_sentence(case.model, result.seeds[result.seeds["model"] == case.model]) + ".")

    # the maps of one case: linear attention's when a linear model is among them (it has context maps)
    case = next((c for c in result.cases if c.failed.config.model_args.get("attention") == "linear"), result.cases[0])
    failed, solved = predictions[case.titles()[0]], predictions[case.titles()[1]]
    image = _explained_image(case, failed, solved)
    sources = {title: from_run(run, image + 1, which="last", splits=_dataset(run, datasets))
               for title, run in zip(case.titles(), (case.failed, case.solved))}
    size = LongRangeTask.from_arguments(case.failed.config.dataset_args).mark_size
    row = failed.iloc[image]
    query = (int(row["y_a"]) + size // 2, int(row["x_a"]) + size // 2)
    if all(attention_layers(source.untrained) for source in sources.values()):
        figure, _ = attention_figure(sources, image, -1, query)
        result.figures["attention_failed_vs_solved"] = figure
        result.captions["attention_failed_vs_solved"] = (
            f"Where a query on the first mark looks in the last attention layer of {case.model}, seed "
            f"{case.failed.config.seed} (failed) and seed {case.solved.config.seed} (solved), test image {image} "
            f"({row['name_a']} and {row['name_b']}, label {'same' if row['label'] else 'different'}): the failed seed "
            f"calls it {'same' if row['predicted'] else 'different'}, the solved seed "
            f"{'same' if solved.iloc[image]['predicted'] else 'different'}.")
        for tag, (title, source) in zip(("failed", "solved"), sources.items()):
            layer = image_layer_maps(source, image)[-1]
            if layer.context is not None:
                result.figures[f"context_maps_{tag}"] = plot_context_maps(layer.context[0], title=f"{title}: global context maps of {layer.name}")
                peak = layer.context[0].flatten(2).max(-1).values  # heads, dkh: each map's largest weight
                result.captions[f"context_maps_{tag}"] = (
                    f"Global context maps of {title}, image {image}: each map's largest weight is "
                    f"{peak.min():.3f}-{peak.max():.3f} (median {peak.median():.3f}; uniform would be {1 / layer.context[0][0, 0].numel():.3f}).")
    return result

