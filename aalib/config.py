"""Training configuration: one dataclass, loaded strictly from YAML.

nanoGPT's habit (one config object, defaults in one place, each experiment file lists only what
it changes) without its ``exec()`` override: a YAML file is read with ``yaml.safe_load`` into
:class:`TrainConfig`, and an unknown key or a value of the wrong type is an error that names the
file, the key and the valid keys. ``--set key=value`` overrides parse ``value`` as a YAML scalar
(``--set lr=0.05``, ``--set seeds=[0,1]``, ``--set model_args.heads=4``).

The defaults are the Zagoruyko & Komodakis CIFAR recipe (SGD with Nesterov momentum 0.9, lr 0.1,
weight decay 5e-4, x0.2 at epochs 60/120/160 of 200, batch 128, crop + flip, mean/std
normalisation), so a ``params/sound/*.yaml`` file only names the model and the dataset.

    from aalib.experiment import load_config  # this file's checks plus the registries'
    config = load_config("params/smoke.yaml", overrides=["epochs=2", "model_args.dv=8"])
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

__all__ = [
    "ConfigError",
    "SCHEDULES",
    "TrainConfig",
    "config_diff",
    "config_from_dict",
    "read_config",
    "read_params",
    "check_config",
    "RESUME_NEUTRAL_KEYS",
]

SCHEDULES: tuple[str, ...] = ("cosine", "multistep", "constant")


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line (no traceback)."""


@dataclass
class TrainConfig:
    # --- what to train -------------------------------------------------------------------------
    name: str = "run"  # experiment name; the default output folder is runs/<name>
    label: str = ""  # how reports name this experiment ("" means the model's name in the study, e.g. Simple-LAACNN)
    model: str = "wrn"  # registered model name (aalib.models.list_models())
    model_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of build_model
    dataset: str = "cifar100"  # registered dataset name (aalib.data.list_datasets())
    dataset_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of build_dataset
    data_root: str = "data"  # dataset folder, passed as `root` to datasets that take one (dataset_args.root wins)
    download: bool = False  # fetch a missing dataset (passed as `download`; dataset_args.download wins)
    # --- optimisation --------------------------------------------------------------------------
    epochs: int = 200  # passes over the training split
    batch_size: int = 128  # global batch (split evenly over DDP processes)
    eval_batch_size: int = 500  # batch for validation and test (no gradients, so larger)
    lr: float = 0.1  # peak learning rate of SGD
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (Z&K and the study both use it)
    weight_decay: float = 5e-4  # L2 penalty through SGD's weight_decay (all parameters)
    schedule: str = "multistep"  # "cosine" (per step), "multistep" (per epoch) or "constant"
    milestones: list[int] = field(default_factory=lambda: [60, 120, 160])  # multistep: epochs where lr is multiplied by gamma
    gamma: float = 0.2  # multistep: factor applied at each milestone
    warmup_epochs: float = 0.0  # linear warm-up from lr/steps to lr over this many epochs (any schedule)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (train and validation loss alike)
    # --- data pipeline -------------------------------------------------------------------------
    augment: bool = True  # random crop (reflect-padded by crop_padding) + horizontal flip of training batches
    crop_padding: int = 4  # padding of the random crop when augment is on
    normalize: bool = True  # subtract the dataset mean and divide by its std (else only /255)
    # --- reproducibility -----------------------------------------------------------------------
    seed: int = 0  # seeds model init, dropout and the loader's order/augmentation
    seeds: list[int] | None = None  # several seeds: each runs into <out>/seed<k> (overrides seed)
    # --- hardware ------------------------------------------------------------------------------
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"
    bf16: bool = False  # bfloat16 autocast for forward and loss (also allowed on the CPU)
    channels_last: bool = False  # NHWC memory format for the model and its input batches
    compile: bool = False  # torch.compile the model (model.compile(), before the DDP wrapper)
    retain_freed_memory: bool = True  # glibc: keep freed host memory for reuse, no page faults each step (aalib.memory)
    # --- bookkeeping ---------------------------------------------------------------------------
    log_every: int = 100  # a log line every this many steps (0: epoch lines only)
    progress: bool = True  # tqdm bars (shown only on a TTY and on rank 0 anyway)


# Keys that may differ between a checkpoint and the config resuming it: they change where or how
# fast a run goes, not what it computes.
RESUME_NEUTRAL_KEYS: frozenset[str] = frozenset(
    {"name", "label", "device", "data_root", "download", "compile", "retain_freed_memory", "eval_batch_size", "log_every",
     "progress", "seeds"}
)

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _valid_keys() -> str:
    return ", ".join(_FIELDS)


# --- YAML -------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None


