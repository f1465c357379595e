"""The lesson notebook's computation (``notebooks/lesson.ipynb``): softmax attention, efficient
attention and the reproduced study's swapped variant on one tiny example, the cost curves, and the
study's measured answers.

Papers:

* I. Bello, B. Zoph, A. Vaswani, J. Shlens, Q. V. Le, "Attention Augmented Convolutional Networks",
  ICCV 2019, https://arxiv.org/abs/1904.09925. Eq. 1 and Sec. 3.2: per head
  ``O = softmax((Q K^T + S_H + S_W) / sqrt(dkh)) V``, an ``N x N`` map whose rows sum to 1.
* Z. Shen, M. Zhang, H. Zhao, S. Yi, H. Li, "Efficient Attention: Attention with Linear
  Complexities", WACV 2021, https://arxiv.org/abs/1812.01243. Eq. 4 with the softmax
  normalisers: ``E = rho_q(Q) (rho_k(K)^T V)``; the implied map ``rho_q(Q) rho_k(K)^T`` has rows
  that sum to 1 and rank at most ``dkh``.

Every map and output comes from :mod:`aalib.attention` (:func:`~aalib.attention.attention_weights`
and the three kernels); the costs from :mod:`aalib.complexity`; the study's answers from
:func:`aalib.study.read_study_results`. What is here only arranges them for a class: the tiny
example, the properties the lesson states (row sums, ranks, map times V against the kernel's
output), and its figures.

Paths: a relative path is looked up from the working directory and then from its parent
(:func:`find_path`), so the notebook finds ``docs/study`` and ``benchmarks/`` both under papermill
from the repository root and in JupyterLab, which runs it in ``notebooks/``.

Status: the example is random (seeded) Q, K, V and relative embeddings, not a trained layer's; the
attention maps of trained models are in ``notebooks/attention_maps.ipynb``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from . import complexity, layer_cost
from .attention import (
    ATTENTION_KINDS,
    LINEAR_KINDS,
    attention_weights,
    linear_attention,
    linear_factors,
    softmax_attention,
    swapped_factors,
    swapped_linear_attention,
)
from .checks import check_choice, check_int
from .study import StudyResults, read_study_results

__all__ = [
    "KIND_LABELS",
    "TinyExample",
    "CostCurves",
    "find_path",
    "tiny_example",
    "attention_map",
    "attention_output",
    "normalisers",
    "normaliser_sums",
    "map_properties",
    "singular_values",
    "row_sum_spread",
    "plot_maps",
    "plot_singular_values",
    "plot_row_sum_spread",
    "cost_curves",
    "plot_costs",
    "read_lesson_study",
    "study_markdown",
]

KIND_LABELS: dict[str, str] = {
    "softmax": "softmax (Bello et al.)",
    "linear": "linear (Shen et al.)",
    "linear_swapped": "swapped axes (reproduced study)",
}
_KERNELS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "linear": linear_attention,
    "linear_swapped": swapped_linear_attention,
}
# the attention kernels' normalisers, (rho_q, rho_k) of (B, heads, N, dkh) each; one home for each rule
_NORMALISERS: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "linear": linear_factors,
    "linear_swapped": swapped_factors,
}


def find_path(path: str | Path) -> Path:
    """``path`` itself when it exists (absolute, or relative to the working directory); else, for a
    relative path, the same path under the parent of the working directory when it exists there
    (JupyterLab runs a notebook in its folder, ``notebooks/``); else ``path`` unchanged, for the
    caller to report as missing."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    above = Path.cwd().parent / path
    return above if above.exists() else path


@dataclass(frozen=True)
class TinyExample:
    """One head of attention on an ``H x W`` image: ``q, k`` of ``(1, 1, N, dkh)``, ``v`` of
    ``(1, 1, N, dvh)``, and Bello et al.'s relative embeddings ``rel_h`` ``(2H - 1, dkh)`` and
    ``rel_w`` ``(2W - 1, dkh)`` (Sec. 3.2)."""

    q: Tensor
    k: Tensor
    v: Tensor
    rel_h: Tensor
    rel_w: Tensor
    size: tuple[int, int]

    @property
    def n(self) -> int:
        return self.q.shape[-2]

    @property
    def dkh(self) -> int:
        return self.q.shape[-1]


