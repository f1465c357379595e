"""``python -m aalib.bench train``: speed and memory of one training step of every model.

One step = forward, cross-entropy, backward and an SGD step (the study's optimizer: Nesterov
momentum 0.9) on a random CIFAR-size batch (3x32x32, 100 classes). For each model the benchmark
reports images per second and milliseconds per step (median over ``--repeats`` timed steps after
``--warmup`` untimed ones), the peak memory the steps add on top of the built model, and the step
time relative to the attention-free model of the same family (the key number: the study's
Wide-AAResNet against its Wide-ResNet, whose seconds per epoch on CIFAR-100 the reproduced study
published as 11.84 and 8.42, a ratio of 1.41; docs/reproduced_study.md).

Every (model, variant) runs in a fresh subprocess so that peak memory is its own:

* CPU: the lifetime peak resident memory (:func:`aalib.memory.peak_rss_bytes`) after the steps
  minus before them;
* CUDA: ``torch.cuda.max_memory_allocated()`` during the steps minus the memory allocated before
  them (:func:`aalib.memory.reset_peak_memory`; the absolute peak, weights included, is in the
  JSON as well).

Host memory: as in training (``retain_freed_memory``, on by default), each run first calls
:func:`aalib.memory.retain_freed_memory`; ``--system-malloc`` measures with glibc's defaults.

Variants: ``fp32`` everywhere; on CUDA also ``bf16-cl`` (bf16 autocast + channels_last) and
``compile`` (``torch.compile``, fp32). The CPU default batch is 32 (the study used 128) to keep the
default run within a few minutes on a laptop; ``--batch-size 128`` restores it.

Output: a table on stdout and JSON (``--out``, written atomically) with the machine, the settings
and one record per run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..fresh_process import run_in_fresh_process
from ..io import write_json
from ..machine import machine_info, synchronize
from ..memory import MIB, peak_memory_since_reset, peak_rss_bytes, reset_peak_memory, retain_freed_memory
from ..models import build_model, count_parameters
from ..tables import format_table

__all__ = ["MODEL_SPECS", "VARIANTS", "measure", "run", "main"]

# spec name -> (registry name, build options, family); the family's attention-free member is the baseline
MODEL_SPECS: dict[str, tuple[str, dict[str, Any], str]] = {
    "repro_wrn": ("repro_wrn", {}, "repro_wrn"),
    "repro_wrn-aa": ("repro_wrn", {"attention": "softmax"}, "repro_wrn"),
    "repro_wrn-laa": ("repro_wrn", {"attention": "linear"}, "repro_wrn"),
    "repro_simple_cnn": ("repro_simple_cnn", {}, "repro_simple_cnn"),
    "repro_simple_cnn-aa": ("repro_simple_cnn", {"attention": "softmax"}, "repro_simple_cnn"),
    "repro_simple_cnn-laa": ("repro_simple_cnn", {"attention": "linear"}, "repro_simple_cnn"),
    "wrn-28-10": ("wrn", {"depth": 28, "width": 10}, "wrn-28-10"),
    "aa-wrn-28-10": ("wrn", {"depth": 28, "width": 10, "attention": "softmax"}, "wrn-28-10"),
}
DEFAULT_MODELS: tuple[str, ...] = tuple(name for name in MODEL_SPECS if name.startswith("repro_"))
WRN28_MODELS: tuple[str, ...] = ("wrn-28-10", "aa-wrn-28-10")  # behind --wrn28: slow on a CPU

VARIANTS: tuple[str, ...] = ("fp32", "bf16-cl", "compile")
DEFAULTS = {  # per device: batch size, timed steps, warm-up steps, variants
    "cpu": {"batch_size": 32, "repeats": 5, "warmup": 2, "variants": ("fp32",)},
    "cuda": {"batch_size": 128, "repeats": 20, "warmup": 5, "variants": VARIANTS},
}


def _training_step(
    spec: str, variant: str, device: str, batch_size: int, image_size: int, num_classes: int, seed: int = 0
) -> tuple[Callable[[], None], Callable[[], None], int]:
    """Build model ``spec`` with its optimizer and a random batch; returns ``(step, sync, params)``."""
    torch.manual_seed(seed)
    name, options, _ = MODEL_SPECS[spec]
    model = build_model(name, num_classes=num_classes, **options).to(device).train()
    params = count_parameters(model)
    x = torch.rand(batch_size, 3, image_size, image_size, device=device)  # the study's /255 inputs
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    if variant == "bf16-cl":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(model) if variant == "compile" else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if variant == "bf16-cl" else nullcontext()

    def sync() -> None:
        synchronize(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(step_model(x), y)
        loss.backward()
        optimizer.step()

    return step, sync, params


def measure(
    spec: str,
    *,
    variant: str = "fp32",
    device: str = "cpu",
    batch_size: int = 32,
    repeats: int = 5,
    warmup: int = 2,
    image_size: int = 32,
    num_classes: int = 100,
    threads: int | None = None,
    seed: int = 0,
    retain_memory: bool = True,
) -> dict[str, Any]:
    """Time ``repeats`` training steps of model ``spec`` after ``warmup`` untimed ones.

    Memory is only meaningful in a fresh process (:func:`run` starts one per measurement).
    ``retain_memory`` applies :func:`aalib.memory.retain_freed_memory` first, as the trainer does.
    """
    if spec not in MODEL_SPECS:
        raise ValueError(f"unknown model spec {spec!r}; known: {', '.join(MODEL_SPECS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    if threads is not None:
        torch.set_num_threads(threads)
    retained = retain_memory and retain_freed_memory()
    step, sync, params = _training_step(spec, variant, device, batch_size, image_size, num_classes, seed)
    name, options, family = MODEL_SPECS[spec]

    sync()
    rss_before = peak_rss_bytes()
    if device == "cuda":
        allocated_before = reset_peak_memory(device)
    compile_start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - compile_start
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    record: dict[str, Any] = {
        "model": spec,
        "registry_name": name,
        "options": options,
        "family": family,
        "attention": options.get("attention"),
        "variant": variant,
        "device": device,
        "batch_size": batch_size,
        "image_size": image_size,
        "num_classes": num_classes,
        "params": params,
        "threads": torch.get_num_threads(),
        "retain_freed_memory": retained,
        "warmup_steps": warmup,
        "warmup_s": warmup_s,
        "step_s": times,
        "ms_per_step": 1000 * median,
        "img_per_s": batch_size / median,
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device == "cuda":
        peak = peak_memory_since_reset(device)
        record["peak_mib"] = (peak - allocated_before) / MIB
        record["peak_allocated_mib"] = peak / MIB
        record["memory_method"] = "torch.cuda.max_memory_allocated() - memory_allocated() before the steps"
    else:
        rss_after = peak_rss_bytes()
        record["peak_mib"] = (rss_after - rss_before) / MIB
        record["maxrss_mib"] = rss_after / MIB
        record["memory_method"] = "ru_maxrss after the steps - ru_maxrss before them (fresh process)"
    return record


def _run_subprocess(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """:func:`measure` of ``job`` in a fresh process; a failure is ``{"model", "variant", "error"}``."""
    record = run_in_fresh_process(f"{__name__}:measure", job, timeout=timeout)
    return {"model": job["spec"], "variant": job["variant"], **record} if "error" in record else record


def interleaved_step_times(
    jobs: list[tuple[str, str]],
    *,
    device: str,
    batch_size: int,
    repeats: int,
    warmup: int,
    image_size: int = 32,
    num_classes: int = 100,
    threads: int | None = None,
    retain_memory: bool = True,
) -> dict[tuple[str, str], list[float]]:
    """Step times of several (model, variant) pairs measured round-robin in this process.

    On a shared machine the load changes over minutes; timing the models in turn, one step each
    per round, exposes them all to the same load, so their ratios stay meaningful.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    if retain_memory:
        retain_freed_memory()
    steps = {job: _training_step(*job, device, batch_size, image_size, num_classes)[:2] for job in jobs}
    for step, sync in steps.values():
        for _ in range(warmup):
            step()
        sync()
    times: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
    for _ in range(repeats):
        for job, (step, sync) in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[job].append(time.perf_counter() - start)
    return times


