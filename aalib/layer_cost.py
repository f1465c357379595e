"""Measured time and peak memory of one AA-conv or LAA-conv layer, ours beside a naive reference.

A case is forward + backward of one ``channels -> channels`` layer with a 3x3 convolution branch
on a random ``(batch, channels, size, size)`` input. "Naive" is the same layer whose attention is
the explicit formula, ``attention_weights(q, k) @ v``: the ``(B, heads, N, N)`` logits and weights
are materialised, as in Bello et al.'s published code and the public ports (I. Bello et al.,
"Attention Augmented Convolutional Networks", ICCV 2019, https://arxiv.org/abs/1904.09925,
Sec. 3.2 on the memory of the maps).

Each case runs in a fresh process (:mod:`aalib.fresh_process`), so that its peak memory is its
own: on the CPU the rise of the process's peak resident memory over the forward + backward
passes, on CUDA ``torch.cuda.max_memory_allocated`` minus the memory held before them
(:func:`aalib.memory.reset_peak_memory`). Host memory is kept for reuse as in training
(:func:`aalib.memory.retain_freed_memory`). Time is the median of ``repeats`` runs after a
warm-up; cheap cases keep running past ``repeats`` until ``min_seconds`` of runs are timed (at
most :data:`MAX_RUNS`), since on a shared machine single runs of a cheap case vary several-fold.
Compare the rows of one sweep with each other (ratios); absolute times depend on the machine.

:func:`sweep` measures a plan of (variant, size) cases (:func:`sweep_plan`) with any batch,
channels, ``dk``, ``dv`` and heads; ``python -m aalib.bench attention`` and
:func:`aalib.complexity.measure` are built on it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from .attention import attention_weights
from .fresh_process import run_in_fresh_process
from .layers import AugmentedConv2d
from .machine import synchronize
from .memory import peak_memory_since_reset, reset_peak_memory, retain_freed_memory

__all__ = ["BATCH", "CHANNELS", "DK", "DV", "HEADS", "IMPLS", "DEFAULT_MALLOC", "MAX_RUNS", "VARIANTS",
           "LAYER_VARIANTS", "Case", "NaiveAugmentedConv2d", "naive_map_bytes", "run_case", "case_env",
           "sweep_plan", "sweep"]

BATCH, CHANNELS, DK, DV, HEADS = 8, 64, 32, 32, 4  # the attention benchmark's setting
IMPLS: tuple[str, ...] = ("ours", "naive")
DEFAULT_MALLOC = "glibc.malloc.hugetlb=1"  # huge pages for large CPU tensors: fewer page faults
MAX_RUNS = 50  # per case, whatever min_seconds asks
# AA-conv (softmax) with and without relative logits, and LAA-conv (linear, sine-cosine positions):
# the layer variants, whose "ours" runs the kernel that backend="auto" picks. "AA rel fused" and
# "AA rel blocked" pin those kernels for comparison; their naive layer would be AA relative's, so
# they have none.
# "conv 3x3" is a plain 64 -> 64 convolution (attention None): what the layers cost without
# attention, and how a convolution alone scales on the machine (at the linear sizes).
VARIANTS: dict[str, dict[str, Any]] = {
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

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, relative: dict) -> Tensor:
        return attention_weights(q, k, attention=self.attention, **relative) @ v  # B, heads, N, dvh


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


def naive_map_bytes(size: int, batch: int = BATCH, heads: int = HEADS) -> int:
    """Bytes of one fp32 (B, heads, N, N) tensor at ``size x size``: the unit of the naive layer's memory."""
    n = size * size
    return batch * heads * n * n * 4


def _layer(case: Case, device: torch.device) -> nn.Module:
    spec = VARIANTS[case.variant]
    if spec["attention"] is None:
        return nn.Conv2d(case.channels, case.channels, 3, padding=1, bias=False).to(device)
    cls = AugmentedConv2d if case.impl == "ours" else NaiveAugmentedConv2d
    return cls(case.channels, case.channels, 3, dk=case.dk, dv=case.dv, heads=case.heads, extent=case.size,
               **spec).to(device)


def run_case(case: Case) -> dict[str, Any]:
    """Build the layer and input, then time forward + backward in this process: ``{"ms", "peak_mib",
    "runs"}``. Applies :func:`aalib.memory.retain_freed_memory` to the whole process first."""
    retain_freed_memory()
    torch.manual_seed(0)
    device = torch.device(case.device)
    layer = _layer(case, device)
    x = torch.randn(case.batch, case.channels, case.size, case.size, device=device, requires_grad=True)

    def step() -> None:
        layer(x).sum().backward()
        layer.zero_grad(set_to_none=True)
        x.grad = None

    synchronize(device)
    held = reset_peak_memory(device)
    step()  # warm-up (allocator, kernel selection)
    synchronize(device)
    times: list[float] = []
    while len(times) < case.repeats or (sum(times) < case.min_seconds and len(times) < MAX_RUNS):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = peak_memory_since_reset(device) - held
    return {"ms": 1000 * statistics.median(times), "peak_mib": peak / 2**20, "runs": len(times)}


def _run_case_fields(**fields: Any) -> dict[str, Any]:
    """:func:`run_case` of ``Case(**fields)``: the fresh process's entry point."""
    return run_case(Case(**fields))


def case_env(malloc: str = DEFAULT_MALLOC) -> dict[str, str]:
    """Environment of the case processes: this one's, plus ``GLIBC_TUNABLES=malloc`` on Linux
    unless it is set already or ``malloc`` is ''."""
    env = dict(os.environ)
    if malloc and sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in env:
        env["GLIBC_TUNABLES"] = malloc
    return env


def run_in_subprocess(case: Case, timeout: float = 600.0, env: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`run_case` in a fresh Python process, so that the peak memory is the case's own.

    Returns its ``{"ms", "peak_mib", "runs"}``, or ``{"error": message}`` when the process failed
    (out of memory, an exception) or ran past ``timeout`` seconds. ``env`` defaults to :func:`case_env`.
    """
    return run_in_fresh_process(f"{__name__}:_run_case_fields", asdict(case), timeout=timeout,
                                env=case_env() if env is None else env)


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


def _skip_reason(variant: str, impl: str, size: int, batch: int, heads: int, naive_max_gib: float) -> str | None:
    """Why a case is not measured, or None."""
    if impl != "naive":
        return None
    if "backend" in VARIANTS[variant]:
        return "a pinned kernel: the naive layer is the unpinned variant's"
    if VARIANTS[variant]["attention"] is None:
        return "no attention"
    if naive_map_bytes(size, batch, heads) > naive_max_gib * 2**30:
        return f"one N x N map is {naive_map_bytes(size, batch, heads) / 2**30:.0f} GiB"
    return None


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
    size, impl, result)`` is called after each measured case (progress). ``env`` defaults to
    :func:`case_env`.
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
            reason = _skip_reason(variant, impl, size, batch, heads, naive_max_gib)
            if reason is not None:
                row[impl] = {"skipped": reason}
                continue
            case = Case(variant, impl, size, device, repeats, batch, channels, dk, dv, heads, min_seconds)
            row[impl] = run_in_subprocess(case, timeout, env)
            if on_case is not None:
                on_case(variant, size, impl, row[impl])
        rows.append(row)
    return rows