def tiny_example(side: int = 4, dkh: int = 4, dvh: int = 4, seed: int = 0) -> TinyExample:
    """Standard-normal ``q, k, v`` and relative embeddings for a ``side x side`` image
    (``N = side^2``), in float64 so that ranks and row sums are exact to ~1e-15; the same for the
    same arguments."""
    check_int("side", side)
    check_int("dkh", dkh)
    check_int("dvh", dvh)
    check_int("seed", seed, 0)
    generator = torch.Generator().manual_seed(seed)
    n = side * side

    def normal(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return TinyExample(q=normal(1, 1, n, dkh), k=normal(1, 1, n, dkh), v=normal(1, 1, n, dvh),
                       rel_h=normal(2 * side - 1, dkh), rel_w=normal(2 * side - 1, dkh), size=(side, side))


def attention_map(example: TinyExample, attention: str) -> Tensor:
    """The ``(N, N)`` map that ``attention`` (one of :data:`~aalib.attention.ATTENTION_KINDS`)
    applies to V: softmax with the example's relative logits, or a linear kind's implied map."""
    check_choice("attention", attention, ATTENTION_KINDS)
    relative = {"rel_h": example.rel_h, "rel_w": example.rel_w, "size": example.size} if attention == "softmax" else {}
    return attention_weights(example.q, example.k, attention=attention, **relative)[0, 0]  # N, N


def attention_output(example: TinyExample, attention: str, v: Tensor | None = None) -> Tensor:
    """The ``(N, dvh)`` output of the ``attention`` kernel itself (no ``N x N`` map for the linear
    kinds), on the example's values or on ``v`` of ``(1, 1, N, d)``."""
    check_choice("attention", attention, ATTENTION_KINDS)
    values = example.v if v is None else v
    if attention == "softmax":
        out = softmax_attention(example.q, example.k, values, rel_h=example.rel_h, rel_w=example.rel_w,
                                size=example.size)
    else:
        out = _KERNELS[attention](example.q, example.k, values)
    return out[0, 0]  # N, dvh


def normalisers(example: TinyExample, attention: str) -> tuple[Tensor, Tensor]:
    """``(rho_q(Q), rho_k(K))``, ``(N, dkh)`` each, of a linear kind (:data:`~aalib.attention.LINEAR_KINDS`):
    the implied map is ``rho_q @ rho_k.T``."""
    check_choice("attention", attention, LINEAR_KINDS)
    rho_q, rho_k = _NORMALISERS[attention](example.q, example.k)
    return rho_q[0, 0], rho_k[0, 0]  # N, dkh each


def normaliser_sums(example: TinyExample, kinds: Sequence[str] = LINEAR_KINDS) -> list[dict]:
    """One row per linear kind, factor (``rho_q``, ``rho_k``) and axis (``features``, ``positions``):
    the smallest and largest sum along that axis. Shen et al.'s ``rho_q`` sums to 1 over features
    and ``rho_k`` over positions; the swapped kind the other way round."""
    rows = []
    for attention in kinds:
        for factor, matrix in zip(("rho_q", "rho_k"), normalisers(example, attention)):
            for axis, dim in (("features", 1), ("positions", 0)):
                sums = matrix.sum(dim=dim)
                rows.append({"attention": attention, "factor": factor, "sum over": axis,
                             "min": sums.min().item(), "max": sums.max().item()})
    return rows


def map_properties(example: TinyExample, kinds: Sequence[str] = ATTENTION_KINDS) -> list[dict]:
    """What the lesson states about each kind's map, measured: row sums (min, max), the rank and its
    bound (``N`` for softmax, ``min(N, dkh)`` for a product of ``N x dkh`` factors), the largest
    ``|map @ V - kernel output|``, and the kernel's output for values that are all 1 (exactly 1
    when the output is a weighted average of the values)."""
    ones = torch.ones_like(example.v[..., :1])  # 1, 1, N, 1
    rows = []
    for attention in kinds:
        weights = attention_map(example, attention)
        sums = weights.sum(dim=-1)
        on_ones = attention_output(example, attention, ones)
        rows.append({
            "attention": attention,
            "row_sum_min": sums.min().item(),
            "row_sum_max": sums.max().item(),
            "rank": int(torch.linalg.matrix_rank(weights)),
            "rank_bound": example.n if attention == "softmax" else min(example.n, example.dkh),
            "map_v_error": (weights @ example.v[0, 0] - attention_output(example, attention)).abs().max().item(),
            "ones_out_min": on_ones.min().item(),
            "ones_out_max": on_ones.max().item(),
        })
    return rows


def singular_values(example: TinyExample, kinds: Sequence[str] = ATTENTION_KINDS) -> dict[str, Tensor]:
    """Each kind's map's ``N`` singular values, largest first."""
    return {attention: torch.linalg.svdvals(attention_map(example, attention)) for attention in kinds}


def row_sum_spread(sides: Sequence[int], dkh: int = 4, seed: int = 0) -> list[dict]:
    """For each image side and linear kind, the smallest, mean and largest row sum of the implied
    map of :func:`tiny_example` ``(side, dkh, 1, seed)``. Shen et al.'s rows sum to 1 at every N;
    the swapped rows average 1 (all rows together sum to N), and their extremes tend to spread
    wider as N grows."""
    rows = []
    for side in sides:
        example = tiny_example(check_int("side", side), dkh, 1, seed)
        for attention in LINEAR_KINDS:
            sums = attention_map(example, attention).sum(dim=-1)
            rows.append({"side": side, "n": example.n, "attention": attention, "row_sum_min": sums.min().item(),
                         "row_sum_mean": sums.mean().item(), "row_sum_max": sums.max().item()})
    return rows


# -- figures -----------------------------------------------------------------------------------
def plot_maps(example: TinyExample, kinds: Sequence[str] = ATTENTION_KINDS) -> Figure:
    """Each kind's ``N x N`` map as a heatmap (query ``i`` down, key ``j`` across), its row sums'
    range in the title."""
    fig = Figure(figsize=(4.2 * len(kinds), 3.8), layout="constrained")
    for ax, attention in zip(fig.subplots(1, len(kinds), squeeze=False)[0], kinds):
        weights = attention_map(example, attention)
        sums = weights.sum(dim=-1)
        image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0)
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(f"{KIND_LABELS[attention]}\nrow sums {sums.min().item():.3f} .. {sums.max().item():.3f}",
                     fontsize="medium")
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    fig.suptitle(f"Attention maps, N = {example.n} positions ({example.size[0]}x{example.size[1]}), dkh = {example.dkh}")
    return fig


