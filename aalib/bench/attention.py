"""Time and memory of the AA-conv and LAA-conv layers against resolution, ours beside a naive reference.

``python -m aalib.bench attention [--sizes 16 32 64] [--linear-sizes 16 32 64 128] [--out FILE]``

Setting: batch 8, 64 -> 64 channels, dk = dv = 32, 4 heads, 3x3 convolution branch; forward +
backward of the whole layer, every variant of :data:`aalib.layer_cost.VARIANTS`, each case in a
fresh process (:func:`aalib.layer_cost.sweep`, where the measurement is described). Prints a
table and the acceptance targets, and writes JSON (``--out``) with the setting, the machine, the
rows, the targets and the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from aalib.io import write_json
from aalib.layer_cost import BATCH, CHANNELS, DEFAULT_MALLOC, DK, DV, HEADS, case_env, sweep
from aalib.machine import machine_info
from aalib.tables import format_table

__all__ = ["main"]


def _placeholder(result: dict) -> str:
    """What a table shows for a missing number: a skipped case, a failed one, or none."""
    return "skip" if "skipped" in result else "fail" if result else "-"


def _table(rows: list[dict]) -> str:
    """One line per (variant, size): both implementations' time and peak memory, and their ratios."""
    cells = []
    for row in rows:
        ours, naive = row["ours"], row.get("naive") or {}
        speed = f"{naive['ms'] / ours['ms']:.2f}x" if "ms" in naive and "ms" in ours else "-"
        measured = "peak_mib" in naive and ours.get("peak_mib", 0) > 0
        mem = f"1/{naive['peak_mib'] / ours['peak_mib']:.1f}" if measured else "-"
        cells.append({
            "layer": row["variant"], "size": f"{row['size']}^2",
            "ours ms": ours.get("ms", _placeholder(ours)), "naive ms": naive.get("ms", _placeholder(naive)),
            "speed-up": speed,
            "ours MiB": ours.get("peak_mib", _placeholder(ours)),
            "naive MiB": naive.get("peak_mib", _placeholder(naive)),
            "mem ratio": mem,
        })
    return format_table(cells, formats=dict.fromkeys(("ours ms", "naive ms", "ours MiB", "naive MiB"), ".1f"),
                        left=("layer",))


def _targets(rows: list[dict], device: str) -> list[dict]:
    """The benchmark's acceptance targets, evaluated on this run's rows (``met`` None: context, not a target)."""
    by_key = {(r["variant"], r["size"]): r for r in rows}
    checks = []
    aa = by_key.get(("AA relative", 64))
    if aa and "ms" in aa["ours"] and "ms" in (aa.get("naive") or {}):
        mem_ratio = aa["naive"]["peak_mib"] / aa["ours"]["peak_mib"]
        speed = aa["naive"]["ms"] / aa["ours"]["ms"]
        checks.append({"target": "AA relative 64^2: naive/ours peak memory >= 8", "value": round(mem_ratio, 2), "met": mem_ratio >= 8})
        checks.append({"target": "AA relative 64^2: naive/ours time >= 2", "value": round(speed, 2), "met": speed >= 2})
    if aa and "ms" in aa["ours"] and device == "cpu":
        seconds = aa["ours"]["ms"] / 1e3
        checks.append({"target": "AA relative 64^2 on the CPU: forward + backward <= 1.0 s", "value": round(seconds, 3),
                       "met": seconds <= 1.0})
    blocked = by_key.get(("AA rel blocked", 64))
    if aa and blocked and "ms" in aa["ours"] and "ms" in blocked["ours"]:  # context: the kernel auto picks, against blocked
        ratio = blocked["ours"]["ms"] / aa["ours"]["ms"]
        checks.append({"target": "AA relative 64^2: blocked-kernel layer / auto-kernel layer time", "value": round(ratio, 2),
                       "met": None})
    small, large = by_key.get(("LAA sincos", 32)), by_key.get(("LAA sincos", 128))
    if small and large and "ms" in small["ours"] and "ms" in large["ours"]:
        growth = large["ours"]["ms"] / small["ours"]["ms"]
        checks.append({"target": "LAA 32^2 -> 128^2 time growth <= 20 (16 is linear)", "value": round(growth, 2), "met": growth <= 20})
    small, large = by_key.get(("conv 3x3", 32)), by_key.get(("conv 3x3", 128))
    if small and large and "ms" in small["ours"] and "ms" in large["ours"]:  # context, not a target
        growth = large["ours"]["ms"] / small["ours"]["ms"]
        checks.append({"target": "for reference, a plain 3x3 conv: 32^2 -> 128^2 time growth", "value": round(growth, 2), "met": None})
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aalib.bench attention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64], help="square map sizes for every variant")
    parser.add_argument("--linear-sizes", type=int, nargs="+", default=[16, 32, 64, 128], help="sizes for LAA")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median), after one warm-up")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="keep timing a case past --repeats runs until this many seconds are measured (max 50 runs)")
    parser.add_argument("--naive-max-gib", type=float, default=3.0,
                        help="skip naive cases whose single N x N map exceeds this many GiB (they need several)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per case")
    parser.add_argument("--malloc", default=DEFAULT_MALLOC,
                        help="GLIBC_TUNABLES for the case processes ('' for the machine's default). Huge pages "
                             "for large CPU tensors cut page faults, which otherwise dominate big maps on some VMs")
    parser.add_argument("--out", type=Path, default=Path("results/bench_attention.json"), help="JSON results file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.min_seconds < 0 or any(s < 1 for s in args.sizes + args.linear_sizes):
        parser.error("--repeats and sizes must be positive, --min-seconds not negative")

    env = case_env(args.malloc)
    print(f"attention benchmark on {args.device}: batch {BATCH}, {CHANNELS} channels, dk=dv={DK}, {HEADS} heads, "
          f"forward+backward, median of >= {args.repeats} runs and >= {args.min_seconds:g} s", flush=True)

    def report(variant: str, size: int, impl: str, result: dict) -> None:
        print(f"  {variant:<12} {size:>4}^2 {impl:<5} {result}", flush=True)

    rows = sweep(args.sizes, args.linear_sizes, device=args.device, repeats=args.repeats, min_seconds=args.min_seconds,
                 naive_max_gib=args.naive_max_gib, timeout=args.timeout, env=env, on_case=report)
    table = _table(rows)
    checks = _targets(rows, args.device)
    print()
    print(table)
    for check in checks:
        print(f"{'INFO   ' if check['met'] is None else 'MET    ' if check['met'] else 'NOT MET'} {check['target']}: {check['value']}")
    write_json(args.out, {
        "benchmark": "attention",
        "command": "python -m aalib.bench attention " + " ".join(argv if argv is not None else sys.argv[1:]),
        "setting": {"batch": BATCH, "channels": CHANNELS, "dk": DK, "dv": DV, "heads": HEADS, "kernel_size": 3,
                    "device": args.device, "repeats": args.repeats, "min_seconds": args.min_seconds, "GLIBC_TUNABLES": env.get("GLIBC_TUNABLES", "")},
        "machine": machine_info(args.device),
        "rows": rows,
        "targets": checks,
        "table": table,
    })
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
