"""The trainer and its CLI: strict config, params files, schedules, checkpoints, exact resume,
finished-run no-op, refused foreign checkpoints, non-finite loss, exit codes, DDP on gloo, seeds.

Training runs use the synthetic long-range data at 16x16 with a few hundred images, so each takes
seconds on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch

import aalib.train as train_module
from aalib.checkpoint import METRIC_COLUMNS, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from aalib.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_diff,
    config_from_dict,
    parse_override,
)
from aalib.experiment import load_config
from aalib.data import list_datasets
from aalib.machine import cpu_name
from aalib.models import list_models
from aalib.recipe import lr_factor
from aalib.train import NonFiniteLoss, train

from faults import Poisoned
from tinyrun import ROOT, SMOKE, TINY, read_csv, run_python, sets, write_text

PARAMS = ROOT / "params"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny runs gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    threads that wait for each other make them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(*overrides: str) -> TrainConfig:
    return load_config(SMOKE, overrides=[*TINY, *overrides])


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    return write_text(tmp_path, text, name)


# --- strict configuration -------------------------------------------------------------------


def test_unknown_key_lists_valid_keys(tmp_path):
    path = write(tmp_path, "model: wrn\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "'learning_rate'" in message
    assert "valid keys:" in message and "lr" in message and "batch_size" in message and "model_args" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text, key",
    [
        ("epochs: ten\n", "epochs"),
        ("epochs: 1.5\n", "epochs"),
        ("nesterov: 1\n", "nesterov"),  # an int is not a bool
        ("batch_size: true\n", "batch_size"),  # a bool is not an int
        ("lr: [0.1]\n", "lr"),
        ("model_args: 3\n", "model_args"),
        ("seeds: 0\n", "seeds"),
        ("milestones: [60, x]\n", "milestones"),
    ],
)
def test_wrong_type_is_an_error(tmp_path, text, key):
    with pytest.raises(ConfigError, match=rf"{key} must be .*valid keys:"):
        load_config(write(tmp_path, text))


def test_ints_and_exponent_floats_are_floats(tmp_path):
    config = load_config(write(tmp_path, "lr: 1\nweight_decay: 5e-4\nlabel_smoothing: 1.0e-1\n"))
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.weight_decay == 5e-4 and config.label_smoothing == 0.1


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("lr=0", "lr must be a positive"),
        ("lr=-0.1", "lr must be a positive"),
        ("epochs=0", "epochs must be a positive"),
        ("batch_size=-4", "batch_size must be a positive"),
        ("eval_batch_size=0", "eval_batch_size must be a positive"),
        ("schedule=poly", "unknown schedule 'poly'; allowed: cosine, multistep, constant"),
        ("model=resnet9000", "unknown model 'resnet9000'; allowed: .*repro_simple_cnn"),
        ("dataset=mnist", "unknown dataset 'mnist'; allowed: .*cifar100"),
        ("model_args.heds=4", "model_args 'heds' not taken by model 'wrn'; allowed: .*heads"),
        ("dataset_args.val_sise=4", "dataset_args 'val_sise' not taken by dataset 'cifar100'"),
        ("device=gpu", "unknown device 'gpu'"),
        ("warmup_epochs=300", "warmup_epochs"),
        ("milestones=[120, 60]", "milestones must be increasing"),
        ("label_smoothing=1.5", "label_smoothing"),
        ("seeds=[]", "seeds must be a non-empty list"),
    ],
)
def test_bad_values_are_one_line_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(None, overrides=[override])
    assert "\n" not in str(info.value)


def test_invalid_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "model: wrn\nmodel_args: {depth: 28\nlr: 0.1\n", name="broken.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML \(line \d+, column \d+\)") as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- lr\n- 0.1\n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")
    assert load_config(write(tmp_path, "# only a comment\n")) == TrainConfig()


def test_set_overrides_parse_yaml_scalars():
    assert parse_override("lr=1e-3") == (["lr"], 1e-3)
    assert parse_override("model_args.heads=4") == (["model_args", "heads"], 4)
    assert parse_override("seeds=[0, 1]") == (["seeds"], [0, 1])
    assert parse_override("model_args.attention=null") == (["model_args", "attention"], None)
    assert parse_override("name=my-run") == (["name"], "my-run")
    assert parse_override("bf16=true") == (["bf16"], True)
    raw = apply_overrides({"model_args": {"depth": 16}}, ["model_args.heads=4", "model_args.depth=28", "epochs=3"])
    assert raw == {"model_args": {"depth": 28, "heads": 4}, "epochs": 3}
    config = load_config(None, overrides=["model_args.heads=4", "seeds=[0,1]", "lr=0.05", "model_args.attention=softmax"])
    assert config.model_args == {"heads": 4, "attention": "softmax"} and config.seeds == [0, 1] and config.lr == 0.05
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("lr")
    with pytest.raises(ConfigError, match="unknown key 'lrr'; valid keys:"):
        load_config(None, overrides=["lrr=0.1"])
    with pytest.raises(ConfigError, match="lr is not a mapping"):
        load_config(None, overrides=["lr.x=1"])
    with pytest.raises(ConfigError, match="--set epochs: invalid YAML"):
        load_config(None, overrides=["epochs=[1"])
    with pytest.raises(ConfigError, match="epochs must be int"):
        load_config(None, overrides=["epochs=many"])


def test_config_from_dict_round_trips():
    config = tiny_config()
    assert config_from_dict(dataclasses.asdict(config)) == config


def test_every_params_file_is_a_valid_config():
    files = sorted(PARAMS.rglob("*.yaml"))
    names = {str(p.relative_to(PARAMS)) for p in files}
    expected = {f"repro/{d}_{m}.yaml" for d in ("cifar100", "tiny_imagenet") for m in ("wrn", "aa_wrn", "laa_wrn")}
    expected |= {f"{kind}/cifar100_{m}.yaml" for kind in ("repro", "sound") for m in ("simple_cnn", "simple_aacnn", "simple_laacnn")}
    expected |= {f"sound/{d}_{m}.yaml" for d in ("cifar100", "tiny_imagenet") for m in ("wrn", "aa_wrn", "laa_wrn")}
    expected |= {"bello/cifar100_wrn28_10.yaml", "bello/cifar100_aa_wrn28_10.yaml", "smoke.yaml"}
    expected |= {f"long_range/{m}.yaml" for m in ("simple_cnn", "simple_aacnn", "simple_laacnn")}
    expected |= {"long_range_ablations/simple_laacnn_swapped.yaml", "repro/cifar100_simple_laacnn_swapped.yaml"}
    expected |= {f"long_range_ablations/{m}_warmup3.yaml" for m in ("simple_cnn", "simple_aacnn", "simple_laacnn")}
    assert expected <= names, f"missing params files: {sorted(expected - names)}"
    seen_names = set()
    for path in files:
        config = load_config(path)  # strict: unknown keys, types, values, model_args, dataset_args
        assert config.model in list_models(), path
        assert config.dataset in list_datasets(), path
        assert config.name not in seen_names, f"{path}: name {config.name!r} used twice"
        seen_names.add(config.name)
    # Every distinct model builds with its arguments (on the meta device: no memory, no init cost).
    from aalib.models import build_model

    built = set()
    for path in files:
        config = load_config(path)
        key = (config.model, json.dumps(config.model_args, sort_keys=True))
        if key not in built:
            with torch.device("meta"):
                build_model(config.model, **config.model_args)
            built.add(key)
    # The long-range demo: every model on one recipe, several seeds; each ablation changes one thing.
    demo = {m: dataclasses.asdict(load_config(PARAMS / "long_range" / f"{m}.yaml")) for m in ("simple_cnn", "simple_aacnn", "simple_laacnn")}
    assert all(len(c["seeds"]) >= 3 for c in demo.values())
    assert config_diff(demo["simple_cnn"], demo["simple_laacnn"], ignore=frozenset({"name"})) == ["model_args.attention"]
    assert config_diff(demo["simple_cnn"], demo["simple_aacnn"], ignore=frozenset({"name"})) == ["model_args.attention"]
    swapped = dataclasses.asdict(load_config(PARAMS / "long_range_ablations" / "simple_laacnn_swapped.yaml"))
    assert config_diff(demo["simple_laacnn"], swapped, ignore=frozenset({"name"})) == ["model_args.attention"]
    for m, base in demo.items():
        ablation = dataclasses.asdict(load_config(PARAMS / "long_range_ablations" / f"{m}_warmup3.yaml"))
        assert config_diff(base, ablation, ignore=frozenset({"name", "label"})) == ["warmup_epochs"]
    seed = load_config(PARAMS / "repro" / "cifar100_laa_wrn.yaml")
    assert (seed.lr, seed.weight_decay, seed.schedule, seed.augment, seed.normalize, seed.nesterov) == (
        0.01, 0.0, "cosine", False, False, True)
    assert seed.model == "repro_wrn" and seed.model_args == {"attention": "linear"} and seed.epochs == 100
    sound = load_config(PARAMS / "sound" / "cifar100_aa_wrn.yaml")
    assert (sound.lr, sound.weight_decay, sound.schedule, sound.milestones, sound.gamma, sound.epochs) == (
        0.1, 5e-4, "multistep", [60, 120, 160], 0.2, 200)
    assert sound.augment and sound.normalize and sound.nesterov
    bello = load_config(PARAMS / "bello" / "cifar100_aa_wrn28_10.yaml")
    assert bello.model_args["heads"] == 8 and bello.model_args["dk"] == 0.2 and bello.model_args["dv"] == 0.1


# --- recipe pieces --------------------------------------------------------------------------


def test_lr_schedules():
    multistep = TrainConfig(epochs=200, schedule="multistep")  # x0.2 at 60/120/160
    assert lr_factor(multistep, 0, 10) == 1.0
    assert lr_factor(multistep, 599, 10) == 1.0
    assert lr_factor(multistep, 600, 10) == pytest.approx(0.2)
    assert lr_factor(multistep, 1200, 10) == pytest.approx(0.04)
    assert lr_factor(multistep, 1999, 10) == pytest.approx(0.008)
    cosine = TrainConfig(epochs=10, schedule="cosine")
    assert lr_factor(cosine, 0, 10) == 1.0
    assert lr_factor(cosine, 50, 10) == pytest.approx(0.5)
    assert lr_factor(cosine, 99, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    warm = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1)
    assert [lr_factor(warm, s, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(warm, 4 + 18, 4) == pytest.approx(0.5)
    assert lr_factor(TrainConfig(schedule="constant"), 12345, 10) == 1.0


def test_checkpoint_and_rng_state_round_trip_with_weights_only(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    state = rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"rng": state, "history": [{"epoch": 1, "val_loss": None}], "config": {"lr": 0.1}})
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temp file left behind
    loaded = load_checkpoint(path)  # weights_only=True
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
    assert loaded["history"] == [{"epoch": 1, "val_loss": None}]


# --- training runs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Two epochs, uninterrupted."""
    out = tmp_path_factory.mktemp("straight")
    summary = train(tiny_config(), out)
    return out, summary


