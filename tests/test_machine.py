"""aalib.machine: the CPU's model name as the operating system reports it."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from aalib.machine import cpu_name


def test_cpu_name_is_the_model_name_not_the_architecture():
    name = cpu_name()
    assert name and name.strip() == name
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
    if not models:
        pytest.skip("/proc/cpuinfo names no model on this CPU")
    assert name == models[0] and name != platform.machine()
