"""The lesson (``aalib/lesson.py`` and ``notebooks/lesson.ipynb``): every function against the plain
formulas of Bello et al. 2019 (Eq. 1, Sec. 3.2) and Shen et al. 2021 (Eq. 4) written out here, and
the notebook run by papermill with small parameters, without and with study results."""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import papermill
import pytest
import torch
from matplotlib.figure import Figure

from aalib import layer_cost, lesson
from aalib.study import ANSWERS_FILE
from test_interactive_notebooks import execute_with_retry

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "lesson.ipynb"
BENCHMARK = ROOT / "benchmarks" / "attention_cpu-2core_2026-12-01.json"
KINDS = ("softmax", "linear", "linear_swapped")


@pytest.fixture(scope="module")
def example() -> lesson.TinyExample:
    return lesson.tiny_example(side=4, dkh=3, dvh=5, seed=1)


def plain_softmax_map(ex: lesson.TinyExample) -> torch.Tensor:
    """softmax_j((q_i.k_j + q_i.r_H[y_j - y_i] + q_i.r_W[x_j - x_i]) / sqrt(dkh)), one entry at a time."""
    q, k = ex.q[0, 0], ex.k[0, 0]
    height, width = ex.size
    logits = torch.empty(ex.n, ex.n, dtype=q.dtype)
    for i in range(ex.n):
        y_i, x_i = divmod(i, width)
        for j in range(ex.n):
            y_j, x_j = divmod(j, width)
            logits[i, j] = q[i] @ (k[j] + ex.rel_h[y_j - y_i + height - 1] + ex.rel_w[x_j - x_i + width - 1])
    return torch.softmax(logits / math.sqrt(ex.dkh), dim=1)


