"""``python -m aalib.bench soak``: does the trainer's memory stay flat over many epochs?

Trains a small model (the smoke run's Simple-AACNN on the 16x16 long-range task) for many epochs
on the CPU through :func:`aalib.train.train` itself, so checkpoints, the metrics file, the
summary and the log are written every epoch as in a real run, and records the process's resident
set size (RSS, ``/proc/self/statm``) after each epoch. The trainer's per-epoch log record is the
hook: a logging handler reads the RSS when the ``epoch k/N`` line is emitted, after that epoch's
checkpoint was written.

Verdict: RSS after the last epoch within 10 % of RSS after the second (the
first epoch still allocates the allocator's pools and autograd buffers). The table goes to
stdout, the JSON (``--out``, written atomically) holds the machine, the settings and every epoch.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..experiment import load_config
from ..io import write_json
from ..memory import peak_rss_bytes

__all__ = ["TOLERANCE", "rss_mib", "run", "main"]

TOLERANCE = 0.10  # last epoch's RSS may exceed the second epoch's by at most this fraction
SMOKE = Path(__file__).resolve().parents[2] / "params" / "smoke.yaml"


def rss_mib() -> float:
    """Current resident set size in MiB (Linux ``/proc``; elsewhere the peak, ``ru_maxrss``)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_bytes() / 2**20


class _EpochRSS(logging.Handler):
    """Records (epoch, RSS, seconds since start) at each ``epoch k/N`` record of aalib.train."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.start = time.perf_counter()
        self.rows: list[dict[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "aalib.train" and str(record.msg).startswith("epoch %d/%d "):
            self.rows.append({"epoch": record.args[0], "rss_mib": rss_mib(),
                              "seconds": time.perf_counter() - self.start})
            print(f"{self.rows[-1]['epoch']:>6}  {self.rows[-1]['rss_mib']:>9.1f}", flush=True)


def run(epochs: int, overrides: list[str]) -> dict[str, Any]:
    """Train ``epochs`` epochs into a temporary folder; the per-epoch RSS and the verdict."""
    from ..train import train

    config = load_config(SMOKE, overrides=[f"epochs={epochs}", "progress=false", "log_every=0", "device=cpu",
                                           *overrides])
    recorder = _EpochRSS()
    logger = logging.getLogger("aalib.train")
    logger.addHandler(recorder)
    print(f"{'epoch':>6}  {'RSS MiB':>9}")
    try:
        with tempfile.TemporaryDirectory(prefix="aalib-soak-") as out:
            summary = train(config, out)
    finally:
        logger.removeHandler(recorder)
    rows = recorder.rows
    second, last = rows[1]["rss_mib"], rows[-1]["rss_mib"]
    growth = last / second - 1.0
    return {
        "benchmark": "soak",
        "machine": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "device": "cpu",
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
        },
        "settings": {"params": str(SMOKE.relative_to(SMOKE.parents[1])), "epochs": epochs, "overrides": overrides,
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
                        help="override a key of params/smoke.yaml (repeatable)")
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
