"""``python -m aalib.bench gpu-check`` (``make gpu-check``): the GPU verified in one call.

Contract. On a machine with a CUDA device, run the steps of :data:`STEPS` in order, each in its
own subprocess under its own timeout (SIGTERM to its process group, SIGKILL 10 s later), carry on
after a failing step, print a table of steps and of targets, write one JSON file per step and a
summary, and exit 0 only if every step that ran passed and every target that could be evaluated
was met (1 otherwise). The step timeouts sum to :data:`BUDGET_S` (8 minutes on one H200-class
GPU) less at least 15 s for this process's own work.

* ``tests``: the tests marked ``cuda`` in :data:`CUDA_TEST_FILES`; tests/test_cuda.py runs the
  kernels (every CUDA backend of :data:`aalib.attention.BACKENDS`, with and without relative logits)
  and the AA layer on CUDA in float32 and bfloat16, outputs and gradients, against the plain
  references of tests/test_attention.py and tests/test_layers.py.
* ``memory`` (:func:`memory_worker`): the no-``N x N`` guarantee on CUDA as memory: peak
  ``torch.cuda.max_memory_allocated`` of forward + backward of ``softmax_attention`` with relative
  logits at 64 x 64 and 128 x 128, every backend, float32 and bfloat16. The fused kernel's
  extended head is ``dkh + H + W`` wide (264 at 128 x 128, dkh = 8: above the flash kernel's 256),
  so its memory may grow as ``N (dkh + H + W)``, 7.8x from 64^2 to 128^2, but not as ``N^2``
  (16x): a case passes when its growth is at most :data:`MEMORY_GROWTH_LIMIT` and its 128^2 peak
  is below one ``(B, heads, N, N)`` map. The step also records which SDPA kernels ran and whether
  flash takes that head.
* ``attention`` and ``train``: ``python -m aalib.bench attention`` and ``python -m aalib.bench
  train`` on CUDA (the latter fp32, bf16 + channels_last and torch.compile), small settings.
* ``epoch`` (:func:`epoch_worker`): one timed epoch of WRN-28-10 and of Bello et al.'s AA-WRN-28-10
  (I. Bello, B. Zoph, A. Vaswani, J. Shlens, Q. V. Le, "Attention Augmented Convolutional
  Networks", ICCV 2019, https://arxiv.org/abs/1904.09925, Sec. 4.1; params/bello/) on 50,000
  synthetic CIFAR-shaped images, batch 128, bf16 autocast and channels_last, the trainer's
  optimizer, loss and device-side augmentation: seconds per epoch, and the share of the GPU's
  dense bf16 peak (:data:`BF16_PEAK_TFLOPS`) from the FLOPs that
  :class:`torch.utils.flop_counter.FlopCounterMode` counts for one step, forward and backward.
* ``ddp`` (:func:`ddp_worker`): a one-process NCCL process group under ``torchrun``, DDP around
  the study's Simple-AACNN: its all-reduced gradients equal the plain model's.
* ``torchrun-train``: ``python -m aalib train params/smoke.yaml`` on CUDA (bf16, channels_last)
  under ``torchrun``. With one process ``aalib.train`` runs without a process group, so this step
  tests the launcher and the trainer's CUDA path, and ``ddp`` tests NCCL.

Outputs: ``<out-dir>/<step>_cuda_<gpu>_<date>.json`` per step (the benchmarks' own files, or the
step's record) and ``<out-dir>/gpu-check_cuda_<gpu>_<date>.json``, the summary (steps, numbers,
targets, table), all written atomically (:mod:`aalib.io`). ``--dry-run`` lists the steps, their
commands, budgets and files and needs no GPU; without a CUDA device anything else exits 2 with one
line on stderr before any work.

Status: tested on the CPU only (tests/test_gpu_check.py: the dry run, the runner, the targets);
the step budgets are estimates, not measurements on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ..io import write_json
from ..machine import machine_info, synchronize
from ..memory import MIB, peak_memory_since_reset, reset_peak_memory
from ..tables import format_table

__all__ = ["BUDGET_S", "BF16_PEAK_TFLOPS", "MEMORY_GROWTH_LIMIT", "STEPS", "TARGETS", "Step", "Target",
           "memory_worker", "epoch_worker", "ddp_worker", "main"]

ROOT = Path(__file__).resolve().parents[2]  # the repository: commands run here
BUDGET_S = 480  # the whole check, on one H200-class GPU
NO_CUDA = "gpu-check needs a CUDA device; torch.cuda.is_available() is False; use --dry-run to list the steps"
PLACEHOLDER_GPU = "<device>"  # the GPU's part of the file names when there is none to ask

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; the first name
# contained in torch.cuda.get_device_name() wins.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
)

# memory step: softmax_attention with relative logits, forward + backward
MEMORY_SIZES = (64, 128)
MEMORY_SHAPE = {"batch": 2, "heads": 4, "dkh": 8, "dvh": 8}


def _extended_head(size: int) -> int:
    return MEMORY_SHAPE["dkh"] + 2 * size  # dkh + H + W of the fused kernel's extended queries


# N (dkh + H + W) grows 7.8x from 64^2 to 128^2; allow a quarter more, far below N^2's 16x
MEMORY_GROWTH_LIMIT = round(1.25 * (MEMORY_SIZES[1] ** 2 * _extended_head(MEMORY_SIZES[1]))
                            / (MEMORY_SIZES[0] ** 2 * _extended_head(MEMORY_SIZES[0])), 1)

# tests step: the tests marked cuda in these files
CUDA_TEST_FILES = ("tests/test_cuda.py", "tests/test_attention.py", "tests/test_layers.py")

# epoch step: CIFAR's training set, the Bello et al. configurations
EPOCH_IMAGES = 50_000
EPOCH_WARMUP_STEPS = 10
EPOCH_MODELS: dict[str, str] = {
    "wrn-28-10": "params/bello/cifar100_wrn28_10.yaml",
    "aa-wrn-28-10": "params/bello/cifar100_aa_wrn28_10.yaml",
}


# -- steps ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Collected:
    """What a step's outcome says: passed or not, its key numbers, and (for steps that write no
    file themselves) the record to write as its file."""

    ok: bool
    numbers: dict[str, Any]
    record: dict[str, Any] | None = None


@dataclass(frozen=True)
class Step:
    """One check: ``argv(out, scratch)`` is its command (``out`` its JSON file, ``scratch`` a
    temporary folder), run for at most ``budget_s`` seconds; ``collect(returncode, output, out,
    scratch)`` reads the outcome (``returncode`` None after a timeout)."""

    name: str
    what: str
    budget_s: int
    argv: Callable[[Path, Path], list[str]]
    collect: Callable[[int | None, str, Path, Path], Collected]


@dataclass
class StepResult:
    name: str
    status: str  # "pass", "fail", "timeout" or "skipped"
    seconds: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    output: str | None = None  # the step's JSON file
    log_tail: str | None = None  # the end of its output, when it did not pass


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b")


def pytest_counts(output: str) -> dict[str, int]:
    """``{"passed": 40, "skipped": 2, ...}`` from pytest's last summary line ('40 passed, 2 skipped in 3.1s')."""
    lines = [line for line in output.splitlines() if _PYTEST_COUNT.search(line) and re.search(r" in [\d.]+s", line)]
    if not lines:
        return {}
    return {word.rstrip("s") if word.startswith("error") else word: int(count)
            for count, word in _PYTEST_COUNT.findall(lines[-1])}


