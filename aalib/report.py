"""The study's report, built from run folders (never from notebook output).

:func:`collect` reads every run under a folder into one row per run; :func:`summarize` gives one
row per (dataset, model): top-1, top-5, seconds per epoch, peak memory and parameters, mean and
standard deviation over seeds, beside the reproduced study's published numbers
(:data:`SEED_PUBLISHED`, from STUDY_NOTES.md §2) and the papers' reference numbers
(:data:`PAPER_REFERENCES`, §3). :func:`long_range_verdict` says in words what the synthetic
long-range study measured. The figure builders return matplotlib figures; :func:`write_report`
saves the tables as CSV and the figures as PNG. ``notebooks/report.ipynb`` and ``aalib report``
use this module.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .config import TrainConfig
from .data import additive_ceiling, long_range
from .io import atomic_write, write_png
from .runs import Run, find_runs

__all__ = [
    "PAPER_REFERENCES",
    "SEED_PUBLISHED",
    "accuracy_vs_parameters_figure",
    "accuracy_vs_time_figure",
    "collect",
    "learning_curves_figure",
    "long_range_verdict",
    "model_label",
    "run_row",
    "summarize",
    "write_report",
]

# The reproduced study (Roy & Meghal 2024), last-epoch numbers of one run each:
# (dataset, model) -> (top-1 %, top-5 %, seconds per training epoch on an unrecorded GPU).
SEED_PUBLISHED: dict[tuple[str, str], tuple[float, float, float | None]] = {
    ("cifar100", "Wide-ResNet"): (57.11, 84.33, 8.42),
    ("cifar100", "Wide-AAResNet"): (52.91, 80.31, 11.84),
    ("cifar100", "Wide-LAAResNet"): (55.32, 82.95, 12.61),
    ("cifar100", "Simple-CNN"): (37.74, 67.94, 2.43),
    ("cifar100", "Simple-AACNN"): (41.19, 71.51, 4.07),
    ("cifar100", "Simple-LAACNN"): (36.88, 67.81, 3.87),
    ("tiny_imagenet", "Wide-ResNet"): (42.39, 69.61, 57.4),
    ("tiny_imagenet", "Wide-AAResNet"): (42.18, 68.44, 124.1),
    ("tiny_imagenet", "Wide-LAAResNet"): (43.51, 70.52, 120.1),
}

# Published reference numbers (STUDY_NOTES.md §3): (dataset, model, source, top-1, top-5, parameters).
PAPER_REFERENCES: list[dict[str, Any]] = [
    {"dataset": "cifar100", "model": "WRN-28-10", "source": "Zagoruyko & Komodakis 2016 (median of 5)",
     "top1": 100 - 19.25, "top5": None, "parameters": 36.5e6},
    {"dataset": "cifar100", "model": "WRN-28-10 + dropout", "source": "Zagoruyko & Komodakis 2016 (median of 5)",
     "top1": 100 - 18.85, "top5": None, "parameters": 36.5e6},
    {"dataset": "cifar100", "model": "WRN-28-10", "source": "Bello et al. 2019, Table 1",
     "top1": 80.3, "top5": 95.0, "parameters": 36.3e6},
    {"dataset": "cifar100", "model": "AA-WRN-28-10", "source": "Bello et al. 2019, Table 1",
     "top1": 81.6, "top5": 95.2, "parameters": 36.2e6},
    {"dataset": "tiny_imagenet", "model": "ResNet-18 (from scratch)", "source": "common reports, 62-66 %",
     "top1": 64.0, "top5": None, "parameters": 11.3e6},
]

_SHALLOW = {None: "Simple-CNN", "softmax": "Simple-AACNN", "linear": "Simple-LAACNN"}
_WIDE = {None: "Wide-ResNet", "softmax": "Wide-AAResNet", "linear": "Wide-LAAResNet"}
_LONG_RANGE_COLOURS = inspect.signature(long_range).parameters["colours"].default
CHANCE_SIGMAS = 3.0  # a test accuracy within this many binomial standard deviations of chance is "chance"
SOLVED_TOP1 = 90.0  # test top-1 (%) at or above which the long-range task counts as solved


def model_label(config: TrainConfig) -> str:
    """The study's name for a run's model: Simple-AACNN, Wide-LAAResNet, AA-WRN-28-10, ..."""
    attention = config.model_args.get("attention")
    if config.model == "seed_simple_cnn":
        return _SHALLOW.get(attention, f"Simple-CNN ({attention})")
    if config.model == "seed_wrn":
        return _WIDE.get(attention, f"Wide-ResNet ({attention})")
    if config.model == "wrn":
        depth, width = config.model_args.get("depth", 28), config.model_args.get("width", 10)
        prefix = {None: "", "softmax": "AA-", "linear": "LAA-"}.get(attention, f"{attention}-")
        return f"{prefix}WRN-{depth}-{width}"
    return config.model if attention is None else f"{config.model} ({attention})"


def run_row(run: Run) -> dict[str, Any]:
    """One run's results: test and best validation accuracy, time, memory, parameters, status."""
    test = run.summary.get("test") or {}
    metrics = pd.DataFrame(run.metrics)
    return {
        "experiment": run.name,
        "dataset": run.config.dataset,
        "model": model_label(run.config),
        "seed": run.config.seed,
        "status": run.summary.get("status"),
        "epochs": run.summary.get("epochs_completed", len(run.metrics)),
        "top1": test.get("top1", math.nan),
        "top5": test.get("top5", math.nan),
        "test_images": test.get("images", 0),
        "val_top1_best": metrics["val_top1"].max() if len(metrics) else math.nan,
        "s_per_epoch": metrics["train_seconds"].mean() if len(metrics) else math.nan,
        "train_seconds": metrics["train_seconds"].sum() if len(metrics) else math.nan,
        "peak_mem_mb": metrics["peak_mem_mb"].max() if len(metrics) else math.nan,
        "parameters": run.summary.get("parameters"),
        "num_classes": run.summary.get("num_classes"),
        "colours": run.config.dataset_args.get("colours", _LONG_RANGE_COLOURS) if run.config.dataset == "long_range" else None,
        "path": str(run.path),
    }


