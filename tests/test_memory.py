"""Host memory helpers (``aalib.memory``): the peak-RSS reading and glibc's malloc thresholds."""

from __future__ import annotations

import sys

import pytest
import torch

import aalib.train as train_module
from aalib.experiment import load_config
from aalib.memory import peak_rss_bytes
from aalib.train import train
from tinyrun import SMOKE, TINY, run_python

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")

# Frees a 128 MiB tensor and prints how far the resident memory fell, in MiB.
_FREE_AND_MEASURE = """
import sys, torch
from aalib.bench.soak import rss_mib
from aalib.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
x = torch.ones(2**25)  # 128 MiB, every page written
held = rss_mib()
del x
print(held - rss_mib())
"""


def test_peak_rss_bytes_sees_a_written_block():
    before = peak_rss_bytes()
    block = torch.ones(2**26, dtype=torch.uint8)  # 64 MiB written; the peak rises unless it was higher already
    assert peak_rss_bytes() >= max(before, block.numel())


@glibc_only
@pytest.mark.parametrize("mode, falls", [("default", True), ("retain", False)])
def test_retain_freed_memory_keeps_freed_blocks_resident(mode, falls):
    """glibc by default unmaps a freed 128 MiB block at once (and faults it in again on the next
    allocation); after retain_freed_memory() the block stays in the heap for reuse."""
    result = run_python("-c", _FREE_AND_MEASURE, mode)
    assert result.returncode == 0, result.stderr
    fell_mib = float(result.stdout.split()[-1])
    assert (fell_mib > 100) is falls, fell_mib


@pytest.mark.parametrize("setting, calls", [("true", 1), ("false", 0)])
def test_trainer_applies_retain_freed_memory_when_configured(setting, calls, tmp_path, monkeypatch):
    applied = []
    monkeypatch.setattr(train_module, "retain_freed_memory", lambda: applied.append(1) or True)
    config = load_config(SMOKE, overrides=[*TINY, "epochs=1", f"retain_freed_memory={setting}"])
    assert train(config, tmp_path)["status"] == "finished"
    assert len(applied) == calls
