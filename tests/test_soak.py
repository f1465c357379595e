"""``python -m aalib.bench soak``: the RSS per epoch read when the run's metrics.csv gains a row, the
status from its summary.json, and the run built without a checkout's params file."""

from __future__ import annotations

import json
import os

from aalib.bench import soak
from aalib.experiment import load_config


def _write_rows(path, epochs):
    tmp = path.with_suffix(".tmp")
    tmp.write_text("epoch,lr\n" + "".join(f"{e},0.1\n" for e in epochs))
    os.replace(tmp, path)  # as the trainer writes it: atomically


def test_watcher_records_each_new_row_once(tmp_path, capsys):
    metrics = tmp_path / "metrics.csv"
    watcher = soak._EpochWatcher(metrics)
    watcher.look()  # no file yet
    _write_rows(metrics, [1])
    watcher.look()
    watcher.look()  # unchanged: nothing new
    _write_rows(metrics, [1, 2, 3])
    watcher.look()
    assert [row["epoch"] for row in watcher.rows] == [1, 2, 3]
    assert all(row["rss_mib"] > 0 for row in watcher.rows)
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_the_run_needs_no_params_file():
    config = load_config(None, overrides=list(soak.RUN))
    assert (config.model, config.model_args, config.dataset) == ("repro_simple_cnn", {"attention": "softmax"}, "long_range")
    assert config.device == "cpu" and config.progress is False


def test_main_trains_and_writes_every_epoch(tmp_path):
    out = tmp_path / "soak.json"
    status = soak.main(["--epochs", "3", "--set", "dataset_args.train_size=128", "--set", "dataset_args.val_size=32",
                        "--set", "dataset_args.test_size=32", "--out", str(out)])
    result = json.loads(out.read_text())
    assert status == (0 if result["passed"] else 1)
    assert result["status"] == "finished" and [row["epoch"] for row in result["epochs"]] == [1, 2, 3]
    assert result["rss_second_epoch_mib"] == result["epochs"][1]["rss_mib"] > 0
    assert result["settings"]["params"] == list(soak.RUN) and result["settings"]["epochs"] == 3
    assert result["settings"]["dataset_args"]["train_size"] == 128
    assert {"torch", "threads", "cpu_count", "platform", "device"} <= set(result["machine"])
    assert {"command", "benchmark", "growth", "tolerance"} <= set(result)