def _add_ratios(records: list[dict[str, Any]]) -> None:
    """Step time relative to the attention-free model of the same family and variant."""
    baselines = {
        (r["family"], r["variant"]): r["ms_per_step"] for r in records if "error" not in r and r["attention"] is None
    }
    for r in records:
        base = baselines.get((r.get("family"), r.get("variant")))
        r["ratio_to_baseline"] = r["ms_per_step"] / base if base and "error" not in r else None


def key_ratios(records: list[dict[str, Any]]) -> dict[str, float]:
    """``<model> / <its baseline>`` step-time ratios of the attention models, per variant."""
    return {
        f"{r['model']}/{r['variant']}": r["ratio_to_baseline"]
        for r in records
        if "error" not in r and r["attention"] is not None and r.get("ratio_to_baseline") is not None
    }


def run(
    models: list[str],
    *,
    variants: list[str],
    device: str,
    batch_size: int,
    repeats: int,
    warmup: int,
    image_size: int = 32,
    num_classes: int = 100,
    threads: int | None = None,
    retain_memory: bool = True,
    subprocesses: bool = True,
    interleave: bool = False,
    timeout: float = 1800.0,
    log=print,
) -> list[dict[str, Any]]:
    """Measure every (model, variant), each in a fresh subprocess unless ``subprocesses=False``.

    With ``interleave`` the step times are then re-measured round-robin in this process
    (:func:`interleaved_step_times`); memory still comes from the per-run subprocesses.
    """
    jobs = [(spec, variant) for spec in models for variant in variants]
    records = []
    for index, (spec, variant) in enumerate(jobs, start=1):
        job = {
            "spec": spec,
            "variant": variant,
            "device": device,
            "batch_size": batch_size,
            "repeats": repeats,
            "warmup": warmup,
            "image_size": image_size,
            "num_classes": num_classes,
            "threads": threads,
            "retain_memory": retain_memory,
        }
        if subprocesses:
            record = _run_subprocess(job, timeout)
        else:
            record = measure(job.pop("spec"), **job)
        records.append(record)
        if "error" in record:
            log(f"[{index}/{len(jobs)}] {spec} {variant}: FAILED {record['error']}")
        else:
            log(f"[{index}/{len(jobs)}] {spec} {variant}: {record['ms_per_step']:.1f} ms/step")
    if interleave:
        ok = [(r["model"], r["variant"]) for r in records if "error" not in r]
        log(f"timing {len(ok)} runs round-robin in one process ({repeats} rounds)")
        times = interleaved_step_times(
            ok, device=device, batch_size=batch_size, repeats=repeats, warmup=warmup,
            image_size=image_size, num_classes=num_classes, threads=threads, retain_memory=retain_memory,
        )
        for r in records:
            if (r.get("model"), r.get("variant")) in times:
                r["ms_per_step_isolated"] = r["ms_per_step"]
                r["step_s"] = times[(r["model"], r["variant"])]
                median = statistics.median(r["step_s"])
                r["ms_per_step"], r["img_per_s"] = 1000 * median, batch_size / median
    for r in records:
        r["timing"] = "interleaved" if interleave else "isolated"
    _add_ratios(records)
    return records


