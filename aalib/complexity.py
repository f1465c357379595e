"""Time and memory of AA-conv and LAA-conv against resolution: measured, modelled, compared.

Papers:

* I. Bello, B. Zoph, A. Vaswani, J. Shlens, Q. V. Le, "Attention Augmented Convolutional Networks",
  ICCV 2019, https://arxiv.org/abs/1904.09925. Sec. 3.1: multi-head dot-product attention over all
  ``N = H W`` positions; Sec. 3.2 (and the "memory cost" remark there): the ``Nh`` attention maps
  take ``O(Nh (HW)^2)`` memory and the time is ``O((HW)^2 dk)``.
* Z. Shen, M. Zhang, H. Zhao, S. Yi, H. Li, "Efficient Attention: Attention with Linear
  Complexities", WACV 2021, https://arxiv.org/abs/1812.01243. Sec. 3.2-3.3 and Table 1:
  ``E(Q, K, V) = rho_q(Q) (rho_k(K)^T V)`` costs ``O(n dk dv)`` time and ``O(dn + d^2)`` memory
  against ``O(n^2 d)`` and ``O(n^2)`` for dot-product attention.

What is here:

* :func:`measure` runs a resolution sweep through :func:`aalib.layer_cost.sweep` (one
  subprocess per case) and :func:`load_recorded` reads a file that ``python -m aalib.bench
  attention`` wrote; both give flat records (one per variant x impl x size).
* The analytic cost model of one layer, per image, forward pass: :func:`attention_flops`,
  :func:`attention_memory`, :func:`layer_flops`, and the crossover :func:`crossover_n`: with head
  sizes ``dkh, dvh`` softmax attention costs ``2 N^2 (dkh + dvh)`` FLOPs per head (``Q K^T`` and
  ``A V``) and linear attention ``4 N dkh dvh`` (``rho_k(K)^T V`` and ``rho_q(Q) C``), so linear
  attention is cheaper once ``N > N* = 2 dkh dvh / (dkh + dvh)``, the harmonic mean of the two
  head sizes (a side of ``sqrt(N*)`` pixels for a square map).
* :func:`fit_power_law` / :func:`fit_slopes`: least-squares slopes of log time (memory) on log N;
  :func:`measured_crossover`: where the measured LAA and AA time curves cross, if they do.
* :func:`repro_layers` / :func:`explain_repro`: the cost model applied to each attention layer of
  the reproduced study's models at their input size, to test "linear attention does more work at
  CIFAR size" layer by layer against the model's total FLOPs.
* Figures (matplotlib, seaborn style): :func:`plot_resolution` and :func:`plot_cost_model`.

FLOPs count a multiply-add as 2; softmax exponentials, scaling and bias adds (``O(N^2)`` per head
for softmax attention, ``O(N d)`` for linear attention) are left out of the FLOPs, as in the
papers' complexity statements. Memory counts tensor elements per image (multiply by batch and 4
bytes for fp32).

Status: the FLOPs of relative logits assume a square map; :func:`layer_flops` covers stride-1
layers (:func:`repro_layers` takes a strided layer's pooled attention map as its N); the measured curves
are forward + backward of the whole layer (see :mod:`aalib.layer_cost`), the model is the
forward pass of the attention alone, so compare slopes and crossovers, not absolute values.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from . import layer_cost
from .io import atomic_write, write_json, write_png
from .machine import machine_info
from .models import attention_layers, build_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "RECORD_FIELDS",
    "PowerLaw",
    "Crossover",
    "measure",
    "load_recorded",
    "attention_flops",
    "attention_memory",
    "layer_flops",
    "crossover_n",
    "analytic_crossover",
    "fit_power_law",
    "fit_slopes",
    "measured_crossover",
    "repro_layers",
    "explain_repro",
    "write_results",
    "plot_resolution",
    "plot_cost_model",
]

RECORD_FIELDS: tuple[str, ...] = ("variant", "attention", "position", "impl", "size", "n", "ms", "peak_mib", "note")


# -- measurement ----------------------------------------------------------------------------
def flatten_rows(rows: Sequence[dict]) -> list[dict]:
    """Bench rows (``{"variant", "size", "ours": {...}, "naive": {...}}``) as flat records with
    :data:`RECORD_FIELDS`; failed or skipped cases keep ``ms = peak_mib = nan`` and a ``note``."""
    records = []
    for row in rows:
        spec = layer_cost.VARIANTS[row["variant"]]
        for impl in layer_cost.IMPLS:
            if impl not in row:
                continue
            result = row[impl]
            records.append({
                "variant": row["variant"],
                "attention": spec["attention"],
                "position": spec["position"],
                "impl": impl,
                "size": row["size"],
                "n": row["size"] ** 2,
                "ms": float(result.get("ms", math.nan)),
                "peak_mib": float(result.get("peak_mib", math.nan)),
                "note": result.get("error") or result.get("skipped") or "",
            })
    return records


def measure(
    sizes: Sequence[int],
    linear_sizes: Sequence[int],
    *,
    impls: Sequence[str] = ("ours",),
    batch: int = layer_cost.BATCH,
    channels: int = layer_cost.CHANNELS,
    dk: int = layer_cost.DK,
    dv: int = layer_cost.DV,
    heads: int = layer_cost.HEADS,
    repeats: int = 3,
    device: str = "cpu",
    naive_max_gib: float = 3.0,
    timeout: float = 600.0,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Sweep AA (relative, no position) over ``sizes`` and LAA over ``linear_sizes``.

    Each case is forward + backward of one ``channels -> channels`` 3x3 layer on a
    ``(batch, channels, size, size)`` input, in a fresh subprocess (see :mod:`aalib.layer_cost`).
    Returns ``(records, setting)``: flat records (:func:`flatten_rows`) and the setting as the
    bench's JSON file records it, so measured and recorded sweeps are handled alike.
    """
    from tqdm.auto import tqdm

    plan = layer_cost.sweep_plan(sizes, linear_sizes, layer_cost.LAYER_VARIANTS)
    naive_cases = sum(layer_cost.naive_map_bytes(size, batch, heads) <= naive_max_gib * 2**30 for _, size in plan)
    total = len(plan) * ("ours" in impls) + naive_cases * ("naive" in impls)
    with tqdm(total=total, desc="attention cases", disable=not progress) as bar:
        def advance(variant: str, size: int, impl: str, result: dict) -> None:
            bar.set_postfix_str(f"{variant} {size}^2 {impl}")
            bar.update()

        rows = layer_cost.sweep(sizes, linear_sizes, variants=layer_cost.LAYER_VARIANTS, impls=impls, device=device,
                           repeats=repeats, batch=batch, channels=channels, dk=dk, dv=dv, heads=heads,
                           naive_max_gib=naive_max_gib, timeout=timeout, on_case=advance)
    setting = {"batch": batch, "channels": channels, "dk": dk, "dv": dv, "heads": heads, "kernel_size": 3,
               "device": device, "repeats": repeats, "machine": machine_info(device)}
    return flatten_rows(rows), setting