def _collect_tests(returncode: int | None, output: str, out: Path, scratch: Path) -> Collected:
    counts = pytest_counts(output)
    ok = returncode == 0 and counts.get("passed", 0) > 0
    return Collected(ok, counts, {"counts": counts, "returncode": returncode, "output_tail": output[-4000:]})


def _collect_memory(returncode: int | None, output: str, out: Path, scratch: Path) -> Collected:
    payload = _read_json(out) or {}
    cases = payload.get("cases", [])
    numbers: dict[str, Any] = {}
    if cases:
        worst = max(cases, key=lambda case: case["growth"])
        numbers["worst_growth"] = round(worst["growth"], 2)
        numbers["worst_case"] = f"{worst['backend']} {worst['dtype']}"
    numbers.update({f"flash takes head {head}": takes for head, takes in payload.get("flash_takes_head", {}).items()})
    return Collected(returncode == 0 and bool(cases) and payload.get("passed") is True, numbers)


def _collect_attention(returncode: int | None, output: str, out: Path, scratch: Path) -> Collected:
    payload = _read_json(out) or {}
    rows = payload.get("rows", [])
    numbers: dict[str, Any] = {}
    for row in rows:
        ours, naive = row.get("ours", {}), row.get("naive") or {}
        if row["variant"] == "AA relative" and row["size"] == 64 and "ms" in ours and "ms" in naive:
            numbers["aa_rel_64_speedup"] = round(naive["ms"] / ours["ms"], 2)
            numbers["aa_rel_64_mem_ratio"] = round(naive["peak_mib"] / ours["peak_mib"], 2)
    failed = [f"{row['variant']} {row['size']} {impl}" for row in rows for impl in ("ours", "naive")
              if "error" in (row.get(impl) or {})]
    if failed:
        numbers["failed_cases"] = failed
    return Collected(returncode == 0 and bool(rows) and not failed, numbers)


