"""The AA vs LAA trade-off study (``make study``): its sweeps' tables, figures and answers.

Softmax attention (AA, Bello et al. 2019) sees every pair of positions at quadratic cost; Shen et
al.'s linear attention (LAA, 2021) is cheap and approximates it. The study measures where each
matters, on three sweeps whose params files are under ``params/study/`` (one folder of runs):

* **distance**: the long-range task (:func:`aalib.data.long_range`) at 32x32 with the marks' gap
  (the larger axis difference between their nearest pixels) held in bands from well inside the
  Simple-CNN's 21-pixel receptive field to beyond it. A band lies inside the field when some
  21 x 21 window holds pixels of both marks (gap <= 20). Expected from the theory: the CNN solves
  the task inside its field and falls to the additive ceiling beyond
  (:func:`aalib.data.additive_ceiling`); attention does not depend on the distance.
* **resolution**: the band beyond the field (:data:`RESOLUTION_TASK`) at several image sizes, every
  length scaled with the image (:func:`scaled_task`): test top-1, seconds per epoch and peak
  memory of training, and the log-log slope of each cost against the pixel count ``N``, beside
  the slopes of the layer benchmark (``python -m aalib.bench attention``). The distance sweep's
  runs on that band are the sweep's 32x32 point.
* **pathfinder**: the contour task of :mod:`aalib.data.pathfinder`, beside Long Range Arena's
  published Pathfinder numbers (Tay et al. 2021, Table 1: sequence Transformers on 1,024 pixels,
  not convolution-attention hybrids).

Runs are classified by their config, not their folder names. :func:`write_study_report` reads and
judges them once and writes the tables (CSV), the figures (PNG), the answers (``answers.md``, one
sentence per measured answer, each over seeds), ``report.md`` and ``summary.txt``;
:func:`read_study_results` reads them back (the committed ``docs/study/`` or a runs folder's
``report/``). Unfinished and damaged runs are listed and counted nowhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .checks import check_int
from . import layer_cost
from .complexity import fit_power_law, fit_slopes, load_recorded
from .data import LongRangeTask, PathfinderTask, additive_ceiling
from .io import atomic_write, write_png
from .models.repro import SimpleCNN
from .report import long_range_task, references, run_row, unfinished
from .runs import Run, scan_runs
from .stats import mean_interval, spread
from .tables import markdown_table
from .verdict import CHANCE_SIGMAS, SOLVED_TOP1

__all__ = [
    "ANSWERS_FILE",
    "FIGURES",
    "RESOLUTION_TASK",
    "TABLES",
    "StudyResults",
    "read_study_results",
    "scaled_task",
    "study_runs",
    "write_study_report",
]

ANSWERS_FILE = "answers.md"  # one Markdown bullet per measured answer
FIGURES: tuple[str, ...] = ("distance", "accuracy_vs_cost", "cost_vs_resolution", "pathfinder")  # <name>.png
TABLES: tuple[str, ...] = ("runs", "distance", "resolution", "slopes", "pathfinder")  # <name>.csv
BASE_SIZE = 32  # the image side the distance sweep and the Pathfinder task use
RECEPTIVE_FIELD = SimpleCNN.receptive_field  # pixels: a gap up to RECEPTIVE_FIELD - 1 fits in one window
RESOLUTION_TASK = LongRangeTask(image_size=BASE_SIZE, receptive_field=22, max_distance=25, mark_size=3)
_MODEL_ORDER = ("Simple-CNN", "Simple-AACNN", "Simple-LAACNN")
_SWEEP_COLUMNS = ("image_size", "gap_low", "gap_high", "distance", "resolution", "pathfinder")


def scaled_task(image_size: int) -> LongRangeTask:
    """:data:`RESOLUTION_TASK` at side ``image_size`` (a multiple of 32): the marks, their distance
    band and the distractors scaled with the image, so the task is the same picture, finer."""
    check_int("image_size", image_size, BASE_SIZE)
    if image_size % BASE_SIZE:
        raise ValueError(f"image_size must be a multiple of {BASE_SIZE} (the task's lengths scale by whole factors), "
                         f"got {image_size}")
    factor = image_size // BASE_SIZE
    base = RESOLUTION_TASK
    return replace(base, image_size=image_size, receptive_field=base.receptive_field * factor,
                   max_distance=base.max_distance * factor, mark_size=base.mark_size * factor,
                   distractor_size=base.distractor_size * factor)


def _in_resolution_sweep(task: LongRangeTask) -> bool:
    return task.image_size % BASE_SIZE == 0 and task == scaled_task(task.image_size)


def study_runs(runs: list[Run]) -> pd.DataFrame:
    """One row per run (:func:`aalib.report.run_row`) with the task's ``image_size`` and gap band
    (``gap_low``, ``gap_high``; empty for Pathfinder) and the sweeps it belongs to (``distance``,
    ``resolution``, ``pathfinder``: booleans). Runs of no sweep are left out."""
    rows = []
    for run in runs:
        task = long_range_task(run.config)
        if task is not None:
            fields = dict(image_size=task.image_size, gap_low=task.receptive_field, gap_high=task.max_distance,
                          distance=task.image_size == BASE_SIZE and task.max_distance is not None,
                          resolution=_in_resolution_sweep(task), pathfinder=False)
        elif run.config.dataset == "pathfinder":
            fields = dict(image_size=PathfinderTask.from_arguments(run.config.dataset_args).image_size, gap_low=None,
                          gap_high=None, distance=False, resolution=False, pathfinder=True)
        else:
            continue
        if fields["distance"] or fields["resolution"] or fields["pathfinder"]:
            rows.append({**run_row(run), **fields})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["experiment", "model", "seed", "status", "top1",
                                                                 *_SWEEP_COLUMNS])


def _finished(runs: pd.DataFrame, sweep: str) -> pd.DataFrame:
    return runs[runs[sweep].astype(bool) & (runs["status"] == "finished") & runs["top1"].notna()]


def _seeds_text(group: pd.DataFrame, column: str = "top1", fmt: str = ".2f") -> str:
    done = group.sort_values("seed")
    return ", ".join(f"{int(seed)}: {format(value, fmt)}" for seed, value in zip(done["seed"], done[column]))


def _ordered(models: Any) -> list[str]:
    """Model names in the study's order (CNN, AA, LAA), others after them, sorted."""
    names = list(dict.fromkeys(models))
    return sorted(names, key=lambda m: (_MODEL_ORDER.index(m) if m in _MODEL_ORDER else len(_MODEL_ORDER), m))


