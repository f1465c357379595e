"""Figure builders for the analysis notebooks; each returns a :class:`matplotlib.figure.Figure`.

Figures are made with ``Figure(...)``, not ``pyplot``, so nothing is shown or kept alive behind
the caller's back: a notebook displays the returned figure, a script saves it
(:func:`save_figure`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .maps import QueryMaps
from .receptive import EffectiveReceptiveField, ReceptiveField

__all__ = [
    "plot_attention_over_image",
    "plot_context_maps",
    "plot_theoretical_rf",
    "plot_erf_grid",
    "plot_attributions",
    "save_figure",
]

_MAP_CMAP = "inferno"
_OVERLAY_ALPHA = 0.6


def image_for_display(image: Tensor) -> np.ndarray:
    """A (3, H, W) or grey (1, H, W) uint8 image (or floats in [0, 1]) as an (H, W, 3) float array
    in [0, 1]; a grey image's channel is repeated."""
    array = image.detach().cpu().float().numpy()
    if not image.dtype.is_floating_point:
        array = array / 255.0
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)  # 3, H, W
    return np.clip(array.transpose(1, 2, 0), 0.0, 1.0)  # H, W, 3


def _hide_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attention_over_image(rows: Sequence[tuple[str, Tensor, QueryMaps]]) -> Figure:
    """One row per ``(title, image, maps)`` (e.g. AA and LAA side by side; ``image``: C, H, W
    uint8; ``maps``: :func:`~aalib.analysis.maps.query_maps` of one layer for that image). Columns:
    the image with the query pixel (cyan cross), then each head's map over the image, its peak
    marked (white circle)."""
    if not rows:
        raise ValueError("no rows to plot")
    columns = 1 + max(maps.image_maps.shape[0] for _, _, maps in rows)
    fig = Figure(figsize=(2.4 * columns, 2.5 * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), columns, squeeze=False))
    for row, (title, image, maps) in zip(axes, rows):
        picture = image_for_display(image)
        row[0].imshow(picture, interpolation="nearest")
        row[0].plot(maps.query[1], maps.query[0], "c+", markersize=12, markeredgewidth=2)
        row[0].set_title(title, fontsize=8, loc="left")
        for col, ax in enumerate(row[1:]):
            if col >= maps.image_maps.shape[0]:
                ax.axis("off")
                continue
            ax.imshow(picture, interpolation="nearest")
            ax.imshow(maps.image_maps[col].cpu().numpy(), cmap=_MAP_CMAP, alpha=_OVERLAY_ALPHA, interpolation="nearest")
            ax.plot(maps.query[1], maps.query[0], "c+", markersize=10, markeredgewidth=2)
            ax.plot(maps.argmax[col][1], maps.argmax[col][0], "wo", markersize=7, fillstyle="none")
            ax.set_title(f"head {maps.heads[col]}", fontsize=8)
        for ax in row:
            _hide_ticks(ax)
    return fig


