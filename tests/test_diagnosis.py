"""aalib.analysis.long_range on two tiny trained long-range runs: what each gets right, and the
diagnosis figures of a model whose seeds disagree."""

from __future__ import annotations

import dataclasses

import pytest

from aalib.analysis.long_range import (
    colour_pair_accuracy,
    diagnose,
    distance_accuracy,
    explained_top1,
    failing_pairs,
    image_results,
)
from aalib.experiment import load_config
from aalib.report import model_label
from aalib.runs import load_run
from aalib.train import train
from aalib.verdict import Landmarks, ModelVerdict
from tinyrun import SMOKE

TINY = ["model_args.attention=linear", "dataset_args.train_size=64", "dataset_args.val_size=32",
        "dataset_args.test_size=48", "epochs=1", "batch_size=32", "progress=false", "log_every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    config = load_config(SMOKE, TINY)
    for seed in (0, 1):
        train(dataclasses.replace(config, seed=seed), root / f"seed{seed}")
    return [load_run(root / f"seed{seed}") for seed in (0, 1)]


def test_image_results_are_the_reported_test_accuracy(runs):
    for run in runs:
        frame = image_results(run)
        assert len(frame) == 48 and frame["label"].sum() == 24
        assert 100 * frame["correct"].mean() == pytest.approx(run.summary["test"]["top1"])
        assert ((frame["colour_a"] == frame["colour_b"]) == (frame["label"] == 1)).all()
        assert (frame["distance"] >= run.config.dataset_args["receptive_field"]).all()  # the distance rule
        assert set(frame["apart"]) <= {"rows", "columns", "both axes"}


def test_accuracy_tables_cover_every_image(runs):
    frame = image_results(runs[0])
    pairs = colour_pair_accuracy(frame)
    assert list(pairs.index) == list(pairs.columns) == ["red", "green", "blue", "yellow"]
    assert pairs.isna().values.sum() == 6  # the lower triangle: unordered pairs
    bins = distance_accuracy(frame)
    assert bins["images"].sum() == 48
    assert (bins["top1"] * bins["images"]).sum() / 48 == pytest.approx(100 * frame["correct"].mean())


def test_failing_pairs_explain_the_accuracy_of_a_model_that_merges_colours(runs):
    frame = image_results(runs[0]).copy()
    merged = {1, 2, 3}  # green, blue, yellow told apart from red only: "same" on every pair among them
    frame["predicted"] = [1 if a == b or {a, b} <= merged else 0 for a, b in zip(frame["colour_a"], frame["colour_b"])]
    frame["correct"] = frame["predicted"] == frame["label"]
    pairs = failing_pairs(frame)
    assert set(pairs) <= {"green-blue", "green-yellow", "blue-yellow"} and pairs
    assert explained_top1(frame, pairs) == pytest.approx(100 * frame["correct"].mean())
    assert explained_top1(frame, []) == 100


def test_diagnosis_of_a_model_whose_seeds_disagree(runs):
    name = model_label(runs[0].config)
    verdict = ModelVerdict(model=name, seeds=[0, 1], top1=[60.0, 95.0], outcomes=["partial", "solved"], unfinished=[],
                           landmarks=Landmarks.for_task(4, 48))
    result = diagnose(runs, [verdict], label=model_label)
    assert [case.failed.config.seed for case in result.cases] == [0] and result.cases[0].solved.config.seed == 1
    assert {"outcome_curves", "colour_pairs", "geometry", "attention_failed_vs_solved", "context_maps_failed",
            "context_maps_solved"} <= set(result.figures)
    assert set(result.captions) == set(result.figures)
    assert f"{name}, seed 0 (failed)" in result.captions["colour_pairs"] and len(result.findings) == 1
    seeds = result.seeds
    assert list(seeds["seed"]) == [0, 1] and list(seeds["outcome"]) == ["partial", "solved"]
    for row, run in zip(seeds.itertuples(), runs):
        assert row.top1 == pytest.approx(run.summary["test"]["top1"])
        assert row.explained_top1 >= row.top1 - 1e-9 or row.failing_pairs == "none"  # merging costs at most the pairs' images
        assert 0 < row.context_uniform <= row.context_peak <= 1
    agreeing = dataclasses.replace(verdict, outcomes=["solved", "solved"])
    assert diagnose(runs, [agreeing], label=model_label).figures == {}
