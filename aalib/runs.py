"""Finished runs as objects: find run folders, rebuild their models and datasets.

A run folder is what :func:`aalib.train.train` writes (``summary.json``, ``metrics.csv``,
``best.pt``, ``last.pt``, ``train.log``); ``aalib run`` puts one at ``runs/<experiment>/seed<k>/``
beside the executed notebook. The analysis notebooks load runs through this module.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig, config_from_dict
from .data import ImageSplits
from .train import build_model_for, load_checkpoint, load_dataset

__all__ = ["Run", "find_runs", "load_run"]


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

    def model(self, which: str = "best", device: str | torch.device = "cpu") -> nn.Module:
        """The trained model from ``best.pt`` or ``last.pt``, in eval mode."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}")
        checkpoint = load_checkpoint(self.path / f"{which}.pt", map_location=device)
        model = build_model_for(self.config, self.summary.get("num_classes"))
        model.load_state_dict(checkpoint["model"])
        return model.to(device).eval()

    def untrained_model(self) -> nn.Module:
        """The same architecture freshly initialised (seeded by the run's seed), in eval mode."""
        torch.manual_seed(self.config.seed)
        return build_model_for(self.config, self.summary.get("num_classes")).eval()

    def dataset(self) -> ImageSplits:
        """The run's dataset, rebuilt from its config (synthetic data is regenerated exactly)."""
        return load_dataset(self.config)


def load_run(path: str | Path) -> Run:
    """Read a run folder; a folder without ``summary.json`` is an error naming it."""
    path = Path(path)
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"'{path}' is not a run folder: it has no summary.json (see aalib/train.py)")
    summary = json.loads(summary_path.read_text())
    config = config_from_dict(summary["config"], where=str(summary_path))
    metrics_path = path / "metrics.csv"
    metrics = []
    if metrics_path.is_file():
        with open(metrics_path, newline="") as handle:
            metrics = [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(handle)]
    return Run(path=path, config=config, summary=summary, metrics=metrics)


def find_runs(root: str | Path) -> list[Run]:
    """Every run folder under ``root`` (any depth), sorted by path."""
    root = Path(root)
    return [load_run(p.parent) for p in sorted(root.rglob("summary.json"))]