def load_recorded(path: str | Path) -> tuple[list[dict], dict]:
    """Records and setting of a file written by ``python -m aalib.bench attention``."""
    data = json.loads(Path(path).read_text())
    if data.get("benchmark") != "attention" or "rows" not in data:
        raise ValueError(f"{path} is not an attention benchmark record (no 'benchmark': 'attention' and 'rows')")
    setting = dict(data["setting"], machine=data.get("machine", {}), source=str(path))
    return flatten_rows(data["rows"]), setting


# -- analytic cost model ---------------------------------------------------------------------
def head_sizes(dk: int, dv: int, heads: int) -> tuple[int, int]:
    """``(dkh, dvh) = (dk / Nh, dv / Nh)``; ``heads`` must divide both (Bello et al., Sec. 3.1)."""
    if heads < 1 or dk % heads or dv % heads:
        raise ValueError(f"heads={heads} must be >= 1 and divide dk={dk} and dv={dv}")
    return dk // heads, dv // heads


def _check_kind(attention: str) -> None:
    if attention not in ("softmax", "linear"):
        raise ValueError(f"attention must be 'softmax' or 'linear', got {attention!r}")


def attention_flops(n: float, *, dk: int, dv: int, heads: int, attention: str, relative: bool = False) -> float:
    """Forward FLOPs of the attention of one layer on one image of ``n = H W`` positions.

    Softmax (Bello et al., Sec. 3.1): ``2 Nh (N^2 dkh + N^2 dvh)`` for ``Q K^T`` and ``A V``; with
    ``relative`` the 2-D relative logits of Sec. 3.2 add ``2 Nh N (H + W) dkh`` (each query against
    ``H`` row and ``W`` column embeddings; a square map, ``H = W = sqrt(N)``, is assumed).
    Linear (Shen et al., Sec. 3.2, Table 1): ``2 Nh (N dkh dvh + N dkh dvh)`` for the context
    ``rho_k(K)^T V`` and ``rho_q(Q)`` times it.
    """
    _check_kind(attention)
    dkh, dvh = head_sizes(dk, dv, heads)
    if attention == "linear":
        if relative:
            raise ValueError("linear attention takes no relative logits (it never forms N x N logits)")
        return 4.0 * heads * n * dkh * dvh
    flops = 2.0 * heads * n * n * (dkh + dvh)
    if relative:
        flops += 2.0 * heads * n * (2.0 * n**0.5) * dkh
    return flops


