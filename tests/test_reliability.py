"""Faults, bad input and hostile files, each through the real command line in a
subprocess (``python -m aalib ...``; ``tests/faults.py`` wraps it where a fault must strike at an
exact point). RELIABILITY.md maps every case to its test.

Training runs are the tiny synthetic runs of tests/test_train.py (128 images, 4 steps per epoch),
one thread per process; the bad-input commands run three at a time, since each spends most of
its time importing torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from aalib.checkpoint import CheckpointError, load_checkpoint

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from formats import write_cifar100, write_tiny_imagenet  # noqa: E402
from tinyrun import ENV, ROOT, SMOKE, TINY, read_csv, run_python, sets, write_sweep_params, write_text  # noqa: E402

CIFAR_PARAMS = ROOT / "params" / "repro" / "cifar100_simple_cnn.yaml"
TINY_PARAMS = ROOT / "params" / "sound" / "tiny_imagenet_laa_wrn.yaml"
COMPARED = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5")  # not the timings

def aalib(*args: str, fault: str = "", patch: dict[str, Any] | None = None, timeout: float = 240,
          **popen: Any) -> subprocess.CompletedProcess:
    """``python -m aalib ARGS`` (through tests/faults.py when a fault or a patch is given)."""
    env = dict(ENV)
    if fault or patch:
        command = [str(TESTS / "faults.py"), *args]
        env.update(AALIB_FAULT=fault, AALIB_PATCH=json.dumps(patch or {}))
    else:
        command = ["-m", "aalib", *args]
    return run_python(*command, env=env, timeout=timeout, **popen)


def train_tiny(out: Path, *overrides: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return aalib("train", str(SMOKE), *sets(*TINY, *overrides), "--out", str(out), **kwargs)


def snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its mtime (empty if there is no folder)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def assert_same_result(run: Path, reference: Path) -> None:
    """Same metrics rows, test result and final weights (bit for bit) as the reference run."""
    rows, expected = read_csv(run / "metrics.csv"), read_csv(reference / "metrics.csv")
    assert [{k: r[k] for k in COMPARED} for r in rows] == [{k: r[k] for k in COMPARED} for r in expected]
    summary, reference_summary = (json.loads((p / "summary.json").read_text()) for p in (run, reference))
    assert summary["status"] == "finished" and summary["test"] == reference_summary["test"]
    weights, reference_weights = load_checkpoint(run / "last.pt")["model"], load_checkpoint(reference / "last.pt")["model"]
    assert all(torch.equal(weights[k], reference_weights[k]) for k in reference_weights)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run, uninterrupted, through the command line."""
    out = tmp_path_factory.mktemp("straight") / "run"
    result = train_tiny(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# --- 1. faults --------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_during_an_epoch_then_resume_gives_the_same_result(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = train_tiny(out, fault="kill_at_step:6")  # step 6 of 8: the middle of epoch 2
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert json.loads((out / "summary.json").read_text())["status"] == "running"  # no chance to say more
    resumed = train_tiny(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    assert_same_result(out, straight)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = train_tiny(out, fault="kill_in_save:2")  # half of epoch 2's last.pt written, then SIGKILL
    assert killed.returncode == -signal.SIGKILL
    assert [name.startswith(".last.pt.") for name in temporaries(out)] == [True]  # the half-written file
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the previous checkpoint, intact
    resumed = train_tiny(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "left by an interrupted write" in resumed.stderr and temporaries(out) == []
    assert_same_result(out, straight)


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_signal_while_writing_a_checkpoint_lets_the_epoch_finish_writing(straight: Path, tmp_path: Path,
                                                                          stop: str) -> None:
    out = tmp_path / "run"
    stopped = train_tiny(out, fault=f"signal_in_save:1:{stop}")  # the signal comes inside torch.save
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "aalib train: interrupted; run the same command again to resume" in stopped.stderr
    assert temporaries(out) == [] and load_checkpoint(out / "last.pt")["epoch"] == 1  # written whole
    state = json.loads((out / "summary.json").read_text())
    assert state["status"] == "interrupted" and state["epochs_completed"] == len(read_csv(out / "metrics.csv")) == 1
    resumed = train_tiny(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_result(out, straight)


@pytest.mark.slow
def test_interrupted_sweep_skips_finished_runs_and_resumes_the_interrupted_one(tmp_path: Path) -> None:
    params = write_sweep_params(tmp_path / "params", {"a": 2, "b": 30})
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "aalib", "sweep", str(params), "--runs-dir", str(runs)]
    sweep = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)  # its own process group: the notebook kernel goes too
    try:
        deadline = time.monotonic() + 180
        while not (runs / "b" / "seed0" / "last.pt").exists():  # run b has finished an epoch
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
            time.sleep(0.02)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.communicate()
    interrupted = json.loads((runs / "b" / "seed0" / "summary.json").read_text())
    assert interrupted["status"] == "running" and interrupted["epochs_completed"] < 30
    finished_a = snapshot(runs / "a" / "seed0")
    assert json.loads((runs / "a" / "seed0" / "summary.json").read_text())["status"] == "finished"

    again = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{runs / 'a' / 'seed0'}: finished, skipped" in again.stdout
    assert f"{runs / 'b' / 'seed0'}: resuming" in again.stdout
    assert snapshot(runs / "a" / "seed0") == finished_a  # the finished run was not touched
    summary = json.loads((runs / "b" / "seed0" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 30
    assert [r["epoch"] for r in read_csv(runs / "b" / "seed0" / "metrics.csv")] == [str(e) for e in range(1, 31)]
    assert "resuming" in (runs / "b" / "seed0" / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("fault, shown", [("nan_at_step:6", "nan"), ("inf_at_step:6", "inf")])
def test_non_finite_loss_stops_naming_epoch_and_step(tmp_path: Path, fault: str, shown: str) -> None:
    out = tmp_path / "run"
    result = train_tiny(out, "epochs=3", fault=fault)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = f"non-finite training loss ({shown}) at epoch 2, step 6"
    assert message in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and message in summary["reason"]
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the last good checkpoint
    assert [r["epoch"] for r in read_csv(out / "metrics.csv")] == ["1"]


def _file_size_limit(limit: int) -> Callable[[], None]:
    """RLIMIT_FSIZE in the child: writes past ``limit`` bytes fail with EFBIG (Python ignores
    SIGXFSZ), as on a full disk; it binds root too, unlike a read-only folder."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_leaves_no_half_written_file(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # summary.json, metrics.csv and train.log fit; best.pt (1.7 MB, written first) and last.pt do not
    result = train_tiny(out, preexec_fn=_file_size_limit(1 << 20))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"aalib train: error: cannot write {re.escape(str(out / 'best.pt'))}: File too large; .*", error)
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists() and temporaries(out) == []
    summary = json.loads((out / "summary.json").read_text())  # complete JSON, saying what happened
    assert summary["status"] == "failed" and "File too large" in summary["reason"]
    assert read_csv(out / "metrics.csv") == []  # a complete header, no half row


@pytest.mark.slow
def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    # No file may grow past 64 bytes (root ignores permission bits, so a limit does it; 0 would also
    # stop the tempfile module's probe of /tmp, long before the trainer).
    out = tmp_path / "run"
    result = train_tiny(out, preexec_fn=_file_size_limit(64))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"aalib train: error: cannot write {out / 'metrics.csv'}: File too large")
    assert temporaries(out) == [] and not (out / "metrics.csv").exists() and not (out / "summary.json").exists()
    # An output path that cannot be a folder (under a file), which stops root as well.
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = train_tiny(blocker / "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"aalib train: error: cannot write {blocker / 'run'}: Not a directory")


# --- 2. bad input (one line, exit status 2, nothing written, before any training) ------------

# name -> (arguments after `aalib`, made from the straight run's folder and the case's own folder;
#          words the message must contain)


def _yaml(folder: Path, text: str) -> str:
    return str(write_text(folder, text, "params.yaml"))


def _cifar(folder: Path, damage: Callable[[Path], None]) -> list[str]:
    damage(write_cifar100(folder / "data"))
    return ["train", str(CIFAR_PARAMS), *sets(f"data_root={folder / 'data'}", "epochs=1")]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _official_size(folder: Path) -> None:
    with open(folder / "train", "r+b") as handle:  # sparse: no disk space, zeros where bytes are
        handle.truncate(155_249_918)


def _tiny_without_annotations(folder: Path) -> list[str]:
    (write_tiny_imagenet(folder / "data") / "val" / "val_annotations.txt").unlink()
    return ["train", str(TINY_PARAMS), *sets(f"data_root={folder / 'data'}", "epochs=3")]


def _checkpoint(straight: Path, folder: Path, change: Callable[[Path], None], *overrides: str) -> list[str]:
    out = folder / "out"
    out.mkdir()
    (out / "last.pt").write_bytes((straight / "last.pt").read_bytes())
    change(out / "last.pt")
    return ["train", str(SMOKE), *sets(*TINY, *overrides), "--out", str(out)]


def _other_model_state(path: Path) -> None:
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"]["fc.weight"] = torch.zeros(5, 256)
    del checkpoint["model"]["fc.bias"]
    torch.save(checkpoint, path)


BAD: dict[str, tuple[Callable[[Path, Path], list[str]], tuple[str, ...]]] = {
    "unknown key": (lambda s, f: ["train", _yaml(f, "model: wrn\nlearning_rate: 0.1\n")],
                    ("unknown key(s) 'learning_rate'", "valid keys:", "lr")),
    "misspelled --set key": (lambda s, f: ["train", str(SMOKE), *sets("epoch=3")],
                             ("unknown key 'epoch'", "valid keys:", "epochs")),
    "wrong type": (lambda s, f: ["train", str(SMOKE), *sets("epochs=ten")], ("epochs must be int", "'ten'")),
    "lr <= 0": (lambda s, f: ["train", str(SMOKE), *sets("lr=0")], ("lr must be a positive number, got 0.0",)),
    "epochs <= 0": (lambda s, f: ["train", str(SMOKE), *sets("epochs=0")], ("epochs must be a positive integer, got 0",)),
    "batch_size <= 0": (lambda s, f: ["train", str(SMOKE), *sets("batch_size=-8")],
                        ("batch_size must be a positive integer, got -8",)),
    "heads not dividing dk, dv": (
        lambda s, f: ["train", str(SMOKE), *sets(*TINY, "model=wrn", "model_args={depth: 10, width: 1, "
                                                 "attention: softmax, heads: 3, dk: 16, dv: 8}")],
        ("heads=3 must divide dk=", "dv=8")),
    "kappa > 1": (lambda s, f: ["train", str(SMOKE), *sets(*TINY, "model=wrn", "model_args={depth: 10, width: 1, "
                                                           "attention: softmax, dk: 1.5}")],
                  ("dk=1.5", "must lie in (0, 1]")),
    "upsilon = 0": (lambda s, f: ["train", str(SMOKE), *sets(*TINY, "model=wrn", "model_args={depth: 10, width: 1, "
                                                             "attention: softmax, dv: 0.0}")],
                    ("dv=0.0", "must lie in (0, 1]")),
    "relative positions with linear attention": (
        lambda s, f: ["train", str(SMOKE), *sets(*TINY, "model=wrn", "model_args={depth: 10, width: 1, "
                                                 "attention: linear, position: relative}")],
        ("position='relative' needs attention='softmax'", "use position='sincos', 'learned' or 'none'")),
    "input smaller than the kernel": (
        lambda s, f: ["train", str(SMOKE), *sets(*TINY, "dataset_args.image_size=3", "dataset_args.receptive_field=1",
                                                 "dataset_args.mark_size=1", "dataset_args.distractors=0",
                                                 "crop_padding=0")],
        ("3x3 inputs are too small", "(3x3 kernel) would see a 2x2 map", "allowed: inputs of at least 9x9")),
    "crop padding not smaller than the image": (
        lambda s, f: ["train", str(SMOKE), *sets(*TINY, "crop_padding=16")],
        ("crop_padding must be an int in [0, 15] for 16x16 images", "got 16")),
    "unknown model": (lambda s, f: ["train", str(SMOKE), *sets("model=resnet")],
                      ("unknown model 'resnet'", "allowed:", "repro_simple_cnn")),
    "unknown dataset": (lambda s, f: ["train", str(SMOKE), *sets("dataset=mnist")],
                        ("unknown dataset 'mnist'", "allowed:", "cifar100")),
    "unknown schedule": (lambda s, f: ["train", str(SMOKE), *sets("schedule=poly")],
                         ("unknown schedule 'poly'", "allowed: cosine, multistep, constant")),
    "dataset folder missing": (lambda s, f: ["train", str(CIFAR_PARAMS), *sets(f"data_root={f / 'nothing'}")],
                               ("CIFAR-100 not found", "Expected layout:", "How to get it:")),
    "dataset file truncated": (lambda s, f: _cifar(f, lambda d: _truncate(d / "train")),
                               ("cifar-100-python/train' is truncated or corrupt",)),
    "dataset file with a wrong checksum": (lambda s, f: _cifar(f, _official_size),
                                           ("has the official size but md5", "expected 16019d7e3df5f24257cddd939b257f8d")),
    "Tiny-ImageNet without val_annotations.txt": (
        lambda s, f: _tiny_without_annotations(f), ("missing val/val_annotations.txt", "Expected layout:", "val_annotations.txt")),
    "checkpoint from another configuration": (
        lambda s, f: _checkpoint(s, f, lambda p: None, "lr=0.5", "model_args.dropout=0.1"),
        ("written by a different configuration", "lr: 0.05 -> 0.5", "model_args.dropout: '<unset>' -> 0.1")),
    "checkpoint with another model's weights": (
        lambda s, f: _checkpoint(s, f, _other_model_state),
        ("holds a model state of another model configuration", "missing: 1 (e.g. fc.bias)",
         "fc.weight (5, 256) vs (2, 256)")),
    "corrupt checkpoint (truncated)": (lambda s, f: _checkpoint(s, f, _truncate),
                                       ("corrupt checkpoint file", "delete it to start over")),
    "corrupt checkpoint (garbage)": (lambda s, f: _checkpoint(s, f, lambda p: p.write_bytes(b"not a checkpoint")),
                                     ("corrupt checkpoint file",)),
    "params file not valid YAML (train)": (lambda s, f: ["train", _yaml(f, "lr: [0.1\nepochs: 2\n")],
                                           ("params.yaml: invalid YAML (line",)),
    "params file not valid YAML (run)": (lambda s, f: ["run", _yaml(f, "name: x\nmodel_args: {heads: 4\n"),
                                                       "--runs-dir", str(f / "runs")],
                                         ("params.yaml: invalid YAML (line",)),
}


@pytest.fixture(scope="module")
def bad_results(straight: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Every bad-input command, run three at a time: (result, folder before, folder after)."""
    cases = {}
    for index, (name, (make, _)) in enumerate(BAD.items()):
        folder = tmp_path_factory.mktemp(f"bad{index}")
        args = make(straight, folder)
        if "--out" not in args and args[0] == "train":
            args += ["--out", str(folder / "out")]
        cases[name] = (args, folder, snapshot(folder))
    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(cases, pool.map(lambda case: aalib(*case[0]), cases.values())))
    return {name: (results[name], before, snapshot(folder)) for name, (_, folder, before) in cases.items()}


def test_input_size_check_finds_the_smallest_usable_input() -> None:
    from aalib.models import check_input_size

    check_input_size("repro_simple_cnn", (3, 9, 9), attention="softmax")  # 9 -> 5 -> 3: every 3x3 kernel fits
    with pytest.raises(ValueError, match=r"^8x8 inputs .*'features\.6\.conv\.conv' .* 2x2 map; allowed: .* 9x9"):
        check_input_size("repro_simple_cnn", (3, 8, 8), attention="softmax")


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_before_anything_is_written(bad_results: dict[str, tuple], name: str) -> None:
    result, before, after = bad_results[name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(f"aalib {'run' if '(run)' in name else 'train'}: error: ")
    for words in BAD[name][1]:
        assert words in lines[0], (words, lines[0])
    assert after == before  # no output folder, no changed file


# --- 3. security --------------------------------------------------------------------------------


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    out = tmp_path / "out"
    out.mkdir()
    torch.save({"format": 1, "model": {}, "config": Exploit()}, out / "last.pt")
    before = snapshot(out)
    result = train_tiny(out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "refused to load" in line and "system" in line and "weights_only=True" in line
    assert not marker.exists() and snapshot(out) == before
    with pytest.raises(CheckpointError, match="refused to load"):  # the library call, too
        load_checkpoint(out / "last.pt")
    assert not marker.exists()


def test_yaml_that_would_build_objects_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    text = f"name: x\nlr: !!python/object/apply:os.system ['touch {marker}']\n"
    params = tmp_path / "evil.yaml"
    params.write_text(text)
    for command in (["train", str(params), "--out", str(tmp_path / "out")],
                    ["run", str(params), "--runs-dir", str(tmp_path / "runs")]):
        result = aalib(*command)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "invalid YAML" in line and "python/object/apply:os.system" in line
    assert not marker.exists() and not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_package_loads_only_safely() -> None:
    """Every torch.load says weights_only=True; YAML goes through safe loaders only; no pickle.load."""
    for path in (ROOT / "aalib").rglob("*.py"):
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
        assert not re.search(r"yaml\.(unsafe_load|full_load)|Loader=yaml\.(Loader|FullLoader|UnsafeLoader)", text), path
        for call in re.findall(r"yaml\.load\([^)]*\)", text):
            assert "Loader=_Loader" in call, (path, call)  # aalib.config._Loader, a SafeLoader subclass
        assert not re.search(r"pickle\.loads?\(", text), path
    from aalib.config import _Loader

    import yaml

    assert issubclass(_Loader, yaml.SafeLoader)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _tar(path: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name in ("cifar-100-python/meta", "cifar-100-python/train", "cifar-100-python/test"):
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
        archive.addfile(member, io.BytesIO(b"x" * member.size))
    return path


def _tar_member(name: str, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    if link:
        member.type, member.linkname = tarfile.SYMTYPE, link
    else:
        member.size = 1
    return member


@pytest.mark.parametrize("member, refusal", [
    (_tar_member("../escaped.txt"), "refusing tar member '../escaped.txt': '..' component"),
    (_tar_member("/tmp/aalib-absolute.txt"), "refusing tar member '/tmp/aalib-absolute.txt': absolute path"),
    (_tar_member("cifar-100-python/out", link="../../.."), "refusing tar member 'cifar-100-python/out': link '../../..' points outside"),
])
def test_hostile_tar_download_is_refused(tmp_path: Path, member: tarfile.TarInfo, refusal: str) -> None:
    archive = _tar(tmp_path / "hostile.tar.gz", member)
    data = tmp_path / "nest" / "data"
    patch = {"aalib.data.cifar:CIFAR100_URL": archive.as_uri(), "aalib.data.cifar:CIFAR100_MD5": _md5(archive)}
    result = aalib("train", str(CIFAR_PARAMS), *sets(f"data_root={data}", "download=true"), "--out",
                   str(tmp_path / "out"), patch=patch)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert refusal in result.stderr.strip().splitlines()[-1]
    assert not (data / "cifar-100-python").exists()  # checked before anything is extracted
    assert not (tmp_path / "nest" / "escaped.txt").exists() and not Path("/tmp/aalib-absolute.txt").exists()


def test_hostile_zip_download_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("tiny-imagenet-200/wnids.txt", "n01\n")
        link = zipfile.ZipInfo("tiny-imagenet-200/words.txt")
        link.external_attr = 0o120777 << 16  # a symbolic link ...
        handle.writestr(link, "../../../etc/passwd")  # ... leaving the target folder
    data = tmp_path / "data"
    patch = {"aalib.data.tinyimagenet:TINY_IMAGENET_URL": archive.as_uri(),
             "aalib.data.tinyimagenet:TINY_IMAGENET_MD5": _md5(archive)}
    result = aalib("train", str(TINY_PARAMS), *sets(f"data_root={data}", "download=true"), "--out",
                   str(tmp_path / "out"), patch=patch)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "refusing zip member 'tiny-imagenet-200/words.txt': link '../../../etc/passwd' points outside" in result.stderr
    assert not (data / "tiny-imagenet-200").exists()


def test_download_with_a_wrong_checksum_is_not_used(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "changed.tar.gz", _tar_member("cifar-100-python/extra"))
    data = tmp_path / "data"
    patch = {"aalib.data.cifar:CIFAR100_URL": archive.as_uri()}  # the published md5 stays
    result = aalib("train", str(CIFAR_PARAMS), *sets(f"data_root={data}", "download=true"), "--out",
                   str(tmp_path / "out"), patch=patch)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"md5 of {archive.as_uri()} is {_md5(archive)}, expected eb9058c3a382ffc7106e4002c42a8d85" in line
    assert sorted(p.name for p in data.iterdir()) == []  # neither the archive nor a partial download stays
    assert not (tmp_path / "out").exists()
