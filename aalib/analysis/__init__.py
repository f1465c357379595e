"""What the trained models do: attention maps, receptive fields, attributions.

* :mod:`.maps`: each AA/LAA layer's attention maps (Bello et al. 2019) and LAA global context
  maps (Shen et al. 2021), read off a forward pass through hooks; query-pixel coordinates.
* :mod:`.receptive`: theoretical receptive field per layer (global from the first attention
  layer on) and Luo et al.'s (2016) effective receptive field.
* :mod:`.attribution`: captum's Integrated Gradients and Grad-CAM.
* :mod:`.plots`: figure builders; :mod:`.views`: computation + figure, shared by
  :mod:`aalib.widgets` and the notebooks; :mod:`.sources`: the models and images to analyse.
* :mod:`.long_range`: what a long-range run gets right, per colour pair, distance and position,
  and why some seeds fail (:func:`~aalib.analysis.long_range.diagnose`, used by the report).

The package exports the sources, the figure-level views the notebooks and :mod:`aalib.widgets`
call and the result types they return; the building blocks (hooks, grid coordinates, plot
builders) are imported from their submodule.

>>> from aalib.analysis import load_sources, attention_figure
>>> sources, note = load_sources("runs/long_range", image_count=4)   # untrained fallback if none
>>> fig, maps = attention_figure(sources, image_index=0, layer_index=1, query=(16, 16))
"""

from .attribution import default_gradcam_layer, grad_cam, integrated_gradients
from .maps import LayerMaps, QueryMaps
from .plots import plot_context_maps, save_figure
from .receptive import EffectiveReceptiveField, ReceptiveField, effective_receptive_field, theoretical_receptive_fields
from .sources import ModelSource, as_sources, load_sources, untrained_sources
from .views import (
    attention_figure,
    attention_sources,
    attribution_figure,
    attribution_study,
    erf_figure,
    erf_summary,
    erf_study,
    theoretical_figure,
)

__all__ = [
    "EffectiveReceptiveField",
    "LayerMaps",
    "ModelSource",
    "QueryMaps",
    "ReceptiveField",
    "as_sources",
    "attention_figure",
    "attention_sources",
    "attribution_figure",
    "attribution_study",
    "default_gradcam_layer",
    "effective_receptive_field",
    "erf_figure",
    "erf_summary",
    "erf_study",
    "grad_cam",
    "integrated_gradients",
    "load_sources",
    "plot_context_maps",
    "save_figure",
    "theoretical_figure",
    "theoretical_receptive_fields",
    "untrained_sources",
]
