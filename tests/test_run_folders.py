"""One writer per run folder, run statuses, and reports that survive damaged runs, each through the
real command line in subprocesses (RELIABILITY.md, section 4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aalib.lock import RunFolderBusy, RunLock, held
from aalib.runs import scan_runs

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from tinyrun import ENV, ROOT, SMOKE, TINY, read_csv, run_python, sets, write_sweep_params  # noqa: E402

LONG = "epochs=400"  # a tiny run that is still training when the test acts on it


def _default_sigint() -> None:
    """In the child: Ctrl-C's default action, even when the test runs where SIGINT is ignored (a
    shell's background job), so that Python turns SIGINT into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_tiny(out: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "aalib", "train", str(SMOKE), *sets(*TINY, *overrides), "--out", str(out)]
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended before {what}: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_lock_in_process(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert not held(folder)
    with RunLock(folder):
        assert held(folder) and (folder / ".lock").is_file()
        holder = json.loads((folder / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["started"]
    assert not held(folder)  # released on exit; the file stays and holds nothing
    with RunLock(folder):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_second_writer_exits_at_once_and_a_signal_marks_the_run_interrupted(tmp_path: Path, stop: int) -> None:
    out = tmp_path / "run"
    first = start_tiny(out, LONG)
    try:
        wait_for(lambda: (out / "last.pt").exists(), first, "the first run finished an epoch")
        lock_before = (out / ".lock").read_text()
        started = time.monotonic()
        second = run_python("-m", "aalib", "train", str(SMOKE), *sets(*TINY, LONG), "--out", str(out))
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aalib train: error: ")
        assert str(out) in lines[0] and f"pid {first.pid}" in lines[0] and "started 20" in lines[0]
        assert time.monotonic() - started < 60
        assert (out / ".lock").read_text() == lock_before and held(out)
        with pytest.raises(RunFolderBusy, match="being written by another process"):
            with RunLock(out):
                pass
        first.send_signal(stop)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130 and "interrupted; run the same command again to resume" in stderr
    state = summary(out)
    assert state["status"] == "interrupted" and "KeyboardInterrupt" in state["reason"]
    assert not held(out)
    assert len(read_csv(out / "metrics.csv")) == state["epochs_completed"] >= 1


@pytest.mark.slow
def test_overlapping_sweeps_never_write_one_folder_and_the_report_tells_a_killed_run(tmp_path: Path) -> None:
    params, runs = write_sweep_params(tmp_path / "params", {"a": 1, "b": 400}), tmp_path / "runs"
    command = [sys.executable, "-m", "aalib", "sweep", str(params), "--runs-dir", str(runs)]
    first = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # its own process group: the notebook kernel goes too
    b = runs / "b" / "seed0"
    try:
        wait_for(lambda: (b / "last.pt").exists(), first, "run b finished an epoch")
        before = {p.name: p.stat().st_mtime_ns for p in (runs / "a" / "seed0").iterdir()}
        second = run_python("-m", "aalib", "sweep", str(params), "--runs-dir", str(runs), timeout=300)
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert "finished, skipped" in second.stdout and "is being written by another process" in second.stdout
        assert "busy" in second.stdout.splitlines()[-1] and str(b) in second.stdout.splitlines()[-1]
        assert {p.name: p.stat().st_mtime_ns for p in (runs / "a" / "seed0").iterdir()} == before
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    assert summary(b)["status"] == "running" and not held(b)  # killed: it could not say more
    report = run_python("-m", "aalib", "report", str(runs), timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "1 unfinished run(s), left out of the verdict: b seed 0 (stopped)" in report.stdout
    rows = {row["experiment"]: row for row in read_csv(runs / "report" / "runs.csv")}
    assert rows["a"]["status"] == "finished" and rows["b"]["status"] == "stopped"


def _damage(good: Path, root: Path) -> dict[str, str]:
    """Copies of a finished run folder, each damaged one way; name -> the reason the report gives."""
    cases = {
        "truncated_summary": ("summary.json", lambda t: t[: len(t) // 2], "summary.json is not valid JSON"),
        "summary_not_a_run": ("summary.json", lambda t: "[1, 2]", "summary.json holds no run config"),
        "foreign_config": ("summary.json", lambda t: t.replace('"epochs": 2', '"epochs": "two"'), "epochs must be int"),
        "truncated_metrics": ("metrics.csv", lambda t: t[: len(t) - 20], "metrics.csv row 2 is incomplete"),
        "garbled_metrics": ("metrics.csv", lambda t: t.replace(t.splitlines()[1].split(",")[2], "abc", 1), "not a number"),
        "copied_while_written": ("metrics.csv", lambda t: "\n".join(t.splitlines()[:2]) + "\n", "metrics.csv has 1 epochs, summary.json says 2"),
        "no_metrics": ("metrics.csv", None, "metrics.csv is missing"),
    }
    reasons = {}
    for name, (file, change, reason) in cases.items():
        folder = root / name / "seed0"
        shutil.copytree(good, folder)
        if change is None:
            (folder / file).unlink()
        else:
            (folder / file).write_text(change((folder / file).read_text()))
        reasons[name] = reason
    return reasons


@pytest.mark.slow
def test_report_lists_damaged_runs_and_keeps_the_good_ones(tmp_path: Path) -> None:
    good = tmp_path / "runs" / "good" / "seed0"
    trained = run_python("-m", "aalib", "train", str(SMOKE), *sets(*TINY), "--out", str(good))
    assert trained.returncode == 0, trained.stderr[-3000:]
    reasons = _damage(good, tmp_path / "runs")
    runs, damaged = scan_runs(tmp_path / "runs")
    assert [r.path for r in runs] == [good]
    found = {d.path.parent.name: d.reason for d in damaged}
    assert set(found) == set(reasons) and all(reasons[k] in found[k] for k in reasons), found

    report = run_python("-m", "aalib", "report", str(tmp_path / "runs"), timeout=300)
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr[-3000:]
    assert f"skipped {len(reasons)} damaged run folder(s):" in report.stdout
    assert all(reason in report.stdout for reason in reasons.values())
    out = tmp_path / "runs" / "report"
    assert (out / "report.html").is_file() and len(read_csv(out / "damaged.csv")) == len(reasons)
    assert [row["path"] for row in read_csv(out / "runs.csv")] == [str(good)]
    assert "Damaged run folders" in (out / "report.html").read_text()

    shutil.rmtree(good)  # nothing readable left: the report is still written, and says why
    only_damaged = run_python("-m", "aalib", "report", str(tmp_path / "runs"), timeout=300)
    assert only_damaged.returncode == 0, only_damaged.stderr[-3000:]
    assert f"skipped {len(reasons)} damaged run folder(s):" in only_damaged.stdout
