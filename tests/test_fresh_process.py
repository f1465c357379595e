"""aalib.fresh_process: a function call in a fresh interpreter, its result or its failure handed back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aalib.fresh_process import RESULT_TAG, run_in_fresh_process

ROOT = Path(__file__).resolve().parents[1]
TARGETS = f"""
import os, time

def noisy(value):
    print("{RESULT_TAG.strip()}-like line, and other output")
    return {{"value": value, "pid": os.getpid()}}

def fails():
    raise ValueError("bad value\\nsecond line")

def dies():
    os.abort()

def sleeps(seconds):
    time.sleep(seconds)
    return {{}}
"""


@pytest.fixture
def env(tmp_path):
    (tmp_path / "fresh_targets.py").write_text(TARGETS)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


def test_the_result_comes_back_past_other_output(env):
    result = run_in_fresh_process("fresh_targets:noisy", {"value": [1, 2]}, timeout=120, env=env)
    assert result["value"] == [1, 2] and result["pid"] != os.getpid()


def test_an_exception_is_the_error_with_its_first_line(env):
    assert run_in_fresh_process("fresh_targets:fails", {}, timeout=120, env=env) == {"error": "ValueError: bad value"}


def test_a_crash_and_a_timeout_are_errors(env):
    assert run_in_fresh_process("fresh_targets:dies", {}, timeout=120, env=env)["error"].startswith("exit -6")
    assert run_in_fresh_process("fresh_targets:sleeps", {"seconds": 60}, timeout=3, env=env) == {
        "error": "timed out after 3 s"}
