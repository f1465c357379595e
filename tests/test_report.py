"""aalib.report on hand-made run tables: labels, mean ± std over seeds, the long-range verdict."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from aalib.config import TrainConfig
from aalib.report import SEED_PUBLISHED, long_range_verdict, model_label, summarize


@pytest.mark.parametrize(
    "model, args, label",
    [
        ("seed_simple_cnn", {"attention": None}, "Simple-CNN"),
        ("seed_simple_cnn", {"attention": "linear"}, "Simple-LAACNN"),
        ("seed_wrn", {"attention": "softmax"}, "Wide-AAResNet"),
        ("wrn", {"depth": 28, "width": 10, "attention": "softmax"}, "AA-WRN-28-10"),
        ("wrn", {"depth": 16, "width": 8}, "WRN-16-8"),
    ],
)
def test_model_label_uses_the_study_names(model, args, label):
    assert model_label(TrainConfig(model=model, model_args=args)) == label


def _runs(rows):
    base = {"status": "finished", "epochs": 1, "top5": math.nan, "val_top1_best": 0.0, "s_per_epoch": 2.0,
            "train_seconds": 2.0, "peak_mem_mb": 100.0, "parameters": 1000, "num_classes": 2, "colours": 4,
            "test_images": 2000, "path": "x", "experiment": "e"}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_summarize_gives_mean_and_std_over_seeds_beside_the_seed_study():
    runs = _runs([
        {"dataset": "cifar100", "model": "Wide-ResNet", "seed": 0, "top1": 60.0, "top5": 85.0, "num_classes": 100},
        {"dataset": "cifar100", "model": "Wide-ResNet", "seed": 1, "top1": 62.0, "top5": 87.0, "num_classes": 100},
    ])
    row = summarize(runs).iloc[0]
    assert row["seeds"] == 2 and row["top1"] == "61.00 ± 1.41" and row["top5"] == "86.00 ± 1.41"
    assert row["seed study top1"] == SEED_PUBLISHED[("cifar100", "Wide-ResNet")][0] == 57.11


def test_long_range_verdict_in_words():
    runs = _runs([
        {"dataset": "long_range", "model": "Simple-CNN", "seed": 0, "top1": 51.0},
        {"dataset": "long_range", "model": "Simple-AACNN", "seed": 0, "top1": 99.5},
        {"dataset": "long_range", "model": "Simple-LAACNN", "seed": 0, "top1": 60.0},
        {"dataset": "long_range", "model": "Other", "seed": 0, "top1": 80.0},
    ])
    lines = dict(line.split(" ", 1) for line in long_range_verdict(runs))
    assert lines["Simple-CNN"].startswith("stayed at chance: 51.0 %")
    assert lines["Simple-AACNN"].startswith("solved the task: 99.5 %")
    assert lines["Simple-LAACNN"].startswith("beat chance only as far as a model without long-range interactions can")
    assert "66.7 %" in lines["Simple-LAACNN"]
    assert lines["Other"].startswith("learned part of the task, beyond any additive rule")
