"""The study's report, built from run folders (never from notebook output).

:func:`collect` reads every run under a folder into one row per run (a seed); :func:`summarize`
gives one row per (dataset, experiment): test top-1 as mean ± standard deviation, median and the
value of every seed, for the long-range task how many seeds solved it with the exact 95 %
interval, top-5 where a task has more than five classes, seconds per epoch, peak memory and
parameters, and the reproduced study's published numbers for the datasets it reported
(:func:`aalib.models.repro.study_result`); columns that no row fills are left out.
:func:`study_verdict` says in words what the runs show, over seeds (:mod:`aalib.verdict`): on the
long-range task how many seeds solved it, on image datasets whether the reproduced study's two
conclusions hold. The figure builders return matplotlib figures and each has a one-sentence caption
computed from the numbers it shows (:func:`captions`); :func:`write_report` reads and judges the
runs once and saves the tables as CSV, the figures as PNG and the terminal summary
(:func:`summary_text`) as ``summary.txt``. The report notebook and ``aalib report`` use this module.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .analysis.long_range import diagnose
from .attention import ATTENTION_KINDS
from .config import TrainConfig
from .data import LongRangeTask, additive_ceiling
from .io import atomic_write, write_png
from .models import canonical_model_name
from .models.repro import study_name, study_result
from .runs import Damaged, Run, scan_runs
from .stats import spread
from .tables import markdown_table
from .verdict import NO_ATTENTION, SOLVED_TOP1, ModelVerdict, comparisons, long_range_verdicts

__all__ = [
    "PAPER_REFERENCES",
    "accuracy_vs_parameters_figure",
    "accuracy_vs_time_figure",
    "ablation_figure",
    "captions",
    "collect",
    "dataset_tables",
    "learning_curves_figure",
    "long_range_task",
    "references",
    "require_runs",
    "run_row",
    "seed_points_figure",
    "study_verdict",
    "summarize",
    "summary_text",
    "unfinished",
    "write_report",
]

# Published reference numbers (papers, dataset maintainers): (dataset, model, source, top-1, top-5, parameters).
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
    # Fashion-MNIST: submitted results its maintainers list, not verified by them
    # (github.com/zalandoresearch/fashion-mnist, benchmark table)
    *({"dataset": "fashion_mnist", "model": model, "source": "Fashion-MNIST maintainers' list of submitted results",
       "top1": top1, "top5": None, "parameters": None}
      for model, top1 in (("2 Conv, <100K parameters", 92.5), ("3 Conv+BN+pooling", 92.1), ("5 Conv+BN+pooling", 93.1),
                          ("ResNet18", 94.9), ("WRN-28-10", 95.9), ("human", 83.5))),
    # Pathfinder at 32x32: sequence Transformers on 1,024 flattened pixels, not convolution-attention hybrids
    *({"dataset": "pathfinder", "model": model, "source": "Tay et al. 2021 (Long Range Arena), Table 1",
       "top1": top1, "top5": None, "parameters": None}
      for model, top1 in (("Transformer", 71.40), ("Local Attention", 66.63), ("Sparse Transformer", 71.71),
                          ("Longformer", 69.71), ("Linformer", 76.34), ("Reformer", 68.50), ("Sinkhorn", 67.45),
                          ("Synthesizer", 69.45), ("BigBird", 74.87), ("Linear Transformer", 75.30),
                          ("Performer", 77.05))),
]

_WRN_PREFIX = {None: "", "softmax": "AA-", "linear": "LAA-", "linear_swapped": "LAA(swapped)-"}


def model_label(config: TrainConfig) -> str:
    """The study's name for a run's model: Simple-AACNN, Wide-LAAResNet, AA-WRN-28-10, ..."""
    attention = config.model_args.get("attention")
    model = canonical_model_name(config.model)
    if model in ("repro_simple_cnn", "repro_wrn"):
        return study_name(model, attention)
    if config.model == "wrn":
        depth, width = config.model_args.get("depth", 28), config.model_args.get("width", 10)
        prefix = _WRN_PREFIX.get(attention, f"{attention}-")
        return f"{prefix}WRN-{depth}-{width}"
    return config.model if attention is None else f"{config.model} ({attention})"


def _unswapped(config: TrainConfig) -> TrainConfig:
    """The config with the swapped-axes linear attention read as linear attention."""
    if config.model_args.get("attention") != "linear_swapped":
        return config
    return dataclasses.replace(config, model_args={**config.model_args, "attention": "linear"})


def _label(config: TrainConfig) -> str:
    """How the report names an experiment: its ``label``, else its model's name in the study."""
    return config.label or model_label(config)