def plot_context_maps(context: Tensor, *, title: str = "", max_maps: int = 8, first_head: int = 0) -> Figure:
    """LAA global context maps (Shen et al., Sec. 3.3): ``(heads, dkh, H', W')``, one row per
    head, the first ``max_maps`` of its ``dkh`` maps (each a distribution over positions).
    Rows are labelled from ``first_head`` (for a slice of a layer's heads)."""
    if context.dim() != 4:
        raise ValueError(f"context must be (heads, dkh, H', W'), got shape {tuple(context.shape)}")
    heads, dkh = context.shape[:2]
    shown = min(dkh, max_maps)
    fig = Figure(figsize=(1.6 * shown + 0.6, 1.6 * heads + 0.5), layout="constrained")
    axes = fig.subplots(heads, shown, squeeze=False)
    for head in range(heads):
        for j in range(shown):
            ax = axes[head, j]
            ax.imshow(context[head, j].cpu().numpy(), cmap=_MAP_CMAP, interpolation="nearest")
            _hide_ticks(ax)
            if head == 0:
                ax.set_title(f"map {j}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"head {first_head + head}", fontsize=8)
    fig.suptitle(title or f"global context maps ({shown} of {dkh} per head)", fontsize=9)
    return fig


def plot_theoretical_rf(
    fields: Mapping[str, Sequence[ReceptiveField]], input_size: int, *, highlight: int | None = None
) -> Figure:
    """Theoretical receptive field (pixels per side) after each layer, one line per model.

    Layers whose units see the whole input (an attention layer at or before them) are drawn at
    ``input_size`` with a filled marker; the dashed line is the image side; ``highlight`` (a
    layer index) is shaded."""
    if not fields:
        raise ValueError("no models to plot")
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.subplots()
    palette = sns.color_palette("colorblind", len(fields))
    styles = ("-", "--", ":", "-.")
    longest: Sequence[ReceptiveField] = ()
    for k, (colour, (name, layers)) in enumerate(zip(palette, fields.items())):
        # a small horizontal dodge keeps models with equal fields (AA and LAA) both visible
        steps = np.arange(1, len(layers) + 1) + 0.06 * (k - (len(fields) - 1) / 2)
        sizes = [f.size(input_size) for f in layers]
        filled = [colour if f.is_global else "white" for f in layers]
        ax.plot(steps, sizes, linestyle=styles[k % len(styles)], color=colour, label=name)
        ax.scatter(steps, sizes, c=filled, edgecolors=[colour], s=36, zorder=3)
        longest = layers if len(layers) > len(longest) else longest
    ax.axhline(input_size, color="grey", linestyle="--", linewidth=1)
    if highlight is not None:
        ax.axvspan(highlight + 0.6, highlight + 1.4, color="grey", alpha=0.15, linewidth=0)
    ax.text(1, input_size, f" whole image ({input_size} px)", va="bottom", fontsize=8, color="grey")
    ax.set_xticks(np.arange(1, len(longest) + 1))
    ax.set_xticklabels([f.name for f in longest], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("receptive field (px per side)")
    ax.legend(fontsize=8)
    ax.set_title("theoretical receptive field (filled: global, through attention)", fontsize=9)
    return fig


def plot_erf_grid(
    erfs: Mapping[str, Mapping[str, EffectiveReceptiveField]],
    theoretical: Mapping[str, ReceptiveField] | None = None,
    *,
    mass: float = 0.9,
) -> Figure:
    """ERF heatmaps (Luo et al. 2016): rows = models, columns = states (e.g. untrained, trained).

    The title gives the radius holding ``mass`` of the ERF; a cyan square outlines the
    theoretical receptive field when ``theoretical[model]`` is local."""
    if not erfs:
        raise ValueError("no ERFs to plot")
    states = list(dict.fromkeys(state for per_model in erfs.values() for state in per_model))
    fig = Figure(figsize=(2.8 * len(states) + 0.8, 2.6 * len(erfs)), layout="constrained")
    axes = fig.subplots(len(erfs), len(states), squeeze=False)
    cmap = sns.color_palette("rocket", as_cmap=True)
    for row, (name, per_model) in zip(axes, erfs.items()):
        for ax, state in zip(row, states):
            _hide_ticks(ax)
            if state not in per_model:
                ax.axis("off")
                ax.set_title(f"{name}: no {state} model", fontsize=8)
                continue
            erf = per_model[state]
            image = ax.imshow(erf.map.cpu().numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            field = None if theoretical is None else theoretical.get(name)
            if field is not None and not field.is_global:
                half = field.local_size / 2
                ax.add_patch(Rectangle((erf.centre[1] - half, erf.centre[0] - half), field.local_size, field.local_size,
                                       fill=False, edgecolor="cyan", linewidth=1))
            ax.set_title(f"{name} ({state})\nr{int(mass * 100)} = {erf.radius(mass):.1f} px", fontsize=8)
        fig.colorbar(image, ax=row[-1], shrink=0.8)
    return fig


def plot_attributions(
    images: Tensor,
    attributions: Mapping[str, Mapping[str, Tensor]],
    *,
    titles: Sequence[str] = (),
) -> Figure:
    """Rows = images; columns = the image, then for each model each attribution method.

    ``attributions[model][method]`` is (B, H, W), or (B, 3, H, W) reduced to the absolute value
    summed over channels (the usual picture of Integrated Gradients). Each map is scaled to its max."""
    count = images.shape[0]
    columns = [(model, method) for model, methods in attributions.items() for method in methods]
    fig = Figure(figsize=(2.0 * (1 + len(columns)), 2.1 * count + 0.4), layout="constrained")
    axes = fig.subplots(count, 1 + len(columns), squeeze=False)
    for b in range(count):
        axes[b, 0].imshow(image_for_display(images[b]), interpolation="nearest")
        axes[b, 0].set_title(titles[b] if b < len(titles) else f"image {b}", fontsize=8)
        for ax, (model, method) in zip(axes[b, 1:], columns):
            value = attributions[model][method][b]
            value = value.abs().sum(dim=0) if value.dim() == 3 else value  # H, W
            peak = float(value.max())
            ax.imshow((value / peak if peak > 0 else value).cpu().numpy(), cmap=_MAP_CMAP, vmin=0, vmax=1)
            if peak == 0:  # e.g. Grad-CAM after its ReLU when every weighted channel is negative
                ax.text(0.5, 0.5, "all zero", color="white", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            if b == 0:
                ax.set_title(f"{model}\n{method}", fontsize=8)
        for ax in axes[b]:
            _hide_ticks(ax)
    return fig


def save_figure(fig: Figure, output_dir: str | Path | None, name: str, dpi: int = 120) -> Path | None:
    """Save ``fig`` as ``output_dir/name`` (PNG); nothing when ``output_dir`` is empty or None.

    Characters other than letters, digits, ``.``, ``-`` and ``_`` in ``name`` (e.g. the ``/`` of
    a run's folder) become ``_``."""
    if not output_dir:
        return None
    path = Path(output_dir) / re.sub(r"[^\w.-]+", "_", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
