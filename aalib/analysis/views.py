"""What the explorers and notebooks show, computed from :class:`~aalib.analysis.sources.ModelSource`s.

Each function here joins the computations of :mod:`.maps`, :mod:`.receptive` and
:mod:`.attribution` to the figure builders of :mod:`.plots`, so that the widgets
(:mod:`aalib.widgets`) and the notebooks' static figures draw exactly the same thing.
Layers are chosen by position (``layer_index``) so that one choice applies to several models of
the same family (Simple-CNN / -AACNN / -LAACNN share their layer names); an index past a
model's last layer means its last layer, and a negative index counts from the end.
"""

from __future__ import annotations

from typing import Mapping

from matplotlib.figure import Figure
from torch import Tensor

from ..models import attention_layers
from .attribution import grad_cam, integrated_gradients
from .maps import LayerMaps, QueryMaps, collect_attention_maps, query_maps
from .plots import plot_attention_over_image, plot_attributions, plot_erf_grid, plot_theoretical_rf
from .receptive import EffectiveReceptiveField, ReceptiveField, effective_receptive_field, theoretical_receptive_fields
from .sources import ModelSource

__all__ = [
    "attention_sources",
    "image_layer_maps",
    "attention_figure",
    "theoretical_figure",
    "erf_study",
    "erf_figure",
    "erf_summary",
    "attribution_study",
    "attribution_figure",
]


def attention_sources(sources: Mapping[str, ModelSource]) -> dict[str, ModelSource]:
    """The sources whose model has at least one AA/LAA layer, in the given order."""
    return {name: s for name, s in sources.items() if attention_layers(s.untrained)}


def image_layer_maps(source: ModelSource, image_index: int, trained: bool = True) -> list[LayerMaps]:
    """Maps of every attention layer of ``source``'s model (trained when available) for one image."""
    model = source.model if trained else source.untrained
    return collect_attention_maps(model, source.inputs(image_index))


def attention_figure(
    sources: Mapping[str, ModelSource],
    image_index: int,
    layer_index: int,
    query: tuple[int, int],
    head: int | None = None,
    cache: dict[tuple[str, int], list[LayerMaps]] | None = None,
) -> tuple[Figure, dict[str, QueryMaps]]:
    """One row per attention model (AA and LAA side by side): the image with the query, then the
    query's map for ``head`` (all heads when None; a head past a layer's count wraps around).

    ``cache`` maps ``(name, image_index)`` to :func:`image_layer_maps` results and is filled in.
    """
    cache = {} if cache is None else cache
    results, rows = {}, []
    for name, source in attention_sources(sources).items():
        key = (name, image_index)
        if key not in cache:
            cache[key] = image_layer_maps(source, image_index)
        layers = cache[key]
        layer = layers[min(layer_index, len(layers) - 1)]
        heads = None if head is None else [head % layer.heads]
        results[name] = query_maps(layer, source.image_size, query, heads)
        title = f"{name}, image {image_index}\n{layer.name} ({layer.attention}, {layer.grid[0]}x{layer.grid[1]})"
        rows.append((title, source.images[image_index], results[name]))
    if not rows:
        raise ValueError("none of the given models has an attention layer")
    return plot_attention_over_image(rows), results


def main_path_layer(source: ModelSource, layer_index: int) -> ReceptiveField:
    """The ``layer_index``-th conv/pool/AA layer of the source's model (clamped to its last)."""
    fields = theoretical_receptive_fields(source.untrained)
    return fields[min(layer_index, len(fields) - 1)]


def theoretical_figure(
    sources: Mapping[str, ModelSource], highlight: int | None = None
) -> tuple[Figure, dict[str, list[ReceptiveField]]]:
    """Theoretical receptive field per layer of every source's model, and the plot of it
    (``highlight``: a layer index to shade)."""
    fields = {name: theoretical_receptive_fields(s.untrained) for name, s in sources.items()}
    input_size = max(s.image_size[0] for s in sources.values())
    return plot_theoretical_rf(fields, input_size, highlight=highlight), fields


def erf_study(
    sources: Mapping[str, ModelSource], layer_index: int, image_count: int | None = None
) -> dict[str, dict[str, EffectiveReceptiveField]]:
    """ERF (Luo et al. 2016) of each source's ``layer_index``-th layer on its first ``image_count``
    images (all by default), for the untrained model and, when there is one, the trained model."""
    result = {}
    for name, source in sources.items():
        layer = main_path_layer(source, layer_index).name
        x = source.inputs(slice(0, image_count))
        states = {"untrained": source.untrained, "trained": source.trained}
        result[name] = {
            state: effective_receptive_field(model, x, layer) for state, model in states.items() if model is not None
        }
    return result


def erf_figure(sources: Mapping[str, ModelSource], erfs: Mapping[str, Mapping[str, EffectiveReceptiveField]], layer_index: int) -> Figure:
    """:func:`~aalib.analysis.plots.plot_erf_grid` with each model's theoretical field outlined."""
    theoretical = {name: main_path_layer(sources[name], layer_index) for name in erfs}
    return plot_erf_grid(erfs, theoretical)


def erf_summary(
    sources: Mapping[str, ModelSource], erfs: Mapping[str, Mapping[str, EffectiveReceptiveField]], layer_index: int,
    *, mass: float = 0.9, threshold: float = 0.05,
) -> list[dict[str, object]]:
    """One row per (model, state): layer, theoretical field (px, or the image side when global),
    ERF radius holding ``mass`` and fraction of pixels above ``threshold`` of the peak."""
    rows = []
    for name, per_state in erfs.items():
        field = main_path_layer(sources[name], layer_index)
        for state, erf in per_state.items():
            rows.append({
                "model": name,
                "state": state,
                "layer": erf.layer,
                "theoretical_rf_px": field.size(sources[name].image_size[0]),
                "theoretical_global": field.is_global,
                f"erf_radius{int(mass * 100)}_px": round(erf.radius(mass), 3),
                f"erf_fraction_above_{threshold:g}": round(erf.fraction_above(threshold), 4),
                "images": erf.images,
            })
    return rows


def attribution_study(
    sources: Mapping[str, ModelSource], image_count: int, *, n_steps: int = 32
) -> dict[str, dict[str, Tensor]]:
    """Integrated Gradients (B, 3, H, W) and Grad-CAM (B, H, W) of each source's model (trained when
    available) for its first ``image_count`` images, both explaining the true label (the predicted
    class when the source has no labels)."""
    result = {}
    for name, source in sources.items():
        x = source.inputs(slice(0, image_count))
        target = None if source.labels is None else source.labels[:image_count]
        result[name] = {
            "integrated gradients": integrated_gradients(source.model, x, target, n_steps=n_steps),
            "Grad-CAM": grad_cam(source.model, x, target),
        }
    return result


def attribution_figure(sources: Mapping[str, ModelSource], attributions: Mapping[str, Mapping[str, Tensor]]) -> Figure:
    """Images of the first source side by side with every model's attributions (the sources are
    expected to share their test images, as runs on one dataset configuration do)."""
    first = next(iter(sources.values()))
    count = next(iter(next(iter(attributions.values())).values())).shape[0]
    if first.labels is None:
        titles = [f"image {b}" for b in range(count)]
    else:
        titles = [f"image {b}: {first.classes[int(first.labels[b])] if first.classes else int(first.labels[b])}" for b in range(count)]
    return plot_attributions(first.images[:count], attributions, titles=titles)