def run_row(run: Run) -> dict[str, Any]:
    """One run's results: test and best validation accuracy, time, memory, parameters, status.

    ``model`` is how the report names the experiment (the config's ``label``, else the model's
    name in the study); ``architecture`` names the network, the same for the swapped-axes
    variant of linear attention as for the correct one (same layers and parameters), so the
    ablation figure sets them side by side."""
    test = run.summary.get("test") or {}
    metrics = pd.DataFrame(run.metrics)
    return {
        "experiment": run.name,
        "dataset": run.config.dataset,
        "model": _label(run.config),
        "architecture": model_label(_unswapped(run.config)),
        "network": run.config.model,
        "attention": run.config.model_args.get("attention") or NO_ATTENTION,
        "labelled": bool(run.config.label),
        "seed": run.config.seed,
        "status": run.status,
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
        "colours": _colours(run.config),
        "cpu": (run.summary.get("environment") or {}).get("device_name"),
        "path": str(run.path),
    }


def long_range_task(config: TrainConfig) -> LongRangeTask | None:
    """The task of a long-range run's config (None for another dataset)."""
    return LongRangeTask.from_arguments(config.dataset_args) if config.dataset == "long_range" else None


def _colours(config: TrainConfig) -> int | None:
    """The mark colours of a long-range run's task (None for another dataset)."""
    task = long_range_task(config)
    return None if task is None else task.colours


_ROW_COLUMNS = ("experiment", "dataset", "model", "architecture", "network", "attention", "labelled", "seed", "status", "epochs", "top1", "top5",
                "test_images", "val_top1_best", "s_per_epoch", "train_seconds", "peak_mem_mb", "parameters",
                "num_classes", "colours", "cpu", "path")


def _no_runs(runs_dir: str | Path) -> FileNotFoundError:
    return FileNotFoundError(f"no runs under '{runs_dir}' (a run folder holds summary.json; see `aalib run`)")


def require_runs(runs_dir: str | Path) -> None:
    """FileNotFoundError naming ``runs_dir`` unless a folder under it holds a ``summary.json`` (a
    run folder, readable or damaged); reads none of them."""
    if next(Path(runs_dir).rglob("summary.json"), None) is None:
        raise _no_runs(runs_dir)


def collect(runs_dir: str | Path, runs: list[Run] | None = None, damaged: list[Damaged] | None = None) -> pd.DataFrame:
    """One row per readable run folder under ``runs_dir`` (any depth; ``runs`` and ``damaged`` if
    already scanned there); a folder with no run folder at all, readable or damaged, is an error
    naming it."""
    if runs is None:
        runs, damaged = scan_runs(runs_dir)
    if not runs and not damaged:
        raise _no_runs(runs_dir)
    return pd.DataFrame([run_row(run) for run in runs], columns=list(_ROW_COLUMNS))


def unfinished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that have no final result, with their status (``running``: a live writer;
    ``interrupted``: Ctrl-C or SIGTERM; ``failed``: an error or a non-finite loss; ``stopped``: a
    ``running`` run without a live writer, e.g. killed) and the epochs they completed."""
    return runs.loc[runs["status"] != "finished", ["experiment", "model", "seed", "status", "epochs", "path"]]


def _seed_values(group: pd.DataFrame, column: str) -> str:
    """``"seed0 99.95, seed1 74.05"``: every finished seed's value, in seed order."""
    done = group[group[column].notna()].sort_values("seed")
    return ", ".join(f"{int(seed)}: {value:.2f}" for seed, value in zip(done["seed"], done[column])) or "-"