def attention_memory(n: float, *, dk: int, dv: int, heads: int, attention: str, materialised: bool = True) -> float:
    """Elements the attention of one layer holds per image: q, k, v and output (``N (2 dk + 2 dv)``)
    plus, for softmax, the ``Nh`` maps of ``N^2`` (Bello et al., Sec. 3.2: ``O(Nh (HW)^2)``) when
    ``materialised`` (a fused kernel keeps ``Nh N`` row statistics instead); for linear attention
    ``rho_q(Q)``, ``rho_k(K)`` (``2 N dk``) and the ``Nh`` contexts of ``dkh x dvh`` (Shen et al.,
    Table 1: ``O(dn + d^2)``)."""
    _check_kind(attention)
    dkh, dvh = head_sizes(dk, dv, heads)
    io = n * (2 * dk + 2 * dv)
    if attention == "linear":
        return io + 2 * n * dk + heads * dkh * dvh
    return io + (heads * n * n if materialised else heads * n)


def layer_flops(
    n: float,
    *,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dk: int,
    dv: int,
    heads: int,
    attention: str,
    relative: bool = False,
) -> dict[str, float]:
    """Forward FLOPs of one stride-1 AA/LAA-conv on one image, by part (Bello et al., Eq. 4):
    ``conv`` (``k x k``, ``Fin -> Fout - dv``), ``qkv`` (1x1, ``Fin -> 2 dk + dv``), ``attention``
    (:func:`attention_flops`), ``output`` (1x1 ``W_O``, ``dv -> dv``) and ``total``."""
    parts = {
        "conv": 2.0 * n * in_channels * (out_channels - dv) * kernel_size**2,
        "qkv": 2.0 * n * in_channels * (2 * dk + dv),
        "attention": attention_flops(n, dk=dk, dv=dv, heads=heads, attention=attention, relative=relative),
        "output": 2.0 * n * dv * dv,
    }
    parts["total"] = sum(parts.values())
    return parts


def crossover_n(dkh: int, dvh: int) -> float:
    """Positions ``N*`` above which linear attention takes fewer FLOPs than softmax attention.

    From :func:`attention_flops`: ``2 N^2 (dkh + dvh) = 4 N dkh dvh`` at ``N* = 2 dkh dvh / (dkh + dvh)``.
    """
    if dkh < 1 or dvh < 1:
        raise ValueError(f"head sizes must be >= 1, got dkh={dkh}, dvh={dvh}")
    return 2.0 * dkh * dvh / (dkh + dvh)


def crossover_side(dkh: int, dvh: int) -> float:
    """Side ``sqrt(N*)`` of the square map at the crossover (:func:`crossover_n`)."""
    return math.sqrt(crossover_n(dkh, dvh))


def analytic_crossover(dk: int, dv: int, heads: int) -> dict[str, float]:
    """``{"dkh", "dvh", "n", "side"}`` of the FLOP crossover for a layer's ``dk, dv, heads``."""
    dkh, dvh = head_sizes(dk, dv, heads)
    return {"dkh": dkh, "dvh": dvh, "n": crossover_n(dkh, dvh), "side": crossover_side(dkh, dvh)}