def plain_factors(ex: lesson.TinyExample, attention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Shen et al.: rho_q over features, rho_k over positions; the study: scaled, the other way round."""
    q, k = ex.q[0, 0], ex.k[0, 0]  # N, dkh
    if attention == "linear":
        return torch.softmax(q, dim=1), torch.softmax(k, dim=0)
    scale = ex.dkh ** -0.5
    return torch.softmax(q * scale, dim=0), torch.softmax(k * scale, dim=1)


def plain_map(ex: lesson.TinyExample, attention: str) -> torch.Tensor:
    if attention == "softmax":
        return plain_softmax_map(ex)
    rho_q, rho_k = plain_factors(ex, attention)
    return rho_q @ rho_k.T


# -- the tiny example -----------------------------------------------------------------------------
def test_tiny_example_shapes_and_determinism() -> None:
    ex = lesson.tiny_example(side=3, dkh=2, dvh=5, seed=7)
    assert (ex.q.shape, ex.k.shape, ex.v.shape) == ((1, 1, 9, 2), (1, 1, 9, 2), (1, 1, 9, 5))
    assert (ex.rel_h.shape, ex.rel_w.shape, ex.size, ex.n, ex.dkh) == ((5, 2), (5, 2), (3, 3), 9, 2)
    assert ex.q.dtype == torch.float64
    again, other = lesson.tiny_example(side=3, dkh=2, dvh=5, seed=7), lesson.tiny_example(side=3, dkh=2, dvh=5, seed=8)
    assert all(torch.equal(getattr(ex, f), getattr(again, f)) for f in ("q", "k", "v", "rel_h", "rel_w"))
    assert not torch.equal(ex.q, other.q)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"side": 0}, "side must be a positive int, got 0"),
    ({"dkh": 2.0}, "dkh must be a positive int, got 2.0"),
    ({"seed": -1}, "seed must be an int >= 0, got -1"),
])
def test_tiny_example_rejects_bad_arguments(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        lesson.tiny_example(**arguments)


# -- maps and outputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("attention", KINDS)
def test_map_and_output_match_the_plain_formulas(example: lesson.TinyExample, attention: str) -> None:
    weights = lesson.attention_map(example, attention)
    torch.testing.assert_close(weights, plain_map(example, attention), rtol=0, atol=1e-12)
    # the kernel's output (no N x N map for the linear kinds) is the map times V
    torch.testing.assert_close(lesson.attention_output(example, attention), weights @ example.v[0, 0], rtol=0, atol=1e-12)


def test_linear_output_is_shens_factorisation(example: lesson.TinyExample) -> None:
    rho_q, rho_k = plain_factors(example, "linear")
    context = rho_k.T @ example.v[0, 0]  # dkh, dvh: the global context vectors
    assert context.shape == (example.dkh, 5)
    torch.testing.assert_close(lesson.attention_output(example, "linear"), rho_q @ context, rtol=0, atol=1e-12)


def test_attention_output_takes_other_values(example: lesson.TinyExample) -> None:
    ones = torch.ones(1, 1, example.n, 1, dtype=torch.float64)
    for attention in KINDS:
        expected = plain_map(example, attention).sum(dim=1, keepdim=True)  # the row sums
        torch.testing.assert_close(lesson.attention_output(example, attention, ones), expected, rtol=0, atol=1e-12)


def test_unknown_kinds_are_rejected(example: lesson.TinyExample) -> None:
    with pytest.raises(ValueError, match=r"attention must be one of \('softmax', 'linear', 'linear_swapped'\), got 'fast'"):
        lesson.attention_map(example, "fast")
    with pytest.raises(ValueError, match=r"attention must be one of \('linear', 'linear_swapped'\), got 'softmax'"):
        lesson.normalisers(example, "softmax")


@pytest.mark.parametrize("attention", ["linear", "linear_swapped"])
def test_normalisers_are_the_plain_factors(example: lesson.TinyExample, attention: str) -> None:
    rho_q, rho_k = lesson.normalisers(example, attention)
    plain_q, plain_k = plain_factors(example, attention)
    torch.testing.assert_close(rho_q, plain_q, rtol=0, atol=1e-12)
    torch.testing.assert_close(rho_k, plain_k, rtol=0, atol=1e-12)


def test_normaliser_sums_show_which_axis_is_normalised(example: lesson.TinyExample) -> None:
    rows = {(r["attention"], r["factor"], r["sum over"]): (r["min"], r["max"]) for r in lesson.normaliser_sums(example)}
    assert len(rows) == 8
    normalised = {("linear", "rho_q", "features"), ("linear", "rho_k", "positions"),
                  ("linear_swapped", "rho_q", "positions"), ("linear_swapped", "rho_k", "features")}
    for key, (low, high) in rows.items():
        if key in normalised:
            assert low == pytest.approx(1, abs=1e-12) and high == pytest.approx(1, abs=1e-12), key
        else:
            assert abs(high - 1) > 1e-3 or abs(low - 1) > 1e-3, key
    assert {r["attention"] for r in lesson.normaliser_sums(example, ["linear"])} == {"linear"}


def test_map_properties_state_the_lessons_rules(example: lesson.TinyExample) -> None:
    rows = {r["attention"]: r for r in lesson.map_properties(example)}
    assert list(rows) == list(KINDS)
    for attention in ("softmax", "linear"):  # rows sum to 1: outputs are weighted averages of the values
        for column in ("row_sum_min", "row_sum_max", "ones_out_min", "ones_out_max"):
            assert rows[attention][column] == pytest.approx(1, abs=1e-12), (attention, column)
    swapped_sums = plain_map(example, "linear_swapped").sum(dim=1)
    assert swapped_sums.sum().item() == pytest.approx(example.n)  # all rows together sum to N ...
    assert rows["linear_swapped"]["row_sum_min"] < 0.99 and rows["linear_swapped"]["row_sum_max"] > 1.01  # ... single rows do not
    assert rows["linear_swapped"]["row_sum_min"] == pytest.approx(swapped_sums.min().item())
    assert rows["linear_swapped"]["ones_out_max"] == pytest.approx(swapped_sums.max().item())
    assert (rows["softmax"]["rank"], rows["softmax"]["rank_bound"]) == (example.n, example.n)
    for attention in ("linear", "linear_swapped"):  # a product of two N x dkh factors
        assert rows[attention]["rank"] == rows[attention]["rank_bound"] == example.dkh
        assert torch.linalg.matrix_rank(plain_map(example, attention)).item() <= example.dkh
    assert all(row["map_v_error"] < 1e-12 for row in rows.values())
    assert [r["attention"] for r in lesson.map_properties(example, ["linear"])] == ["linear"]


def test_singular_values_show_the_rank_bound(example: lesson.TinyExample) -> None:
    values = lesson.singular_values(example)
    assert list(values) == list(KINDS)
    for attention, sv in values.items():
        assert sv.shape == (example.n,) and torch.all(sv[:-1] >= sv[1:]), attention
        torch.testing.assert_close(sv, torch.linalg.svdvals(plain_map(example, attention)), rtol=0, atol=1e-12)
    assert values["softmax"][-1] > 1e-6 * values["softmax"][0]  # full rank
    for attention in ("linear", "linear_swapped"):
        assert values[attention][example.dkh] < 1e-12 * values[attention][0]


def test_row_sum_spread() -> None:
    rows = lesson.row_sum_spread([2, 5], dkh=3, seed=2)
    assert [(r["side"], r["n"], r["attention"]) for r in rows] == [
        (2, 4, "linear"), (2, 4, "linear_swapped"), (5, 25, "linear"), (5, 25, "linear_swapped")]
    for row in rows:
        sums = plain_map(lesson.tiny_example(row["side"], 3, 1, 2), row["attention"]).sum(dim=1)
        assert (row["row_sum_min"], row["row_sum_mean"], row["row_sum_max"]) == pytest.approx(
            (sums.min().item(), sums.mean().item(), sums.max().item()))
        assert row["row_sum_mean"] == pytest.approx(1)  # Shen's rows are 1; the swapped ones average 1
        if row["attention"] == "linear":
            assert row["row_sum_min"] == pytest.approx(1) and row["row_sum_max"] == pytest.approx(1)
        else:
            assert row["row_sum_min"] < 1 < row["row_sum_max"]
    with pytest.raises(ValueError, match="side must be a positive int, got 0"):
        lesson.row_sum_spread([4, 0])


def test_figures(example: lesson.TinyExample) -> None:
    maps = lesson.plot_maps(example)
    assert isinstance(maps, Figure) and len(maps.axes) == 6  # three heatmaps and their colour bars
    titles = [ax.get_title() for ax in maps.axes[:3]]
    assert titles[0].endswith("row sums 1.000 .. 1.000") and titles[1].endswith("row sums 1.000 .. 1.000")
    assert not titles[2].endswith("row sums 1.000 .. 1.000")
    assert len(lesson.plot_maps(example, ["softmax"]).axes) == 2
    sv = lesson.plot_singular_values(example, ["softmax", "linear"])
    assert len(sv.axes[0].get_lines()) == 3  # two curves and the dkh marker
    spread = lesson.plot_row_sum_spread(lesson.row_sum_spread([2, 3]))
    assert len(spread.axes[0].get_lines()) == 2 and len(spread.axes[0].collections) == 2


# -- paths, costs, the study ----------------------------------------------------------------------
def test_find_path_looks_in_the_parent_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs" / "study").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where JupyterLab runs a notebook
    assert lesson.find_path("docs/study").resolve() == (tmp_path / "docs" / "study").resolve()
    assert lesson.find_path("nowhere") == Path("nowhere")
    assert lesson.find_path(tmp_path / "absent") == tmp_path / "absent"
    monkeypatch.chdir(tmp_path)
    assert lesson.find_path("docs/study") == Path("docs/study")


def test_cost_curves_from_the_recorded_benchmark() -> None:
    curves = lesson.cost_curves(BENCHMARK)
    assert curves.source == BENCHMARK
    assert curves.records and {r["impl"] for r in curves.records} == {"ours"}
    assert {r["variant"] for r in curves.records} == set(layer_cost.LAYER_VARIANTS)
    dkh, dvh = curves.dims["dk"] // curves.dims["heads"], curves.dims["dv"] // curves.dims["heads"]
    assert curves.analytic["n"] == pytest.approx(2 * dkh * dvh / (dkh + dvh))
    assert curves.analytic["side"] == pytest.approx(math.sqrt(curves.analytic["n"]))
    assert {(c.linear, c.softmax, c.metric) for c in curves.crossovers} == {
        ("LAA sincos", softmax, metric) for softmax in ("AA relative", "AA no-pos") for metric in ("ms", "peak_mib")}
    text = curves.describe()
    assert f"Recorded benchmark: {BENCHMARK}" in text and f"N* = {curves.analytic['n']:.1f}" in text
    assert text.count("measured: ") == 4
    assert list(lesson.plot_costs(curves)) == ["time", "memory", "cost_model"]


@pytest.mark.parametrize("benchmark", ["", "no/such/file.json"])
def test_cost_curves_without_a_benchmark(benchmark: str) -> None:
    curves = lesson.cost_curves(benchmark)
    assert (curves.source, curves.records, curves.crossovers) == (None, [], [])
    assert curves.dims == {"dk": layer_cost.DK, "dv": layer_cost.DV, "heads": layer_cost.HEADS}
    assert curves.describe().startswith("No recorded benchmark: analytic curves only")
    assert list(lesson.plot_costs(curves)) == ["cost_model"]


def write_fake_study(folder: Path) -> list[str]:
    """A study report as :func:`aalib.study.read_study_results` reads it: answers and one figure."""
    answers = ["The CNN falls to the additive ceiling beyond 21 px.", "LAA is cheaper than AA from 64x64 on."]
    folder.mkdir(parents=True)
    (folder / ANSWERS_FILE).write_text("# Answers\n\n" + "".join(f"- {a}\n" for a in answers))
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [0, 1])
    figure.savefig(folder / "distance.png")
    return answers


def test_study_markdown(tmp_path: Path) -> None:
    assert lesson.read_lesson_study(tmp_path / "none") is None
    missing = lesson.study_markdown(None, "docs/study")
    assert "No study results in `docs/study` yet: the study has not been run." in missing and "`make study`" in missing
    answers = write_fake_study(tmp_path / "study")
    results = lesson.read_lesson_study(tmp_path / "study")
    assert results is not None and list(results.figures) == ["distance"]
    text = lesson.study_markdown(results, tmp_path / "study")
    assert all(f"\n- {answer}" in text for answer in answers) and "Figures: `distance`." in text


# -- the notebook ---------------------------------------------------------------------------------
def test_notebook_cites_links_and_defaults() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "arXiv:1904.09925" in nb.cells[0].source
    text = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    for pattern in ("Bello et al. 2019, Eq. 1", "Shen et al. 2021, Eq. 4", "arXiv:1812.01243"):
        assert pattern in text, pattern
    links = set(re.findall(r"\]\(([^)]+\.ipynb)\)", text))
    assert {"attention_maps.ipynb", "receptive_fields.ipynb", "complexity.ipynb"} <= links
    assert all((NOTEBOOK.parent / link).is_file() for link in links), links
    declared = papermill.inspect_notebook(str(NOTEBOOK))
    assert declared["study_dir"]["default"] == '"docs/study"'
    assert (ROOT / declared["benchmark"]["default"].strip('"')).is_file()  # the default benchmark is committed


def executed_outputs(path: Path) -> tuple[str, list[str], int]:
    """(stream and Markdown text, error names, number of PNG outputs) of an executed notebook."""
    text, errors, images = [], [], 0
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                errors.append(f"{output.ename}: {output.evalue}")
            text.append(output.get("text", "") + output.get("data", {}).get("text/markdown", ""))
            images += "image/png" in output.get("data", {})
    return "\n".join(text), errors, images


SMALL = {"side": 3, "dkh": 2, "dvh": 2, "seed": 0, "spread_sides": [2, 4]}
LESSON_FIGURES = {"softmax_map.png", "linear_map.png", "singular_values.png", "swapped_map.png",
                  "row_sum_spread.png", "cost_cost_model.png"}


def check_sections(text: str) -> None:
    """What parts 1-4 promise, in the executed notebook's output."""
    assert "N = 9 positions" in text  # the tiny example
    assert "rank_bound" in text and "map_v_error" in text  # parts 1 and 2: row sums, ranks, MV against E
    assert "rho_q   features" in text and "rho_k  positions" in text  # part 2: which axes sum to 1
    assert "ones_out_max" in text and "linear_swapped" in text and "row_sum_mean" in text  # part 3
    assert "FLOP crossover for dk=" in text  # part 4


@pytest.mark.slow
def test_notebook_runs_without_study_or_benchmark(tmp_path: Path) -> None:
    executed, figures = tmp_path / "lesson.out.ipynb", tmp_path / "figures"
    execute_with_retry(NOTEBOOK, executed, {**SMALL, "benchmark": "", "study_dir": "no_study_here",
                                            "output_dir": str(figures)}, tmp_path)
    text, errors, images = executed_outputs(executed)
    assert errors == []
    check_sections(text)
    assert "No recorded benchmark: analytic curves only" in text
    assert "No study results in `no_study_here` yet: the study has not been run." in text and "`make study`" in text
    assert {p.name for p in figures.iterdir()} == LESSON_FIGURES
    assert images == len(LESSON_FIGURES)


@pytest.mark.slow
def test_notebook_runs_with_study_results(tmp_path: Path) -> None:
    answers = write_fake_study(tmp_path / "study")
    executed, figures = tmp_path / "lesson.out.ipynb", tmp_path / "figures"
    execute_with_retry(NOTEBOOK, executed, {**SMALL, "benchmark": str(BENCHMARK), "study_dir": "study",
                                            "output_dir": str(figures)}, tmp_path)
    text, errors, images = executed_outputs(executed)
    assert errors == []
    check_sections(text)
    assert f"Recorded benchmark: {BENCHMARK}" in text and "measured: LAA sincos vs AA relative" in text
    assert "Measured answers from `study`" in text and all(f"- {answer}" in text for answer in answers)
    assert "No study results" not in text
    assert {p.name for p in figures.iterdir()} == LESSON_FIGURES | {"cost_time.png", "cost_memory.png"}
    assert images == len(LESSON_FIGURES) + 2 + 1  # the measured time and memory, and the study's figure
