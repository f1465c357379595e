"""``python -m aalib.bench gpu-check`` without a GPU: the dry run, the refusal without CUDA, the
step runner (timeouts, failures, files) on fake steps, the targets and the atomic summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from aalib.bench import gpu_check
from aalib.bench.__main__ import main as bench_main
from aalib.bench.gpu_check import Collected, Step, StepResult

FILE = r"_cuda_[^_/ ]+_\d{4}-\d\d-\d\d\.json"


def test_dry_run_lists_every_step_with_its_command_budget_and_file(tmp_path, capsys):
    out_dir = tmp_path / "bench"
    assert bench_main(["gpu-check", "--dry-run", "--out-dir", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    for index, step in enumerate(gpu_check.STEPS, start=1):
        assert f"{index:2d}. {step.name}  [{step.budget_s} s]" in printed
        assert re.search(rf"-> {re.escape(str(out_dir))}/{re.escape(step.name)}{FILE}", printed), step.name
    assert re.search(rf"summary -> {re.escape(str(out_dir))}/gpu-check{FILE}", printed)
    assert "torch.distributed.run --standalone --nproc_per_node 1" in printed
    assert "pytest -m cuda tests/test_cuda.py tests/test_attention.py tests/test_layers.py" in printed
    assert not out_dir.exists()  # a dry run writes nothing


def test_dry_run_through_the_command_line_marks_skipped_steps():
    proc = subprocess.run([sys.executable, "-m", "aalib.bench", "gpu-check", "--dry-run", "--skip", "epoch"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "epoch (skipped)" in proc.stdout and "attention  [" in proc.stdout


def test_budgets_fit_eight_minutes():
    assert gpu_check.BUDGET_S == 480
    assert sum(step.budget_s for step in gpu_check.STEPS) <= gpu_check.BUDGET_S - 15  # the parent's own work
    assert len({step.name for step in gpu_check.STEPS}) == len(gpu_check.STEPS)
    assert {t.step for t in gpu_check.TARGETS} <= {s.name for s in gpu_check.STEPS}


def test_without_cuda_one_line_and_exit_2_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "run_steps", lambda *a, **k: pytest.fail("no step may run without CUDA"))
    assert gpu_check.main(["--out-dir", str(tmp_path / "bench")]) == 2
    captured = capsys.readouterr()
    assert captured.err == gpu_check.NO_CUDA + "\n" and captured.out == ""
    assert captured.err.startswith("gpu-check needs a CUDA device; torch.cuda.is_available() is False")
    assert not (tmp_path / "bench").exists()


def _python(code: str) -> callable:
    return lambda out, scratch: [sys.executable, "-c", code, str(out)]


def _collect_json(returncode, output, out, scratch):
    payload = json.loads(out.read_text()) if out.exists() else {}
    return Collected(returncode == 0 and "x" in payload, payload)


def _collect_record(returncode, output, out, scratch):
    return Collected(returncode == 0, {"returncode": returncode}, {"returncode": returncode})


def test_run_steps_keeps_going_and_stops_a_step_with_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    sleeper = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
               f"\"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)\"])")
    steps = [
        Step("good", "writes its JSON", 30, _python("import json, sys; json.dump({'x': 2}, open(sys.argv[1], 'w'))"),
             _collect_json),
        Step("bad", "fails", 30, _python("import sys; print('boom'); sys.exit(3)"), _collect_record),
        Step("slow", "runs past its budget", 2, _python(sleeper), _collect_json),
        Step("unwanted", "skipped", 30, _python("raise SystemExit(1)"), _collect_json),
    ]
    out_dir = tmp_path / "bench"
    lines = []
    start = time.perf_counter()
    results = gpu_check.run_steps(steps, out_dir, "test-gpu", "2026-01-02", skip=["unwanted"], log=lines.append)
    assert time.perf_counter() - start < 20
    assert {name: r.status for name, r in results.items()} == {
        "good": "pass", "bad": "fail", "slow": "timeout", "unwanted": "skipped"}
    assert results["good"].numbers == {"x": 2} and results["good"].log_tail is None
    assert json.loads((out_dir / "good_cuda_test-gpu_2026-01-02.json").read_text()) == {"x": 2}
    bad = json.loads((out_dir / "bad_cuda_test-gpu_2026-01-02.json").read_text())
    assert bad["returncode"] == 3 and bad["step"] == "bad" and "boom" in results["bad"].log_tail
    assert results["slow"].output is None and not list(out_dir.glob("slow_*"))  # wrote nothing: no file
    assert any("timeout" in line for line in lines)
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # the stopped step's own child goes with it
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {grandchild} of the timed-out step still runs")


def _results(status: str = "pass", **numbers: dict) -> dict[str, StepResult]:
    return {step: StepResult(step, status, 1.0, values) for step, values in numbers.items()}


GOOD = {"attention": {"aa_rel_64_speedup": 6.0}, "epoch": {"aa_wrn_over_wrn": 1.2, "wrn-28-10 s/epoch": 8.0},
        "memory": {"worst_growth": 7.5}}


def test_targets_met_missed_and_skipped():
    verdicts = gpu_check.evaluate_targets(_results(**GOOD))
    assert [v["met"] for v in verdicts] == [True, True, True, True]
    assert gpu_check.exit_status(_results(**GOOD), verdicts) == 0

    at_limits = {"attention": {"aa_rel_64_speedup": 5.0}, "epoch": {"aa_wrn_over_wrn": 1.3, "wrn-28-10 s/epoch": 10.0},
                 "memory": {"worst_growth": gpu_check.MEMORY_GROWTH_LIMIT}}
    assert all(v["met"] for v in gpu_check.evaluate_targets(_results(**at_limits)))

    missed = {**GOOD, "attention": {"aa_rel_64_speedup": 4.9}, "memory": {"worst_growth": 16.0}}
    verdicts = gpu_check.evaluate_targets(_results(**missed))
    assert [v["met"] for v in verdicts] == [False, True, True, False]
    assert gpu_check.exit_status(_results(**missed), verdicts) == 1

    slow_epoch = {"aa_wrn_over_wrn": 1.31, "wrn-28-10 s/epoch": 10.5}
    slow = gpu_check.evaluate_targets(_results(**{**GOOD, "epoch": slow_epoch}))
    assert [v["met"] for v in slow] == [True, False, False, True]

    no_number = gpu_check.evaluate_targets(_results(**{**GOOD, "attention": {}}))
    assert no_number[0]["met"] is False and no_number[0]["value"] is None

    skipped = {**_results(**GOOD), "epoch": StepResult("epoch", "skipped")}
    verdicts = gpu_check.evaluate_targets(skipped)
    assert [v["met"] for v in verdicts] == [True, None, None, True]
    assert gpu_check.exit_status(skipped, verdicts) == 0


def test_a_failed_step_fails_the_check_even_with_every_target_met():
    results = {**_results(**GOOD), "ddp": StepResult("ddp", "fail"), "tests": StepResult("tests", "timeout")}
    verdicts = gpu_check.evaluate_targets(results)
    assert all(v["met"] for v in verdicts)
    assert gpu_check.exit_status(results, verdicts) == 1
    assert gpu_check.exit_status({**_results(**GOOD), "tests": StepResult("tests", "timeout")}, verdicts) == 1


def test_summary_table_shows_steps_numbers_and_verdicts():
    results = {**_results(**GOOD), "ddp": StepResult("ddp", "fail", 2.5, {"backend": "nccl"})}
    results["attention"].numbers["aa_rel_64_speedup"] = 3.0
    table = gpu_check.summary_table(results, gpu_check.evaluate_targets(results))
    for word in ("step", "status", "seconds", "key numbers", "ddp", "fail", "backend=nccl", "target", "PASS", "FAIL",
                 ">= 5", "<= 1.3"):
        assert word in table, word


def test_collectors_report_the_numbers_the_targets_read(tmp_path):
    """Each target's key, from its step's output in the layout that the step writes."""
    attention = {"rows": [{"variant": "AA relative", "size": 64, "ours": {"ms": 2.0, "peak_mib": 10.0},
                           "naive": {"ms": 12.0, "peak_mib": 200.0}},
                          {"variant": "LAA sincos", "size": 128, "ours": {"ms": 1.0, "peak_mib": 5.0},
                           "naive": {"skipped": "one N x N map is 32 GiB"}}]}
    record = {"seconds": 8.0, "finite_loss": True, "bf16_peak_share": 0.4}
    epoch = {"models": {"wrn-28-10": record, "aa-wrn-28-10": {**record, "seconds": 10.0}}}
    memory = {"passed": True, "flash_takes_head": {"136": True, "264": False},
              "cases": [{"backend": "fused", "dtype": "bfloat16", "growth": 7.1, "ok": True},
                        {"backend": "blocked", "dtype": "float32", "growth": 4.2, "ok": True}]}
    collectors = {step.name: step.collect for step in gpu_check.STEPS}
    numbers = {}
    for name, payload in (("attention", attention), ("epoch", epoch), ("memory", memory)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(payload))
        collected = collectors[name](0, "", path, tmp_path)
        assert collected.ok and collected.record is None, name
        numbers[name] = collected.numbers
    assert numbers["attention"]["aa_rel_64_speedup"] == 6.0
    assert numbers["epoch"]["aa_wrn_over_wrn"] == 1.25 and numbers["epoch"]["wrn-28-10 s/epoch"] == 8.0
    assert numbers["memory"]["worst_growth"] == 7.1 and numbers["memory"]["worst_case"] == "fused bfloat16"
    assert numbers["memory"]["flash takes head 264"] is False
    results = {name: StepResult(name, "pass", 1.0, values) for name, values in numbers.items()}
    assert [v["met"] for v in gpu_check.evaluate_targets(results)] == [True, True, True, True]
    assert not collectors["attention"](1, "", tmp_path / "missing.json", tmp_path).ok  # crashed: nothing to read


def test_pytest_counts():
    assert gpu_check.pytest_counts("x\n148 passed, 2 skipped, 1 error in 31.20s\n") == {
        "passed": 148, "skipped": 2, "error": 1}
    assert gpu_check.pytest_counts("==== 3 failed, 5 passed in 65.12s (0:01:05) ====") == {"failed": 3, "passed": 5}
    assert gpu_check.pytest_counts("ImportError: no module") == {}


def test_gpu_names_and_peaks():
    assert gpu_check.gpu_slug("NVIDIA H200") == "h200"
    assert gpu_check.gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert gpu_check.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.bf16_peak_tflops("Tesla T4") is None
    assert gpu_check.MEMORY_GROWTH_LIMIT == 9.7  # 1.25 x N (dkh + H + W) growth; N x N would be 16


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot be written")


def _fake_gpu(monkeypatch, machine: dict) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA Test GPU")
    monkeypatch.setattr(gpu_check, "machine_info", lambda device: machine)
    monkeypatch.setattr(gpu_check, "STEPS", (
        Step("good", "writes its JSON", 30, _python("import json, sys; json.dump({'x': 1}, open(sys.argv[1], 'w'))"),
             _collect_json),))


def test_main_writes_the_summary(tmp_path, monkeypatch, capsys):
    _fake_gpu(monkeypatch, {"gpu": "test"})
    assert gpu_check.main(["--out-dir", str(tmp_path)]) == 0
    [summary_path] = tmp_path.glob("gpu-check_cuda_test-gpu_*.json")
    summary = json.loads(summary_path.read_text())
    assert summary["exit_status"] == 0 and summary["steps"][0]["status"] == "pass"
    assert summary["machine"] == {"gpu": "test"} and "good" in summary["table"]
    assert [v["met"] for v in summary["targets"]] == [None] * len(gpu_check.TARGETS)  # their steps did not run
    assert "all steps passed" in capsys.readouterr().out


def test_the_summary_write_is_atomic(tmp_path, monkeypatch):
    """A summary that fails half-way leaves the previous file as it was and no temporary file."""
    _fake_gpu(monkeypatch, {"gpu": _Unprintable()})
    date = time.strftime("%Y-%m-%d")
    previous = tmp_path / f"gpu-check_cuda_test-gpu_{date}.json"
    previous.write_text('{"old": true}')
    with pytest.raises(RuntimeError, match="cannot be written"):
        gpu_check.main(["--out-dir", str(tmp_path)])
    assert json.loads(previous.read_text()) == {"old": True}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
