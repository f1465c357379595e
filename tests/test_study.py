"""The trade-off study (aalib/study.py, params/study/): its params files agree with the tasks the
report classifies, and the report's tables, answers and figures state what the runs hold (run
folders written here with known numbers; `make study` itself is too long for the suite)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from aalib.config import TrainConfig, config_from_dict
from aalib.data import LongRangeTask, additive_ceiling
from aalib.study import (
    ANSWERS_FILE,
    FIGURES,
    RESOLUTION_TASK,
    TABLES,
    read_study_results,
    scaled_task,
    study_runs,
    write_study_report,
)
from aalib.runs import scan_runs
from tinyrun import run_python

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "params" / "study"
MODELS = {"Simple-CNN": None, "Simple-AACNN": "softmax", "Simple-LAACNN": "linear"}
# the keys the sweeps vary; every other key is the one recipe of the study
VARIED = {"name", "model_args", "dataset", "dataset_args", "seeds"}


def _params(sweep: str) -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in sorted((STUDY / sweep).glob("*.yaml"))]


def test_scaled_task_scales_every_length_and_refuses_other_sizes() -> None:
    assert scaled_task(32) == RESOLUTION_TASK
    task = scaled_task(96)
    assert (task.receptive_field, task.max_distance, task.mark_size, task.distractor_size) == (66, 75, 9, 9)
    assert (task.colours, task.distractors, task.noise) == (RESOLUTION_TASK.colours, RESOLUTION_TASK.distractors,
                                                             RESOLUTION_TASK.noise)
    with pytest.raises(ValueError, match="image_size must be a multiple of 32.*got 48"):
        scaled_task(48)
    with pytest.raises(ValueError, match=r"image_size must be an int >= 32, got 16"):
        scaled_task(16)


def test_the_study_params_are_its_three_sweeps_with_one_recipe() -> None:
    every = [p for sweep in ("distance", "resolution", "pathfinder") for p in _params(sweep)]
    assert len(every) == 18 and len({p["name"] for p in every}) == 18
    recipes = {json.dumps({k: v for k, v in p.items() if k not in VARIED}, sort_keys=True) for p in every}
    assert len(recipes) == 1, "every run of the study has the same recipe"
    splits = {json.dumps({k: p["dataset_args"][k] for k in ("train_size", "val_size", "test_size")}) for p in every}
    assert len(splits) == 1
    for p in every:
        config_from_dict(p, where=p["name"])  # every key a config key, of the right type
    for sweep in ("distance", "resolution", "pathfinder"):
        kinds = sorted(str(p["model_args"]["attention"]) for p in _params(sweep))
        assert set(kinds) == {"None", "softmax", "linear"} and kinds.count("softmax") == len(kinds) // 3


def test_distance_bands_run_from_inside_the_field_to_beyond_and_the_last_is_the_resolution_task() -> None:
    bands = set()
    for p in _params("distance"):
        task = LongRangeTask.from_arguments(p["dataset_args"])
        assert task.image_size == 32 and task.max_distance - task.receptive_field == 3
        bands.add((task.receptive_field, task.max_distance))
        assert p["seeds"] == [0, 1]
    lows = sorted(low for low, _ in bands)
    assert lows[0] + 3 + 2 * 2 <= 20, "the first band's marks fit whole in one 21 x 21 window"
    assert lows[-1] >= 21 and (lows[-1], lows[-1] + 3) == (RESOLUTION_TASK.receptive_field, RESOLUTION_TASK.max_distance)
    for p in _params("resolution"):
        task = LongRangeTask.from_arguments(p["dataset_args"])
        assert task.image_size in (64, 96) and task == scaled_task(task.image_size)


# -- a study folder with known numbers -------------------------------------------------------------
def _write_run(root: Path, name: str, model: str, seed: int, dataset: str, dataset_args: dict, *, top1: float,
               seconds: float = 10.0, memory: float = 1000.0, status: str = "finished") -> None:
    config = dataclasses.asdict(TrainConfig(name=name, model="repro_simple_cnn", model_args={"attention": MODELS[model]},
                                            dataset=dataset, dataset_args=dataset_args, epochs=2, seed=seed))
    folder = root / name / f"seed{seed}"
    folder.mkdir(parents=True)
    summary = {"config": config, "status": status, "epochs_completed": 2, "parameters": 1000, "num_classes": 2,
               "environment": {"device_name": "test CPU"}}
    if status == "finished":
        summary["test"] = {"top1": top1, "top5": 100.0, "images": 1000}
    (folder / "summary.json").write_text(json.dumps(summary))
    rows = [f"{epoch},{top1},0.5,{seconds},{memory}" for epoch in (1, 2)]
    (folder / "metrics.csv").write_text("epoch,val_top1,train_loss,train_seconds,peak_mem_mb\n" + "\n".join(rows) + "\n")


DISTANCE_TOP1 = {  # model -> band low -> (seed 0, seed 1)
    "Simple-CNN": {4: (98.0, 96.0), 13: (90.0, 88.0), 22: (60.0, 58.0)},
    "Simple-AACNN": {4: (99.0, 99.5), 13: (98.0, 99.0), 22: (97.0, 95.0)},
    "Simple-LAACNN": {4: (99.0, 98.0), 13: (97.0, 96.0), 22: (96.0, 92.0)},
}
SECONDS = {"Simple-CNN": (5.0, 20.0, 45.0), "Simple-AACNN": (6.0, 40.0, 180.0), "Simple-LAACNN": (5.5, 22.0, 60.0)}


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    for model, bands in DISTANCE_TOP1.items():
        for low, values in bands.items():
            for seed, top1 in enumerate(values):
                _write_run(root, f"distance_{low}_{model}", model, seed, "long_range",
                           {"image_size": 32, "receptive_field": low, "max_distance": low + 3}, top1=top1,
                           seconds=SECONDS[model][0], memory=1000.0)
        for index, size in enumerate((64, 96), start=1):
            task = scaled_task(size)
            args = {"image_size": size, "receptive_field": task.receptive_field, "max_distance": task.max_distance,
                    "mark_size": task.mark_size}
            for seed in (0, 1) if size == 64 else (0,):
                _write_run(root, f"resolution_{size}_{model}", model, seed, "long_range", args,
                           top1=DISTANCE_TOP1[model][22][seed] - index, seconds=SECONDS[model][index],
                           memory=1000.0 * (1 + index))
        for seed, top1 in enumerate((50.5, 52.0)):
            _write_run(root, f"pathfinder_{model}", model, seed, "pathfinder", {"image_size": 32},
                       top1=top1 + (20 if model == "Simple-AACNN" else 0))
    _write_run(root, "distance_4_Simple-CNN", "Simple-CNN", 2, "long_range",
               {"image_size": 32, "receptive_field": 4, "max_distance": 7}, top1=0.0, status="interrupted")
    _write_run(root, "not_the_study", "Simple-CNN", 0, "long_range", {"image_size": 32}, top1=10.0)
    damaged = root / "damaged" / "seed0"
    damaged.mkdir(parents=True)
    (damaged / "summary.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def report(study_folder: Path) -> dict:
    return write_study_report(study_folder, study_folder / "report")


def test_runs_are_classified_by_their_task(report: dict, study_folder: Path) -> None:
    runs = report["runs"]
    assert "not_the_study" not in set(runs["experiment"])
    assert len(runs) == 3 * (3 * 2 + 3 + 2) + 1
    assert set(runs.loc[runs["distance"], "gap_low"]) == {4, 13, 22}
    resolution = runs[runs["resolution"]]
    assert set(resolution["image_size"]) == {32, 64, 96}
    assert set(resolution.loc[resolution["image_size"] == 32, "gap_low"]) == {22}, "the distance sweep's last band"
    assert study_runs(scan_runs(study_folder / "pathfinder_Simple-CNN")[0])["pathfinder"].all()


def test_distance_table_and_answers_state_the_runs(report: dict) -> None:
    table = report["tables"]["distance"]
    assert list(table["model"].unique()) == ["Simple-CNN", "Simple-AACNN", "Simple-LAACNN"]
    row = table[(table["model"] == "Simple-CNN") & (table["gap_low"] == 22)].iloc[0]
    assert (row.seeds, row.top1_mean, row.solved, bool(row.inside_field)) == (2, 59.0, 0, False)
    assert row.top1_std == pytest.approx(math.sqrt(2)) and row.top1_per_seed == "0: 60.00, 1: 58.00"
    first = table[(table["model"] == "Simple-CNN") & (table["gap_low"] == 4)].iloc[0]
    assert first.seeds == 2 and first.top1_mean == 97.0, "the interrupted seed is counted nowhere"
    cnn = next(a for a in report["answers"] if a.startswith("Distance, Simple-CNN"))
    assert "97.0 % at gap 4-7 px (96.0-98.0, 2 seeds, 2 solved)" in cnn and "59.0 % at gap 22-25 px" in cnn
    assert f"-38.0 points (additive ceiling {100 * additive_ceiling(4):.1f} %" in cnn


def test_resolution_answers_say_where_laa_gets_cheaper_and_whether_it_keeps_aas_accuracy(report: dict) -> None:
    table = report["tables"]["resolution"]
    aa = table[table["model"] == "Simple-AACNN"].set_index("image_size")
    assert list(aa.index) == [32, 64, 96] and list(aa["seeds"]) == [2, 2, 1]
    assert aa.loc[64, "top1_mean"] == pytest.approx((96.0 + 94.0) / 2) and aa.loc[96, "peak_mem_mb"] == 3000.0
    answers = "\n".join(report["answers"])
    assert "cheaper than AA's from 32x32 up (LAA/AA seconds per epoch: 0.92 at 32x32, 0.55 at 64x64, 0.33 at 96x96)" in answers
    # at 32: LAA (96, 92) against AA (97, 95), paired by seed: -1 and -3
    assert "At 32x32, test top-1: Simple-AACNN 96.00 %, Simple-LAACNN 94.00 %; Simple-LAACNN - Simple-AACNN: -2.00 points" in answers
    slopes = report["tables"]["slopes"]
    fitted = slopes[(slopes["name"] == "Simple-AACNN") & (slopes["metric"] == "s_per_epoch")].iloc[0]
    expected = np.polyfit(np.log([32**2, 64**2, 96**2]), np.log(SECONDS["Simple-AACNN"]), 1)[0]
    assert fitted.slope == pytest.approx(expected) and fitted.points == 3
    assert f"Simple-AACNN N^{expected:.2f}" in answers


def test_pathfinder_table_stands_beside_lras_numbers(report: dict) -> None:
    table = report["tables"]["pathfinder"]
    ours = table[table["source"] == "this study"].set_index("model")
    assert ours.loc["Simple-AACNN", "top1_mean"] == pytest.approx(71.25) and ours.loc["Simple-AACNN", "above_chance"] == 2
    assert ours.loc["Simple-CNN", "above_chance"] == 0  # 50.5 and 52.0 are within 3 sigma of chance on 1,000 images
    lra = table[table["source"] != "this study"].set_index("model")
    assert lra.loc["Transformer", "top1_mean"] == 71.40 and lra.loc["Performer", "top1_mean"] == 77.05
    assert any("sequence Transformers" in a and "Transformer 71.40 %" in a for a in report["answers"])


def test_the_report_files_and_reading_them_back(report: dict, study_folder: Path) -> None:
    out = study_folder / "report"
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 5000
    results = read_study_results(out)
    assert results is not None and results.answers == report["answers"] and set(results.figures) == set(FIGURES)
    assert set(results.tables) == set(TABLES) and len(results.tables["distance"]) == 9
    markdown = (out / "report.md").read_text()
    assert "## Unfinished runs (counted nowhere)" in markdown and "distance_4_Simple-CNN seed 2: interrupted" in markdown
    assert "## Damaged run folders" in markdown and "summary.json is not valid JSON" in markdown
    assert (out / "summary.txt").read_text().startswith(report["answers"][0])
    assert read_study_results(study_folder) is None
    assert (out / ANSWERS_FILE).read_text().count("\n- ") == len(report["answers"]) - 1


def test_a_folder_without_study_runs_is_one_clear_error(tmp_path: Path) -> None:
    _write_run(tmp_path, "other", "Simple-CNN", 0, "long_range", {"image_size": 32}, top1=50.0)
    with pytest.raises(FileNotFoundError, match="no run of the study under"):
        write_study_report(tmp_path, tmp_path / "report")


def test_aalib_report_study_builds_the_html_with_the_layer_benchmark(study_folder: Path, tmp_path: Path) -> None:
    bench = ROOT / "benchmarks" / "attention_cpu-2core_2026-12-01.json"
    done = run_python("-m", "aalib", "report", str(study_folder), "--study", "--layer-bench", str(bench),
                      "--out", str(tmp_path / "out"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Layer benchmark (one layer, forward + backward): time grows as" in done.stdout
    html = (tmp_path / "out" / "report.html").read_text()
    assert "What was measured" in html and "Simple-LAACNN" in html and "Traceback" not in html
    wrong = run_python("-m", "aalib", "report", str(study_folder), "--layer-bench", str(bench))
    assert wrong.returncode == 2 and wrong.stderr.strip() == "aalib report: error: --layer-bench goes with --study"
