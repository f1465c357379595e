"""A :class:`~aalib.config.TrainConfig` checked against the registries and turned into its parts.

The config module checks what it owns (types, ranges, the recipe); whether the model and the
dataset exist and take ``model_args`` / ``dataset_args`` is asked of their registries here, once,
so :func:`load_config` returns a config that :func:`aalib.train.train` accepts. The same module
builds the config's dataset and model for the trainer and for the analysis of finished runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from torch import nn

from . import data, models
from .checks import first_line
from .config import ConfigError, TrainConfig, check_config, read_config

__all__ = ["load_config", "validate_config", "load_dataset", "build_model_for"]

_PER_RUN = ("num_classes",)  # model arguments the trainer fills from the dataset


def validate_config(config: TrainConfig, where: str = "config") -> None:
    """:func:`~aalib.config.check_config`, then the model and dataset registries' checks of the
    names and arguments; raises ConfigError with one line naming ``where``."""
    check_config(config, where)
    for what, name, arguments, registered, check in (
        ("model", models.canonical_model_name(config.model), config.model_args, models.list_models(),
         models.check_model_arguments),
        ("dataset", config.dataset, config.dataset_args, data.list_datasets(), data.check_dataset_arguments),
    ):
        if name not in registered:
            raise ConfigError(f"{where}: unknown {what} {name!r}; allowed: {', '.join(registered)}")
        try:
            check(name, [key for key in arguments if key not in _PER_RUN])
        except ValueError as exc:
            raise ConfigError(f"{where}: {what}_args {first_line(exc)}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read ``path`` (YAML; None for the defaults), apply ``overrides``, type-check and validate."""
    config = read_config(path, overrides)
    validate_config(config, "config" if path is None else str(path))
    return config


def _dataset_kwargs(config: TrainConfig) -> dict[str, Any]:
    """``dataset_args`` plus ``root`` / ``download`` where the dataset's builder takes them."""
    kwargs = dict(config.dataset_args)
    takes = data.dataset_arguments(config.dataset)
    for key, value in (("root", config.data_root), ("download", config.download)):
        if key not in kwargs and key in takes:
            kwargs[key] = value
    return kwargs


def load_dataset(config: TrainConfig) -> data.ImageSplits:
    """The dataset's splits; bad arguments, corrupt or truncated files, wrong checksums, hostile
    archives and pickles become ConfigError (missing files stay FileNotFoundError)."""
    try:
        return data.build_dataset(config.dataset, **_dataset_kwargs(config))
    except (TypeError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"dataset {config.dataset!r}: {first_line(exc)}") from None


def build_model_for(config: TrainConfig, num_classes: int | None, image_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """The config's model for ``num_classes`` outputs; with ``image_shape`` (C, H, W) the model takes
    ``C`` input channels and the inputs are first checked to be no smaller than any kernel they
    reach (:func:`aalib.models.check_input_size`). ``model_args`` win over both."""
    kwargs = dict(config.model_args)
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    if image_shape is not None:
        kwargs.setdefault("in_channels", image_shape[0])
    try:
        model = models.build_model(config.model, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model_args for {config.model!r} rejected: {first_line(exc)}") from None
    if image_shape is not None:
        try:
            models.check_input_size(config.model, image_shape, **kwargs)
        except ValueError as exc:
            raise ConfigError(f"dataset {config.dataset!r}: {exc}") from None
    return model