def collect(runs_dir: str | Path, runs: list[Run] | None = None) -> pd.DataFrame:
    """One row per run folder under ``runs_dir`` (any depth; ``runs`` if already found there); an
    empty folder is an error naming it."""
    runs = find_runs(runs_dir) if runs is None else runs
    if not runs:
        raise FileNotFoundError(f"no runs under '{runs_dir}' (a run folder holds summary.json; see `aalib run`)")
    return pd.DataFrame([run_row(run) for run in runs])


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model): mean ± std over seeds, beside the seed study's numbers."""
    rows = []
    for (dataset, model), group in runs.groupby(["dataset", "model"], sort=True):
        published = SEED_PUBLISHED.get((dataset, model))
        rows.append({
            "dataset": dataset,
            "model": model,
            "seeds": len(group),
            "finished": int((group["status"] == "finished").sum()),
            "top1": _mean_std(group["top1"]),
            "top5": _mean_std(group["top5"]) if group["num_classes"].iloc[0] > 5 else "-",  # trivial below 6 classes
            "s/epoch": _mean_std(group["s_per_epoch"]),
            "peak MiB": f"{group['peak_mem_mb'].max():.0f}",
            "parameters": f"{int(group['parameters'].iloc[0]):,}",
            "seed study top1": published[0] if published else "-",
            "seed study top5": published[1] if published else "-",
            "seed study s/epoch": published[2] if published else "-",
        })
    return pd.DataFrame(rows)


def references(datasets: list[str]) -> pd.DataFrame:
    """The papers' reference numbers for the given datasets."""
    return pd.DataFrame([r for r in PAPER_REFERENCES if r["dataset"] in datasets])


def long_range_verdict(runs: pd.DataFrame) -> list[str]:
    """Plain sentences on the long-range study: which models stayed at chance, which solved it.

    Chance is 50 % (two balanced classes); "at chance" means within ``CHANCE_SIGMAS`` binomial
    standard deviations of 50 % for the number of test images. A model without long-range
    interactions can still beat chance, up to :func:`aalib.data.additive_ceiling` (2/3 with 4
    colours); "solved" means test top-1 at or above ``SOLVED_TOP1``. Mean over seeds.
    """
    lines = []
    subset = runs[runs["dataset"] == "long_range"]
    for model, group in subset.groupby("model", sort=True):
        top1 = group["top1"].mean()
        images = int(group["test_images"].sum()) or 1
        margin = CHANCE_SIGMAS * 100 * math.sqrt(0.25 / images)
        ceiling = 100 * additive_ceiling(int(group["colours"].iloc[0]))
        if math.isnan(top1):
            verdict = "has no test result yet"
        elif abs(top1 - 50.0) <= margin:
            verdict = f"stayed at chance: {top1:.1f} % test top-1 (chance 50 ± {margin:.1f} %)"
        elif top1 >= SOLVED_TOP1:
            verdict = f"solved the task: {top1:.1f} % test top-1"
        elif top1 <= ceiling + margin:
            verdict = (f"beat chance only as far as a model without long-range interactions can: {top1:.1f} % "
                       f"test top-1 (chance 50 %; an additive rule reaches at most {ceiling:.1f} %)")
        else:
            verdict = (f"learned part of the task, beyond any additive rule: {top1:.1f} % test top-1 "
                       f"(additive ceiling {ceiling:.1f} %, solved >= {SOLVED_TOP1:g} %)")
        lines.append(f"{model} {verdict}; {len(group)} seed(s), {images} test images.")
    return lines


