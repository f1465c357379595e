"""aalib.report on hand-made run tables: labels, statistics over seeds, columns, the verdict."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from aalib.config import TrainConfig
from aalib.models.repro import study_result
from aalib.report import captions, dataset_tables, model_label, study_verdict, summarize


@pytest.mark.parametrize(
    "model, args, label",
    [
        ("repro_simple_cnn", {"attention": None}, "Simple-CNN"),
        ("repro_simple_cnn", {"attention": "linear"}, "Simple-LAACNN"),
        ("repro_simple_cnn", {"attention": "linear_swapped"}, "Simple-LAACNN (swapped axes)"),
        ("repro_wrn", {"attention": "softmax"}, "Wide-AAResNet"),
        ("wrn", {"depth": 28, "width": 10, "attention": "softmax"}, "AA-WRN-28-10"),
        ("wrn", {"depth": 16, "width": 8}, "WRN-16-8"),
    ],
)
def test_model_label_uses_the_study_names(model, args, label):
    assert model_label(TrainConfig(model=model, model_args=args)) == label


def _runs(rows):
    base = {"status": "finished", "epochs": 1, "top5": math.nan, "val_top1_best": 0.0, "s_per_epoch": 2.0,
            "train_seconds": 2.0, "peak_mem_mb": 100.0, "parameters": 1000, "num_classes": 2, "colours": 4,
            "test_images": 2000, "path": "x", "experiment": "e", "cpu": "test CPU", "network": "repro_simple_cnn",
            "attention": "none", "labelled": False}
    return pd.DataFrame([{**base, **row} for row in rows])


def _long_range(model, top1s, **extra):
    return [{"dataset": "long_range", "model": model, "seed": seed, "top1": top1, **extra} for seed, top1 in enumerate(top1s)]


def test_summarize_gives_mean_std_median_and_every_seed():
    runs = _runs([
        {"dataset": "cifar100", "model": "Wide-ResNet", "seed": 0, "top1": 60.0, "top5": 85.0, "num_classes": 100},
        {"dataset": "cifar100", "model": "Wide-ResNet", "seed": 1, "top1": 62.0, "top5": 87.0, "num_classes": 100},
        {"dataset": "cifar100", "model": "Wide-ResNet", "seed": 2, "top1": 67.0, "top5": 90.0, "num_classes": 100},
    ])
    row = summarize(runs).iloc[0]
    assert row["seeds"] == 3 and row["top1"] == "63.00 ± 3.61" and row["top1 median"] == "62.00"
    assert row["top1 per seed"] == "0: 60.00, 1: 62.00, 2: 67.00" and row["top5"] == "87.33 ± 2.52"
    assert row["study top1"] == study_result("cifar100", "repro_wrn", None).top1 == 57.11


def test_no_empty_columns_the_studys_numbers_only_where_published_top5_only_above_five_classes():
    runs = _runs([
        {"dataset": "cifar100", "model": "Simple-CNN", "seed": 0, "top1": 40.0, "top5": 70.0, "num_classes": 100},
        *_long_range("Simple-CNN", [52.0, 55.0], top5=100.0),
    ])
    summary = summarize(runs)
    tables = dataset_tables(summary)
    assert set(tables) == {"cifar100", "long_range"}
    cifar, synthetic = tables["cifar100"], tables["long_range"]
    assert "study top1" in cifar and "top5" in cifar and "solved" not in cifar
    assert "study top1" not in synthetic and "top5" not in synthetic  # 100 % top-5 of 2 classes says nothing
    assert synthetic.loc["Simple-CNN", "solved"] == "0/2 (95 % CI 0-84 %)"
    for table in tables.values():
        assert not any(table[c].eq("-").all() for c in table.columns)
    only_synthetic = summarize(_runs(_long_range("Simple-AACNN", [99.0, 99.5, 99.9])))
    assert not any(c.startswith("study ") for c in only_synthetic.columns) and "top5" not in only_synthetic


def test_verdict_counts_seeds_gives_the_interval_and_where_the_others_stopped():
    runs = _runs([
        *_long_range("Simple-CNN", [54.9, 53.2, 48.1]),
        *_long_range("Simple-AACNN", [99.95, 99.75, 99.9]),
        *_long_range("Simple-LAACNN", [74.05, 99.55, 99.95, 75.35, 99.35]),
    ])
    lines = dict(line.split(" ", 1) for line in study_verdict(runs))
    assert lines["Simple-AACNN"] == "solved the task in 3 of 3 seeds (95 % CI 29-100 %): test top-1 99.95, 99.75 and 99.90 %."
    assert lines["Simple-LAACNN"].startswith(
        "solved the task in 3 of 5 seeds (95 % CI 15-95 %): test top-1 99.55, 99.95 and 99.35 %; "
        "the other 2 stopped at 74.05 and 75.35 % (beyond the 66.7 % any additive, local rule reaches")
    cnn = lines["Simple-CNN"]
    assert cnn.startswith("solved the task in 0 of 3 seeds (95 % CI 0-71 %); they stopped at 54.90 % (above chance")
    assert "53.20 and 48.10 % (within 3.4 points of chance, 50 %)" in cnn


def test_verdict_never_claims_more_than_the_seeds_show():
    one = study_verdict(_runs(_long_range("Simple-AACNN", [99.5])))
    assert one == ["Simple-AACNN solved the task in 1 of 1 seed (95 % CI 2-100 %): test top-1 99.50 %."]
    rows = _long_range("Simple-LAACNN", [99.5, math.nan, math.nan])
    rows[1]["status"], rows[2]["status"] = "interrupted", "failed"
    (line,) = study_verdict(_runs(rows))
    assert "1 of 1 seed" in line and line.endswith("(2 unfinished runs not counted).")
    (line,) = study_verdict(_runs([{**_long_range("Simple-CNN", [math.nan])[0], "status": "running"}]))
    assert line == "Simple-CNN has no finished run yet (1 unfinished run)."


def _image_runs(model, attention, top1s, **extra):
    return [{"dataset": "fashion_mnist", "model": model, "attention": attention, "seed": seed, "top1": top1,
             "num_classes": 10, **extra} for seed, top1 in enumerate(top1s)]


def test_image_verdict_tests_the_studys_conclusions_on_seed_paired_differences():
    runs = _runs([
        *_image_runs("Simple-CNN", "none", [88.0, 88.4, 88.2]),
        *_image_runs("Simple-AACNN", "softmax", [89.0, 89.5, 89.1]),
        *_image_runs("Simple-LAACNN", "linear", [89.2, 88.9, 89.3]),
    ])
    aa_cnn, aa_laa = study_verdict(runs)  # the swapped variant was not run: its comparisons are left out
    assert aa_cnn.startswith("Simple-AACNN minus Simple-CNN (fashion_mnist, 3 paired seeds): +1.00 points (95 % CI +0.75 to +1.25;"
                             " per seed +1.00, +1.10, +0.90): supports the conclusion that AA-conv improves")
    assert "+0.07 points" in aa_laa and "the interval includes 0, so these seeds neither support nor contradict" in aa_laa


def test_image_verdict_pairs_by_seed_and_leaves_out_unfinished_runs_and_ablations():
    from aalib.verdict import comparisons

    laa = _image_runs("Simple-LAACNN", "linear", [90.0, math.nan, 90.3])
    laa[1]["status"] = "interrupted"
    runs = _runs([
        *_image_runs("Simple-AACNN", "softmax", [89.0, 89.5, 89.1]), *laa,
        *_image_runs("Simple-AACNN, more heads", "softmax", [99.0, 99.0, 99.0], labelled=True),
    ])
    (comparison,) = comparisons(runs)
    assert comparison.seeds == [0, 2] and comparison.differences == pytest.approx([-1.0, -1.2])
    assert comparison.outcome == "undecided"  # two seeds: t quantile 12.7, the interval spans 0
    lower = comparisons(_runs([*_image_runs("Simple-AACNN", "softmax", [88.0, 88.1, 88.3]),
                               *_image_runs("Simple-LAACNN", "linear", [89.0, 89.0, 89.1])]))
    assert lower[0].outcome == "contradicted" and "contradicts the conclusion that the linear approximation" in lower[0].sentence()
    twice = comparisons(_runs([*_image_runs("Simple-AACNN", "softmax", [88.0, 88.2]), *_image_runs("Simple-AACNN", "softmax", [89.0, 89.2]),
                               *_image_runs("Simple-CNN", "none", [88.0, 88.0])]))  # one kind run twice: averaged per seed
    assert twice[0].differences == pytest.approx([0.5, 0.7])
    lone = comparisons(_runs([*_image_runs("Simple-AACNN", "softmax", [89.0]), *_image_runs("Simple-CNN", "none", [88.0])]))
    assert "one seed gives no interval" in lone[0].sentence()


def test_captions_state_the_numbers_the_figures_show():
    runs = _runs([*_long_range("Simple-CNN", [54.9, 53.2]), *_long_range("Simple-AACNN", [99.9])])
    text = captions(runs, [])
    assert "Simple-AACNN 99.90 % (1); Simple-CNN 53.20-54.90 % (2)" in text["seed_points"]
    assert "Simple-CNN 1,000" in text["accuracy_vs_parameters"]


def test_ablation_figure_groups_an_architectures_variants():
    from aalib.report import ablation_figure

    plain = _runs(_long_range("Simple-LAACNN", [74.0, 99.5], architecture="Simple-LAACNN"))
    assert ablation_figure(plain) is None
    both = pd.concat([plain, _runs(_long_range("Simple-LAACNN, 3 warm-up epochs", [99.0, 99.2], architecture="Simple-LAACNN"))])
    figure = ablation_figure(both)
    assert figure is not None and len(figure.axes) == 1
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["Simple-LAACNN", "Simple-LAACNN, 3 warm-up epochs"]


def test_summary_text_for_the_terminal_and_the_verdicts_judged_once(tmp_path):
    from aalib.report import summary_text, unfinished
    from aalib.runs import Damaged
    from aalib.verdict import long_range_verdicts

    rows = _long_range("Simple-LAACNN", [99.5, math.nan])
    rows[1]["status"] = "interrupted"
    runs = _runs(rows)
    verdicts = long_range_verdicts(runs)
    summary = summarize(runs, verdicts)
    assert summary.equals(summarize(runs))
    verdict = study_verdict(runs, verdicts)
    assert verdict == study_verdict(runs)
    text = summary_text(dataset_tables(summary), verdict, unfinished(runs), [Damaged(tmp_path / "x", "summary.json is not valid JSON")])
    assert text.startswith("long_range:\n") and text.splitlines()[3].startswith("Simple-LAACNN")
    assert verdict[0] in text and "1 unfinished run(s), left out of the verdict: e seed 1 (interrupted)" in text
    assert text.endswith(f"skipped 1 damaged run folder(s):\n  {tmp_path / 'x'}: summary.json is not valid JSON")


def test_every_attention_kind_has_a_study_name_and_a_run_table_spelling():
    from aalib.attention import ATTENTION_KINDS
    from aalib.models.repro import study_epoch_seconds, study_name
    from aalib.verdict import STUDY_CONCLUSIONS

    kinds = (None, *ATTENTION_KINDS)
    assert {k for higher, lower, _ in STUDY_CONCLUSIONS for k in (higher, lower)} <= set(kinds)
    names = [study_name("repro_wrn", kind) for kind in kinds]
    assert names == ["Wide-ResNet", "Wide-AAResNet", "Wide-LAAResNet", "Wide-LAAResNet (swapped axes)"]
    # the study's LAA layer had the swapped axes; Shen et al.'s layer is compared with the same numbers
    assert study_result("tiny_imagenet", "repro_wrn", "linear") == study_result("tiny_imagenet", "repro_wrn", "linear_swapped")
    assert study_result("tinyimagenet", "repro_wrn", None) is None  # keyed by the dataset registry's names
    assert study_epoch_seconds("cifar100") == {None: 8.42, "softmax": 11.84, "linear": 12.61} and study_epoch_seconds("x") == {}
