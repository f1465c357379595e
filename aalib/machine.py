"""What machine a result came from, and waiting for its device.

Runs are bit-exact on one machine, not across CPUs (another CPU's rounding sends training down
another path), so every results file records the machine it was made on: :func:`machine_info` is
the ``"machine"`` record of the benchmarks' files, :func:`device_name` what a run's summary names.
CUDA kernels run asynchronously, so a timer must :func:`synchronize` with the device first.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any

import torch

__all__ = ["cpu_name", "device_name", "machine_info", "synchronize"]


def cpu_name() -> str:
    """The CPU's model name (``"Intel(R) Xeon(R) Processor @ 2.80GHz"``): from ``/proc/cpuinfo`` on
    Linux, ``sysctl`` on macOS, else :func:`platform.processor` or the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device) -> str:
    """The processor ``device`` runs on: the GPU's name for a CUDA device (where CUDA is available),
    else the CPU's model name."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" and torch.cuda.is_available() else cpu_name()


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What a measurement on ``device`` depends on: the ``"machine"`` record of a results file.

    Keys: ``torch``, ``python``, ``platform``, ``device``, ``device_name`` (:func:`device_name`),
    ``cpu`` (the CPU's model name), ``cpu_count``, ``threads`` (torch's intra-op threads),
    ``loadavg_1_5_15`` where the system reports it (other work on the machine skews CPU timings),
    and on a machine with a CUDA device ``gpu``, ``cuda`` and ``cudnn``.
    """
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_1_5_15"] = list(os.getloadavg())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def synchronize(device: str | torch.device) -> None:
    """Wait until the work queued on ``device`` has run (CUDA); on the CPU, return at once."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