def _collect_train(returncode: int | None, output: str, out: Path, scratch: Path) -> Collected:
    payload = _read_json(out) or {}
    numbers = {key: round(value, 3) for key, value in payload.get("key_ratios", {}).items()}
    return Collected(returncode == 0 and bool(payload.get("results")), numbers)


def _collect_epoch(returncode: int | None, output: str, out: Path, scratch: Path) -> Collected:
    models = (_read_json(out) or {}).get("models", {})
    numbers: dict[str, Any] = {}
    for name, record in models.items():
        numbers[f"{name} s/epoch"] = round(record["seconds"], 2)
        if record.get("bf16_peak_share") is not None:
            numbers[f"{name} bf16 peak share"] = round(record["bf16_peak_share"], 3)
    if "wrn-28-10" in models and "aa-wrn-28-10" in models:
        numbers["aa_wrn_over_wrn"] = round(models["aa-wrn-28-10"]["seconds"] / models["wrn-28-10"]["seconds"], 3)
    ok = returncode == 0 and set(models) == set(EPOCH_MODELS) and all(r["finite_loss"] for r in models.values())
    return Collected(ok, numbers)


def _collect_ddp(returncode: int | None, output: str, out: Path, scratch: Path) -> Collected:
    payload = _read_json(out) or {}
    numbers = {key: payload[key] for key in ("backend", "world_size", "nccl", "max_grad_diff") if key in payload}
    return Collected(returncode == 0 and payload.get("passed") is True, numbers)


def _collect_torchrun_train(returncode: int | None, output: str, out: Path, scratch: Path) -> Collected:
    summary = _read_json(scratch / "smoke" / "summary.json") or {}
    environment = summary.get("environment", {})
    last = summary.get("last") or {}
    numbers = {"status": summary.get("status"), "device": environment.get("device"),
               "world_size": environment.get("world_size"), "val_top1": last.get("val_top1")}
    record = {key: summary.get(key) for key in ("status", "reason", "epochs_completed", "last", "test", "environment")}
    return Collected(returncode == 0 and summary.get("status") == "finished", numbers,
                     {**record, "returncode": returncode, "output_tail": output[-4000:]})


def _worker_argv(name: str) -> Callable[[Path, Path], list[str]]:
    return lambda out, scratch: [sys.executable, "-m", "aalib.bench.gpu_check", "--worker", name, "--out", str(out)]


