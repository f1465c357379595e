"""The batch notebooks (package data in aalib/notebooks/) through papermill itself: train.ipynb (via
`aalib run` / `sweep` and plain papermill) and report.ipynb (via `aalib report`); the train
notebook's parameters against TrainConfig and every params file. tests/test_notebook_sources.py
checks the notebooks as source files."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from aalib.config import ConfigError, TrainConfig
from aalib.batch import TRAIN_NOTEBOOK, build_report, plan_runs, sweep
from tinyrun import run_python

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params"
SMOKE = PARAMS / "smoke.yaml"
# The smoke run, smaller: a few steps of the Simple-AACNN on 16x16 images.
TINY = ["epochs=1", "dataset_args.train_size=64", "dataset_args.val_size=32", "dataset_args.test_size=32",
        "batch_size=32", "progress=false", "log_every=0"]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_python(*args, cwd=cwd, timeout=600)


def test_train_notebook_parameters_are_the_config_keys_with_their_defaults():
    """The parameters cell of train.ipynb is written by hand; TrainConfig is the authority."""
    declared = papermill.inspect_notebook(str(TRAIN_NOTEBOOK))
    config_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(declared) == set(config_fields) | {"out_dir"}, \
        "the parameters cell of aalib/notebooks/train.ipynb must declare every TrainConfig field, and out_dir"
    defaults = TrainConfig()
    for name in config_fields:
        assert ast.literal_eval(declared[name]["default"]) == getattr(defaults, name), \
            f"parameter {name}: its default in train.ipynb is not TrainConfig's"
        assert declared[name]["help"], f"parameter {name} has no help comment"


def test_every_params_key_is_a_declared_notebook_parameter():
    declared = set(papermill.inspect_notebook(str(TRAIN_NOTEBOOK)))
    files = sorted(PARAMS.rglob("*.yaml"))
    assert len(files) >= 24
    for path in files:
        keys = set(yaml.safe_load(path.read_text()) or {})
        assert keys <= declared, f"{path.relative_to(ROOT)}: not notebook parameters: {sorted(keys - declared)}"


def test_plan_one_folder_per_seed(tmp_path):
    plans = plan_runs(SMOKE, overrides=["seeds=[3, 4]"], runs_dir=tmp_path)
    assert [p.out_dir for p in plans] == [tmp_path / "smoke" / "seed3", tmp_path / "smoke" / "seed4"]
    assert [(p.parameters["seed"], p.parameters["seeds"]) for p in plans] == [(3, None), (4, None)]
    assert all(p.status == "new" for p in plans)


def test_bad_params_stop_the_sweep_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        sweep([SMOKE, bad], runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    result = cli("-m", "aalib", "run", str(bad), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and "valid keys" in result.stderr and "Traceback" not in result.stderr
    result = cli("-m", "aalib", "sweep", str(tmp_path / "missing"), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and "no such params file or folder" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_writes_the_run_folder_then_skips_it_and_reports(tmp_path):
    runs = tmp_path / "runs"
    overrides = [a for o in TINY for a in ("-p", *o.split("=", 1))]
    result = cli("-m", "aalib", "run", str(SMOKE), *overrides, "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr[-3000:]
    run = runs / "smoke" / "seed0"
    for name in ("train.ipynb", "params.yaml", "metrics.csv", "summary.json", "best.pt", "last.pt", "train.log", "curves.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert yaml.safe_load((run / "params.yaml").read_text())["dataset_args"]["train_size"] == 64
    executed = nbformat.read(run / "train.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    stamp = (run / "last.pt").stat().st_mtime_ns

    again = sweep([SMOKE], overrides=TINY, runs_dir=runs, log=lambda line: None)
    assert again == {run: "finished"} and (run / "last.pt").stat().st_mtime_ns == stamp

    report = build_report(runs)
    assert report["html"].is_file() and report["notebook"].is_file()
    html = report["html"].read_text()
    assert "Simple-AACNN" in html and "data:image/png" in html  # the table and the figures are in it
    assert "write_report(" not in html and "In&nbsp;[" not in html  # for readers: no code, no prompts
    assert "Test top-1 of every seed" in html  # a figure's caption, computed from its numbers
    for name in ("summary.csv", "runs.csv", "seed_points.png", "learning_curves.png", "accuracy_vs_time.png",
                 "accuracy_vs_parameters.png"):
        assert (runs / "report" / name).is_file(), name
    assert "Simple-AACNN" in report["text"] and "solved the task in" in report["text"] and "of 1 seed" in report["text"]


@pytest.mark.slow
def test_plain_papermill_with_a_params_file(tmp_path):
    out = tmp_path / "run"
    result = cli("-m", "papermill", str(ROOT / "aalib" / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb"), "-f", str(SMOKE),
                 "-p", "epochs", "1", "-p", "out_dir", str(out), "-p", "progress", "False",
                 "-y", "dataset_args: {image_size: 16, receptive_field: 9, mark_size: 2, train_size: 64, val_size: 32, test_size: 32}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["config"]["epochs"] == 1 and summary["test"]["images"] == 32
