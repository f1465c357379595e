"""Memory of the process: resident memory now and at its peak, a peak measured from a reset on the
CPU or a CUDA device, and how the C allocator hands freed memory back.

Why the allocator matters on the CPU. glibc's ``malloc`` serves every block above
``M_MMAP_THRESHOLD`` with a fresh ``mmap`` and returns freed memory at the top of the heap above
``M_TRIM_THRESHOLD`` to the operating system. A training step frees and re-allocates the same
large activations and gradients every time, so with the defaults each step page-faults those
megabytes back in and the kernel zeroes them, a cost that falls hardest on the models with the
largest activations (``python -m aalib.bench train`` measures it; ``--system-malloc`` runs with
glibc's defaults). PyTorch's CPU tuning guide recommends jemalloc or TCMalloc for the same
reason; :func:`retain_freed_memory` gets the effect without a preloaded library.

Status: the resettable CPU peak and the current resident memory read Linux's ``/proc``; elsewhere
both fall back to the lifetime peak (``ru_maxrss``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys

import torch

__all__ = ["MIB", "peak_rss_bytes", "rss_bytes", "reset_peak_memory", "peak_memory_since_reset", "peak_memory_mib",
           "retain_freed_memory"]

MIB = 2**20
# mallopt(3) parameters of glibc's malloc.h, and the largest value they take (an int)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 2**31 - 1


def peak_rss_bytes() -> int:
    """The process's lifetime peak resident memory (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_bytes() -> int:
    """The process's resident memory now (``/proc/self/statm``; elsewhere :func:`peak_rss_bytes`)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def reset_peak_memory(device: str | torch.device = "cpu") -> int:
    """Start measuring a peak on ``device``: reset its high-water mark and return the bytes held
    now, the baseline that :func:`peak_memory_since_reset` is compared with.

    CUDA: ``torch.cuda.reset_peak_memory_stats`` and ``memory_allocated`` (synchronize first, so
    that queued kernels have allocated). CPU: Linux's ``VmHWM``, reset by writing 5 to
    ``/proc/self/clear_refs``, and the resident memory; where ``/proc`` cannot reset it, the
    baseline is the lifetime peak, so what is measured is the rise above the highest point so far.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return peak_rss_bytes()
    return rss_bytes()


def peak_memory_since_reset(device: str | torch.device = "cpu") -> int:
    """Peak bytes on ``device`` since :func:`reset_peak_memory`: CUDA ``max_memory_allocated``; on
    the CPU the resident peak ``VmHWM`` (elsewhere the lifetime peak)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return peak_rss_bytes()


def peak_memory_mib(device: str | torch.device) -> float:
    """The process's peak memory on ``device`` in MiB, as a run reports it: CUDA
    ``max_memory_allocated`` (since the last reset of CUDA's peak statistics), on the CPU the
    lifetime peak resident memory (:func:`peak_rss_bytes`)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return peak_rss_bytes() / MIB


def retain_freed_memory() -> bool:
    """Keep freed memory in this process's heap for reuse instead of unmapping it (glibc only).

    Raises glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to 2 GiB with ``mallopt(3)``, so
    blocks below 2 GiB come from the heap and freed ones stay there. The resident memory then
    stays at its peak instead of falling between steps; the peak itself does not grow
    (``python -m aalib.bench soak``). Affects the whole process from the call on. Returns whether
    it applied (False off glibc, e.g. on macOS or musl, where nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
