"""Memory helpers (``aalib.memory``): the RSS readings, the peak measured from a reset, and glibc's
malloc thresholds."""

from __future__ import annotations

import mmap
import os
import sys

import pytest
import torch

import aalib.train as train_module
from aalib.experiment import load_config
from aalib.memory import (MIB, peak_memory_mib, peak_memory_since_reset, peak_rss_bytes, reset_peak_memory,
                          rss_bytes)
from aalib.train import train
from tinyrun import SMOKE, TINY, run_python

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")

# Frees a 128 MiB tensor and prints how far the resident memory fell, in MiB.
_FREE_AND_MEASURE = """
import sys, torch
from aalib.memory import MIB, retain_freed_memory, rss_bytes
if sys.argv[1] == "retain":
    assert retain_freed_memory()
x = torch.ones(2**25)  # 128 MiB, every page written
held = rss_bytes()
del x
print((held - rss_bytes()) / MIB)
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


def _fresh_block(size: int = 2**26) -> mmap.mmap:
    """``size`` bytes of new pages, every one written: a mapping of its own, so the heap's freed
    memory (which an earlier test may have told malloc to keep) cannot serve it."""
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_rss_bytes_sees_a_written_block():
    before = rss_bytes()
    block = _fresh_block()  # 64 MiB
    assert rss_bytes() - before >= 0.9 * len(block)
    block.close()


def test_peak_memory_mib_on_the_cpu_is_the_lifetime_peak():
    assert peak_memory_mib("cpu") == pytest.approx(peak_rss_bytes() / MIB, rel=0.01)


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="Linux's resettable peak (VmHWM) only")
def test_peak_since_a_reset_sees_a_freed_block_and_forgets_earlier_ones():
    _fresh_block().close()  # 64 MiB
    held = reset_peak_memory("cpu")
    assert peak_memory_since_reset("cpu") - held < 32 * MIB  # the block before the reset is not counted
    _fresh_block().close()  # unmapped again: the resident memory falls, the peak stays
    assert peak_memory_since_reset("cpu") - held >= 0.9 * 2**26