def _torchrun(*args: str) -> list[str]:
    """``torchrun --standalone --nproc_per_node 1 ARGS`` through this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *args]


STEPS: tuple[Step, ...] = (
    Step("tests", "the kernels and the AA layer on CUDA, float32 and bf16, outputs and gradients, every backend, "
         "against the references (tests/test_cuda.py, and the cuda-marked kernel and layer tests)", 110,
         lambda out, scratch: [sys.executable, "-m", "pytest", "-m", "cuda", *CUDA_TEST_FILES, "-q", "-rs",
                               "-p", "no:cacheprovider"], _collect_tests),
    Step("memory", "memory_worker: no N x N on CUDA, peak memory of softmax_attention (relative logits) at 64^2 "
         f"and 128^2 per backend and dtype, growth <= {MEMORY_GROWTH_LIMIT} (N^2: 16); SDPA kernels, flash at head "
         f"{_extended_head(MEMORY_SIZES[1])}", 70, _worker_argv("memory"), _collect_memory),
    Step("attention", "python -m aalib.bench attention on CUDA: AA / LAA layer time and memory, ours and naive", 70,
         lambda out, scratch: [sys.executable, "-m", "aalib.bench", "attention", "--device", "cuda", "--sizes", "64",
                               "--linear-sizes", "32", "128", "--repeats", "5", "--min-seconds", "0.5",
                               "--timeout", "30", "--out", str(out)], _collect_attention),
    Step("train", "python -m aalib.bench train on CUDA: the study's Wide-ResNet and Wide-AAResNet steps in fp32, "
         "bf16 + channels_last and torch.compile", 90,
         lambda out, scratch: [sys.executable, "-m", "aalib.bench", "train", "--device", "cuda",
                               "--models", "repro_wrn", "repro_wrn-aa", "--repeats", "10", "--warmup", "3",
                               "--out", str(out)], _collect_train),
    Step("epoch", f"epoch_worker: one timed epoch of WRN-28-10 and AA-WRN-28-10 (Bello et al. 2019), "
         f"{EPOCH_IMAGES:,} CIFAR-shaped images, batch 128, bf16 + channels_last; share of the bf16 peak", 65,
         _worker_argv("epoch"), _collect_epoch),
    Step("ddp", "ddp_worker under torchrun: a one-process NCCL group, DDP around the Simple-AACNN, "
         "all-reduced gradients = the plain model's", 25,
         lambda out, scratch: _torchrun("-m", "aalib.bench.gpu_check", "--worker", "ddp", "--out", str(out)),
         _collect_ddp),
    Step("torchrun-train", "python -m aalib train params/smoke.yaml under torchrun on CUDA (bf16, channels_last)", 30,
         lambda out, scratch: _torchrun("-m", "aalib", "train", "params/smoke.yaml", "--set", "device=cuda",
                                        "--set", "bf16=true", "--set", "channels_last=true",
                                        "--out", str(scratch / "smoke")), _collect_torchrun_train),
)


# -- targets -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """``numbers[key]`` of step ``step`` compared with ``threshold`` (``op``: "<=" or ">=")."""

    text: str
    step: str
    key: str
    op: str
    threshold: float


TARGETS: tuple[Target, ...] = (
    Target("AA relative 64^2: naive / ours layer time", "attention", "aa_rel_64_speedup", ">=", 5.0),
    Target("AA-WRN-28-10 / WRN-28-10 step time (bf16 epoch)", "epoch", "aa_wrn_over_wrn", "<=", 1.3),
    Target("WRN-28-10 CIFAR-100 epoch, s (bf16; the target is an H200's)", "epoch", "wrn-28-10 s/epoch", "<=", 10.0),
    Target("no N x N: peak memory growth 64^2 -> 128^2, worst backend and dtype", "memory", "worst_growth", "<=",
           MEMORY_GROWTH_LIMIT),
)


def evaluate_targets(results: Mapping[str, StepResult], targets: Sequence[Target] = TARGETS) -> list[dict[str, Any]]:
    """Each target's value and verdict: ``met`` True or False, or None when its step was skipped.

    A target whose step ran but did not report the number is not met.
    """
    verdicts = []
    for target in targets:
        result = results.get(target.step)
        value = None if result is None else result.numbers.get(target.key)
        if result is None or result.status == "skipped":
            met = None
        elif value is None:
            met = False
        else:
            met = value <= target.threshold if target.op == "<=" else value >= target.threshold
        verdicts.append({"target": target.text, "step": target.step, "value": value,
                         "threshold": f"{target.op} {target.threshold:g}", "met": met})
    return verdicts


def exit_status(results: Mapping[str, StepResult], verdicts: Sequence[Mapping[str, Any]]) -> int:
    """0 when every step that ran passed and no target was missed, else 1."""
    failed_step = any(r.status not in ("pass", "skipped") for r in results.values())
    return 1 if failed_step or any(v["met"] is False for v in verdicts) else 0


def _numbers_text(numbers: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in numbers.items()) or "-"


def summary_table(results: Mapping[str, StepResult], verdicts: Sequence[Mapping[str, Any]]) -> str:
    """The steps (status, seconds, key numbers) and the targets (value, threshold, PASS / FAIL / skipped)."""
    steps = format_table([{"step": r.name, "status": r.status, "seconds": round(r.seconds, 1),
                           "key numbers": _numbers_text(r.numbers)} for r in results.values()])
    targets = format_table([{"target": v["target"], "value": "-" if v["value"] is None else v["value"],
                             "threshold": v["threshold"],
                             "result": {True: "PASS", False: "FAIL", None: "skipped"}[v["met"]]} for v in verdicts])
    return steps + "\n\n" + targets


# -- running -------------------------------------------------------------------------------------
def gpu_slug(name: str) -> str:
    """A GPU's name for file names: ``"NVIDIA H200"`` -> ``"h200"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-") or "gpu"


