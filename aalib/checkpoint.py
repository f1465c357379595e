"""Checkpoint files: their format, safe loading, the RNG state they carry, the resume checks, and
``metrics.csv``, the checkpoint's metrics history as a table.

A checkpoint is a dict of tensors and plain Python types, so it loads with ``weights_only=True``:

* ``last.pt`` (:data:`RESUME_KEYS`, plus ``step`` and ``best_val_top1``): model, optimizer and
  scheduler states, the epoch it ends, the RNG states (:func:`rng_state`), the config and the
  metrics history: enough to resume exactly;
* ``best.pt``: ``format``, ``model``, ``epoch``, ``config`` and the epoch's ``metrics`` row.

The trainer writes both (:mod:`aalib.train`); the analysis of finished runs reads them
(:mod:`aalib.runs`) through :func:`load_checkpoint`. A file that is corrupt, refused as unsafe,
of another format or of another configuration is a one-line :class:`CheckpointError`
(a :class:`~aalib.config.ConfigError`), raised before anything is written.

``metrics.csv`` holds one row per epoch of the history (:data:`METRIC_COLUMNS`); the trainer
rewrites it whole from the history after each epoch and on resume, so it never holds a row that
``last.pt`` does not.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import first_line
from .config import ConfigError, TrainConfig, config_diff
from .io import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "METRIC_COLUMNS",
    "RESUME_KEYS",
    "CheckpointError",
    "load_checkpoint",
    "load_state",
    "read_resumable",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "write_metrics_csv",
]

CHECKPOINT_FORMAT = 1
RESUME_KEYS = ("format", "model", "optimizer", "scheduler", "epoch", "rng", "config", "history")  # last.pt needs

METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",  # 1-based
    "lr",  # learning rate of the epoch's last step
    "train_loss",  # per-sample mean over the epoch (augmented batches, train mode)
    "train_top1",  # % correct on the same batches
    "val_loss",  # per-sample mean, same criterion and scale as train_loss
    "val_top1",  # %
    "val_top5",  # %
    "train_seconds",  # wall time of the training pass
    "eval_seconds",  # wall time of the validation pass
    "images_per_second",  # training images (all ranks) / train_seconds
    "peak_mem_mb",  # CUDA: peak allocated this epoch; CPU: peak resident set of the process so far
)


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be used: corrupt, refused as unsafe, or not this run's model."""


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the first sentence of a long one)."""
    text = first_line(exc).split(". ")[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """``torch.save`` to a temp file, fsync, os.replace (a crash leaves the previous file intact).

    A failed write (full disk, file size limit) raises the OSError itself: torch's zip writer
    reports it as a RuntimeError ("unexpected pos ...") raised while handling the OSError.
    """

    def write(handle: io.BufferedWriter) -> None:
        try:
            torch.save(checkpoint, handle)
        except RuntimeError as exc:
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise

    atomic_write(path, write, binary=True)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: checkpoints hold only tensors and plain Python types.

    Raises :class:`CheckpointError` (one line) for a file that is truncated or corrupt, that is
    not a checkpoint dict, or whose pickle asks for anything else (code would run on loading);
    a missing file stays FileNotFoundError.
    """
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as exc:
        unsafe = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]  # a global it will not import
        if not unsafe:
            raise CheckpointError(f"{path}: corrupt checkpoint file ({_first_line(exc)}); "
                                  "delete it to start over, or use another --out") from None
        raise CheckpointError(
            f"{path}: refused to load: {unsafe[0]} (checkpoints are loaded with weights_only=True; "
            "allowed: tensors, numbers, strings, lists, dicts)"
        ) from None
    except Exception as exc:  # noqa: BLE001 (truncated zip, garbage bytes, empty file: all "corrupt")
        raise CheckpointError(f"{path}: corrupt checkpoint file ({_first_line(exc)}); "
                              "delete it to start over, or use another --out") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not an aalib checkpoint (holds a {type(checkpoint).__name__}, expected a dict)")
    return checkpoint


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """``metrics.csv``: a header and one row per epoch of ``history``, written atomically."""

    def write(handle: io.TextIOBase) -> None:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})

    atomic_write(path, write)


# --- RNG state (plain types and tensors, so weights_only loading works) ----------------------


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, Python and NumPy generators' states, as tensors and plain types."""
    version, state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only for the devices present)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (torch's seeds every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- resume checks ----------------------------------------------------------------------------


def read_resumable(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint at ``path`` that ``config`` resumes from, or None when there is no file.

    Raises :class:`CheckpointError` for a file that cannot be loaded, lacks any of
    :data:`RESUME_KEYS` or has another format, and ConfigError when it was written by a config
    that differs in a key that changes the computation (:func:`aalib.config.config_diff`).
    """
    if not path.exists():
        return None
    checkpoint = load_checkpoint(path, map_location="cpu")
    lacking = [key for key in RESUME_KEYS if key not in checkpoint]
    if lacking:
        raise CheckpointError(f"{path}: not a resumable aalib checkpoint (lacks {', '.join(lacking)}); "
                              "use another --out, or delete the folder to start over")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {checkpoint['format']!r}, this version reads "
                              f"{CHECKPOINT_FORMAT}; use another --out")
    config_dict = dataclasses.asdict(config)
    differ = config_diff(checkpoint["config"], config_dict)
    if differ:
        raise ConfigError(
            f"{path} was written by a different configuration; keys differ: "
            f"{_describe_diff(checkpoint['config'], config_dict, differ)} "
            f"(use another --out, or delete the folder to start over)"
        )
    return checkpoint


def _describe_diff(old: dict[str, Any], new: dict[str, Any], keys: list[str]) -> str:
    """``key: old -> new`` for each of ``keys`` (``top.sub`` for a key inside a dict field)."""

    def get(cfg: dict[str, Any], key: str) -> Any:
        top, _, sub = key.partition(".")
        value = cfg.get(top)
        return value.get(sub, "<unset>") if sub and isinstance(value, dict) else value

    return "; ".join(f"{k}: {get(old, k)!r} -> {get(new, k)!r}" for k in keys)


def load_state(path: Path, what: str, module: Any, state: Any) -> None:
    """``module.load_state_dict(state)``; a mismatch is a :class:`CheckpointError` of one line
    naming ``path``, ``what`` (model, optimizer, scheduler) and, for a model, a few keys."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        detail = _model_mismatch(module.state_dict(), state) if what == "model" else _first_line(exc)
        raise CheckpointError(
            f"{path} holds a {what} state of another model configuration ({detail or _first_line(exc)}); "
            "use another --out, or delete the folder to start over"
        ) from None


def _model_mismatch(own: dict[str, Any], theirs: dict[str, Any]) -> str:
    """The missing, unexpected and reshaped keys of a model state, counted, two of each named."""
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in theirs and hasattr(theirs[k], "shape") and theirs[k].shape != own[k].shape]
    return "; ".join(f"{label}: {len(keys)} (e.g. {', '.join(keys[:2])})"
                     for label, keys in (("missing", missing), ("unexpected", unexpected),
                                         ("shape differs (checkpoint vs model)", shapes)) if keys)