# the study's names of its models (Simple-AACNN, ...) -> (model, attention)
_STUDY_MODELS = {study_name(model, kind): (model, kind) for model in ("repro_simple_cnn", "repro_wrn")
                 for kind in (None, *ATTENTION_KINDS)}


def summarize(runs: pd.DataFrame, verdicts: list[ModelVerdict] | None = None) -> pd.DataFrame:
    """One row per (dataset, model) over its seeds (see the module docstring); columns no row
    fills are left out. Values are display strings; ``runs.csv`` keeps the numbers.
    ``verdicts``: :func:`aalib.verdict.long_range_verdicts` of ``runs`` if already judged."""
    verdicts = {v.model: v for v in (long_range_verdicts(runs) if verdicts is None else verdicts)}
    rows = []
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "model", "seeds", "finished"])
    for (dataset, model), group in runs.groupby(["dataset", "model"], sort=True):
        published = study_result(dataset, *_STUDY_MODELS[model]) if model in _STUDY_MODELS else None
        top1 = spread(group["top1"])
        many_classes = group["num_classes"].iloc[0] > 5  # top-5 says nothing on a task of five classes or fewer
        verdict = verdicts.get(model) if dataset == "long_range" else None
        rows.append({
            "dataset": dataset,
            "model": model,
            "seeds": len(group),
            "finished": int((group["status"] == "finished").sum()),
            "top1": str(top1),
            "top1 median": f"{top1.median:.2f}" if top1.n else "-",
            "top1 per seed": _seed_values(group, "top1"),
            "solved": verdict.solved_text() if verdict is not None else "-",
            "top5": str(spread(group["top5"])) if many_classes else "-",
            "s/epoch": str(spread(group["s_per_epoch"])),
            "peak MiB": f"{group['peak_mem_mb'].max():.0f}" if group["peak_mem_mb"].notna().any() else "-",
            "parameters": f"{int(group['parameters'].iloc[0]):,}",
            "study top1": published.top1 if published else "-",
            "study top5": published.top5 if published else "-",
            "study s/epoch": published.epoch_seconds if published else "-",
        })
    return _drop_empty(pd.DataFrame(rows))


