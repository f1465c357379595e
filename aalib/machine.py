"""What machine a result came from: the CPU's model name, as the operating system reports it.

Runs are bit-exact on one machine, not across CPUs (another CPU's rounding sends training down
another path), so every results file records the CPU it was made on.
"""

from __future__ import annotations

import platform
import subprocess
import sys

__all__ = ["cpu_name"]


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