@pytest.mark.slow
def test_run_writes_metrics_summary_and_checkpoints(straight_run):
    out, summary = straight_run
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    rows = read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == list(METRIC_COLUMNS)
    for row in rows:
        for key in ("train_loss", "val_loss", "train_top1", "val_top1", "images_per_second", "peak_mem_mb"):
            assert math.isfinite(float(row[key])), key
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["status"] == "finished"
    assert on_disk["test"]["images"] == 32  # the true denominator: every test image once
    assert 0 <= on_disk["test"]["top1"] <= 100
    from aalib.models import build_model, count_parameters

    assert on_disk["parameters"] == count_parameters(build_model("repro_simple_cnn", attention=None, num_classes=2))
    assert on_disk["config"]["dataset_args"]["train_size"] == 128
    for key in ("torch", "python", "device_name", "git_commit"):
        assert key in on_disk["environment"]
    assert on_disk["environment"]["device_name"] == cpu_name()  # the CPU's model name, not "x86_64"
    last = load_checkpoint(out / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "history"} <= set(last)
    assert last["epoch"] == 2 and last["step"] == 8 and len(last["history"]) == 2
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == on_disk["best"]["epoch"]
    log_text = (out / "train.log").read_text()
    assert "epoch 2/2" in log_text and "finished: test" in log_text