def output_path(out_dir: Path, name: str, gpu: str, date: str) -> Path:
    return out_dir / f"{name}_cuda_{gpu}_{date}.json"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # the whole group has exited
        pass


def run_command(argv: Sequence[str], timeout: float, log: Path, cwd: Path = ROOT) -> int | None:
    """Run ``argv`` in its own session with output to ``log``; its return code, or None when it ran
    past ``timeout`` seconds and was stopped: SIGTERM to its process group (torchrun passes it on
    to its workers, which run in sessions of their own), then SIGKILL to what is left 10 s later."""
    with open(log, "wb") as handle:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def run_steps(steps: Sequence[Step], out_dir: Path, gpu: str, date: str, skip: Sequence[str] = (),
              log: Callable[[str], None] = lambda line: print(line, flush=True)) -> dict[str, StepResult]:
    """Run every step not in ``skip``, in order, whatever the others did, and write each step's file.

    A step writes into a temporary folder; what it wrote (or its record) then replaces its file in
    ``out_dir``, so a step that dies early never leaves an earlier run's numbers to be read as its own.
    """
    results: dict[str, StepResult] = {}
    machine = machine_info("cuda")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        for index, step in enumerate(steps, start=1):
            if step.name in skip:
                results[step.name] = StepResult(step.name, "skipped")
                log(f"[{index}/{len(steps)}] {step.name}: skipped")
                continue
            work, out = scratch / f"{step.name}.json", output_path(out_dir, step.name, gpu, date)
            argv = step.argv(work, scratch)
            command = shlex.join(argv)
            log(f"[{index}/{len(steps)}] {step.name} (at most {step.budget_s} s): {command}")
            logfile = scratch / f"{step.name}.log"
            start = time.perf_counter()
            returncode = run_command(argv, step.budget_s, logfile)
            seconds = time.perf_counter() - start
            output = logfile.read_text(encoding="utf-8", errors="replace")
            try:
                collected = step.collect(returncode, output, work, scratch)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:  # output of an unexpected shape
                collected = Collected(False, {"unreadable_output": f"{type(exc).__name__}: {exc}"})
            payload = _read_json(work) if collected.record is None else {
                "step": step.name, "command": command, "machine": machine, **collected.record}
            if payload is not None:
                write_json(out, payload)
            status = "timeout" if returncode is None else "pass" if collected.ok else "fail"
            results[step.name] = StepResult(step.name, status, seconds, collected.numbers, command,
                                            None if payload is None else str(out),
                                            None if status == "pass" else output[-4000:])
            log(f"    {status} in {seconds:.1f} s: {_numbers_text(collected.numbers)}")
            if status != "pass":
                log("    " + "\n    ".join(output.strip().splitlines()[-15:]))
    return results


def dry_run(steps: Sequence[Step], out_dir: Path, gpu: str, date: str, skip: Sequence[str] = ()) -> str:
    """The numbered steps: name, budget, what it checks, the exact command and its output file."""
    total = sum(s.budget_s for s in steps if s.name not in skip)
    lines = [f"gpu-check: {len(steps)} steps, at most {total} s of the {BUDGET_S} s budget; <tmp> is a temporary "
             f"folder; summary -> {output_path(out_dir, 'gpu-check', gpu, date)}"]
    scratch = Path("<tmp>")
    for index, step in enumerate(steps, start=1):
        skipped = " (skipped)" if step.name in skip else ""
        lines += [f"{index:2d}. {step.name}{skipped}  [{step.budget_s} s]  {step.what}",
                  f"      $ {shlex.join(step.argv(scratch / f'{step.name}.json', scratch))}",
                  f"      -> {output_path(out_dir, step.name, gpu, date)}"]
    lines.append("targets:")
    lines += [f"    {t.text} {t.op} {t.threshold:g}  ({t.step})" for t in TARGETS]
    return "\n".join(lines)