def learning_curves_figure(runs: list[Run]) -> Figure:
    """Validation top-1 and training loss per epoch, one line per run, one row per dataset."""
    frames = []
    for run in runs:
        if run.metrics:
            frame = pd.DataFrame(run.metrics)
            frame["model"], frame["dataset"], frame["seed"] = model_label(run.config), run.config.dataset, run.config.seed
            frame["colours"] = run.config.dataset_args.get("colours", _LONG_RANGE_COLOURS)
            frames.append(frame)
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", "val_top1", "train_loss", "model", "dataset", "seed"])
    datasets = sorted(data["dataset"].unique()) or ["(none)"]
    fig = Figure(figsize=(11, 3.6 * len(datasets)))  # not pyplot: the caller displays or saves it, once
    axes = fig.subplots(len(datasets), 2, squeeze=False)
    for row, dataset in enumerate(datasets):
        part = data[data["dataset"] == dataset]
        for col, (metric, title) in enumerate((("val_top1", "validation top-1 (%)"), ("train_loss", "training loss"))):
            ax = axes[row, col]
            if len(part):
                sns.lineplot(part, x="epoch", y=metric, hue="model", units="seed", estimator=None, marker="o", ax=ax)
            if dataset == "long_range" and metric == "val_top1":
                ceiling = 100 * additive_ceiling(int(part["colours"].iloc[0])) if len(part) else None
                ax.axhline(50, color="grey", linestyle=":", label="chance")
                if ceiling:
                    ax.axhline(ceiling, color="grey", linestyle="--", label="best additive (local) rule")
                ax.legend(fontsize="small")
            ax.set_title(f"{dataset}: {title}")
    fig.tight_layout()
    return fig


def _scatter(runs: pd.DataFrame, x: str, xlabel: str) -> Figure:
    """Test top-1 against ``x`` on a log axis, one panel per dataset."""
    datasets = sorted(runs["dataset"].unique())
    fig = Figure(figsize=(5.5 * len(datasets), 4))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        sns.scatterplot(runs[runs["dataset"] == dataset], x=x, y="top1", hue="model", s=80, ax=ax)
        ax.set_xscale("log")
        ax.set(title=dataset, xlabel=xlabel, ylabel="test top-1 (%)")
    fig.tight_layout()
    return fig


def accuracy_vs_time_figure(runs: pd.DataFrame) -> Figure:
    """Test top-1 against total training time, one point per run."""
    return _scatter(runs, "train_seconds", "training time (s)")


def accuracy_vs_parameters_figure(runs: pd.DataFrame) -> Figure:
    """Test top-1 against parameter count, one point per run."""
    return _scatter(runs, "parameters", "parameters")


def write_report(runs_dir: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Tables (CSV) and figures (PNG) of every run under ``runs_dir``, written into ``output_dir``."""
    output_dir = Path(output_dir)
    found = find_runs(runs_dir)
    runs = collect(runs_dir, found)
    summary = summarize(runs)
    for name, table in (("runs", runs), ("summary", summary)):
        atomic_write(output_dir / f"{name}.csv", lambda handle, table=table: table.to_csv(handle, index=False))
    figures = {
        "learning_curves": learning_curves_figure(found),
        "accuracy_vs_time": accuracy_vs_time_figure(runs),
        "accuracy_vs_parameters": accuracy_vs_parameters_figure(runs),
    }
    paths = {}
    for name, fig in figures.items():
        paths[name] = output_dir / f"{name}.png"
        write_png(paths[name], fig, dpi=110)
    return {"runs": runs, "summary": summary, "figures": figures, "paths": paths,
            "verdict": long_range_verdict(runs)}
