"""Interactive explorers for JupyterLab (ipywidgets): attention maps and receptive fields.

Computation and figures live in :mod:`aalib.analysis`; these classes only wire controls to it.
Each explorer exposes its controls as attributes, ``.widget`` (the container to display) and
``.last`` (what it computed last, figures included), so a test drives it without a browser::

    explorer = AttentionMapExplorer(sources)
    explorer.query_x.value = 3            # recomputes, as a user's slider move would
    explorer.last.maps["simple_aacnn"].grid_maps   # (1, H', W'), sums to 1

Sliders that trigger a forward pass have ``continuous_update=False``; the slow effective
receptive field (Luo et al. 2016) and captum attributions wait for a button.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import ipywidgets as widgets
from IPython.display import display
from matplotlib.figure import Figure
from torch import Tensor, nn

from .analysis import (
    EffectiveReceptiveField,
    LayerMaps,
    ModelSource,
    QueryMaps,
    ReceptiveField,
    as_sources,
    attention_figure,
    attention_sources,
    attribution_figure,
    attribution_study,
    erf_figure,
    erf_study,
    plot_context_maps,
    theoretical_figure,
    theoretical_receptive_fields,
)
from .models import attention_layers
from .runs import Run

__all__ = ["AttentionMapExplorer", "AttentionView", "ReceptiveFieldExplorer", "ReceptiveFieldView"]

Models = Mapping[str, ModelSource | Run | nn.Module] | Sequence[ModelSource | Run]
_NO_COMPARISON = "(none)"


def _slider(description: str, maximum: int, value: int = 0) -> widgets.IntSlider:
    return widgets.IntSlider(
        value=min(value, maximum), min=0, max=maximum, description=description, continuous_update=False,
        style={"description_width": "initial"},
    )


@dataclass
class AttentionView:
    """What :class:`AttentionMapExplorer` showed last."""

    image: int  # image index
    layer: int  # attention-layer index (clamped per model)
    head: int  # head shown (wrapped per layer)
    query: tuple[int, int]  # (y, x) input pixel
    maps: dict[str, QueryMaps]  # per model: the query's map (heads = (head,))
    figure: Figure
    context: dict[str, Tensor] = field(default_factory=dict)  # LAA models: (dkh, H', W') maps of the head
    context_figures: dict[str, Figure] = field(default_factory=dict)


class AttentionMapExplorer:
    """Where one query pixel attends, per AA/LAA layer and head (Bello et al. 2019; Shen et al. 2021).

    Controls: ``model`` and ``compare`` (a second model shown beside it: AA and LAA side by side
    when both are given), ``image``, ``layer``, ``head``, ``query_y``, ``query_x`` (input pixels).
    For an LAA model its global context maps for the chosen head are drawn too.

    Args:
        models: ``{name: ModelSource | Run | nn.Module}`` or a list of sources/runs
            (see :func:`aalib.analysis.as_sources`; models without attention are left out).
        image_count: test images per run when runs are given.
        images, normalize: images and preprocessing for bare ``nn.Module`` models.
        query: initial (y, x) query pixel; the image centre by default.
    """

    def __init__(
        self,
        models: Models,
        *,
        image_count: int = 8,
        images: Tensor | None = None,
        normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
        query: tuple[int, int] | None = None,
    ) -> None:
        self.sources = attention_sources(as_sources(models, image_count=image_count, images=images, normalize=normalize))
        if not self.sources:
            raise ValueError("none of the given models has an AA/LAA layer: nothing to explore")
        names = list(self.sources)
        first = self.sources[names[0]]
        height, width = first.image_size
        query = (height // 2, width // 2) if query is None else query
        self._cache: dict[tuple[str, int], list[LayerMaps]] = {}
        self._adjusting = False  # True while one control's change updates others: render once, after
        self.last: AttentionView | None = None

        self.model = widgets.Dropdown(options=names, value=names[0], description="model")
        other_kind = [n for n in names if self.sources[n].attention != first.attention]
        self.compare = widgets.Dropdown(
            options=[_NO_COMPARISON, *names[1:]], value=other_kind[0] if other_kind else _NO_COMPARISON, description="beside it"
        )
        self.image = _slider("image", min(len(s.images) for s in self.sources.values()) - 1)
        self.layer = widgets.Dropdown(description="layer")
        self.head = _slider("head", 0)
        self.query_y = _slider("query y", height - 1, query[0])
        self.query_x = _slider("query x", width - 1, query[1])
        self._set_layer_options()
        self.model.observe(self._on_model, names="value")
        self.layer.observe(self._on_layer, names="value")

        controls = {
            "model": self.model, "compare": self.compare, "image": self.image, "layer": self.layer,
            "head": self.head, "query_y": self.query_y, "query_x": self.query_x,
        }
        output = widgets.interactive_output(self._render, controls)
        self.widget = widgets.VBox([
            widgets.HBox([self.model, self.compare, self.layer]),
            widgets.HBox([self.image, self.head]),
            widgets.HBox([self.query_y, self.query_x]),
            output,
        ])

    # -- control plumbing -------------------------------------------------------------------
    def _set_compare_options(self) -> None:
        """Other models as comparison. A choice that is no longer valid (it became the main model)
        is replaced by the first model of the other attention kind (AA beside LAA), if any."""
        primary = self.sources[self.model.value]
        others = [n for n in self.sources if n != self.model.value]
        choice = self.compare.value
        if choice != _NO_COMPARISON and choice not in others:
            other_kind = [n for n in others if self.sources[n].attention != primary.attention]
            choice = other_kind[0] if other_kind else _NO_COMPARISON
        self.compare.options = [_NO_COMPARISON, *others]
        self.compare.value = choice

    def _set_layer_options(self) -> None:
        layers = attention_layers(self.sources[self.model.value].model)
        current = self.layer.value if isinstance(self.layer.value, int) else len(layers) - 1
        self.layer.options = [(f"{i}: {name} ({layer.attention})", i) for i, (name, layer) in enumerate(layers)]
        self.layer.value = min(current, len(layers) - 1)
        self._set_head_range()

    def _set_head_range(self) -> None:
        layers = attention_layers(self.sources[self.model.value].model)
        self.head.max = layers[self.layer.value][1].heads - 1

    @contextmanager
    def _settling(self) -> Iterator[None]:
        """Suppress rendering while one control's change updates others (nesting allowed)."""
        previous, self._adjusting = self._adjusting, True
        try:
            yield
        finally:
            self._adjusting = previous

    # These observers are registered before interactive_output's, so they run first; the
    # interactive observer then renders the settled state once.
    def _on_model(self, change: dict[str, Any]) -> None:
        with self._settling():
            self._set_compare_options()
            self._set_layer_options()

    def _on_layer(self, change: dict[str, Any]) -> None:
        if change["new"] is not None:
            with self._settling():
                self._set_head_range()

    # -- computation ------------------------------------------------------------------------
    def _render(self, model: str, compare: str, image: int, layer: int | None, head: int, query_y: int, query_x: int) -> None:
        if layer is None or self._adjusting:  # options being replaced, or other controls settling
            return
        shown = {model: self.sources[model]}
        if compare != _NO_COMPARISON:
            shown[compare] = self.sources[compare]
        figure, maps = attention_figure(shown, image, layer, (query_y, query_x), head=head, cache=self._cache)
        view = AttentionView(image=image, layer=layer, head=head, query=(query_y, query_x), maps=maps, figure=figure)
        for name, query_maps in maps.items():
            context = query_maps.layer.context
            if context is not None:
                wrapped = head % query_maps.layer.heads
                view.context[name] = context[0, wrapped]  # dkh, H', W'
                view.context_figures[name] = plot_context_maps(
                    context[0, wrapped : wrapped + 1], first_head=wrapped,
                    title=f"{name}: global context maps of {query_maps.layer.name}, head {wrapped} (Shen et al., Sec. 3.3)",
                )
        self.last = view
        display(figure)
        for context_figure in view.context_figures.values():
            display(context_figure)