# -- fits and the measured crossover ---------------------------------------------------------
@dataclass(frozen=True)
class PowerLaw:
    """``y = coefficient * n ** exponent``, fitted by least squares on ``log y = a + b log n``."""

    exponent: float
    coefficient: float
    points: int

    def __call__(self, n: Any) -> Any:
        return self.coefficient * np.asarray(n, dtype=float) ** self.exponent


def fit_power_law(n: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least-squares line through ``(log n, log y)``; points with non-finite or non-positive ``y``
    are dropped, and at least two distinct ``n`` must remain."""
    n_arr, y_arr = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(y_arr) & (y_arr > 0) & (n_arr > 0)
    n_arr, y_arr = n_arr[keep], y_arr[keep]
    if np.unique(n_arr).size < 2:
        raise ValueError(f"a power-law fit needs two distinct n with positive y, got n={n_arr.tolist()}")
    exponent, log_coefficient = np.polyfit(np.log(n_arr), np.log(y_arr), 1)
    return PowerLaw(float(exponent), float(np.exp(log_coefficient)), int(n_arr.size))


def _curves(records: Sequence[dict], metric: str) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """``(variant, impl) -> (n, metric)`` sorted by n, finite values only, in record order."""
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for rec in records:
        if math.isfinite(rec[metric]):
            curves.setdefault((rec["variant"], rec["impl"]), []).append((rec["n"], rec[metric]))
    return {key: tuple(np.array(col, dtype=float) for col in zip(*sorted(points)))  # type: ignore[misc]
            for key, points in curves.items()}


def fit_slopes(records: Sequence[dict], metrics: Sequence[str] = ("ms", "peak_mib")) -> list[dict]:
    """One row per (variant, impl, metric) with two or more finite points: the fitted log-log
    ``slope`` against ``N`` (1 = linear in pixels, 2 = quadratic), ``points`` and the N range."""
    rows = []
    for metric in metrics:
        for (variant, impl), (n, y) in _curves(records, metric).items():
            if np.unique(n).size < 2:
                continue
            fit = fit_power_law(n, y)
            rows.append({"variant": variant, "impl": impl, "metric": metric, "slope": fit.exponent,
                         "coefficient": fit.coefficient, "points": fit.points,
                         "n_min": int(n.min()), "n_max": int(n.max())})
    return rows


@dataclass(frozen=True)
class Crossover:
    """Where a linear-attention curve crosses a softmax one (``n`` is None when they do not cross
    within the sizes both were measured at); ``faster`` names the faster variant below ``n``
    (or everywhere, without a crossing)."""

    linear: str
    softmax: str
    impl: str
    metric: str
    n: float | None
    side: float | None
    faster: str
    n_range: tuple[int, int] | None

    def describe(self) -> str:
        """One line: where the curves cross, or which variant is faster over the common range."""
        what = f"{self.linear} vs {self.softmax} ({self.impl}, {self.metric})"
        if self.n_range is None:
            return f"{what}: no common sizes"
        if self.n is None:
            return f"{what}: no crossing for N in {self.n_range[0]}..{self.n_range[1]}; {self.faster} is lower throughout"
        return f"{what}: cross at N = {self.n:.0f} (side {self.side:.1f}); {self.faster} is lower below it"


def measured_crossover(
    records: Sequence[dict], *, linear: str, softmax: str, impl: str = "ours", metric: str = "ms"
) -> Crossover:
    """First crossing of the ``linear`` and ``softmax`` variants' curves, interpolated linearly in
    ``(log N, log metric)`` over the N range both cover (no extrapolation)."""
    curves = _curves([r for r in records if r["impl"] == impl], metric)
    if (linear, impl) not in curves or (softmax, impl) not in curves:
        raise ValueError(f"no {metric} values of {linear!r} and {softmax!r} ({impl}) among the records")
    (n_lin, y_lin), (n_soft, y_soft) = curves[(linear, impl)], curves[(softmax, impl)]
    low, high = max(n_lin.min(), n_soft.min()), min(n_lin.max(), n_soft.max())
    grid = np.unique(np.concatenate([n_lin, n_soft]))
    grid = grid[(grid >= low) & (grid <= high)]
    if grid.size == 0:
        return Crossover(linear, softmax, impl, metric, None, None, "unknown (no common sizes)", None)
    log_grid = np.log(grid)
    gap = (np.interp(log_grid, np.log(n_lin), np.log(y_lin))
           - np.interp(log_grid, np.log(n_soft), np.log(y_soft)))  # > 0: linear is slower
    first = linear if gap[0] < 0 else softmax
    n_range = (int(grid[0]), int(grid[-1]))
    for i in range(grid.size - 1):
        if gap[i] == 0 or gap[i] * gap[i + 1] < 0:
            t = 0.0 if gap[i] == 0 else gap[i] / (gap[i] - gap[i + 1])
            n_cross = float(np.exp(log_grid[i] + t * (log_grid[i + 1] - log_grid[i])))
            below = softmax if gap[i] > 0 or (gap[i] == 0 and gap[i + 1] < 0) else linear
            return Crossover(linear, softmax, impl, metric, n_cross, math.sqrt(n_cross), below, n_range)
    return Crossover(linear, softmax, impl, metric, None, None, first, n_range)


# -- the reproduced study's layers -------------------------------------------------------------
def _probe(model: nn.Module, input_size: int, modules: list[nn.Module], hook) -> None:
    """One eval-mode forward pass of a blank ``input_size`` image with ``hook`` on ``modules``."""
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()


def _layer_inputs(model: nn.Module, input_size: int) -> dict[str, tuple[int, int]]:
    """Input ``(H, W)`` of every AugmentedConv2d for one ``input_size`` x ``input_size`` image."""
    names = {layer: name for name, layer in attention_layers(model)}
    sizes: dict[str, tuple[int, int]] = {}
    _probe(model, input_size, list(names), lambda m, args, out: sizes.__setitem__(names[m], tuple(args[0].shape[-2:])))
    return sizes


def _module_flops(model: nn.Module, input_size: int) -> float:
    """Forward FLOPs of every Conv2d and Linear of ``model`` (2 per multiply-add) on one image;
    attention matmuls are not modules and are not counted here."""
    total = 0.0

    def count(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            per_output = module.in_features
        total += 2.0 * out.numel() * per_output

    _probe(model, input_size, [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))], count)
    return total


def repro_layers(model_name: str = "repro_wrn", input_size: int = 32) -> tuple[list[dict], dict[str, float]]:
    """The cost model on every attention layer of a reproduced-study model (``repro_wrn``,
    ``repro_simple_cnn``) at ``input_size``.

    Returns ``(layers, totals)``. Each layer row: name, channels, ``dk, dv, heads, dkh, dvh``, the
    attention map ``H x W`` and ``N``, the crossover ``n_star``/``side_star``, ``below_crossover``
    (``N < N*``: the linear form does more work), forward attention FLOPs ``softmax_flops`` and
    ``linear_flops``, their ratio ``linear_over_softmax``, and ``layer_flops`` (the whole AA layer).
    ``totals``: the two attention sums and the model's forward FLOPs with softmax and with linear
    attention (its Conv2d/Linear FLOPs plus the attention FLOPs), per image.
    """
    model = build_model(model_name, attention="softmax")
    inputs = _layer_inputs(model, input_size)
    rows = []
    for name, layer in attention_layers(model):
        height, width = (-(-side // layer.stride) for side in inputs[name])
        n = height * width
        dims = {"dk": layer.dk, "dv": layer.dv, "heads": layer.heads}
        cross = analytic_crossover(**dims)
        soft = attention_flops(n, attention="softmax", relative=layer.position == "relative", **dims)
        lin = attention_flops(n, attention="linear", **dims)
        rows.append({
            "layer": name, "in_channels": layer.in_channels, "out_channels": layer.out_channels, **dims,
            "dkh": cross["dkh"], "dvh": cross["dvh"], "height": height, "width": width, "n": n,
            "n_star": cross["n"], "side_star": cross["side"], "below_crossover": n < cross["n"],
            "softmax_flops": soft, "linear_flops": lin, "linear_over_softmax": lin / soft,
            "layer_flops": layer_flops(n, in_channels=layer.in_channels, out_channels=layer.out_channels,
                                       kernel_size=layer.kernel_size, attention="softmax",
                                       relative=layer.position == "relative", **dims)["total"],
        })
    modules = _module_flops(model, input_size)
    softmax_total = sum(r["softmax_flops"] for r in rows)
    linear_total = sum(r["linear_flops"] for r in rows)
    totals = {"softmax_attention_flops": softmax_total, "linear_attention_flops": linear_total,
              "model_flops_softmax": modules + softmax_total, "model_flops_linear": modules + linear_total}
    return rows, totals


def explain_repro(
    model_name: str = "repro_wrn", input_size: int = 32, epoch_seconds: dict[str | None, float] | None = None
) -> tuple[str, list[dict]]:
    """Why linear attention need not be faster at small maps, in numbers: per layer ``N`` against
    ``N*`` (:func:`repro_layers`), the attention FLOPs of both forms, and what they are worth in the
    whole model's FLOPs; with ``epoch_seconds`` (e.g. ``aalib.models.repro.study_epoch_seconds("cifar100")``) the
    study's measured LAA/AA time ratio beside the ratio the FLOP model predicts.

    Returns ``(text, layers)``: a short summary built from the numbers and the per-layer rows.
    """
    layers, totals = repro_layers(model_name, input_size)
    below = [r for r in layers if r["below_crossover"]]
    above = [r for r in layers if not r["below_crossover"]]

    def names(rows: list[dict]) -> str:
        return ", ".join(f"{r['layer']} (N={r['n']} vs N*={r['n_star']:.0f})" for r in rows) or "none"

    soft, lin = totals["softmax_attention_flops"], totals["linear_attention_flops"]
    model_ratio = totals["model_flops_linear"] / totals["model_flops_softmax"]
    lines = [
        f"{model_name} at {input_size}x{input_size}: {len(below)} of {len(layers)} attention layers have N < N* "
        f"(the linear form does more FLOPs there): {names(below)}.",
        f"N >= N* (linear cheaper): {names(above)}.",
        f"Attention FLOPs per image, summed over the layers: softmax {soft / 1e6:.1f} M, linear {lin / 1e6:.1f} M "
        f"(linear/softmax = {lin / soft:.2f}).",
        f"Share of the model's forward FLOPs: {100 * soft / totals['model_flops_softmax']:.1f} % (AA model), "
        f"{100 * lin / totals['model_flops_linear']:.1f} % (LAA model); the FLOP model predicts "
        f"LAA/AA model FLOPs = {model_ratio:.3f}.",
    ]
    if epoch_seconds is not None and "softmax" in epoch_seconds and "linear" in epoch_seconds:
        measured = epoch_seconds["linear"] / epoch_seconds["softmax"]
        lines.append(f"Measured LAA/AA seconds per epoch: {epoch_seconds['linear']:.2f} / {epoch_seconds['softmax']:.2f} "
                     f"= {measured:.3f} (FLOP model: {model_ratio:.3f}).")
    return "\n".join(lines), layers


# -- files ----------------------------------------------------------------------------------
def write_records_csv(path: str | Path, records: Sequence[dict]) -> None:
    """The flat records as CSV (columns :data:`RECORD_FIELDS`), written atomically."""
    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        writer.writerows({field: rec[field] for field in RECORD_FIELDS} for rec in records)

    atomic_write(path, write)


def _plain(value: Any) -> Any:
    """JSON fallback: dataclasses (PowerLaw, Crossover) as dicts, numpy scalars as numbers."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_results(output_dir: str | Path, results: dict[str, Any], figures: dict[str, "Figure"] | None = None) -> list[Path]:
    """Write ``complexity.json`` (``results``), ``complexity.csv`` (``results["records"]``) and each
    figure as ``<name>.png`` into ``output_dir``; returns the paths written."""
    out = Path(output_dir)
    write_json(out / "complexity.json", results, default=_plain)
    write_records_csv(out / "complexity.csv", results["records"])
    paths = [out / "complexity.json", out / "complexity.csv"]
    for name, figure in (figures or {}).items():
        paths.append(out / f"{name}.png")
        write_png(paths[-1], figure, dpi=120)
    return paths


# -- figures -----------------------------------------------------------------------------------
_METRIC_LABELS = {"ms": "time per forward + backward (ms)", "peak_mib": "peak memory (MiB)"}


def _loglog(ax: Any, ylabel: str) -> None:
    """Log-log axes in N with a top axis in map side length (N = side^2), and the legend."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("positions N = H x W")
    ax.set_ylabel(ylabel)
    ax.secondary_xaxis("top", functions=(np.sqrt, np.square)).set_xlabel("map side (pixels)")
    ax.legend(fontsize="small")


def plot_resolution(
    records: Sequence[dict],
    metric: str = "ms",
    *,
    analytic_n: float | None = None,
    crossovers: Sequence[Crossover] = (),
    title: str | None = None,
) -> "Figure":
    """Measured ``metric`` against ``N = H W`` on log-log axes: one line per variant (solid: ours,
    dashed: naive), the fitted slope in the legend, the analytic crossover ``N*`` (dotted) and each
    measured crossover of this metric that exists (dash-dotted).

    Built on a bare :class:`~matplotlib.figure.Figure` (no pyplot state): save it, or display it.
    """
    import matplotlib
    import seaborn as sns
    from matplotlib.figure import Figure

    if metric not in _METRIC_LABELS:
        raise ValueError(f"metric must be one of {list(_METRIC_LABELS)}, got {metric!r}")
    palette = dict(zip(layer_cost.VARIANTS, sns.color_palette("deep", len(layer_cost.VARIANTS))))
    with matplotlib.rc_context({**sns.axes_style("whitegrid"), **sns.plotting_context("notebook")}):
        fig = Figure(figsize=(7.5, 5), layout="tight")
        ax = fig.subplots()
        for (variant, impl), (n, y) in _curves(records, metric).items():
            label = f"{variant} ({impl})"
            if np.unique(n).size >= 2:
                label += f": slope {fit_power_law(n, y).exponent:.2f}"
            ax.plot(n, y, marker="o", linestyle="-" if impl == "ours" else "--", color=palette[variant], label=label)
        if analytic_n is not None:
            ax.axvline(analytic_n, color="0.3", linestyle=":", label=f"analytic crossover N* = {analytic_n:.0f}")
        for cross in crossovers:
            if cross.n is not None and cross.metric == metric:
                ax.axvline(cross.n, color=palette[cross.softmax], linestyle="-.",
                           label=f"measured crossover with {cross.softmax}: N = {cross.n:.0f}")
        _loglog(ax, _METRIC_LABELS[metric])
        fig.suptitle(title or f"{_METRIC_LABELS[metric].split(' (')[0].capitalize()} against resolution")
    return fig


def plot_cost_model(dk: int, dv: int, heads: int, n_range: tuple[float, float] = (4.0, 65536.0)) -> "Figure":
    """The cost model for one layer's ``dk, dv, heads``: attention FLOPs and memory (elements per
    image) of softmax (materialised and fused) and linear attention against N, log-log, with ``N*``."""
    import matplotlib
    import seaborn as sns
    from matplotlib.figure import Figure

    n = np.geomspace(*n_range, 200)
    dims = {"dk": dk, "dv": dv, "heads": heads}
    cross = analytic_crossover(**dims)
    with matplotlib.rc_context({**sns.axes_style("whitegrid"), **sns.plotting_context("notebook")}):
        fig = Figure(figsize=(12, 4.5), layout="tight")
        ax_t, ax_m = fig.subplots(1, 2)
        ax_t.plot(n, attention_flops(n, attention="softmax", **dims), label="softmax (slope 2)")
        ax_t.plot(n, attention_flops(n, attention="softmax", relative=True, **dims), "--", label="softmax + relative")
        ax_t.plot(n, attention_flops(n, attention="linear", **dims), label="linear (slope 1)")
        ax_t.axvline(cross["n"], color="0.3", linestyle=":", label=f"N* = {cross['n']:.0f} (side {cross['side']:.1f})")
        ax_m.plot(n, attention_memory(n, attention="softmax", **dims), label="softmax, maps materialised")
        ax_m.plot(n, attention_memory(n, attention="softmax", materialised=False, **dims), "--",
                  label="softmax, fused kernel")
        ax_m.plot(n, attention_memory(n, attention="linear", **dims), label="linear")
        _loglog(ax_t, "attention forward FLOPs per image")
        _loglog(ax_m, "attention elements per image")
        fig.suptitle(f"Cost model: dk={dk}, dv={dv}, {heads} heads (dkh={cross['dkh']}, dvh={cross['dvh']})")
    return fig
