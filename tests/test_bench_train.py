"""Training-step benchmark (``python -m aalib.bench train``): tiny runs, in-process and in a subprocess."""

from __future__ import annotations

import json
import sys

import pytest

from aalib.bench import train as bench_train


def test_measure_in_process_reports_speed_and_memory():
    record = bench_train.measure("repro_simple_cnn-laa", batch_size=2, repeats=2, warmup=1)
    assert record["params"] == 332_740
    assert record["attention"] == "linear" and record["family"] == "repro_simple_cnn"
    assert len(record["step_s"]) == 2 and record["ms_per_step"] > 0
    assert record["img_per_s"] == pytest.approx(2 / (record["ms_per_step"] / 1000))
    assert record["peak_mib"] >= 0
    assert record["retain_freed_memory"] is sys.platform.startswith("linux")  # as the trainer runs (glibc)


def test_measure_rejects_unknown_names():
    with pytest.raises(ValueError, match="repro_wrn"):
        bench_train.measure("resnet50")
    with pytest.raises(ValueError, match="fp32"):
        bench_train.measure("repro_wrn", variant="fp16")


def test_main_runs_subprocesses_and_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    argv = ["--device", "cpu", "--models", "repro_simple_cnn", "repro_simple_cnn-aa", "--batch-size", "2",
            "--repeats", "1", "--warmup", "1", "--interleave", "--out", str(out)]
    assert bench_train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "repro_simple_cnn-aa" in printed and "ratio" in printed
    payload = json.loads(out.read_text())
    assert payload["machine"]["torch"] and payload["machine"]["threads"] >= 1
    assert payload["settings"]["batch_size"] == 2
    records = {r["model"]: r for r in payload["results"]}
    assert records["repro_simple_cnn"]["ratio_to_baseline"] == pytest.approx(1.0)
    assert records["repro_simple_cnn-aa"]["params"] == 332_740
    assert records["repro_simple_cnn-aa"]["ratio_to_baseline"] > 0
    assert "repro_simple_cnn-aa/fp32" in payload["key_ratios"]
    # --interleave: times re-measured round-robin, the isolated subprocess time kept beside them
    assert all(r["timing"] == "interleaved" and r["ms_per_step_isolated"] > 0 for r in records.values())
    assert not list(out.parent.glob("*.tmp"))  # atomic write left no temporary file


def test_dispatch_through_bench_main(tmp_path):
    from aalib.bench.__main__ import main

    out = tmp_path / "b.json"
    argv = ["train", "--models", "repro_simple_cnn", "--batch-size", "2", "--repeats", "1", "--warmup", "0",
            "--in-process", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["settings"]["subprocess_per_run"] is False


def test_default_models_are_the_studys_six_registered_models() -> None:
    from aalib.models import list_models

    assert len(bench_train.DEFAULT_MODELS) == 6
    assert {bench_train.MODEL_SPECS[name][0] for name in bench_train.DEFAULT_MODELS} <= set(list_models())
