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


def write_sweep_params(folder: Path, epochs: dict[str, int]) -> Path:
    """A folder of tiny params files, one per ``name -> epochs`` entry (plain Simple-CNN, 16x16
    long-range task), for sweeps the tests start and stop."""
    folder.mkdir()
    tiny = "\n".join(f"  {s.split('=', 1)[0].split('.', 1)[1]}: {s.split('=', 1)[1]}" for s in TINY if s.startswith("dataset_args."))
    for name, count in epochs.items():
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nmodel: repro_simple_cnn\nmodel_args: {{attention: null}}\ndataset: long_range\n"
            f"dataset_args:\n  image_size: 16\n  receptive_field: 9\n  mark_size: 2\n{tiny}\n"
            f"epochs: {count}\nbatch_size: 32\neval_batch_size: 64\nlr: 0.05\nschedule: cosine\n"
            f"device: cpu\nlog_every: 0\nprogress: false\n")
    return folder