def _drop_empty(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without the columns whose every value is ``"-"`` or missing."""
    empty = [c for c in table.columns if table[c].map(lambda v: v is None or v == "-" or (isinstance(v, float) and math.isnan(v))).all()]
    return table.drop(columns=empty)


def dataset_tables(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The summary split by dataset, indexed by model, each without the columns it leaves empty
    (the study's numbers only where it published some, top-5 only above five classes)."""
    return {dataset: _drop_empty(table.drop(columns="dataset")).set_index("model")
            for dataset, table in summary.groupby("dataset", sort=True)}


def references(datasets: list[str]) -> pd.DataFrame:
    """The published reference numbers (:data:`PAPER_REFERENCES`) for the given datasets."""
    return pd.DataFrame([r for r in PAPER_REFERENCES if r["dataset"] in datasets],
                        columns=["dataset", "model", "source", "top1", "top5", "parameters"])


def study_verdict(runs: pd.DataFrame, verdicts: list[ModelVerdict] | None = None) -> list[str]:
    """What the runs show, in sentences over seeds: per model on the long-range task how many
    seeds solved it, with the 95 % interval, and where the others stopped
    (:meth:`aalib.verdict.ModelVerdict.sentence`; ``verdicts`` if already judged); then on each
    image dataset each of the reproduced study's conclusions tested by seed-paired differences
    (:meth:`aalib.verdict.Comparison.sentence`)."""
    verdicts = long_range_verdicts(runs) if verdicts is None else verdicts
    return [verdict.sentence() for verdict in verdicts] + [comparison.sentence() for comparison in comparisons(runs)]


def learning_curves_figure(runs: list[Run]) -> Figure:
    """Validation top-1 and training loss per epoch, one line per run, one row per dataset."""
    frames = []
    for run in runs:
        if run.metrics:
            frame = pd.DataFrame(run.metrics)
            frame["model"], frame["dataset"], frame["seed"] = _label(run.config), run.config.dataset, run.config.seed
            frame["colours"] = _colours(run.config)
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
            if dataset == "long_range" and metric == "val_top1" and len(part):
                _landmarks(ax, int(part["colours"].iloc[0]), solved=False)
                ax.legend(fontsize="x-small")
            ax.set_title(f"{dataset}: {title}")
    fig.tight_layout()
    return fig


def _scatter(runs: pd.DataFrame, x: str, xlabel: str) -> Figure:
    """Test top-1 against ``x`` on a log axis, one panel per dataset."""
    datasets = sorted(runs.loc[runs["top1"].notna(), "dataset"].unique()) or ["(none)"]
    fig = Figure(figsize=(5.5 * len(datasets), 4))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = runs[(runs["dataset"] == dataset) & runs["top1"].notna()]
        if len(part):
            sns.scatterplot(part, x=x, y="top1", hue="model", s=80, ax=ax)
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


def _landmarks(ax: Any, colours: int, solved: bool = True) -> None:
    """Chance, the best additive rule and (``solved``) the solved threshold of the long-range task, as lines."""
    ax.axhline(50, color="grey", linestyle=":", label="chance")
    ax.axhline(100 * additive_ceiling(colours), color="grey", linestyle="--", label="best additive (local) rule")
    if solved:
        ax.axhline(SOLVED_TOP1, color="green", linestyle="-.", linewidth=0.8, label=f"solved (>= {SOLVED_TOP1:g} %)")


def _seed_strip(ax: Any, part: pd.DataFrame, dataset: str, title: str, rotation: int) -> None:
    """One point per seed of each model in ``part``, with the long-range landmarks."""
    sns.stripplot(part, x="model", y="top1", hue="model", size=7, jitter=0.15, legend=False, ax=ax)
    if dataset == "long_range":
        _landmarks(ax, int(part["colours"].iloc[0]))
        ax.legend(fontsize="x-small", loc="center right")
    ax.set(title=title, xlabel="", ylabel="test top-1 (%)")
    ax.tick_params(axis="x", labelrotation=rotation, labelsize=8)


def seed_points_figure(runs: pd.DataFrame) -> Figure:
    """Test top-1 of every finished run, one point per seed, with each model's mean and standard
    deviation; one panel per dataset (the long-range panel marks chance, the additive ceiling and
    the solved threshold; a dataset with published results, :data:`PAPER_REFERENCES`, marks them)."""
    done = runs[runs["top1"].notna()]
    datasets = sorted(done["dataset"].unique()) or ["(none)"]
    width = max([4.0] + [1.3 * done.loc[done["dataset"] == d, "model"].nunique() + 2 for d in datasets])
    fig = Figure(figsize=(width, 4.2 * len(datasets)), layout="constrained")
    axes = fig.subplots(len(datasets), 1, squeeze=False)[:, 0]
    for ax, dataset in zip(axes, datasets):
        part = done[done["dataset"] == dataset].sort_values("model")
        if len(part):
            _seed_strip(ax, part, dataset, f"{dataset}: test top-1 per seed (bar: mean ± std)", 20)
            sns.pointplot(part, x="model", y="top1", errorbar="sd", color="black", markers="_", linestyle="none",
                          capsize=0.2, ax=ax)
            _reference_lines(ax, dataset)
    return fig


def _reference_lines(ax: Any, dataset: str) -> None:
    """The dataset's published results (:data:`PAPER_REFERENCES`) as labelled dashed lines."""
    for reference in references([dataset]).itertuples():
        ax.axhline(reference.top1, color="grey", linestyle="--", linewidth=0.7)
        ax.annotate(f"{reference.model} {reference.top1:g}", (1.0, reference.top1), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize="x-small", color="grey")


def ablation_figure(runs: pd.DataFrame) -> Figure | None:
    """Test top-1 per seed of every variant of one architecture (its experiments with another
    label: an ablation), one panel per architecture that has variants; None when none has."""
    variants = _variant_runs(runs)
    groups = list(variants.groupby(["dataset", "architecture"], sort=True))
    if not groups:
        return None
    fig = Figure(figsize=(5.2 * len(groups), 4.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, ((dataset, architecture), part) in zip(axes, groups):
        part = part.sort_values(["model"], key=lambda m: m.str.len(), kind="stable")  # the plain model first
        _seed_strip(ax, part, dataset, f"{architecture} ({dataset})", 15)
    return fig


def _variant_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of every architecture that was run under more than one label."""
    done = runs[runs["top1"].notna()]
    return done[done.groupby(["dataset", "architecture"])["model"].transform("nunique").gt(1)]


def _per_model(runs: pd.DataFrame, column: str, fmt: str, unit: str) -> str:
    """``"Simple-AACNN 99.75-99.95 % (3); Simple-CNN 48.10-54.90 % (3)"``: each model's range of
    ``column`` and its number of runs."""
    parts = []
    for model, group in runs[runs[column].notna()].groupby("model", sort=True):
        low, high = group[column].min(), group[column].max()
        values = format(low, fmt) if low == high else f"{format(low, fmt)}-{format(high, fmt)}"
        parts.append(f"{model} {values}{unit} ({len(group)})")
    return "; ".join(parts) or "no finished run"


def captions(runs: pd.DataFrame, found: list[Run]) -> dict[str, str]:
    """One sentence per report figure, computed from the numbers the figure shows."""
    last_val = pd.DataFrame([{"model": _label(r.config), "val": r.metrics[-1]["val_top1"]} for r in found if r.metrics])
    done = runs[runs["top1"].notna()]
    published = references(sorted(done["dataset"].unique()))
    lines = ("; dashed lines: published results (" + ", ".join(f"{r.model} {r.top1:g} %" for r in published.itertuples()) + ")"
             if len(published) else "")
    return {
        "seed_points": f"Test top-1 of every seed, range per model (seeds in brackets): {_per_model(done, 'top1', '.2f', ' %')}{lines}.",
        "learning_curves": ("Validation top-1 and training loss per epoch, one line per seed; validation top-1 at the "
                            f"last epoch: {_per_model(last_val, 'val', '.1f', ' %') if len(last_val) else 'no epochs yet'}."),
        "accuracy_vs_time": f"Test top-1 against each run's training time; seconds of training per run: {_per_model(done, 'train_seconds', '.0f', ' s')}.",
        "accuracy_vs_parameters": "Test top-1 against parameters; parameters per model: " + "; ".join(
            f"{model} {int(group['parameters'].iloc[0]):,}" for model, group in runs.groupby("model", sort=True)) + ".",
    }


def _markdown(runs_dir: str | Path, runs: pd.DataFrame, tables: dict[str, pd.DataFrame], verdict: list[str],
              findings: list[str], texts: dict[str, str], broken: pd.DataFrame) -> str:
    """``report.md``: the verdict, the results per dataset (``tables``, :func:`dataset_tables`) with
    the published ones, the findings and every figure with its caption, for a docs page."""
    cpus = ", ".join(sorted(runs["cpu"].dropna().unique())) or "unknown"
    lines = [f"# Report of `{runs_dir}`", "",
             f"{len(runs)} runs ({int((runs['status'] == 'finished').sum())} finished), measured on: {cpus}.", ""]
    if verdict:
        lines += ["## What was measured", "", *(f"- {line}" for line in verdict), ""]
    for dataset, table in tables.items():
        lines += [f"## Results on {dataset}", "", markdown_table(table.reset_index()), ""]
        published = references([dataset])
        if len(published):
            lines += [f"Published results on {dataset}:", "",
                      markdown_table(published[["model", "top1", "source"]].rename(columns={"top1": "top-1 %"})), ""]
    if findings:
        lines += ["## Why some seeds fail", "", *(f"- {line}" for line in findings), ""]
    lines += ["## Figures", ""]
    for name, caption in texts.items():
        lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({name}.png)", "", caption, ""]
    if len(broken):
        lines += ["## Damaged run folders", "", *(f"- `{row.path}`: {row.reason}" for row in broken.itertuples()), ""]
    return "\n".join(lines)


_TERMINAL_COLUMNS = ("seeds", "finished", "top1", "top1 median", "top1 per seed", "solved", "top5")


def summary_text(tables: dict[str, pd.DataFrame], verdict: list[str], waiting: pd.DataFrame,
                 damaged: list[Damaged]) -> str:
    """The report for a terminal: each dataset's table (:func:`dataset_tables`, the study's columns),
    the verdict, the unfinished runs (:func:`unfinished`) and the damaged folders."""
    shown = [f"{dataset}:\n{table[[c for c in _TERMINAL_COLUMNS if c in table]].to_string()}"
             for dataset, table in tables.items()]
    return "\n".join([
        *shown,
        "",
        *verdict,
        "",
        *([f"{len(waiting)} unfinished run(s), left out of the verdict: "
           + ", ".join(f"{row.experiment} seed {row.seed} ({row.status})" for row in waiting.itertuples())] if len(waiting) else []),
        *([f"skipped {len(damaged)} damaged run folder(s):"] + [f"  {d.path}: {d.reason}" for d in damaged] if damaged else []),
    ])


def write_report(runs_dir: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Tables (CSV) and figures (PNG) of every run under ``runs_dir``, written into ``output_dir``;
    with long-range runs whose seeds disagree, the diagnosis of the failed seeds too
    (:func:`aalib.analysis.long_range.diagnose`). Damaged run folders are left out of every table
    and figure and listed (``damaged.csv``) with the reason; unfinished runs are listed apart.
    The runs are read and judged once; ``summary.txt`` holds :func:`summary_text`."""
    output_dir = Path(output_dir)
    found, damaged = scan_runs(runs_dir)
    runs = collect(runs_dir, found, damaged)
    verdicts = long_range_verdicts(runs)
    summary = summarize(runs, verdicts)
    broken = pd.DataFrame([{"path": str(d.path), "reason": d.reason} for d in damaged], columns=["path", "reason"])
    figures = {
        "seed_points": seed_points_figure(runs),
        "learning_curves": learning_curves_figure(found),
        "accuracy_vs_time": accuracy_vs_time_figure(runs),
        "accuracy_vs_parameters": accuracy_vs_parameters_figure(runs),
    }
    texts = captions(runs, found)
    ablations = ablation_figure(runs)
    if ablations is not None:
        figures["ablations"] = ablations
        texts["ablations"] = ("Test top-1 per seed of each architecture's variants (the same task, recipe and seeds but "
                              f"for the one change named): {_per_model(_variant_runs(runs), 'top1', '.2f', ' %')}.")
    diagnosis = diagnose(found, verdicts, label=_label)
    figures.update(diagnosis.figures)
    texts.update(diagnosis.captions)
    tables = {"runs": runs, "summary": summary, "damaged": broken, "diagnosis": diagnosis.seeds}
    for name, table in tables.items():
        if name in ("runs", "summary") or len(table):
            atomic_write(output_dir / f"{name}.csv", lambda handle, table=table: table.to_csv(handle, index=False))
    paths = {}
    for name, fig in figures.items():
        paths[name] = output_dir / f"{name}.png"
        write_png(paths[name], fig, dpi=110)
    verdict = study_verdict(runs, verdicts)
    tables = dataset_tables(summary)
    waiting = unfinished(runs)
    markdown = _markdown(runs_dir, runs, tables, verdict, diagnosis.findings, texts, broken)
    atomic_write(output_dir / "report.md", lambda handle: handle.write(markdown))
    text = summary_text(tables, verdict, waiting, damaged)
    atomic_write(output_dir / "summary.txt", lambda handle: handle.write(text))
    return {"runs": runs, "summary": summary, "tables": tables, "figures": figures,
            "captions": texts, "paths": paths, "verdict": verdict, "diagnosis": diagnosis,
            "unfinished": waiting, "damaged": broken, "text": text}