@dataclass
class ReceptiveFieldView:
    """What :class:`ReceptiveFieldExplorer` showed last; the slow parts are None until computed."""

    models: tuple[str, ...]
    layer: int  # main-path layer index (clamped per model)
    theoretical: dict[str, list[ReceptiveField]]
    theoretical_figure: Figure
    erf: dict[str, dict[str, EffectiveReceptiveField]] | None = None  # model -> "untrained"/"trained" -> ERF
    erf_figure: Figure | None = None
    attributions: dict[str, dict[str, Tensor]] | None = None  # model -> method -> map
    attribution_figure: Figure | None = None


class ReceptiveFieldExplorer:
    """Theoretical vs effective receptive fields (Luo et al. 2016) and captum attributions.

    Controls: ``models`` (several), ``layer`` (main-path layer index, as listed for the first
    model), and for the slow part ``erf_images``, ``attribution_images``, ``ig_steps`` and
    ``compute_button``: ERF heatmaps untrained vs trained, then Integrated Gradients and Grad-CAM
    of the same images side by side. The theoretical plot follows the controls at once.

    Args: as :class:`AttentionMapExplorer` (every model is kept, with or without attention).
    """

    def __init__(
        self,
        models: Models,
        *,
        image_count: int = 8,
        images: Tensor | None = None,
        normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
        ig_steps: int = 32,
    ) -> None:
        self.sources = as_sources(models, image_count=image_count, images=images, normalize=normalize)
        names = list(self.sources)
        first = self.sources[names[0]]
        available = min(len(s.images) for s in self.sources.values())
        fields = theoretical_receptive_fields(first.untrained)
        self.last: ReceptiveFieldView | None = None

        self.models = widgets.SelectMultiple(options=names, value=tuple(names), description="models", rows=min(6, len(names)))
        self.layer = widgets.Dropdown(
            options=[(f"{i}: {f.name} ({f.kind})", i) for i, f in enumerate(fields)], value=len(fields) - 1, description="layer"
        )
        self.erf_images = _slider("ERF images", available, available)
        self.erf_images.min = 1
        self.attribution_images = _slider("attribution images", available, min(2, available))
        self.attribution_images.min = 1
        self.ig_steps = widgets.IntSlider(value=ig_steps, min=4, max=128, step=4, description="IG steps", continuous_update=False)
        self.compute_button = widgets.Button(description="Compute ERF and attributions", button_style="primary",
                                             layout=widgets.Layout(width="auto"))
        self.compute_button.on_click(lambda _button: self.compute())
        self._slow_output = widgets.Output()

        theoretical_output = widgets.interactive_output(self._render_theoretical, {"models": self.models, "layer": self.layer})
        self.widget = widgets.VBox([
            widgets.HBox([self.models, self.layer]),
            theoretical_output,
            widgets.HBox([self.erf_images, self.attribution_images, self.ig_steps]),
            self.compute_button,
            self._slow_output,
        ])

    def _selected(self) -> dict[str, ModelSource]:
        return {name: self.sources[name] for name in self.models.value}

    def _render_theoretical(self, models: tuple[str, ...], layer: int) -> None:
        self._slow_output.clear_output()
        if not models:
            self.last = None
            print("Select at least one model.")
            return
        figure, fields = theoretical_figure(self._selected(), highlight=layer)
        self.last = ReceptiveFieldView(models=tuple(models), layer=layer, theoretical=fields, theoretical_figure=figure)
        display(figure)
        with self._slow_output:
            print("Press the button to compute the effective receptive fields and the attributions.")

    def compute(self) -> ReceptiveFieldView | None:
        """The slow part (what the button does): ERFs at the chosen layer, untrained vs trained,
        then IG and Grad-CAM; fills ``.last`` and draws into the explorer."""
        if self.last is None:
            return None
        sources = self._selected()
        view = self.last
        self._slow_output.clear_output(wait=True)
        with self._slow_output:
            print("Computing...")
            view.erf = erf_study(sources, view.layer, self.erf_images.value)
            view.erf_figure = erf_figure(sources, view.erf, view.layer)
            view.attributions = attribution_study(sources, self.attribution_images.value, n_steps=self.ig_steps.value)
            view.attribution_figure = attribution_figure(sources, view.attributions)
            self._slow_output.clear_output(wait=True)
            display(view.erf_figure)
            display(view.attribution_figure)
        return view