# --- type checking ----------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"list of {_type_name(item)}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise TypeError. Only int -> float is converted."""
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option)
            except TypeError:
                pass
        raise TypeError
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise TypeError
        return [_coerce(v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise TypeError
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError  # pragma: no cover (a field type this module does not know)


# --- building ---------------------------------------------------------------------------------


def config_from_dict(raw: Any, where: str = "config") -> TrainConfig:
    """Build a TrainConfig from a mapping; unknown keys and wrong types raise ConfigError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in _FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {_valid_keys()}")
    values = {}
    for key, value in raw.items():
        tp = _HINTS[key]
        try:
            values[key] = _coerce(value, tp)
        except TypeError:
            raise ConfigError(
                f"{where}: {key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__}); "
                f"valid keys: {_valid_keys()}"
            ) from None
    return TrainConfig(**values)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model_args.heads=4"`` -> (["model_args", "heads"], 4); the value is a YAML scalar or flow."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value")
    path = key.split(".")
    if any(not part for part in path):
        raise ConfigError(f"--set {text!r}: empty key component")
    return path, _yaml_load(value, f"--set {key}") if value.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key=value`` strings to a raw config mapping (a copy is returned)."""
    raw = dict(raw)
    for text in overrides:
        path, value = parse_override(text)
        top = path[0]
        if top not in _FIELDS:
            raise ConfigError(f"--set {text!r}: unknown key {top!r}; valid keys: {_valid_keys()}")
        if len(path) == 1:
            raw[top] = value
            continue
        if typing.get_origin(_HINTS[top]) is not dict:
            raise ConfigError(f"--set {text!r}: {top} is not a mapping, so {'.'.join(path)} cannot be set")
        node = raw[top] = dict(raw.get(top) or {})
        for part in path[1:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[path[-1]] = value
    return raw


def read_params(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML params file (None: empty) with ``overrides`` applied, unchecked."""
    raw: Any = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
        raw = _yaml_load(text, str(path))
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(raw).__name__}")
    return apply_overrides(raw, overrides)


def read_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read ``path`` (YAML; None for the defaults) with ``overrides`` into a type-checked config.

    Values are checked where the config is used (:func:`aalib.train.train` checks it before any
    work) or at once by :func:`aalib.experiment.load_config`.
    """
    return config_from_dict(read_params(path, overrides), "config" if path is None else str(path))


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def check_config(config: TrainConfig, where: str = "config") -> None:
    """The config's own value checks (types were checked on loading); raises ConfigError with one line.

    Whether the model and dataset exist and take ``model_args`` / ``dataset_args`` is their
    registries' rule: :func:`aalib.experiment.validate_config` asks them after this.
    """

    def fail(message: str) -> None:
        raise ConfigError(f"{where}: {message}")

    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(config, key) <= 0:
            fail(f"{key} must be a positive integer, got {getattr(config, key)}")
    if not (math.isfinite(config.lr) and config.lr > 0):
        fail(f"lr must be a positive number, got {config.lr}")
    if not 0 <= config.momentum < 1:
        fail(f"momentum must lie in [0, 1), got {config.momentum}")
    if config.nesterov and config.momentum == 0:
        fail("nesterov needs momentum > 0")
    if config.weight_decay < 0:
        fail(f"weight_decay must be >= 0, got {config.weight_decay}")
    if config.schedule not in SCHEDULES:
        fail(f"unknown schedule {config.schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if config.milestones != sorted(config.milestones) or any(m <= 0 for m in config.milestones):
        fail(f"milestones must be increasing positive epochs, got {config.milestones}")
    if not 0 < config.gamma <= 1:
        fail(f"gamma must lie in (0, 1], got {config.gamma}")
    if not 0 <= config.warmup_epochs < config.epochs:
        fail(f"warmup_epochs must lie in [0, epochs), got {config.warmup_epochs}")
    if not 0 <= config.label_smoothing < 1:
        fail(f"label_smoothing must lie in [0, 1), got {config.label_smoothing}")
    if config.crop_padding < 0:
        fail(f"crop_padding must be >= 0, got {config.crop_padding}")
    if config.log_every < 0:
        fail(f"log_every must be >= 0, got {config.log_every}")
    if config.seeds is not None and (not config.seeds or len(set(config.seeds)) != len(config.seeds)):
        fail(f"seeds must be a non-empty list of distinct integers, got {config.seeds}")
    if any(s < 0 for s in [config.seed, *(config.seeds or [])]):
        fail("seeds must be >= 0")
    if not _DEVICE.match(config.device):
        fail(f"unknown device {config.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
    if not re.match(r"^[\w.+-]+$", config.name):
        fail(f"name must be a plain folder name (letters, digits, _ . + -), got {config.name!r}")
    for key in ("model_args", "dataset_args"):
        bad = [k for k in getattr(config, key) if not k.isidentifier()]
        if bad:
            fail(f"{key} keys must be identifiers, got {bad}")


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: frozenset[str] = RESUME_NEUTRAL_KEYS) -> list[str]:
    """Keys (``model_args.heads`` style for nested ones) whose values differ, minus ``ignore``."""
    differ = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differ += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)]
        elif a != b:
            differ.append(key)
    return differ


_MISSING = object()
