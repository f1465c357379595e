"""Model registry: builders registered by name, built by name with checked keyword arguments.

Follows timm's ``register_model`` / ``create_model`` / ``list_models`` (``timm/models/_registry.py``):
a builder is a plain function whose keyword-only arguments are the model's options, so the
registry can tell a misspelt option from a real one before anything is built.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..layers import AugmentedConv2d

__all__ = ["register_model", "build_model", "list_models", "model_arguments", "attention_layers", "count_parameters"]

ModelBuilder = Callable[..., nn.Module]

_MODELS: dict[str, ModelBuilder] = {}

_KEYWORD_KINDS = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Decorator: register ``fn`` as the builder of the model named ``fn.__name__``."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"a model named {name!r} is already registered (by {_MODELS[name].__module__})")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def _builder(name: str) -> ModelBuilder:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def model_arguments(name: str) -> dict[str, Any]:
    """The options of model ``name`` with their defaults (what ``build_model`` accepts)."""
    params = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind in _KEYWORD_KINDS}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with the given options.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or an option the model
            does not take (the message names it and lists the allowed ones).
    """
    allowed = model_arguments(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return _MODELS[name](**kwargs)


def attention_layers(model: nn.Module) -> list[tuple[str, AugmentedConv2d]]:
    """The model's AA/LAA layers as ``(qualified name, layer)`` pairs, in forward order.

    The models of this package register their submodules in the order they run, so module
    registration order is forward order; ``layer.attention`` says ``"softmax"`` or ``"linear"``.
    """
    return [(name, module) for name, module in model.named_modules() if isinstance(module, AugmentedConv2d)]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
