"""Model zoo: build models by name.

>>> from aalib.models import build_model, list_models, attention_layers
>>> model = build_model("repro_wrn", attention="softmax")          # the study's Wide-AAResNet
>>> model = build_model("wrn", depth=28, width=10, attention="softmax")  # Bello et al.'s AA-WRN-28-10
>>> [(name, layer.attention) for name, layer in attention_layers(model)][:1]
[('stage1.0.conv1', 'softmax')]

Registered models: ``wrn`` (Zagoruyko & Komodakis 2016, optionally attention-augmented as in
Bello et al. 2019), ``repro_wrn`` and ``repro_simple_cnn`` (the reproduced study's architectures).
Every model maps (B, C, H, W) to (B, num_classes) at any H x W (``in_channels=C``, 3 by default).
"""

from ._registry import (
    attention_layers,
    build_model,
    canonical_model_name,
    check_input_size,
    check_model_arguments,
    count_parameters,
    list_models,
    model_arguments,
    register_alias,
    register_model,
)
from .repro import SimpleCNN, repro_simple_cnn, repro_wrn
from .wrn import PreActBasicBlock, WideResNet, wrn

__all__ = [
    "register_model",
    "register_alias",
    "canonical_model_name",
    "build_model",
    "list_models",
    "model_arguments",
    "check_model_arguments",
    "attention_layers",
    "count_parameters",
    "check_input_size",
    "WideResNet",
    "PreActBasicBlock",
    "SimpleCNN",
    "wrn",
    "repro_wrn",
    "repro_simple_cnn",
]
