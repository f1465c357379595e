"""Time and memory of the AA-conv and LAA-conv layers against resolution, ours beside a naive reference.

``python -m aalib.bench attention [--sizes 16 32 64] [--linear-sizes 16 32 64 128] [--out FILE]``

Setting: batch 8, 64 -> 64 channels, dk = dv = 32, 4 heads, 3x3 convolution
branch; forward + backward of the whole layer. "Naive" is the same layer whose attention is the
explicit formula, ``attention_weights(q, k) @ v``: the ``(B, heads, N, N)`` logits and weights
are materialised, as in Bello et al.'s published code and the public ports. Each case runs in a
fresh subprocess so that its peak memory is its own: on the CPU the rise of the process's peak
resident memory over the forward + backward passes, on CUDA ``torch.cuda.max_memory_allocated``
minus the memory held before them. Host memory is kept for reuse as in training
(:func:`aalib.memory.retain_freed_memory`). Time is the median of ``--repeats`` runs after a warm-up.
Cheap cases keep running past ``--repeats`` until ``--min-seconds`` of runs are timed (at most
50): on a shared 2-core VM one run of a 100 ms case varies 3x, and a median of many is stable.
Compare the rows of one run with each other (ratios); absolute times depend on the machine.

Library use (``aalib.complexity`` sweeps other settings): :func:`sweep` measures a plan of
(variant, size) cases with any batch / channels / dk / dv / heads and returns rows in the layout
of the JSON file's ``"rows"``; :func:`run_in_subprocess` runs one :class:`Case`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from aalib.attention import attention_weights
from aalib.io import write_json
from aalib.layers import AugmentedConv2d
from aalib.machine import cpu_name
from aalib.memory import peak_rss_bytes, retain_freed_memory

__all__ = ["BATCH", "CHANNELS", "DK", "DV", "HEADS", "IMPLS", "VARIANTS", "LAYER_VARIANTS", "Case", "NaiveAugmentedConv2d",
           "naive_map_bytes", "run_case", "run_in_subprocess", "case_env", "sweep_plan", "sweep", "machine_info", "main"]

BATCH, CHANNELS, DK, DV, HEADS = 8, 64, 32, 32, 4  # the benchmark's setting (the CLI's)
IMPLS: tuple[str, ...] = ("ours", "naive")
DEFAULT_MALLOC = "glibc.malloc.hugetlb=1"
# AA-conv (softmax) with and without relative logits, and LAA-conv (linear, sine-cosine positions):
# the layer variants, whose "ours" runs the kernel that backend="auto" picks. "AA rel fused" and
# "AA rel blocked" pin those kernels for comparison; their naive layer would be AA relative's, so
# they have none.
# "conv 3x3" is a plain 64 -> 64 convolution (attention None): what the layers cost without
# attention, and how a convolution alone scales on the machine (at the linear sizes).
VARIANTS: dict[str, dict] = {
    "AA relative": {"attention": "softmax", "position": "relative"},
    "AA rel fused": {"attention": "softmax", "position": "relative", "backend": "fused"},
    "AA rel blocked": {"attention": "softmax", "position": "relative", "backend": "blocked"},
    "AA no-pos": {"attention": "softmax", "position": "none"},
    "LAA sincos": {"attention": "linear", "position": "sincos"},
    "conv 3x3": {"attention": None, "position": "none"},
}
LAYER_VARIANTS: tuple[str, ...] = ("AA relative", "AA no-pos", "LAA sincos")


class NaiveAugmentedConv2d(AugmentedConv2d):
    """The reference: the same layer with the attention map materialised (N x N logits)."""

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, extra: dict) -> Tensor:
        return attention_weights(q, k, kind=self.attention, **extra) @ v  # B, heads, N, dvh


@dataclass
class Case:
    """One measurement: a variant of :data:`VARIANTS` at ``size x size``, ``channels -> channels``."""

    variant: str
    impl: str  # "ours" or "naive"
    size: int
    device: str
    repeats: int
    batch: int = BATCH
    channels: int = CHANNELS
    dk: int = DK
    dv: int = DV
    heads: int = HEADS
    min_seconds: float = 0.0  # keep timing past `repeats` runs until this much time is measured


MAX_RUNS = 50  # per case, whatever min_seconds asks


def naive_map_bytes(size: int, batch: int = BATCH, heads: int = HEADS) -> int:
    """Bytes of one fp32 (B, heads, N, N) tensor at ``size x size``: the unit of the naive layer's memory."""
    n = size * size
    return batch * heads * n * n * 4


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_cpu_peak() -> int:
    """Reset the process's peak resident memory (Linux VmHWM) and return the current bytes.

    Falls back to the lifetime peak (ru_maxrss) where /proc cannot reset it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return peak_rss_bytes()


def _cpu_peak() -> int:
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return peak_rss_bytes()


def run_case(case: Case) -> dict:
    """Build the layer and input, then time forward + backward; returns ms and peak MiB.

    Host memory is handled as in training (:func:`aalib.memory.retain_freed_memory`, for this
    whole process): freed blocks are reused instead of unmapped and faulted in again every run.
    """
    retain_freed_memory()
    torch.manual_seed(0)
    device = torch.device(case.device)
    spec = VARIANTS[case.variant]
    if spec["attention"] is None:
        layer = nn.Conv2d(case.channels, case.channels, 3, padding=1, bias=False).to(device)
    else:
        cls = AugmentedConv2d if case.impl == "ours" else NaiveAugmentedConv2d
        layer = cls(case.channels, case.channels, 3, dk=case.dk, dv=case.dv, heads=case.heads, extent=case.size,
                    **spec).to(device)
    x = torch.randn(case.batch, case.channels, case.size, case.size, device=device, requires_grad=True)

    def step() -> None:
        layer(x).sum().backward()
        layer.zero_grad(set_to_none=True)
        x.grad = None

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
    else:
        held = _reset_cpu_peak()
    step()  # warm-up (allocator, kernel selection)
    sync()
    times: list[float] = []
    while len(times) < case.repeats or (sum(times) < case.min_seconds and len(times) < MAX_RUNS):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - held
    else:
        peak = _cpu_peak() - held
    return {"ms": 1000 * statistics.median(times), "peak_mib": peak / 2**20, "runs": len(times)}


def case_env(malloc: str = DEFAULT_MALLOC) -> dict[str, str]:
    """Environment of the case processes: this one's, plus ``GLIBC_TUNABLES=malloc`` on Linux
    unless it is set already or ``malloc`` is ''."""
    env = dict(os.environ)
    if malloc and sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in env:
        env["GLIBC_TUNABLES"] = malloc
    return env


def run_in_subprocess(case: Case, timeout: float = 600.0, env: dict[str, str] | None = None) -> dict:
    """:func:`run_case` in a fresh Python process, so that the peak memory is the case's own.

    Returns its ``{"ms", "peak_mib", "runs"}``, or ``{"error": message}`` when the process failed
    (out of memory, an exception) or ran past ``timeout`` seconds.
    """
    cmd = [sys.executable, "-m", "aalib.bench.attention", "--case", json.dumps(asdict(case))]
    env = case_env() if env is None else env
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sweep_plan(
    sizes: Sequence[int], linear_sizes: Sequence[int], variants: Sequence[str] | None = None
) -> list[tuple[str, int]]:
    """The (variant, size) cases of a sweep: ``sizes`` for softmax variants, ``linear_sizes`` for
    the others, in :data:`VARIANTS` order (``variants`` selects among them)."""
    variants = list(VARIANTS) if variants is None else list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    return [(variant, size) for variant in VARIANTS if variant in variants
            for size in (sizes if VARIANTS[variant]["attention"] == "softmax" else linear_sizes)]


def sweep(
    sizes: Sequence[int],
    linear_sizes: Sequence[int],
    *,
    variants: Sequence[str] | None = None,
    impls: Sequence[str] = IMPLS,
    device: str = "cpu",
    repeats: int = 3,
    min_seconds: float = 0.0,
    batch: int = BATCH,
    channels: int = CHANNELS,
    dk: int = DK,
    dv: int = DV,
    heads: int = HEADS,
    naive_max_gib: float = 3.0,
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
    on_case: Callable[[str, int, str, dict], None] | None = None,
) -> list[dict]:
    """Measure every case of :func:`sweep_plan`, each implementation in its own subprocess.

    Returns one row per (variant, size): ``{"variant", "size", impl: result, ...}`` where a result
    is ``{"ms", "peak_mib", "runs"}``, ``{"error": ...}`` or ``{"skipped": ...}`` (a naive case
    whose single ``(B, heads, N, N)`` fp32 map exceeds ``naive_max_gib``). ``on_case(variant,
    size, impl, result)`` is called after each case (progress). ``env`` defaults to :func:`case_env`.
    """
    if repeats < 1 or any(s < 1 for s in list(sizes) + list(linear_sizes)):
        raise ValueError(f"repeats and sizes must be positive, got repeats={repeats}, sizes={sizes}, "
                         f"linear_sizes={linear_sizes}")
    if not impls or any(impl not in IMPLS for impl in impls):
        raise ValueError(f"impls must be a non-empty subset of {IMPLS}, got {impls!r}")
    if dk % heads or dv % heads or dv > channels:
        raise ValueError(f"heads={heads} must divide dk={dk} and dv={dv}, and dv <= channels={channels}")
    env = case_env() if env is None else env
    rows = []
    for variant, size in sweep_plan(sizes, linear_sizes, variants):
        row: dict = {"variant": variant, "size": size}
        for impl in impls:
            if impl == "naive" and "backend" in VARIANTS[variant]:
                row[impl] = {"skipped": "a pinned kernel: the naive layer is the unpinned variant's"}
                continue
            if impl == "naive" and VARIANTS[variant]["attention"] is None:
                row[impl] = {"skipped": "no attention"}
                continue
            if impl == "naive" and naive_map_bytes(size, batch, heads) > naive_max_gib * 2**30:
                row[impl] = {"skipped": f"one N x N map is {naive_map_bytes(size, batch, heads) / 2**30:.0f} GiB"}
                continue
            case = Case(variant, impl, size, device, repeats, batch, channels, dk, dv, heads, min_seconds)
            row[impl] = run_in_subprocess(case, timeout, env)
            if on_case is not None:
                on_case(variant, size, impl, row[impl])
        rows.append(row)
    return rows


def machine_info() -> dict:
    """torch and Python versions, CPU, threads and GPU name: the ``"machine"`` of a results file."""
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _table(rows: list[dict]) -> str:
    name = max(map(len, VARIANTS))
    header = f"{'layer':<{name}} {'size':>7} {'ours ms':>9} {'naive ms':>9} {'speed-up':>8} {'ours MiB':>9} {'naive MiB':>10} {'mem ratio':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        ours, naive = row["ours"], row.get("naive") or {}

        def num(res: dict, key: str, fmt: str) -> str:
            if key in res:
                return format(res[key], fmt)
            width = fmt.split(".")[0]
            return format("skip" if "skipped" in res else "fail" if res else "-", ">" + width)

        speed = f"{naive['ms'] / ours['ms']:.2f}x" if "ms" in naive and "ms" in ours else "-"
        mem = f"1/{naive['peak_mib'] / ours['peak_mib']:.1f}" if "peak_mib" in naive and ours.get("peak_mib", 0) > 0 else "-"
        lines.append(
            f"{row['variant']:<{name}} {row['size']:>4}^2 {num(ours, 'ms', '9.1f')} {num(naive, 'ms', '9.1f')} "
            f"{speed:>8} {num(ours, 'peak_mib', '9.1f')} {num(naive, 'peak_mib', '10.1f')} {mem:>9}"
        )
    return "\n".join(lines)


def _targets(rows: list[dict], device: str) -> list[dict]:
    """The issue's acceptance targets, evaluated on this run's rows."""
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
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(Case(**json.loads(args.case)))))
        return 0
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
        "machine": machine_info(),
        "rows": rows,
        "targets": checks,
        "table": table,
    })
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