# -- workers (each runs in its own process) --------------------------------------------------------
def bf16_peak_tflops(device_name: str) -> float | None:
    """The GPU's dense bf16 peak (:data:`BF16_PEAK_TFLOPS`), or None for a GPU not in the table."""
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


class OpRecorder(TorchDispatchMode):
    """The aten ops that run (forward and backward) and the largest tensor any of them returns."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.ops.add(str(func))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _flash_takes(head: int) -> bool:
    """Whether SDPA's flash kernel alone runs bf16 attention with this head size."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    x = torch.randn(1, 1, 64, head, device="cuda", dtype=torch.bfloat16)
    try:
        with warnings.catch_warnings(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            warnings.simplefilter("ignore")
            F.scaled_dot_product_attention(x, x, x)
    except RuntimeError:
        return False
    return True


def _attention_case(backend: str, dtype: torch.dtype, size: int, record_ops: bool) -> dict[str, Any]:
    """Peak memory above the inputs of one forward + backward, after a warm-up; with
    ``record_ops``, one more pass under a Python dispatch mode names the SDPA kernels that ran."""
    from ..attention import softmax_attention

    batch, heads, dkh, dvh = (MEMORY_SHAPE[k] for k in ("batch", "heads", "dkh", "dvh"))
    n = size * size
    torch.manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=True)

    inputs = [rnd(batch, heads, n, dkh), rnd(batch, heads, n, dkh), rnd(batch, heads, n, dvh),
              rnd(2 * size - 1, dkh), rnd(2 * size - 1, dkh)]
    grad = torch.randn(batch, heads, n, dvh, device="cuda", dtype=dtype)

    def run() -> None:
        q, k, v, rel_h, rel_w = inputs
        softmax_attention(q, k, v, rel_h=rel_h, rel_w=rel_w, size=(size, size), backend=backend).backward(grad)
        for t in inputs:
            t.grad = None

    run()  # kernel selection, compilation, workspaces
    synchronize("cuda")
    held = reset_peak_memory("cuda")
    run()
    synchronize("cuda")
    case: dict[str, Any] = {"backend": backend, "dtype": str(dtype).removeprefix("torch."), "size": size,
                            "peak_mib": (peak_memory_since_reset("cuda") - held) / MIB}
    if record_ops:
        # a compiled kernel (flex's) runs eagerly under a dispatch mode: its record is not the compiled one's
        try:
            with OpRecorder() as recorder:
                run()
            case["sdpa_kernels"] = sorted(op for op in recorder.ops if "scaled_dot_product" in op or "flex" in op)
            case["largest_tensor"] = recorder.largest
        except Exception as exc:  # a kernel that a Python dispatch mode cannot run
            case["sdpa_kernels"] = f"not recorded: {type(exc).__name__}: {exc}"
    return case


def memory_worker(out: Path) -> int:
    """The ``memory`` step: every backend of :data:`aalib.attention.BACKENDS` that runs on CUDA (read
    when the step runs, so that every backend is covered), float32 and bf16, 64^2 and 128^2. A (backend, dtype) passes when its
    peak memory grows at most :data:`MEMORY_GROWTH_LIMIT`-fold and its 128^2 peak is below one
    ``(B, heads, N, N)`` map of its dtype. The file is rewritten after every case, so a timeout
    keeps what was measured."""
    from .. import attention

    batch, heads = MEMORY_SHAPE["batch"], MEMORY_SHAPE["heads"]
    payload: dict[str, Any] = {
        "step": "memory", "machine": machine_info("cuda"),
        "setting": {**MEMORY_SHAPE, "sizes": list(MEMORY_SIZES), "relative_logits": True,
                    "measure": "torch.cuda.max_memory_allocated() - memory_allocated() before forward + backward"},
        "growth_limit": MEMORY_GROWTH_LIMIT,
        "flash_takes_head": {str(_extended_head(s)): _flash_takes(_extended_head(s)) for s in MEMORY_SIZES},
        "cases": [], "passed": False,
    }
    n = MEMORY_SIZES[-1] ** 2
    for backend in (b for b in attention.BACKENDS if b not in attention.CPU_ONLY_BACKENDS):
        for dtype in (torch.float32, torch.bfloat16):
            small, large = (_attention_case(backend, dtype, size, record_ops=size == MEMORY_SIZES[-1])
                            for size in MEMORY_SIZES)
            map_mib = batch * heads * n * n * dtype.itemsize / 2**20
            growth = large["peak_mib"] / small["peak_mib"] if small["peak_mib"] > 0 else math.inf
            payload["cases"].append({"backend": backend, "dtype": small["dtype"], "growth": growth,
                                     "nxn_map_mib": map_mib, "runs": [small, large],
                                     "ok": growth <= MEMORY_GROWTH_LIMIT and large["peak_mib"] < map_mib})
            print(f"{backend:<8} {small['dtype']:<9} {small['peak_mib']:9.1f} -> {large['peak_mib']:9.1f} MiB "
                  f"(x{growth:.2f}) kernels {large.get('sdpa_kernels')}", flush=True)
            write_json(out, payload)
    payload["passed"] = all(case["ok"] for case in payload["cases"])
    write_json(out, payload)
    return 0 if payload["passed"] else 1


