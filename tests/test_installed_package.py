"""`aalib run` from a non-editable install: the package built as a wheel from a copy of the
source (no network: the environment's setuptools, no index), installed into a temporary folder,
and run on a params file outside the repository, from a folder outside it, with that install
as the only ``aalib`` on the path; then ``aalib report`` on the run. The batch notebooks both
commands execute come with the package (package data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyrun import ENV, ROOT, SMOKE, TINY, run_python


def install(tmp_path: Path) -> Path:
    """The package as pip installs it from a wheel, in ``tmp_path/site``; returns that folder."""
    source, site = tmp_path / "source", tmp_path / "site"
    shutil.copytree(ROOT / "aalib", source / "aalib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--target", str(site), str(source)],
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"}, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return site


@pytest.mark.slow
def test_aalib_run_works_from_a_non_editable_install_outside_the_checkout(tmp_path: Path) -> None:
    site = install(tmp_path)
    assert {p.name for p in (site / "aalib" / "notebooks").iterdir()} == {"train.ipynb", "report.ipynb", "study.ipynb"}
    assert (site / "aalib" / "csrc" / "tiled_attention.cpp").is_file()
    work = tmp_path / "work"
    (work / "params").mkdir(parents=True)
    shutil.copy(SMOKE, work / "params" / "tiny.yaml")
    env = {**ENV, "PYTHONPATH": str(site)}  # the install only, not the source tree

    where = run_python("-c", "import aalib, aalib.batch; print(aalib.__file__); print(aalib.batch.TRAIN_NOTEBOOK)",
                       cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout

    overrides = [arg for override in TINY for arg in ("-p", *override.split("=", 1))]
    result = run_python("-m", "aalib", "run", "params/tiny.yaml", *overrides, "-p", "epochs", "1",
                        "--runs-dir", "runs", cwd=work, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = work / "runs" / "smoke" / "seed0"
    for name in ("train.ipynb", "params.yaml", "metrics.csv", "summary.json", "best.pt", "last.pt", "train.log",
                 "curves.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["config"]["epochs"] == 1, summary

    report = run_python("-m", "aalib", "report", "runs", cwd=work, env=env, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (work / "runs" / "report" / "report.html").is_file() and (work / "runs" / "report" / "report.ipynb").is_file()
