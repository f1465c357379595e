"""``python -m aalib.bench soak``: does the trainer's memory stay flat over many epochs?

Trains a small model (:data:`RUN`: the Simple-AACNN on the 16x16 long-range task) for many
epochs on the CPU through :func:`aalib.train.train` itself, so checkpoints, the metrics file, the
summary and the log are written every epoch as in a real run, and records the process's resident
memory (RSS, :func:`aalib.memory.rss_bytes`) after each epoch: a thread watches the run's
``metrics.csv``, which the trainer rewrites after each epoch's checkpoint, and reads the RSS when
a row appears. The run's status comes from its ``summary.json``.

Verdict: RSS after the last epoch within 10 % of RSS after the second (the first epoch still
allocates the allocator's pools and autograd buffers). The table goes to stdout, the JSON
(``--out``, written atomically) holds the machine, the settings and every epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..experiment import load_config
from ..io import write_json
from ..machine import machine_info
from ..memory import MIB, rss_bytes

__all__ = ["RUN", "TOLERANCE", "run", "main"]

TOLERANCE = 0.10  # last epoch's RSS may exceed the second epoch's by at most this fraction
POLL_S = 0.01  # how often the watcher looks at metrics.csv
# The run the soak trains (``--set`` changes it): the smoke run's model and task, small and quick.
RUN: tuple[str, ...] = (
    "name=soak",
    "model=repro_simple_cnn",
    "model_args.attention=softmax",
    "dataset=long_range",
    "dataset_args.image_size=16",
    "dataset_args.receptive_field=9",
    "dataset_args.mark_size=2",
    "dataset_args.train_size=512",
    "dataset_args.val_size=128",
    "dataset_args.test_size=128",
    "batch_size=64",
    "eval_batch_size=256",
    "lr=0.05",
    "schedule=cosine",
    "crop_padding=2",
    "device=cpu",
    "progress=false",
    "log_every=0",
)


def _epochs_written(metrics: Path) -> list[int]:
    """The epochs ``metrics.csv`` holds (none while it does not exist)."""
    try:
        with open(metrics, newline="", encoding="utf-8") as handle:
            return [int(row["epoch"]) for row in csv.DictReader(handle)]
    except FileNotFoundError:
        return []


class _EpochWatcher(threading.Thread):
    """Records (epoch, RSS, seconds since start) for each row that appears in ``metrics.csv``.

    The trainer replaces the file atomically, so each look sees a whole file; a look only reads
    it when its inode, size or time changed.
    """

    def __init__(self, metrics: Path) -> None:
        super().__init__(daemon=True)
        self.metrics = metrics
        self.start_time = time.perf_counter()
        self.rows: list[dict[str, float]] = []
        self.done = threading.Event()
        self._seen: tuple[int, int, int] | None = None

    def look(self) -> None:
        try:
            stat = self.metrics.stat()
        except FileNotFoundError:
            return
        if (stat.st_ino, stat.st_size, stat.st_mtime_ns) == self._seen:
            return
        self._seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        epochs = _epochs_written(self.metrics)
        for epoch in epochs[len(self.rows):]:
            self.rows.append({"epoch": epoch, "rss_mib": rss_bytes() / MIB,
                              "seconds": time.perf_counter() - self.start_time})
            print(f"{epoch:>6}  {self.rows[-1]['rss_mib']:>9.1f}", flush=True)

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            self.look()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.look()  # rows written after the last look


def run(epochs: int, overrides: list[str]) -> dict[str, Any]:
    """Train ``epochs`` epochs into a temporary folder; the per-epoch RSS and the verdict."""
    from ..train import train

    config = load_config(None, overrides=[*RUN, f"epochs={epochs}", *overrides])
    print(f"{'epoch':>6}  {'RSS MiB':>9}")
    with tempfile.TemporaryDirectory(prefix="aalib-soak-") as out:
        watcher = _EpochWatcher(Path(out) / "metrics.csv")
        watcher.start()
        try:
            train(config, out)
        finally:
            watcher.stop()
        summary = json.loads((Path(out) / "summary.json").read_text(encoding="utf-8"))
    rows = watcher.rows
    second, last = rows[1]["rss_mib"], rows[-1]["rss_mib"]
    growth = last / second - 1.0
    return {
        "benchmark": "soak",
        "machine": machine_info("cpu"),
        "settings": {"params": list(RUN), "epochs": epochs, "overrides": overrides,
                     "model": config.model, "model_args": config.model_args, "dataset_args": config.dataset_args,
                     "batch_size": config.batch_size},
        "status": summary["status"],
        "epochs": rows,
        "rss_second_epoch_mib": second,
        "rss_last_epoch_mib": last,
        "growth": growth,
        "tolerance": TOLERANCE,
        "passed": summary["status"] == "finished" and growth <= TOLERANCE,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aalib.bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs to train (default 100)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the run (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_soak.json"), help="JSON results file")
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (the verdict compares the last epoch with the second)")
    result = {"command": " ".join(["python -m aalib.bench soak", *(argv if argv is not None else sys.argv[1:])]),
              **run(args.epochs, args.overrides)}
    write_json(args.out, result)
    verdict = "within" if result["passed"] else "NOT within"
    print(f"RSS after epoch 2: {result['rss_second_epoch_mib']:.1f} MiB, after epoch {args.epochs}: "
          f"{result['rss_last_epoch_mib']:.1f} MiB ({100 * result['growth']:+.1f} %), {verdict} "
          f"{100 * TOLERANCE:.0f} %; wrote {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
