"""What the trained models do: attention maps, receptive fields, attributions.

* :mod:`.maps`: each AA/LAA layer's attention maps (Bello et al. 2019) and LAA global context
  maps (Shen et al. 2021), read off a forward pass through hooks; query-pixel coordinates.
* :mod:`.receptive`: theoretical receptive field per layer (global from the first attention
  layer on) and Luo et al.'s (2016) effective receptive field.
* :mod:`.attribution`: captum's Integrated Gradients and Grad-CAM.
* :mod:`.plots`: figure builders; :mod:`.views`: computation + figure, shared by
  :mod:`aalib.widgets` and the notebooks; :mod:`.sources`: the models and images to analyse.

>>> from aalib.analysis import load_sources, attention_figure
>>> sources, note = load_sources("runs/long_range", image_count=4)   # untrained fallback if none
>>> fig, maps = attention_figure(sources, image_index=0, layer_index=1, query=(16, 16))
"""

from .attribution import default_gradcam_layer, grad_cam, integrated_gradients, predicted_class
from .maps import (
    LayerMaps,
    capture_layer_inputs,
    collect_attention_maps,
    grid_index,
    input_to_grid,
    query_map,
    upsample_to_image,
)
from .plots import (
    AttentionPanel,
    image_for_display,
    plot_attention_over_image,
    plot_attributions,
    plot_context_maps,
    plot_erf_grid,
    plot_theoretical_rf,
    save_figure,
)
from .receptive import EffectiveReceptiveField, ReceptiveField, effective_receptive_field, theoretical_receptive_fields
from .sources import ModelSource, as_sources, from_run, load_sources, reinitialised, untrained_sources
from .views import (
    QueryMaps,
    attention_figure,
    attention_sources,
    attribution_figure,
    attribution_study,
    erf_figure,
    erf_summary,
    erf_study,
    image_layer_maps,
    main_path_layer,
    query_maps,
    theoretical_figure,
)

__all__ = [
    "AttentionPanel",
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
    "capture_layer_inputs",
    "collect_attention_maps",
    "default_gradcam_layer",
    "effective_receptive_field",
    "erf_figure",
    "erf_summary",
    "erf_study",
    "from_run",
    "grad_cam",
    "grid_index",
    "image_for_display",
    "image_layer_maps",
    "input_to_grid",
    "integrated_gradients",
    "load_sources",
    "main_path_layer",
    "plot_attention_over_image",
    "plot_attributions",
    "plot_context_maps",
    "plot_erf_grid",
    "plot_theoretical_rf",
    "predicted_class",
    "query_map",
    "query_maps",
    "reinitialised",
    "save_figure",
    "theoretical_figure",
    "theoretical_receptive_fields",
    "untrained_sources",
    "upsample_to_image",
]
