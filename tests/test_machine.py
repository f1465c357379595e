"""aalib.machine: the CPU's model name as the operating system reports it, the machine record of a
results file, and device synchronisation."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from aalib.machine import cpu_name, device_name, machine_info, synchronize


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


def test_machine_info_holds_every_key_the_recorded_benchmarks_hold():
    """Every key that the "machine" records of the files in benchmarks/ hold."""
    info = machine_info("cpu")
    assert {"torch", "python", "platform", "device", "device_name", "cpu", "cpu_count", "threads"} <= set(info)
    assert info["device"] == "cpu" and info["device_name"] == device_name("cpu") == cpu_name() == info["cpu"]
    assert info["torch"] == torch.__version__ and info["threads"] == torch.get_num_threads()
    assert ("gpu" in info) is torch.cuda.is_available()


def test_synchronize_on_the_cpu_returns_at_once():
    assert synchronize("cpu") is None
    assert synchronize(torch.device("cpu")) is None
