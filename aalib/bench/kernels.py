"""``python -m aalib.bench kernels``: every CPU kernel of softmax attention on the same inputs.

Forward + backward of :func:`aalib.attention.softmax_attention` with each backend that runs on the
CPU with gradients (``"fused"``, ``"blocked"``, ``"native"``), on q, k, v laid out as a layer makes
them (transposed views of one convolution output), for maps from 8 x 8 to 64 x 64 with and without
relative logits, at the head sizes of the attention benchmark (dkh = 8), of Bello et al.'s
AA-WRN (dkh = 20) and of the reproduced study's first stage (dkh = 256, dvh = 64). The cases
alternate between backends within one process, so a ratio compares runs of the same minute. The
``"auto"`` column says which kernel :func:`~aalib.attention.softmax_attention` picks, and ``best``
which was fastest. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .. import attention, native
from ..io import write_json
from ..machine import machine_info
from ..memory import retain_freed_memory
from ..tables import format_table

__all__ = ["CASES", "KERNELS", "run", "main"]

KERNELS: tuple[str, ...] = ("fused", "blocked", "native")
# name -> (batch, heads, H, W, dkh, dvh, relative logits)
CASES: dict[str, tuple[int, int, int, int, int, int, bool]] = {
    "64x64 rel dkh8": (8, 4, 64, 64, 8, 8, True),
    "64x64 rel dkh32": (4, 4, 64, 64, 32, 32, True),
    "32x32 rel dkh8": (8, 4, 32, 32, 8, 8, True),
    "32x32 rel dkh20": (8, 8, 32, 32, 20, 20, True),
    "32x32 rel dkh32": (8, 4, 32, 32, 32, 32, True),
    "24x24 rel dkh8": (8, 4, 24, 24, 8, 8, True),
    "24x24 rel dkh20": (8, 8, 24, 24, 20, 20, True),
    "16x16 rel dkh8": (8, 4, 16, 16, 8, 8, True),
    "16x16 rel dkh20": (8, 8, 16, 16, 20, 20, True),
    "8x8 rel dkh20": (8, 8, 8, 8, 20, 20, True),
    "64x64 dkh8": (8, 4, 64, 64, 8, 8, False),
    "32x32 dkh8": (8, 4, 32, 32, 8, 8, False),
    "32x32 dkh16": (64, 2, 32, 32, 16, 16, False),
    "16x16 dkh8": (8, 4, 16, 16, 8, 8, False),
    "16x16 dkh256 dv64": (8, 1, 16, 16, 256, 64, False),
}


def inputs(batch: int, heads: int, height: int, width: int, dkh: int, dvh: int, relative: bool,
           seed: int = 0) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """q, k, v as views of one ``(B, heads * (2 dkh + dvh), N)`` convolution output, and the
    relative tables (or nothing): leaves that require gradients."""
    gen = torch.Generator().manual_seed(seed)
    n = height * width
    conv = torch.randn(batch, heads * (2 * dkh + dvh), n, generator=gen)
    parts = conv.split([heads * dkh, heads * dkh, heads * dvh], dim=1)
    qkv = [t.unflatten(1, (heads, -1)).transpose(-2, -1).detach().requires_grad_() for t in parts]  # B, heads, N, d
    extra: dict[str, Any] = {}
    if relative:
        extra = {"rel_h": (0.1 * torch.randn(2 * height - 1, dkh, generator=gen)).requires_grad_(),
                 "rel_w": (0.1 * torch.randn(2 * width - 1, dkh, generator=gen)).requires_grad_(),
                 "size": (height, width)}
    return qkv, extra


def time_case(qkv: list[torch.Tensor], extra: dict[str, Any], backend: str) -> float:
    """Seconds of one forward + backward."""
    start = time.perf_counter()
    attention.softmax_attention(*qkv, **extra, backend=backend).sum().backward()
    return time.perf_counter() - start


def run(cases: dict[str, tuple], repeats: int) -> list[dict[str, Any]]:
    """One row per case: the median seconds of each kernel over ``repeats`` interleaved rounds
    (after one untimed round), the ratios to the native kernel, and what ``auto`` picks."""
    kernels = [k for k in KERNELS if k != "native" or native.available()]
    rows = []
    for name, case in cases.items():
        qkv, extra = inputs(*case)
        times: dict[str, list[float]] = {kernel: [] for kernel in kernels}
        for round_ in range(repeats + 1):
            for kernel in kernels:
                seconds = time_case(qkv, extra, kernel)
                if round_:
                    times[kernel].append(seconds)
        median = {kernel: statistics.median(values) for kernel, values in times.items()}
        extra_logits = case[2] + case[3] if case[6] else 0
        row: dict[str, Any] = {"case": name, **{f"{k} ms": 1e3 * m for k, m in median.items()}}
        if "native" in median:
            row.update({f"{k} / native": m / median["native"] for k, m in median.items() if k != "native"})
        row["auto"] = attention._cpu_backend(qkv[0], case[5], extra_logits)
        row["best"] = min(median, key=median.get)
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k} {1e3 * m:.1f} ms" for k, m in median.items()), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aalib.bench kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), metavar="CASE",
                        help=f"which cases (default: all): {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case (median), after one warm-up")
    parser.add_argument("--out", type=Path, default=Path("results/bench_kernels.json"), help="JSON results file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    retain_freed_memory()
    native_reason = native.unavailable_reason()
    if native_reason is not None:
        print(f"the native kernel is unavailable ({native_reason}); measuring the others", file=sys.stderr)
    rows = run({name: CASES[name] for name in args.cases}, args.repeats)
    table = format_table(rows)
    print(table)
    write_json(args.out, {"command": " ".join(["python -m aalib.bench kernels", *(argv if argv is not None else sys.argv[1:])]),
                          "machine": machine_info("cpu"), "native_unavailable": native_reason, "repeats": args.repeats,
                          "cases": {name: CASES[name] for name in args.cases}, "rows": rows, "table": table})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
