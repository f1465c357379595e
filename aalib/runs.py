"""Finished runs as objects: find run folders, rebuild their models and datasets.

A run folder is what :func:`aalib.train.train` writes (``summary.json``, ``metrics.csv``,
``best.pt``, ``last.pt``, ``train.log``); ``aalib run`` puts one at ``runs/<experiment>/seed<k>/``
beside the executed notebook. The analysis notebooks load runs through this module.

Runs are read defensively: a folder whose ``summary.json`` or ``metrics.csv`` is missing,
truncated or not what the trainer writes (a disk that filled, a copy cut short, a folder copied
while it was written) is a :class:`Damaged` entry of :func:`scan_runs`, with the reason, never an
exception that hides the good runs beside it. Readers take no lock (:mod:`aalib.lock`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, TrainConfig, config_from_dict
from .data import ImageSplits
from .lock import held
from .experiment import build_model_for, load_dataset
from .checkpoint import load_checkpoint

__all__ = ["Damaged", "Run", "RunFolderError", "find_runs", "load_run", "scan_runs"]


class RunFolderError(ValueError):
    """A run folder whose files are missing, truncated or not what the trainer writes."""


@dataclass
class Run:
    """One run folder: its config, summary and per-epoch metrics."""

    path: Path
    config: TrainConfig
    summary: dict[str, Any]
    metrics: list[dict[str, float]]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def finished(self) -> bool:
        return self.summary.get("status") == "finished"

    @property
    def status(self) -> str:
        """The summary's status, except that ``running`` without a live writer (no process holds
        the folder's lock: killed, crashed, or a copy of a running folder) reads ``stopped``."""
        status = str(self.summary.get("status", "unknown"))
        return "stopped" if status == "running" and not held(self.path) else status

    def model(self, which: str = "best", device: str | torch.device = "cpu") -> nn.Module:
        """The trained model from ``best.pt`` or ``last.pt``, in eval mode."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}")
        checkpoint = load_checkpoint(self.path / f"{which}.pt", map_location=device)
        model = self._architecture()
        model.load_state_dict(checkpoint["model"])
        return model.to(device).eval()

    def untrained_model(self) -> nn.Module:
        """The same architecture freshly initialised (seeded by the run's seed), in eval mode."""
        torch.manual_seed(self.config.seed)
        return self._architecture().eval()

    def _architecture(self) -> nn.Module:
        """The run's model, built from its config, class count and image shape (runs that did not
        record the shape had 3-channel images)."""
        shape = self.summary.get("image_shape")
        return build_model_for(self.config, self.summary.get("num_classes"), tuple(shape) if shape else None)

    def dataset(self) -> ImageSplits:
        """The run's dataset, rebuilt from its config (synthetic data is regenerated exactly)."""
        return load_dataset(self.config)


def _read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        raise RunFolderError("metrics.csv is missing")
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunFolderError(f"metrics.csv cannot be read ({exc})") from None
    metrics = []
    for number, row in enumerate(rows, 1):
        if None in row or any(value is None for value in row.values()):
            raise RunFolderError(f"metrics.csv row {number} is incomplete (a truncated file?)")
        try:
            metrics.append({k: float(v) if v != "" else float("nan") for k, v in row.items()})
        except ValueError:
            raise RunFolderError(f"metrics.csv row {number} holds a value that is not a number") from None
    return metrics


def load_run(path: str | Path) -> Run:
    """Read a run folder; raises :class:`RunFolderError` naming the folder and what is wrong
    (no ``summary.json``, invalid JSON, no or a foreign config, a bad ``metrics.csv``, fewer
    metrics rows than the summary's completed epochs)."""
    path = Path(path)
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise RunFolderError(f"'{path}' is not a run folder: it has no summary.json (see aalib/train.py)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunFolderError(f"{path}: summary.json is not valid JSON (truncated?): {exc}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        raise RunFolderError(f"{path}: summary.json holds no run config")
    try:
        config = config_from_dict(summary["config"], where=str(summary_path))
        metrics = _read_metrics(path / "metrics.csv")
    except (ConfigError, RunFolderError) as exc:
        raise RunFolderError(f"{path}: {exc}") from None
    completed = summary.get("epochs_completed", 0)
    if isinstance(completed, int) and len(metrics) < completed:
        raise RunFolderError(f"{path}: metrics.csv has {len(metrics)} epochs, summary.json says {completed} (cut short?)")
    return Run(path=path, config=config, summary=summary, metrics=metrics)


@dataclass(frozen=True)
class Damaged:
    """A run folder that could not be read, and why."""

    path: Path
    reason: str


def scan_runs(root: str | Path) -> tuple[list[Run], list[Damaged]]:
    """Every run folder under ``root`` (any depth, sorted by path): the readable runs, and the
    damaged ones with the reason (see :func:`load_run`)."""
    runs, damaged = [], []
    for summary in sorted(Path(root).rglob("summary.json")):
        try:
            runs.append(load_run(summary.parent))
        except RunFolderError as exc:
            damaged.append(Damaged(summary.parent, str(exc).removeprefix(f"{summary.parent}: ")))
    return runs, damaged


def find_runs(root: str | Path) -> list[Run]:
    """The readable run folders under ``root`` (any depth), sorted by path; damaged ones are
    left out (:func:`scan_runs` lists them)."""
    return scan_runs(root)[0]