def plot_singular_values(example: TinyExample, kinds: Sequence[str] = ATTENTION_KINDS) -> Figure:
    """Singular values of each kind's map on a log axis, with the rank bound ``dkh`` of the linear
    kinds marked (values at rounding level, ~1e-16, are zeros)."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    index = np.arange(1, example.n + 1)
    for attention, values in singular_values(example, kinds).items():
        ax.semilogy(index, values.clamp_min(1e-18).numpy(), marker="o", label=KIND_LABELS[attention])
    ax.axvline(example.dkh + 0.5, color="0.3", linestyle=":", label=f"dkh = {example.dkh}")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("singular value")
    ax.legend(fontsize="small")
    ax.set_title("Rank of the map: linear attention's is at most dkh")
    return fig


def plot_row_sum_spread(rows: Sequence[dict]) -> Figure:
    """:func:`row_sum_spread`'s rows: each linear kind's row sums (band: min to max; line: mean)
    against ``N``, log x axis."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    styles = {"linear": {"marker": "o", "zorder": 3}, "linear_swapped": {"marker": "s", "linestyle": ":"}}
    for attention in LINEAR_KINDS:  # Shen's mean is drawn on top: both means are 1
        mine = [row for row in rows if row["attention"] == attention]
        n = [row["n"] for row in mine]
        line, = ax.plot(n, [row["row_sum_mean"] for row in mine], label=f"{KIND_LABELS[attention]}: mean",
                        **styles[attention])
        ax.fill_between(n, [row["row_sum_min"] for row in mine], [row["row_sum_max"] for row in mine],
                        color=line.get_color(), alpha=0.25, label=f"{KIND_LABELS[attention]}: min .. max")
    ax.set_xscale("log")
    ax.set_xlabel("positions N")
    ax.set_ylabel("row sum of the implied map")
    ax.legend(fontsize="small")
    ax.set_title("Row sums against image size")
    return fig