@pytest.mark.slow
def test_training_lowers_the_loss(tmp_path):
    # Memorise 64 images (no dropout, no augmentation): the training loss must fall well below ln 2.
    config = tiny_config("dataset_args.train_size=64", "model_args.dropout=0.0", "augment=false",
                         "epochs=8", "lr=0.05", "schedule=constant", "batch_size=16", "log_every=0")
    summary = train(config, tmp_path)
    losses = [float(r["train_loss"]) for r in read_csv(tmp_path / "metrics.csv")]
    assert summary["status"] == "finished"
    assert losses[-1] < 0.6 * losses[0] and losses[-1] < 0.5, losses


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run_exactly(straight_run, tmp_path, monkeypatch):
    straight_out, _ = straight_run
    real_save = train_module.save_checkpoint

    def save_then_die(path, checkpoint):
        real_save(path, checkpoint)
        if path.name == "last.pt" and checkpoint["epoch"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 1's checkpoint, before its CSV row

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), tmp_path)
    interrupted = json.loads((tmp_path / "summary.json").read_text())
    assert interrupted["status"] == "interrupted" and "KeyboardInterrupt" in interrupted["reason"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    # A stale row that a killed run could leave behind: the resume must rewrite it away.
    with open(tmp_path / "metrics.csv", "a") as handle:
        handle.write("1,0.1,9,9,9,9,9,9,9,9,9\n")
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)

    summary = train(tiny_config(), tmp_path)
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    resumed_rows, straight_rows = read_csv(tmp_path / "metrics.csv"), read_csv(straight_out / "metrics.csv")
    assert [r["epoch"] for r in resumed_rows] == ["1", "2"]
    for key in ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5"):
        assert [r[key] for r in resumed_rows] == [r[key] for r in straight_rows], key
    resumed, straight = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(straight_out / "last.pt")
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name  # bit for bit
    for index, state in straight["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][index]["momentum_buffer"])
    assert summary["test"] == json.loads((straight_out / "summary.json").read_text())["test"]
    assert "resuming" in (tmp_path / "train.log").read_text()


@pytest.mark.slow
def test_finished_run_is_a_no_op(straight_run):
    out, summary = straight_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = train(tiny_config(), out)
    assert again["status"] == "finished" and again["test"] == summary["test"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten


@pytest.mark.slow
def test_checkpoint_from_another_config_is_refused(straight_run):
    out, _ = straight_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ConfigError) as info:
        train(tiny_config("lr=0.01", "model_args.dropout=0.1"), out)
    message = str(info.value)
    assert "keys differ" in message and "lr: 0.05 -> 0.01" in message and "model_args.dropout" in message
    assert "batch_size" not in message
    # Keys that do not change the computation may differ.
    assert train(tiny_config("log_every=1", "eval_batch_size=16", "name=other"), out)["status"] == "finished"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    build_criterion = train_module.build_criterion  # NaN from step 6: the second step of epoch 2
    monkeypatch.setattr(train_module, "build_criterion", lambda config: Poisoned(build_criterion(config), 6, float("nan")))
    summary = train(tiny_config("epochs=3", "log_every=0"), tmp_path)
    assert summary["status"] == "failed"
    assert "epoch 2, step 6" in summary["reason"] and "non-finite" in summary["reason"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["reason"] == summary["reason"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the last good epoch
    assert [r["epoch"] for r in read_csv(tmp_path / "metrics.csv")] == ["1"]
    assert "non-finite training loss" in (tmp_path / "train.log").read_text()
    assert NonFiniteLoss(2, 6, float("nan")).step == 6


@pytest.mark.slow
def test_seeds_run_into_their_own_folders(tmp_path):
    result = train(tiny_config("seeds=[0, 1]", "epochs=1"), tmp_path)
    assert result["status"] == "finished" and set(result["runs"]) == {"seed0", "seed1"}
    weights = []
    for seed in (0, 1):
        summary = json.loads((tmp_path / f"seed{seed}" / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["config"]["seed"] == seed
        weights.append(load_checkpoint(tmp_path / f"seed{seed}" / "last.pt")["model"])
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_run_on_cpu(tmp_path):
    summary = train(tiny_config("epochs=1", "bf16=true", "channels_last=true"), tmp_path)
    assert summary["status"] == "finished" and math.isfinite(summary["last"]["train_loss"])


# --- command line ---------------------------------------------------------------------------


def test_cli_config_errors_exit_non_zero_without_traceback(tmp_path):
    out = tmp_path / "out"
    bad = write(tmp_path, "model: wrn\nlearning_rate: 0.1\n")
    result = run_python("-m", "aalib", "train", str(bad), "--out", str(out))
    assert result.returncode == 2
    assert "learning_rate" in result.stderr and "valid keys:" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    broken = write(tmp_path, "lr: [0.1\n", name="broken.yaml")
    result = run_python("-m", "aalib", "train", str(broken), "--set", "epochs=0", "--out", str(out))
    assert result.returncode == 2 and "broken.yaml: invalid YAML" in result.stderr and "Traceback" not in result.stderr
    result = run_python("-m", "aalib", "train", str(SMOKE), "--set", "lr=-1", "--out", str(out))
    assert result.returncode == 2 and "lr must be a positive" in result.stderr
    # A dataset that is not on disk: one line saying so, and nothing written.
    result = run_python("-m", "aalib", "train", str(PARAMS / "repro" / "cifar100_wrn.yaml"),
                        "--set", f"data_root={tmp_path / 'empty'}", "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not found" in result.stderr.splitlines()[0] and "CIFAR-100" in result.stderr  # then how to get it
    assert not out.exists()
    result = run_python("-m", "aalib")
    assert result.returncode == 2 and "COMMAND" in result.stderr
    result = run_python("-m", "aalib", "train", "--help")
    assert result.returncode == 0 and "--set" in result.stdout and "--out" in result.stdout


@pytest.mark.slow
def test_cli_trains_then_reports_a_finished_run(tmp_path):
    out = tmp_path / "run"
    tiny = sets(*TINY, "epochs=1")
    first = run_python("-m", "aalib", "train", str(SMOKE), *tiny, "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "epoch 1/1" in first.stderr
    stamp = (out / "last.pt").stat().st_mtime_ns
    again = run_python("-m", "aalib", "train", str(SMOKE), *tiny, "--out", str(out))
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert (out / "last.pt").stat().st_mtime_ns == stamp
    other = run_python("-m", "aalib", "train", str(SMOKE), *tiny, "--set", "lr=0.5", "--out", str(out))
    assert other.returncode == 2 and "keys differ: lr: 0.05 -> 0.5" in other.stderr and "Traceback" not in other.stderr


@pytest.mark.slow
def test_ddp_two_processes_on_gloo(tmp_path):
    out = tmp_path / "ddp"
    result = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "aalib", "train", str(SMOKE), *sets(*TINY), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "best.pt", "last.pt", "metrics.csv", "summary.json", "train.log"]
    rows = read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["environment"]["world_size"] == 2
    assert summary["test"]["images"] == 32  # sharded evaluation still counts every test image once
    assert load_checkpoint(out / "last.pt")["step"] == 2 * 4  # global batch 32 = 2 x 16: 4 steps per epoch


@pytest.mark.slow
@pytest.mark.parametrize(
    "params, writer, sizes",
    [
        ("repro/cifar100_simple_cnn.yaml", "write_cifar100", ["dataset_args.val_size=20"]),
        ("sound/tiny_imagenet_laa_wrn.yaml", "write_tiny_imagenet", ["dataset_args.val_size=3"]),
    ],
)
def test_repro_and_sound_params_train_on_the_real_file_formats(tmp_path, params, writer, sizes):
    """The study's own params files, unchanged but for size, start training on files in the
    official on-disk layouts (CIFAR-100 python pickles; the Tiny-ImageNet JPEG folder)."""
    import formats

    getattr(formats, writer)(tmp_path / "data")
    config = load_config(PARAMS / params, overrides=[
        f"data_root={tmp_path / 'data'}", "epochs=1", "batch_size=8", "eval_batch_size=8", "progress=false",
        "milestones=[]", "warmup_epochs=0", *sizes,
    ])
    summary = train(config, tmp_path / "run")
    assert summary["status"] == "finished"
    assert summary["test"]["images"] == {"repro/cifar100_simple_cnn.yaml": 20, "sound/tiny_imagenet_laa_wrn.yaml": 6}[params]
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_loss"]))
