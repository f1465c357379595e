"""Sweeps beyond one process: ``aalib sweep --jobs N [--devices ...]`` and ``aalib sweep --list``,
through the real command line, with tiny runs on the CPU."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aalib.config import ConfigError
from aalib.lock import HELD_BY_PARENT, RunLock
from aalib.batch import _ProcessPool, sweep

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from tinyrun import ENV, ROOT, run_python, write_sweep_params  # noqa: E402


def status(folder: Path) -> str:
    return json.loads((folder / "summary.json").read_text())["status"]


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_two_jobs_run_at_once_skip_what_is_finished_and_report_a_busy_folder(tmp_path: Path) -> None:
    params, runs = write_sweep_params(tmp_path / "params", {"a": 1, "b": 1, "c": 1}), tmp_path / "runs"
    command = ("-m", "aalib", "sweep", str(params), "--runs-dir", str(runs), "--jobs", "2")
    with RunLock(runs / "c" / "seed0"):  # another writer holds c
        first = run_python(*command, timeout=300)
    assert first.returncode == 2, first.stdout[-3000:] + first.stderr[-3000:]
    lines = first.stdout.splitlines()
    started = [i for i, line in enumerate(lines) if line.startswith(("[1/3] a seed 0: ", "[2/3] b seed 0: "))]
    done = [i for i, line in enumerate(lines) if line.endswith("status: finished")]
    assert len(started) == 2 and len(done) == 2 and max(started) < min(done)  # both ran at once
    assert "[c seed 0] aalib run: error:" in first.stdout and "is being written by another process" in first.stdout
    assert lines[-3:] == [f"{s:>11}  {runs / n / 'seed0'}" for s, n in (("finished", "a"), ("finished", "b"), ("busy", "c"))]
    assert sorted(p.name for p in (runs / "c" / "seed0").iterdir()) == [".lock"]  # nothing written by the sweep

    before = {name: mtimes(runs / name / "seed0") for name in ("a", "b")}
    second = run_python(*command, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"[1/3] {runs / 'a' / 'seed0'}: finished, skipped" in second.stdout
    assert f"[2/3] {runs / 'b' / 'seed0'}: finished, skipped" in second.stdout
    assert {name: mtimes(runs / name / "seed0") for name in ("a", "b")} == before
    assert status(runs / "c" / "seed0") == "finished"


def test_the_list_has_one_self_contained_command_per_run(tmp_path: Path) -> None:
    params, runs = write_sweep_params(tmp_path / "params", {"a": 400, "b": 400}), Path("runs")
    listed = run_python("-m", "aalib", "sweep", str(params), "--runs-dir", str(runs), "-p", "epochs", "1",
                        "-p", "seeds", "[0, 1]", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    commands = listed.stdout.splitlines()
    assert len(commands) == 4 and not (tmp_path / "runs").exists()  # listing runs nothing
    assert all(c.startswith(f"cd {shlex.quote(str(tmp_path))} && ") for c in commands)
    assert commands[1].endswith("-p epochs 1 -p seeds '[0, 1]' -p seeds '[1]' --runs-dir runs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    one = subprocess.run(["bash", "-c", commands[1]], cwd=elsewhere, env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert status(tmp_path / "runs" / "a" / "seed1") == "finished" and not (tmp_path / "runs" / "a" / "seed0").exists()
    # the listed command wrote the folder that the whole sweep plans for that run
    rest = run_python("-m", "aalib", "sweep", str(params), "--runs-dir", str(runs), "-p", "epochs", "1",
                      "-p", "seeds", "[0, 1]", "--jobs", "2", cwd=tmp_path, timeout=300)
    assert rest.returncode == 0, rest.stdout[-3000:] + rest.stderr[-3000:]
    assert f"[2/4] {runs / 'a' / 'seed1'}: finished, skipped" in rest.stdout


class _EchoPlan:
    """A stand-in plan whose process prints the GPU it was given and whether a lock was inherited."""

    def __init__(self, index: int) -> None:
        self.parameters = {"name": f"echo{index}", "seed": 0}
        self.out_dir = Path(f"echo{index}")
        self.status = "new"

    def command(self) -> list[str]:
        code = (f"import os, time; time.sleep(0.5); "
                f"print(os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get({HELD_BY_PARENT!r}))")
        return [sys.executable, "-c", code]


def test_each_process_sees_one_of_the_devices_and_inherits_no_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HELD_BY_PARENT, "/somewhere/else")
    lines: list[str] = []
    _ProcessPool(2, ["3", "5"], lines.append).run([_EchoPlan(i) for i in range(4)])
    seen = [line.split("] ", 1)[1] for line in lines if line.startswith("[echo")]
    assert len(seen) == 4 and set(seen) == {"3 None", "5 None"}
    assert sum(" on GPU 3: " in line for line in lines) == 2 and sum(" on GPU 5: " in line for line in lines) == 2


def test_lines_from_the_jobs_never_run_together() -> None:
    """``print`` writes a line and its newline separately, so another thread can come between them."""
    written: list[str] = []

    def print_in_two_writes(line: str) -> None:
        written.append(line)
        time.sleep(0.001)  # where a thread switch runs two lines together
        written.append("\n")

    pool = _ProcessPool(2, None, print_in_two_writes)
    threads = [threading.Thread(target=lambda i=i: [pool.log(f"job {i} line {k}") for k in range(50)]) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = "".join(written).splitlines()
    assert sorted(lines) == sorted(f"job {i} line {k}" for i in range(2) for k in range(50))


@pytest.mark.parametrize("jobs, devices, message", [
    (0, None, "jobs must be a positive int, got 0"),
    (True, None, "jobs must be a positive int, got True"),
    (2, [], "devices must be a non-empty list of GPU indices"),
])
def test_bad_jobs_or_devices_fail_before_any_work(tmp_path: Path, jobs: object, devices: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep([tmp_path / "missing.yaml"], runs_dir=tmp_path / "runs", jobs=jobs, devices=devices)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("options", [dict(skip_busy=False), dict(notebook=ROOT / "notebooks" / "complexity.ipynb")])
def test_what_only_one_process_can_do_is_refused_with_jobs(tmp_path: Path, options: dict) -> None:
    with pytest.raises(ValueError, match="need jobs=1 and no devices"):
        sweep([ROOT / "params" / "smoke.yaml"], runs_dir=tmp_path / "runs", jobs=2, **options)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "argument --jobs: expected a positive int, got '0'"),
    (["--devices", "0,gpu1"], "argument --devices: expected GPU indices separated by commas"),
])
def test_the_command_line_names_a_bad_value(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_python("-m", "aalib", "sweep", str(ROOT / "params" / "long_range"), *args, "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_sigterm_stops_every_job_as_interrupted_and_starts_no_more(tmp_path: Path) -> None:
    params, runs = write_sweep_params(tmp_path / "params", {"a": 400, "b": 400, "c": 1}), tmp_path / "runs"
    sweeping = subprocess.Popen([sys.executable, "-m", "aalib", "sweep", str(params), "--runs-dir", str(runs), "--jobs", "2"],
                                cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not all((runs / n / "seed0" / "last.pt").exists() for n in ("a", "b")):
            assert sweeping.poll() is None and time.monotonic() < deadline, "the two runs did not both start training"
            time.sleep(0.1)
        sweeping.send_signal(signal.SIGTERM)
        output, _ = sweeping.communicate(timeout=180)
    finally:
        if sweeping.poll() is None:
            os.killpg(sweeping.pid, signal.SIGKILL)
    assert sweeping.returncode == 130, output[-3000:]
    assert "aalib sweep: interrupted; run the same command again to resume" in output
    assert status(runs / "a" / "seed0") == status(runs / "b" / "seed0") == "interrupted"
    assert not (runs / "c").exists()