def distance_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, gap band) of the distance sweep: seeds, mean, standard deviation, range
    and every seed's test top-1, how many seeds solved the task (test top-1 >= 90 %), and whether
    the band lies inside the Simple-CNN's receptive field."""
    done = _finished(runs, "distance")
    rows = []
    for (model, low, high), group in done.groupby(["model", "gap_low", "gap_high"], sort=True):
        top1 = spread(group["top1"])
        rows.append({"model": model, "gap_low": int(low), "gap_high": int(high),
                     "inside_field": bool(low <= RECEPTIVE_FIELD - 1), "seeds": top1.n, "top1_mean": top1.mean,
                     "top1_std": top1.std, "top1_min": top1.low, "top1_max": top1.high,
                     "solved": int((group["top1"] >= SOLVED_TOP1).sum()), "top1_per_seed": _seeds_text(group)})
    table = pd.DataFrame(rows, columns=["model", "gap_low", "gap_high", "inside_field", "seeds", "top1_mean", "top1_std",
                                        "top1_min", "top1_max", "solved", "top1_per_seed"])
    return _sort_models(table, ["gap_low"])


def resolution_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, image size) of the resolution sweep: test top-1 over seeds, mean
    seconds per training epoch and peak memory (MiB) of the training process."""
    done = _finished(runs, "resolution")
    rows = []
    for (model, size), group in done.groupby(["model", "image_size"], sort=True):
        top1 = spread(group["top1"])
        rows.append({"model": model, "image_size": int(size), "n": int(size) ** 2, "seeds": top1.n,
                     "top1_mean": top1.mean, "top1_std": top1.std, "top1_per_seed": _seeds_text(group),
                     "s_per_epoch": group["s_per_epoch"].mean(), "peak_mem_mb": group["peak_mem_mb"].mean()})
    table = pd.DataFrame(rows, columns=["model", "image_size", "n", "seeds", "top1_mean", "top1_std", "top1_per_seed",
                                        "s_per_epoch", "peak_mem_mb"])
    return _sort_models(table, ["image_size"])


def _sort_models(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    order = {model: i for i, model in enumerate(_ordered(table["model"]))}
    return table.sort_values(["model", *by], key=lambda c: c.map(order) if c.name == "model" else c,
                             ignore_index=True)


def slopes_table(resolution: pd.DataFrame, layer_records: list[dict] | None = None) -> pd.DataFrame:
    """Fitted log-log slopes against ``N`` (pixels; 1 = linear, 2 = quadratic): per model of the
    resolution sweep, of seconds per epoch and of peak memory (``source`` "training"), and per
    variant of the layer benchmark's records (``source`` "layer benchmark", forward + backward of
    one layer). Curves with fewer than two sizes are left out."""
    rows = []
    for model in _ordered(resolution["model"]):
        part = resolution[resolution["model"] == model]
        if part["n"].nunique() < 2:
            continue
        for metric in ("s_per_epoch", "peak_mem_mb"):
            fit = fit_power_law(part["n"], part[metric])
            rows.append({"source": "training", "name": model, "metric": metric, "slope": fit.exponent,
                         "points": fit.points, "n_min": int(part["n"].min()), "n_max": int(part["n"].max())})
    for row in fit_slopes(_layer_curves(layer_records)):
        if row["impl"] == "ours":
            rows.append({"source": "layer benchmark", "name": row["variant"], "metric": row["metric"],
                         "slope": row["slope"], "points": row["points"], "n_min": row["n_min"], "n_max": row["n_max"]})
    return pd.DataFrame(rows, columns=["source", "name", "metric", "slope", "points", "n_min", "n_max"])


def _layer_curves(layer_records: list[dict] | None) -> list[dict]:
    """The layer benchmark's records of our layers as ``auto`` runs them (no backend pinned)."""
    return [r for r in layer_records or [] if r["impl"] == "ours" and "backend" not in layer_cost.VARIANTS[r["variant"]]]


