"""Shared by the tests that train tiny runs (tests/test_train.py, test_reliability.py,
test_notebooks.py): the tiny version of params/smoke.yaml, a subprocess runner, small file helpers.

The tiny run: plain Simple-CNN (dropout kept, so the RNG state matters), augmentation on (so the
loader's per-epoch draws matter), 4 steps per epoch, 2 epochs.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
TINY = [
    "model_args.attention=null",
    "dataset_args.train_size=128",
    "dataset_args.val_size=32",
    "dataset_args.test_size=32",
    "batch_size=32",
    "eval_batch_size=64",
    "epochs=2",
    "log_every=2",
    "progress=false",
]
# One OpenMP thread per child process: on a busy 2-core machine waiting threads slow tiny runs down.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def sets(*overrides: str) -> list[str]:
    """``--set KEY=VALUE`` arguments of the CLI, one pair per override."""
    return [arg for override in overrides for arg in ("--set", override)]


def run_python(*args: str, cwd: Path = ROOT, timeout: float = 240, env: dict[str, str] | None = None,
               **popen: Any) -> subprocess.CompletedProcess:
    """``python ARGS`` with this interpreter, output captured as text."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV if env is None else env, capture_output=True,
                          text=True, timeout=timeout, **popen)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_text(folder: Path, text: str, name: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path