def _timed_epoch(config_path: Path, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """One epoch of the trainer's step (bf16 autocast, channels_last, its optimizer and loss) over
    a :class:`aalib.data.DeviceLoader` with its augmentation, after warm-up steps; FLOPs of one step."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..experiment import load_config
    from ..data import DeviceLoader, channel_stats
    from ..models import count_parameters
    from ..experiment import build_model_for
    from ..recipe import build_criterion, build_optimizer

    config = load_config(config_path, overrides=["bf16=true", "channels_last=true"])
    device = torch.device("cuda")
    torch.manual_seed(config.seed)
    model = build_model_for(config, 100, tuple(images.shape[1:])).to(device, memory_format=torch.channels_last).train()
    optimizer, criterion = build_optimizer(config, model), build_criterion(config)
    loader = DeviceLoader(images, labels, batch_size=config.batch_size, device=device, shuffle=True,
                          crop_padding=config.crop_padding, flip=True, normalize=channel_stats(images),
                          seed=config.seed, channels_last=True)

    def forward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        return criterion(logits.float(), y)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = forward(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    x, y = next(iter(loader))
    for _ in range(EPOCH_WARMUP_STEPS):
        step(x, y)
    with FlopCounterMode(display=False) as forward_flops:
        loss = forward(x, y)
    with FlopCounterMode(display=False) as backward_flops:
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    loader.set_epoch(1)
    synchronize(device)
    reset_peak_memory(device)
    start = time.perf_counter()
    losses = torch.stack([step(x, y) for x, y in loader])
    synchronize(device)
    seconds = time.perf_counter() - start
    flops_per_image = (forward_flops.get_total_flops() + backward_flops.get_total_flops()) / x.shape[0]
    tflops = flops_per_image * len(images) / seconds / 1e12
    peak = bf16_peak_tflops(torch.cuda.get_device_name())
    return {
        "config": str(config_path.relative_to(ROOT)), "params": count_parameters(model), "images": len(images),
        "batch_size": config.batch_size, "steps": len(loader), "seconds": seconds,
        "images_per_second": len(images) / seconds, "finite_loss": bool(torch.isfinite(losses).all()),
        "last_loss": float(losses[-1]), "peak_mib": peak_memory_since_reset(device) / MIB,
        "forward_gflop_per_image": forward_flops.get_total_flops() / x.shape[0] / 1e9,
        "backward_gflop_per_image": backward_flops.get_total_flops() / x.shape[0] / 1e9,
        "achieved_tflops": tflops, "bf16_peak_tflops": peak, "bf16_peak_share": None if peak is None else tflops / peak,
    }


def epoch_worker(out: Path) -> int:
    """The ``epoch`` step: :func:`_timed_epoch` of each of :data:`EPOCH_MODELS`, 100 classes."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (EPOCH_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 100, (EPOCH_IMAGES,), generator=generator)
    name = torch.cuda.get_device_name()
    payload: dict[str, Any] = {
        "step": "epoch", "machine": machine_info("cuda"),
        "setting": {"images": EPOCH_IMAGES, "image_shape": [3, 32, 32], "classes": 100, "data": "uniform random uint8",
                    "precision": "bf16 autocast, channels_last", "warmup_steps": EPOCH_WARMUP_STEPS,
                    "flops": "FlopCounterMode on one step, forward and backward counted separately"},
        "bf16_peak": {"device_name": name, "tflops": bf16_peak_tflops(name) or "unknown"},
        "models": {},
    }
    for model, config in EPOCH_MODELS.items():
        payload["models"][model] = record = _timed_epoch(ROOT / config, images, labels)
        print(f"{model}: {record['seconds']:.2f} s/epoch, {record['achieved_tflops']:.0f} TFLOP/s", flush=True)
        write_json(out, payload)
    return 0


def ddp_worker(out: Path) -> int:
    """The ``ddp`` step, under torchrun: NCCL process group, one all-reduce, then the gradients of
    DDP around the study's Simple-AACNN against a plain copy on the same batch (every rank draws
    the same batch, so the averaged gradients equal the local ones), then three optimizer steps."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ..models import build_model

    dist.init_process_group("nccl")
    try:
        local_rank = int(os.environ["LOCAL_RANK"])
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.manual_seed(0)
        model = build_model("repro_simple_cnn", attention="softmax", dropout=0.0).to(device)
        plain = copy.deepcopy(model)
        ddp = DistributedDataParallel(model, device_ids=[local_rank])
        x = torch.rand(32, 3, 32, 32, device=device)
        y = torch.randint(0, 100, (32,), device=device)
        total = torch.ones((), device=device)
        dist.all_reduce(total)
        F.cross_entropy(ddp(x), y).backward()
        F.cross_entropy(plain(x), y).backward()
        diff = max((a.grad - b.grad).abs().max().item() for a, b in zip(model.parameters(), plain.parameters()))
        scale = max(b.grad.abs().max().item() for b in plain.parameters())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        losses = []
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(ddp(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        payload = {
            "step": "ddp", "machine": machine_info("cuda"), "backend": dist.get_backend(),
            "world_size": dist.get_world_size(), "nccl": ".".join(map(str, torch.cuda.nccl.version())),
            "all_reduce": total.item(), "max_grad_diff": diff, "max_grad": scale, "bf16_losses": losses,
        }
        payload["passed"] = (payload["backend"] == "nccl" and total.item() == dist.get_world_size()
                             and diff <= 1e-5 + 1e-4 * scale and all(math.isfinite(v) for v in losses))
        if dist.get_rank() == 0:
            write_json(out, payload)
        return 0 if payload["passed"] else 1
    finally:
        dist.destroy_process_group()


WORKERS: dict[str, Callable[[Path], int]] = {"memory": memory_worker, "epoch": epoch_worker, "ddp": ddp_worker}


# -- command line ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aalib.bench gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the steps, commands and files; needs no GPU")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks"), help="where the JSON files go")
    parser.add_argument("--skip", nargs="+", default=[], choices=[s.name for s in STEPS], metavar="STEP",
                        help=f"steps not to run ({', '.join(s.name for s in STEPS)})")
    parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)  # internal: one step's work
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return WORKERS[args.worker](args.out)
    date = datetime.date.today().isoformat()
    cuda = torch.cuda.is_available()
    gpu = gpu_slug(torch.cuda.get_device_name()) if cuda else PLACEHOLDER_GPU
    if args.dry_run:
        print(dry_run(STEPS, args.out_dir, gpu, date, args.skip))
        return 0
    if not cuda:
        print(NO_CUDA, file=sys.stderr)
        return 2

    start = time.perf_counter()
    results = run_steps(STEPS, args.out_dir, gpu, date, args.skip)
    verdicts = evaluate_targets(results)
    status = exit_status(results, verdicts)
    table = summary_table(results, verdicts)
    summary = output_path(args.out_dir, "gpu-check", gpu, date)
    write_json(summary, {  # atomic: a temporary file beside it, then os.replace
        "benchmark": "gpu-check",
        "command": "python -m aalib.bench gpu-check " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": date, "machine": machine_info("cuda"), "budget_s": BUDGET_S, "seconds": time.perf_counter() - start,
        "steps": [asdict(r) for r in results.values()], "targets": verdicts, "table": table, "exit_status": status,
    })
    print()
    print(table)
    print(f"\n{'all steps passed and all targets met' if status == 0 else 'FAILED'}; wrote {summary}")
    return status


if __name__ == "__main__":
    sys.exit(main())