def pathfinder_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model of the Pathfinder sweep (test top-1 over seeds, how many seeds beat
    chance by more than three binomial standard deviations), then Long Range Arena's published
    Pathfinder results (``source`` names them)."""
    columns = ["model", "image_size", "seeds", "top1_mean", "top1_std", "above_chance", "top1_per_seed", "source"]
    ours = []
    for (model, size), group in _finished(runs, "pathfinder").groupby(["model", "image_size"], sort=True):
        top1 = spread(group["top1"])
        margin = CHANCE_SIGMAS * 100 * math.sqrt(0.25 / max(int(group["test_images"].min()), 1))
        ours.append({"model": model, "image_size": int(size), "seeds": top1.n, "top1_mean": top1.mean,
                     "top1_std": top1.std, "above_chance": int((group["top1"] > 50 + margin).sum()),
                     "top1_per_seed": _seeds_text(group), "source": "this study"})
    published = [{"model": ref.model, "image_size": BASE_SIZE, "seeds": None, "top1_mean": ref.top1, "top1_std": None,
                  "above_chance": None, "top1_per_seed": "", "source": ref.source}
                 for ref in references(["pathfinder"]).itertuples()]
    return pd.concat([_sort_models(pd.DataFrame(ours, columns=columns), ["image_size"]),
                      pd.DataFrame(published, columns=columns)], ignore_index=True)


# -- answers ---------------------------------------------------------------------------------------
def _band(row: Any) -> str:
    return f"{row.gap_low}-{row.gap_high} px"


def distance_answers(table: pd.DataFrame, colours: int) -> list[str]:
    """Per model: its test top-1 in each band (mean and range over seeds), and the change from its
    best band inside the receptive field to its worst band beyond it."""
    answers = []
    for model in _ordered(table["model"]):
        part = table[table["model"] == model]
        bands = "; ".join(f"{r.top1_mean:.1f} % at gap {_band(r)} ({r.top1_min:.1f}-{r.top1_max:.1f}, {r.seeds} seeds, "
                          f"{r.solved} solved)" for r in part.itertuples())
        sentence = f"Distance, {model}: {bands}."
        inside, beyond = part[part["inside_field"]], part[~part["inside_field"]]
        if len(inside) and len(beyond):
            best, worst = inside.loc[inside["top1_mean"].idxmax()], beyond.loc[beyond["top1_mean"].idxmin()]
            sentence += (f" From its best band inside the CNN's {RECEPTIVE_FIELD}-px field to its worst beyond it: "
                         f"{worst.top1_mean - best.top1_mean:+.1f} points (additive ceiling "
                         f"{100 * additive_ceiling(colours):.1f} %, chance 50 %).")
        answers.append(sentence)
    return answers


def _paired_difference(runs: pd.DataFrame, size: int, a: str, b: str) -> str:
    """``b - a`` test top-1 at ``size``, paired by seed, with its 95 % Student's t interval."""
    done = _finished(runs, "resolution")
    part = done[done["image_size"] == size].pivot_table(index="seed", columns="model", values="top1")
    if a not in part or b not in part:
        return ""
    diffs = (part[b] - part[a]).dropna()
    if len(diffs) < 2:
        return f"{b} - {a}: {diffs.mean():+.2f} points ({len(diffs)} seed)" if len(diffs) else ""
    mean, low, high = mean_interval(diffs)
    return f"{b} - {a}: {mean:+.2f} points, 95 % interval {low:+.2f} to {high:+.2f} over {len(diffs)} paired seeds"


