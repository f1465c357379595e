"""The complexity study: cost model on hand-computed cases, the crossover formula,
log-log fits on synthetic power laws, the study explanation, the layer sweep (``aalib.layer_cost``)
and the attention benchmark's table, and ``notebooks/complexity.ipynb`` executed through papermill itself."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import papermill
import pytest

from aalib import complexity, layer_cost
from aalib.models.repro import study_epoch_seconds
from aalib.bench import attention as bench

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "benchmarks" / "attention_cpu-2core_2026-11-24.json"


# -- cost model ---------------------------------------------------------------------------------
def test_attention_flops_hand_computed():
    # n = 4, dk = 8, dv = 4, heads = 2: dkh = 4, dvh = 2
    dims = {"dk": 8, "dv": 4, "heads": 2}
    assert complexity.attention_flops(4, attention="softmax", **dims) == 2 * 2 * 16 * (4 + 2)  # 384
    assert complexity.attention_flops(4, attention="linear", **dims) == 4 * 2 * 4 * 4 * 2  # 256
    # relative logits: each of 4 queries against H + W = 4 embeddings of dkh = 4, 2 heads, 2 FLOPs each
    assert complexity.attention_flops(4, attention="softmax", relative=True, **dims) == 384 + 2 * 2 * 4 * 4 * 4
    with pytest.raises(ValueError, match="relative"):
        complexity.attention_flops(4, attention="linear", relative=True, **dims)
    with pytest.raises(ValueError, match="attention must be"):
        complexity.attention_flops(4, attention="dot", **dims)


def test_attention_memory_hand_computed():
    dims = {"dk": 8, "dv": 4, "heads": 2}
    io = 4 * (2 * 8 + 2 * 4)  # q, k, v, output: 96
    assert complexity.attention_memory(4, attention="softmax", **dims) == io + 2 * 16  # two 4 x 4 maps
    assert complexity.attention_memory(4, attention="softmax", materialised=False, **dims) == io + 2 * 4
    assert complexity.attention_memory(4, attention="linear", **dims) == io + 2 * 4 * 8 + 2 * 4 * 2


def test_layer_flops_parts():
    parts = complexity.layer_flops(4, in_channels=3, out_channels=6, kernel_size=3, dk=8, dv=4, heads=2,
                                   attention="softmax")
    assert parts == {"conv": 2 * 4 * 3 * 2 * 9, "qkv": 2 * 4 * 3 * 20, "attention": 384.0, "output": 2 * 4 * 16,
                     "total": 432 + 480 + 384 + 128}


def test_head_sizes_must_divide():
    assert complexity.head_sizes(32, 16, 4) == (8, 4)
    with pytest.raises(ValueError, match="divide"):
        complexity.head_sizes(30, 16, 4)


@pytest.mark.parametrize(("dkh", "dvh", "expected"), [(8, 8, 8.0), (256, 64, 102.4), (20, 2, 80 / 22)])
def test_crossover_formula(dkh, dvh, expected):
    assert complexity.crossover_n(dkh, dvh) == pytest.approx(expected)
    assert complexity.crossover_side(dkh, dvh) == pytest.approx(math.sqrt(expected))
    # it is where the cost model's two FLOP counts meet: linear dearer below, cheaper above
    heads = 2
    dims = {"dk": dkh * heads, "dv": dvh * heads, "heads": heads}
    n_star = complexity.analytic_crossover(**dims)["n"]

    def gap(n: float) -> float:
        return complexity.attention_flops(n, attention="linear", **dims) - complexity.attention_flops(n, attention="softmax", **dims)

    assert gap(n_star) == pytest.approx(0, abs=1e-6 * complexity.attention_flops(n_star, attention="linear", **dims))
    assert gap(0.5 * n_star) > 0 > gap(2 * n_star)


# -- fits and crossovers ----------------------------------------------------------------------------
def _records(curves: dict[str, tuple[list[int], float, float]]) -> list[dict]:
    """Flat records with ms = coefficient * n ** exponent for each variant."""
    records = []
    for variant, (sides, coefficient, exponent) in curves.items():
        spec = layer_cost.VARIANTS[variant]
        for side in sides:
            n = side * side
            records.append({"variant": variant, "attention": spec["attention"], "position": spec["position"],
                            "impl": "ours", "size": side, "n": n, "ms": coefficient * n**exponent,
                            "peak_mib": 2.0 * n**exponent, "note": ""})
    return records


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_fit_power_law_recovers_exponent(exponent):
    n = [16, 64, 256, 1024, 4096]
    fit = complexity.fit_power_law(n, [3.0 * v**exponent for v in n])
    assert fit.exponent == pytest.approx(exponent)
    assert fit.coefficient == pytest.approx(3.0)
    assert fit(100) == pytest.approx(3.0 * 100**exponent)


def test_fit_power_law_drops_failed_points_and_needs_two():
    fit = complexity.fit_power_law([16, 64, 256], [16.0, float("nan"), 256.0])
    assert (fit.exponent, fit.points) == (pytest.approx(1.0), 2)
    with pytest.raises(ValueError, match="two distinct"):
        complexity.fit_power_law([16, 64], [1.0, float("nan")])


def test_fit_slopes_per_variant_and_metric():
    records = _records({"AA no-pos": ([4, 8, 16], 0.1, 2.0), "LAA sincos": ([4, 8, 16, 32], 10.0, 1.0)})
    slopes = {(r["variant"], r["metric"]): r["slope"] for r in complexity.fit_slopes(records)}
    assert slopes == {("AA no-pos", "ms"): pytest.approx(2.0), ("LAA sincos", "ms"): pytest.approx(1.0),
                      ("AA no-pos", "peak_mib"): pytest.approx(2.0), ("LAA sincos", "peak_mib"): pytest.approx(1.0)}


def test_measured_crossover_interpolates_in_log_log():
    # 10 n = 0.1 n^2 at n = 100; power laws are straight lines in log-log, so interpolation is exact
    records = _records({"AA no-pos": ([4, 8, 16, 32], 0.1, 2.0), "LAA sincos": ([4, 8, 16, 32, 64], 10.0, 1.0)})
    cross = complexity.measured_crossover(records, linear="LAA sincos", softmax="AA no-pos")
    assert cross.n == pytest.approx(100.0)
    assert cross.side == pytest.approx(10.0)
    assert cross.faster == "AA no-pos"
    assert cross.n_range == (16, 1024)  # only where both were measured
    assert "cross at N = 100" in cross.describe()


def test_measured_crossover_absent():
    records = _records({"AA no-pos": ([4, 8], 1.0, 2.0), "LAA sincos": ([4, 8], 1.0, 1.0)})
    cross = complexity.measured_crossover(records, linear="LAA sincos", softmax="AA no-pos")
    assert cross.n is None and cross.faster == "LAA sincos"
    assert "no crossing" in cross.describe()
    with pytest.raises(ValueError, match="AA relative"):
        complexity.measured_crossover(records, linear="LAA sincos", softmax="AA relative")


def test_recorded_benchmark_slopes():
    records, setting = complexity.load_recorded(RECORDED)
    assert setting["dk"] == 32 and setting["heads"] == 4
    assert len(records) == 2 * 17 and {r["note"] for r in records} >= {"one N x N map is 32 GiB", "no attention"}
    slopes = {(r["variant"], r["impl"]): r["slope"] for r in complexity.fit_slopes(records, ["ms"])}
    assert slopes[("LAA sincos", "ours")] == pytest.approx(1.0, abs=0.2)
    assert slopes[("conv 3x3", "ours")] == pytest.approx(1.0, abs=0.2)
    assert slopes[("AA no-pos", "ours")] == pytest.approx(2.0, abs=0.3)
    assert slopes[("AA relative", "ours")] == pytest.approx(2.0, abs=0.4)


# -- the study's layers ------------------------------------------------------------------------------
def test_repro_wrn_layers_against_the_crossover():
    """dk = 2 Fout, dv = Fout / 2, Nh = 1/2/4: every head is 256 x 64, so N* = 102.4 (side 10.1).
    At 32 x 32 the maps are 16/8/4: stages 2 and 3 lie below N*, stage 1 (N = 256) above it."""
    text, layers = complexity.explain_repro("repro_wrn", 32, study_epoch_seconds("cifar100"))
    assert [r["n"] for r in layers] == [256, 256, 64, 64, 16, 16]
    for row in layers:
        assert (row["dkh"], row["dvh"]) == (256, 64)
        assert row["n_star"] == pytest.approx(102.4)
        assert row["below_crossover"] == (row["linear_flops"] > row["softmax_flops"])
    assert [r["below_crossover"] for r in layers] == [False, False, True, True, True, True]
    assert "4 of 6 attention layers have N < N*" in text
    assert "12.61 / 11.84" in text


def test_repro_layers_totals_add_up():
    layers, totals = complexity.repro_layers("repro_wrn", 32)
    assert totals["softmax_attention_flops"] == pytest.approx(sum(r["softmax_flops"] for r in layers))
    assert (totals["model_flops_linear"] - totals["model_flops_softmax"]
            == pytest.approx(totals["linear_attention_flops"] - totals["softmax_attention_flops"]))
    # at Tiny-ImageNet size (maps 32/16/8) only stage 3 stays below N*
    layers64, _ = complexity.repro_layers("repro_wrn", 64)
    assert [r["below_crossover"] for r in layers64] == [False, False, False, False, True, True]


# -- layer sweep --------------------------------------------------------------------------------
def test_sweep_plan_and_validation():
    assert layer_cost.sweep_plan([8], [8, 16]) == [("AA relative", 8), ("AA rel fused", 8), ("AA rel blocked", 8),
                                              ("AA no-pos", 8), ("LAA sincos", 8), ("LAA sincos", 16), ("conv 3x3", 8),
                                              ("conv 3x3", 16)]
    assert layer_cost.sweep_plan([8], [16], variants=layer_cost.LAYER_VARIANTS) == [("AA relative", 8), ("AA no-pos", 8),
                                                                         ("LAA sincos", 16)]
    assert layer_cost.sweep_plan([8], [16], variants=["LAA sincos"]) == [("LAA sincos", 16)]
    with pytest.raises(ValueError, match="unknown variant"):
        layer_cost.sweep_plan([8], [8], variants=["AA sincos"])
    with pytest.raises(ValueError, match="impls"):
        layer_cost.sweep([8], [8], impls=["fast"])
    with pytest.raises(ValueError, match="heads=3"):
        layer_cost.sweep([8], [8], dk=8, dv=8, heads=3)


def test_sweep_runs_a_custom_setting_in_a_subprocess():
    seen = []
    rows = layer_cost.sweep([], [4], variants=["LAA sincos"], repeats=1, batch=1, channels=8, dk=4, dv=4, heads=2,
                       naive_max_gib=0.0, on_case=lambda *case: seen.append(case[:3]))
    assert seen == [("LAA sincos", 4, "ours")]
    assert rows[0]["variant"] == "LAA sincos" and rows[0]["ours"]["ms"] > 0
    assert "skipped" in rows[0]["naive"]


def test_sweep_pinned_kernel_and_plain_conv_have_no_naive_twin():
    seen = []
    rows = layer_cost.sweep([4], [5], variants=["AA rel fused", "conv 3x3"], repeats=1, batch=1, channels=8, dk=4, dv=4,
                       heads=2, on_case=lambda *case: seen.append(case[:3]))
    assert seen == [("AA rel fused", 4, "ours"), ("conv 3x3", 5, "ours")]
    assert rows[0]["ours"]["ms"] > 0 and "pinned" in rows[0]["naive"]["skipped"]
    assert rows[1]["ours"]["ms"] > 0 and rows[1]["naive"] == {"skipped": "no attention"}


def test_run_case_keeps_timing_until_min_seconds():
    quick = layer_cost.Case("conv 3x3", "ours", 4, "cpu", repeats=2, batch=1, channels=4, dk=4, dv=4, heads=1)
    assert layer_cost.run_case(quick)["runs"] == 2
    result = layer_cost.run_case(layer_cost.Case(**{**quick.__dict__, "min_seconds": 0.05}))
    assert 2 < result["runs"] <= layer_cost.MAX_RUNS


def test_bench_table_and_targets_from_rows():
    def res(ms, mib):
        return {"ms": ms, "peak_mib": mib, "runs": 3}

    rows = [
        {"variant": "AA relative", "size": 64, "ours": res(100.0, 50.0), "naive": res(300.0, 500.0)},
        {"variant": "AA rel fused", "size": 64, "ours": res(200.0, 60.0), "naive": {"skipped": "pinned"}},
        {"variant": "AA rel blocked", "size": 64, "ours": res(250.0, 55.0), "naive": {"skipped": "pinned"}},
        {"variant": "LAA sincos", "size": 32, "ours": res(1.0, 5.0), "naive": res(9.0, 50.0)},
        {"variant": "LAA sincos", "size": 128, "ours": res(25.0, 80.0), "naive": {"skipped": "8 GiB"}},
        {"variant": "conv 3x3", "size": 32, "ours": res(1.0, 4.0), "naive": {"skipped": "no attention"}},
        {"variant": "conv 3x3", "size": 128, "ours": res(40.0, 64.0), "naive": {"skipped": "no attention"}},
    ]
    table = bench._table(rows).splitlines()
    assert table[2].split() == ["AA", "relative", "64^2", "100.0", "300.0", "3.00x", "50.0", "500.0", "1/10.0"]
    assert table[3].split() == ["AA", "rel", "fused", "64^2", "200.0", "skip", "-", "60.0", "skip", "-"]
    checks = {c["target"]: (c["value"], c["met"]) for c in bench._targets(rows, "cpu")}
    assert checks == {
        "AA relative 64^2: naive/ours peak memory >= 8": (10.0, True),
        "AA relative 64^2: naive/ours time >= 2": (3.0, True),
        "AA relative 64^2 on the CPU: forward + backward <= 1.0 s": (0.1, True),
        "AA relative 64^2: blocked-kernel layer / auto-kernel layer time": (2.5, None),
        "LAA 32^2 -> 128^2 time growth <= 20 (16 is linear)": (25.0, False),
        "for reference, a plain 3x3 conv: 32^2 -> 128^2 time growth": (40.0, None),
    }
    assert "AA relative 64^2 on the CPU: forward + backward <= 1.0 s" not in {c["target"] for c in bench._targets(rows, "cuda")}


# -- the notebook, through papermill ------------------------------------------------------------------
def test_complexity_notebook_through_papermill(tmp_path):
    out = tmp_path / "results"
    params = dict(sizes=[8, 12], linear_sizes=[8, 16], batch=2, channels=8, dk=8, dv=8, heads=2, repeats=1,
                  output_dir=str(out))
    assert set(params) <= set(papermill.inspect_notebook(str(ROOT / "notebooks" / "complexity.ipynb")))
    papermill.execute_notebook(str(ROOT / "notebooks" / "complexity.ipynb"), str(tmp_path / "complexity.ipynb"),
                               parameters=params, kernel_name="python3", progress_bar=False, cwd=str(tmp_path))

    results = json.loads((out / "complexity.json").read_text())
    assert results["setting"]["dk"] == 8 and results["setting"]["heads"] == 2
    assert results["analytic_crossover"] == {"dkh": 4, "dvh": 4, "n": 4.0, "side": 2.0}
    variants = {(r["variant"], r["impl"]) for r in results["records"]}
    assert variants == {(v, i) for v in layer_cost.LAYER_VARIANTS for i in layer_cost.IMPLS}
    assert all(r["ms"] > 0 for r in results["records"])
    assert {(s["variant"], s["impl"], s["metric"]) for s in results["slopes"]} == {
        (v, i, m) for v in layer_cost.LAYER_VARIANTS for i in layer_cost.IMPLS for m in ("ms", "peak_mib")}
    assert len(results["measured_crossovers"]) == 4
    assert [layer["below_crossover"] for layer in results["repro"]["layers"]] == [False, False, True, True, True, True]

    with open(out / "complexity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * (2 + 2 + 2) and list(rows[0]) == list(complexity.RECORD_FIELDS)
    for name in ("time_vs_resolution", "memory_vs_resolution", "cost_model"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
