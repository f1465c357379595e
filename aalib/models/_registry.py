"""Model registry: builders registered by name, built by name with checked keyword arguments.

Follows timm's ``register_model`` / ``create_model`` / ``list_models`` (``timm/models/_registry.py``):
a builder is a plain function whose keyword-only arguments are the model's options, so the
registry can tell a misspelt option from a real one before anything is built.
"""

from __future__ import annotations

import inspect
import warnings
from functools import partial
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..checks import check_arguments, first_line
from ..layers import AugmentedConv2d

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
]

ModelBuilder = Callable[..., nn.Module]

_MODELS: dict[str, ModelBuilder] = {}
_ALIASES: dict[str, str] = {}  # deprecated name -> registered name

_KEYWORD_KINDS = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Decorator: register ``fn`` as the builder of the model named ``fn.__name__``."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"a model named {name!r} is already registered (by {_MODELS[name].__module__})")
    _MODELS[name] = fn
    return fn


def register_alias(old: str, name: str) -> None:
    """Keep ``old`` working as a deprecated name of the registered model ``name``: building or
    asking for it gives a DeprecationWarning that names the new one."""
    if name not in _MODELS:
        raise ValueError(f"cannot alias {old!r} to unregistered model {name!r}")
    _ALIASES[old] = name


def list_models(deprecated: bool = False) -> list[str]:
    """Names of all registered models, sorted; with ``deprecated``, their deprecated aliases too."""
    return sorted([*_MODELS, *(_ALIASES if deprecated else ())])


def canonical_model_name(name: str) -> str:
    """The registered name behind ``name`` (itself unless it is a deprecated alias); for reading
    runs that were made under an old name."""
    return _ALIASES.get(name, name)


def _builder(name: str) -> ModelBuilder:
    name = canonical_model_name(name)
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(list_models())}")
    return _MODELS[name]


def model_arguments(name: str) -> dict[str, Any]:
    """The options of model ``name`` with their defaults (what ``build_model`` accepts)."""
    params = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind in _KEYWORD_KINDS}


def check_model_arguments(name: str, arguments: Iterable[str]) -> None:
    """ValueError for an unknown model ``name`` or an argument it does not take (lists the allowed)."""
    check_arguments(f"model {name!r}", arguments, model_arguments(name))


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with the given options.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or an option the model
            does not take (the message names it and lists the allowed ones).
    """
    check_model_arguments(name, kwargs)
    if name in _ALIASES:
        warnings.warn(f"model {name!r} is deprecated; use {_ALIASES[name]!r}", DeprecationWarning, stacklevel=2)
    return _builder(name)(**kwargs)


_MAX_SIDE = 1 << 14  # the search for the smallest usable input stops here


def _kernel_problem(model: nn.Module, channels: int, height: int, width: int) -> str | None:
    """The first layer whose kernel is larger than its input map for a (1, C, H, W) input, or None."""
    found: list[str] = []

    def check(name: str, module: nn.Module, args: tuple[Any, ...]) -> None:
        kernel = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        size = tuple(args[0].shape[-2:])
        if not found and (size[0] < kernel[0] or size[1] < kernel[1]):
            found.append(f"layer '{name}' ({kernel[0]}x{kernel[1]} kernel) would see a {size[0]}x{size[1]} map")

    kernels = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    handles = [module.register_forward_pre_hook(partial(check, name)) for name, module in model.named_modules()
               if isinstance(module, kernels)]
    try:
        with torch.no_grad():
            model(torch.empty(1, channels, height, width, device="meta"))
    except RuntimeError as exc:  # e.g. a pooling whose output would be empty
        found.append(first_line(exc))
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def check_input_size(name: str, shape: tuple[int, int, int], **kwargs: Any) -> None:
    """Raise ValueError if model ``name`` would apply a kernel to a feature map smaller than it.

    The models pad their convolutions ('same'), so they run at any size, but a 3x3 kernel on a
    1x1 or 2x2 map sees mostly padding: the input is too small for the architecture's strides.
    ``shape`` is one input image's (C, H, W). The model is built and run on the meta device (no
    memory, no arithmetic); the message names the first such layer and the smallest square input
    without one.
    """
    channels, height, width = shape
    with torch.device("meta"):
        model = build_model(name, **kwargs).eval()
    problem = _kernel_problem(model, channels, height, width)
    if problem is None:
        return
    low, high = max(height, width), max(height, width) * 2
    while high < _MAX_SIDE and _kernel_problem(model, channels, high, high) is not None:
        low, high = high, high * 2
    while high - low > 1:  # invariant: low fails, high works (map sizes grow with the input)
        middle = (low + high) // 2
        low, high = (middle, high) if _kernel_problem(model, channels, middle, middle) else (low, middle)
    raise ValueError(
        f"{height}x{width} inputs are too small for model {name!r}: {problem}; "
        f"allowed: inputs of at least {high}x{high} (or a model with fewer strided stages)"
    )


def attention_layers(model: nn.Module) -> list[tuple[str, AugmentedConv2d]]:
    """The model's AA/LAA layers as ``(qualified name, layer)`` pairs, in forward order.

    The models of this package register their submodules in the order they run, so module
    registration order is forward order; ``layer.attention`` says ``"softmax"`` or ``"linear"``.
    """
    return [(name, module) for name, module in model.named_modules() if isinstance(module, AugmentedConv2d)]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