def _table(records: list[dict[str, Any]]) -> str:
    """One line per record; a failed one says so in its row and its error follows the table."""
    rows = []
    for r in records:
        row = {"model": r["model"], "variant": r["variant"]}
        if "error" in r:
            row["params"] = "failed"
        else:
            ratio = r.get("ratio_to_baseline")
            row.update({"params": r["params"], "img/s": r["img_per_s"], "ms/step": r["ms_per_step"],
                        "peak MiB": r["peak_mib"], "ratio": "-" if ratio is None else ratio})
        rows.append(row)
    table = format_table(rows, ["model", "variant", "params", "img/s", "ms/step", "peak MiB", "ratio"],
                         formats={"params": ",", "img/s": ".1f", "ms/step": ".1f", "peak MiB": ".1f", "ratio": ".2f"},
                         left=("model", "variant"))
    errors = [f"{r['model']} {r['variant']} failed: {r['error'][:80]}" for r in records if "error" in r]
    return "\n".join([table, *errors])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aalib.bench train",
        description="Images/s and peak memory of one training step (forward, backward, SGD step) of each model.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 on cuda, 32 on cpu")
    parser.add_argument(
        "--models", nargs="+", choices=tuple(MODEL_SPECS), default=None, metavar="MODEL",
        help=f"default: {' '.join(DEFAULT_MODELS)} (choices: {', '.join(MODEL_SPECS)})",
    )
    parser.add_argument("--wrn28", action="store_true", help="also WRN-28-10 and AA-WRN-28-10 (slow on a CPU)")
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=None,
        help="default: fp32 on cpu; fp32 bf16-cl compile on cuda",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per model (median); default 5 cpu, 20 cuda")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first; default 2 cpu, 5 cuda")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each run (default: torch's)")
    parser.add_argument(
        "--system-malloc", action="store_true",
        help="leave glibc's malloc thresholds as they are (the trainer's retain_freed_memory=false)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench_train.json"))
    parser.add_argument("--in-process", action="store_true", help="no subprocesses (peak memory then not per model)")
    parser.add_argument(
        "--interleave", action="store_true",
        help="time the models round-robin in one process (fair ratios on a shared, busy machine); memory still per subprocess",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    defaults = DEFAULTS[device]
    batch_size = args.batch_size or defaults["batch_size"]
    repeats = args.repeats or defaults["repeats"]
    warmup = defaults["warmup"] if args.warmup is None else args.warmup
    variants = args.variants or list(defaults["variants"])
    models = list(args.models or DEFAULT_MODELS)
    if args.wrn28:
        models += [m for m in WRN28_MODELS if m not in models]
    for name, value in (("--batch-size", batch_size), ("--repeats", repeats), ("--image-size", args.image_size)):
        if value < 1:
            print(f"error: {name} must be >= 1, got {value}", file=sys.stderr)
            return 2

    machine = machine_info(device)
    if args.threads is not None:
        machine["threads"] = args.threads
    print(
        f"training-step benchmark on {device} ({machine['device_name']}, torch {machine['torch']}, "
        f"{machine['threads']} threads): batch {batch_size}, {args.image_size}x{args.image_size}, "
        f"{args.num_classes} classes, median of {repeats} steps after {warmup} warm-up"
    )
    if device == "cpu" and args.batch_size is None:
        print(f"note: CPU default batch size is {batch_size} (the study trained with 128; pass --batch-size 128)")
    records = run(
        models,
        variants=variants,
        device=device,
        batch_size=batch_size,
        repeats=repeats,
        warmup=warmup,
        image_size=args.image_size,
        num_classes=args.num_classes,
        threads=args.threads,
        retain_memory=not args.system_malloc,
        subprocesses=not args.in_process,
        interleave=args.interleave,
    )
    print()
    print(_table(records))
    memory = "max_memory_allocated above the resting model" if device == "cuda" else "ru_maxrss delta around the steps"
    print(f"peak MiB: {memory}; ratio: step time / attention-free model of the same family and variant")
    ratios = key_ratios(records)
    key = ratios.get("repro_wrn-aa/fp32")
    if key is not None:
        verdict = "meets" if key <= 1.5 else "misses"
        print(f"key ratio: the study's Wide-AAResNet / Wide-ResNet step time = {key:.2f} ({verdict} the target <= 1.5)")
    payload = {
        "benchmark": "train",
        "machine": machine,
        "settings": {
            "device": device,
            "batch_size": batch_size,
            "repeats": repeats,
            "warmup": warmup,
            "image_size": args.image_size,
            "num_classes": args.num_classes,
            "variants": variants,
            "models": models,
            "subprocess_per_run": not args.in_process,
            "timing": "interleaved" if args.interleave else "isolated",
            "optimizer": "SGD lr 0.01, Nesterov momentum 0.9",
            "retain_freed_memory": not args.system_malloc,
        },
        "key_ratios": ratios,
        "results": records,
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