def resolution_answers(table: pd.DataFrame, slopes: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """Where LAA's training gets cheaper than AA's (seconds per epoch), whether LAA keeps AA's test
    top-1 there (seed-paired difference), and the fitted cost slopes."""
    aa, laa = "Simple-AACNN", "Simple-LAACNN"
    time = table.pivot_table(index="image_size", columns="model", values="s_per_epoch")
    answers = []
    if aa in time and laa in time:
        ratios = (time[laa] / time[aa]).dropna()
        listed = ", ".join(f"{r:.2f} at {s}x{s}" for s, r in ratios.items())
        cheaper = [s for s, r in ratios.items() if r < 1]
        where = (f"from {cheaper[0]}x{cheaper[0]} up" if cheaper and all(r < 1 for s, r in ratios.items() if s >= cheaper[0])
                 else f"at {', '.join(f'{s}x{s}' for s in cheaper)}" if cheaper else "at none of the sizes measured")
        answers.append(f"Resolution: LAA's training epoch is cheaper than AA's {where} (LAA/AA seconds per epoch: {listed}).")
        top1 = table.pivot_table(index="image_size", columns="model", values="top1_mean")
        for size in cheaper[:1]:
            if aa in top1 and laa in top1 and size in top1.index:
                paired = _paired_difference(runs, size, aa, laa)
                answers.append(f"At {size}x{size}, test top-1: {aa} {top1.loc[size, aa]:.2f} %, {laa} {top1.loc[size, laa]:.2f} %"
                               + (f"; {paired}." if paired else "."))
    train = slopes[slopes["source"] == "training"]
    if len(train):
        parts = [f"{r.name} N^{r.slope:.2f}" for r in train[train["metric"] == "s_per_epoch"].itertuples()]
        memory = [f"{r.name} N^{r.slope:.2f}" for r in train[train["metric"] == "peak_mem_mb"].itertuples()]
        answers.append(f"Resolution: seconds per epoch grow as {', '.join(parts)}; the training process's peak memory as "
                       f"{', '.join(memory)} (N = pixels per image).")
    layer = slopes[(slopes["source"] == "layer benchmark") & (slopes["metric"] == "ms")]
    if len(layer):
        answers.append("Layer benchmark (one layer, forward + backward): time grows as "
                       + ", ".join(f"{r.name} N^{r.slope:.2f}" for r in layer.itertuples()) + ".")
    return answers


def pathfinder_answers(table: pd.DataFrame) -> list[str]:
    """Per model its test top-1 over seeds and how many seeds beat chance; then LRA's numbers."""
    ours, published = table[table["source"] == "this study"], table[table["source"] != "this study"]
    answers = [f"Pathfinder {r.image_size}x{r.image_size}, {r.model}: {r.top1_mean:.2f} % "
               + (f"± {r.top1_std:.2f} " if not pd.isna(r.top1_std) else "")
               + f"({r.top1_per_seed}); {int(r.above_chance)} of {int(r.seeds)} seeds above chance."
               for r in ours.itertuples()]
    if len(published) and len(ours):
        answers.append("Long Range Arena's Pathfinder (32x32, sequence Transformers on flattened pixels, not "
                       "convolution-attention hybrids, far larger training sets): "
                       + ", ".join(f"{r.model} {r.top1_mean:.2f} %" for r in published.itertuples()) + ".")
    return answers


# -- figures ---------------------------------------------------------------------------------------
def distance_figure(runs: pd.DataFrame, colours: int) -> Figure:
    """Test top-1 against the band's smallest gap, one point per seed, a line through each model's
    means; the receptive field's edge, the additive ceiling and chance marked."""
    done = _finished(runs, "distance")
    fig = Figure(figsize=(7, 4.4), layout="constrained")
    ax = fig.subplots()
    order = _ordered(done["model"])
    if len(done):
        sns.lineplot(done, x="gap_low", y="top1", hue="model", hue_order=order, errorbar=None, marker="o", ax=ax)
        sns.stripplot(done, x="gap_low", y="top1", hue="model", hue_order=order, native_scale=True, jitter=0.08,
                      size=6, alpha=0.6, legend=False, ax=ax)
    ax.axvline(RECEPTIVE_FIELD - 0.5, color="black", linestyle="-.", linewidth=0.8,
               label=f"Simple-CNN's receptive field ({RECEPTIVE_FIELD} px)")
    ax.axhline(100 * additive_ceiling(colours), color="grey", linestyle="--", label="best additive (local) rule")
    ax.axhline(50, color="grey", linestyle=":", label="chance")
    ax.set(xlabel="smallest gap between the marks' nearest pixels (px; band of 4)", ylabel="test top-1 (%)",
           ylim=(35, 102), title="Distance sweep: where the receptive field ends")
    ax.legend(fontsize="x-small", loc="lower left")
    return fig


def accuracy_vs_cost_figure(runs: pd.DataFrame) -> Figure:
    """Test top-1 of every resolution-sweep run against seconds per epoch and against peak memory."""
    done = _finished(runs, "resolution")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    order = _ordered(done["model"])
    for ax, (column, label) in zip(axes, (("s_per_epoch", "seconds per training epoch"),
                                          ("peak_mem_mb", "peak memory of training (MiB)"))):
        if len(done):
            sns.scatterplot(done, x=column, y="top1", hue="model", hue_order=order, style="image_size", s=80, ax=ax)
            ax.set_xscale("log")
        ax.set(xlabel=label, ylabel="test top-1 (%)", title=f"Accuracy against {label.split(' of ')[0]}")
        ax.legend(fontsize="x-small")
    return fig


def cost_vs_resolution_figure(table: pd.DataFrame, slopes: pd.DataFrame, layer_records: list[dict] | None) -> Figure:
    """Log-log cost against pixels per image: training seconds per epoch and peak memory per model
    (fitted slopes in the legends) and, with ``layer_records``, the layer benchmark's time."""
    panels = 3 if layer_records else 2
    fig = Figure(figsize=(5 * panels, 4.2), layout="constrained")
    axes = fig.subplots(1, panels)
    fitted = {(r.name, r.metric): r.slope for r in slopes.itertuples()}
    for ax, (column, label) in zip(axes, (("s_per_epoch", "seconds per training epoch"),
                                          ("peak_mem_mb", "peak memory of training (MiB)"))):
        for model in _ordered(table["model"]):
            part = table[table["model"] == model]
            slope = fitted.get((model, column))
            ax.plot(part["n"], part[column], marker="o", label=model + (f": slope {slope:.2f}" if slope is not None else ""))
        ax.set(xscale="log", yscale="log", xlabel="pixels per image N", ylabel=label, title=f"Training, {label.split(' (')[0]}")
        ax.legend(fontsize="x-small")
    if layer_records:
        ax = axes[2]
        curves = _layer_curves(layer_records)
        for variant in dict.fromkeys(r["variant"] for r in curves):
            points = sorted((r["n"], r["ms"]) for r in curves if r["variant"] == variant and math.isfinite(r["ms"]))
            if points:
                slope = fitted.get((variant, "ms"))
                ax.plot(*zip(*points), marker=".", label=variant + (f": slope {slope:.2f}" if slope is not None else ""))
        ax.set(xscale="log", yscale="log", xlabel="pixels per map N", ylabel="ms (forward + backward)",
               title="Layer benchmark: one layer")
        ax.legend(fontsize="x-small")
    return fig


def pathfinder_figure(runs: pd.DataFrame, table: pd.DataFrame) -> Figure:
    """Test top-1 per seed on the Pathfinder task, chance and LRA's published numbers as lines."""
    done = _finished(runs, "pathfinder")
    fig = Figure(figsize=(7, 4.4), layout="constrained")
    ax = fig.subplots()
    order = _ordered(done["model"])
    if len(done):
        sns.stripplot(done, x="model", y="top1", hue="model", order=order, hue_order=order, size=8, jitter=0.15,
                      legend=False, ax=ax)
    ax.axhline(50, color="grey", linestyle=":", label="chance")
    for ref in table[table["source"] != "this study"].itertuples():
        ax.axhline(ref.top1_mean, color="grey", linestyle="--", linewidth=0.6)
        ax.annotate(f"LRA {ref.model} {ref.top1_mean:g}", (1.0, ref.top1_mean), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize="x-small", color="grey")
    ax.set(xlabel="", ylabel="test top-1 (%)", ylim=(35, 102), title="Pathfinder (dashed: LRA, sequence Transformers)")
    ax.legend(fontsize="x-small", loc="upper left")
    return fig


# -- the report ------------------------------------------------------------------------------------
def _captions(tables: dict[str, pd.DataFrame], layer: bool) -> dict[str, str]:
    """One sentence per figure, from the numbers it shows."""
    distance, resolution, pathfinder = tables["distance"], tables["resolution"], tables["pathfinder"]
    means = "; ".join(f"{m}: " + ", ".join(f"{r.top1_mean:.1f}" for r in distance[distance["model"] == m].itertuples())
                      for m in _ordered(distance["model"]))
    bands = ", ".join(dict.fromkeys(_band(r) for r in distance.itertuples()))
    costs = "; ".join(f"{m}: " + ", ".join(f"{r.s_per_epoch:.1f} s / {r.peak_mem_mb:.0f} MiB at {r.image_size}"
                                           for r in resolution[resolution["model"] == m].itertuples())
                      for m in _ordered(resolution["model"]))
    ours = pathfinder[pathfinder["source"] == "this study"]
    return {
        "distance": f"Test top-1 per seed against the marks' gap (bands {bands}); mean per band, {means} %.",
        "accuracy_vs_cost": f"Test top-1 of each resolution-sweep run against its training cost; mean cost per model: {costs}.",
        "cost_vs_resolution": ("Training cost against pixels per image on log-log axes, slopes fitted over the sizes"
                               + (" beside the layer benchmark's time per layer" if layer else "") + f"; {costs}."),
        "pathfinder": "Test top-1 per seed on the Pathfinder task; means: "
                      + (", ".join(f"{r.model} {r.top1_mean:.2f} %" for r in ours.itertuples()) or "no finished run") + ".",
    }


def _markdown(runs_dir: str | Path, runs: pd.DataFrame, answers: list[str], tables: dict[str, pd.DataFrame],
              captions: dict[str, str], waiting: pd.DataFrame, damaged: pd.DataFrame) -> str:
    cpus = ", ".join(sorted(runs["cpu"].dropna().unique())) or "unknown"
    lines = [f"# The trade-off study: report of `{runs_dir}`", "",
             f"{len(runs)} runs ({int((runs['status'] == 'finished').sum())} finished), measured on: {cpus}.", "",
             "## What was measured", "", *(f"- {a}" for a in answers), ""]
    for name in ("distance", "resolution", "slopes", "pathfinder"):
        if len(tables[name]):
            lines += [f"## {name.capitalize()}", "", markdown_table(tables[name], floatfmt=".2f"), ""]
    lines += ["## Figures", ""]
    for name, caption in captions.items():
        lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({name}.png)", "", caption, ""]
    if len(waiting):
        lines += ["## Unfinished runs (counted nowhere)", "",
                  *(f"- {r.experiment} seed {r.seed}: {r.status}" for r in waiting.itertuples()), ""]
    if len(damaged):
        lines += ["## Damaged run folders", "", *(f"- `{r.path}`: {r.reason}" for r in damaged.itertuples()), ""]
    return "\n".join(lines)


def write_study_report(runs_dir: str | Path, output_dir: str | Path, *,
                       layer_bench: str | Path | None = None) -> dict[str, Any]:
    """The study's tables, figures and answers from every run under ``runs_dir``, into
    ``output_dir`` (see the module docstring); ``layer_bench``: a file ``python -m aalib.bench
    attention`` wrote, whose slopes stand beside the training ones. FileNotFoundError when
    ``runs_dir`` holds no run of the study."""
    output_dir = Path(output_dir)
    found, damaged = scan_runs(runs_dir)
    runs = study_runs(found)
    if runs.empty:
        raise FileNotFoundError(f"no run of the study under '{runs_dir}' (see params/study/ and `make study`)")
    layer_records = load_recorded(layer_bench)[0] if layer_bench else None
    colours = RESOLUTION_TASK.colours
    resolution = resolution_table(runs)
    tables = {"runs": runs, "distance": distance_table(runs), "resolution": resolution,
              "slopes": slopes_table(resolution, layer_records), "pathfinder": pathfinder_table(runs)}
    answers = (distance_answers(tables["distance"], colours)
               + resolution_answers(resolution, tables["slopes"], runs) + pathfinder_answers(tables["pathfinder"]))
    figures = {"distance": distance_figure(runs, colours), "accuracy_vs_cost": accuracy_vs_cost_figure(runs),
               "cost_vs_resolution": cost_vs_resolution_figure(resolution, tables["slopes"], layer_records),
               "pathfinder": pathfinder_figure(runs, tables["pathfinder"])}
    captions = _captions(tables, layer_records is not None)
    waiting = unfinished(runs)
    broken = pd.DataFrame([{"path": str(d.path), "reason": d.reason} for d in damaged], columns=["path", "reason"])
    for name, table in tables.items():
        atomic_write(output_dir / f"{name}.csv", lambda handle, table=table: table.to_csv(handle, index=False))
    for name, fig in figures.items():
        write_png(output_dir / f"{name}.png", fig, dpi=110)
    atomic_write(output_dir / ANSWERS_FILE, lambda handle: handle.write("".join(f"- {a}\n" for a in answers)))
    markdown = _markdown(runs_dir, runs, answers, tables, captions, waiting, broken)
    atomic_write(output_dir / "report.md", lambda handle: handle.write(markdown))
    text = "\n".join([*answers, *(f"unfinished: {r.experiment} seed {r.seed} ({r.status})" for r in waiting.itertuples()),
                      *(f"damaged: {r.path}: {r.reason}" for r in broken.itertuples())])
    atomic_write(output_dir / "summary.txt", lambda handle: handle.write(text + "\n"))
    return {"runs": runs, "tables": tables, "answers": answers, "figures": figures, "captions": captions,
            "unfinished": waiting, "damaged": broken, "text": text}


@dataclass(frozen=True)
class StudyResults:
    """A written study report: its answers (sentences), figures (name -> PNG path) and tables."""

    folder: Path
    answers: list[str]
    figures: dict[str, Path]
    tables: dict[str, pd.DataFrame]


def read_study_results(folder: str | Path) -> StudyResults | None:
    """The study report in ``folder``, or None when it holds none (no ``answers.md``).

    Figures and tables that the report did not write (a sweep without finished runs) are left out.
    """
    folder = Path(folder)
    answers_file = folder / ANSWERS_FILE
    if not answers_file.is_file():
        return None
    answers = [line[2:].strip() for line in answers_file.read_text().splitlines() if line.startswith("- ")]
    figures = {name: folder / f"{name}.png" for name in FIGURES if (folder / f"{name}.png").is_file()}
    tables = {name: pd.read_csv(folder / f"{name}.csv") for name in TABLES if (folder / f"{name}.csv").is_file()}
    return StudyResults(folder=folder, answers=answers, figures=figures, tables=tables)