# -- costs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostCurves:
    """The recorded layer benchmark (``records`` of :func:`aalib.complexity.load_recorded`, the
    variants of :data:`aalib.layer_cost.LAYER_VARIANTS`, impl ``"ours"``; empty without a file),
    the layer's ``dims`` (dk, dv, heads), the analytic FLOP crossover and the measured crossovers
    of LAA with each AA variant in time and memory."""

    source: Path | None
    records: list[dict]
    dims: dict[str, int]
    analytic: dict[str, float]
    crossovers: list[complexity.Crossover]

    def describe(self) -> str:
        """A few lines: where the numbers come from, the analytic crossover, the measured ones."""
        dims, cross = self.dims, self.analytic
        lines = [
            f"Recorded benchmark: {self.source}" if self.source else
            "No recorded benchmark: analytic curves only (`make bench` records one into results/).",
            f"FLOP crossover for dk={dims['dk']}, dv={dims['dv']}, {dims['heads']} heads "
            f"(dkh={cross['dkh']}, dvh={cross['dvh']}): N* = {cross['n']:.1f} positions, side {cross['side']:.1f} px; "
            "linear attention does fewer FLOPs above it.",
        ]
        lines += [f"measured: {crossing.describe()}" for crossing in self.crossovers]
        return "\n".join(lines)


def cost_curves(benchmark: str | Path) -> CostCurves:
    """The cost curves from a ``python -m aalib.bench attention`` file (found by :func:`find_path`),
    or the analytic ones alone for the benchmark's default layer when ``benchmark`` is empty or
    no such file exists."""
    path = find_path(benchmark) if benchmark else None
    if path is None or not path.is_file():
        dims = {"dk": layer_cost.DK, "dv": layer_cost.DV, "heads": layer_cost.HEADS}
        return CostCurves(None, [], dims, complexity.analytic_crossover(**dims), [])
    records, setting = complexity.load_recorded(path)
    records = [r for r in records if r["impl"] == "ours" and r["variant"] in layer_cost.LAYER_VARIANTS]
    dims = {name: int(setting[name]) for name in ("dk", "dv", "heads")}
    kind = {variant: layer_cost.VARIANTS[variant]["attention"] for variant in layer_cost.LAYER_VARIANTS}
    crossovers = [complexity.measured_crossover(records, linear=linear, softmax=softmax, metric=metric)
                  for metric in ("ms", "peak_mib")
                  for linear in kind if kind[linear] == "linear"
                  for softmax in kind if kind[softmax] == "softmax"]
    return CostCurves(path, records, dims, complexity.analytic_crossover(**dims), crossovers)


def plot_costs(curves: CostCurves) -> dict[str, Figure]:
    """``{"time", "memory"}`` measured against resolution (:func:`aalib.complexity.plot_resolution`,
    with the crossovers) when there are records, and always ``"cost_model"``, the analytic FLOPs and
    memory (:func:`aalib.complexity.plot_cost_model`)."""
    figures = {}
    if curves.records:
        for name, metric in (("time", "ms"), ("memory", "peak_mib")):
            figures[name] = complexity.plot_resolution(curves.records, metric, analytic_n=curves.analytic["n"],
                                                       crossovers=curves.crossovers)
    figures["cost_model"] = complexity.plot_cost_model(**curves.dims)
    return figures


# -- the study's answers ---------------------------------------------------------------------------
def read_lesson_study(study_dir: str | Path) -> StudyResults | None:
    """:func:`aalib.study.read_study_results` of ``study_dir`` found by :func:`find_path`."""
    return read_study_results(find_path(study_dir))


def study_markdown(results: StudyResults | None, study_dir: str | Path) -> str:
    """The study's measured answers as Markdown bullets, or, without results, a plain statement
    that the study has not been run into ``study_dir`` and how to run it."""
    if results is None:
        return (f"**No study results in `{study_dir}` yet: the study has not been run.** `make study` runs it "
                "on the CPU and writes its answers, tables and figures there; this section then shows them.")
    answers = "\n".join(f"- {answer}" for answer in results.answers) or "- (the report states no answers)"
    figures = ", ".join(f"`{name}`" for name in results.figures) or "none"
    return f"Measured answers from `{results.folder}`:\n\n{answers}\n\nFigures: {figures}."
