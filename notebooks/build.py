"""Write every notebook in this folder with nbformat: ``python notebooks/build.py [NAME ...]``.

The notebooks are generated, commit-ready (no outputs, kernel ``python3``, stable cell ids), and
``tests/test_notebooks.py`` checks that each file is what this script writes: edit the cells here,
then rerun it. Every computation a notebook shows lives in the package (``aalib.train``,
``aalib.report``, ``aalib.complexity``, ``aalib.analysis``, ``aalib.widgets``); the cells only set
parameters, call it and wire widgets.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Callable

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def notebook(name: str, cells: list) -> nbformat.NotebookNode:
    """A notebook with the project's kernelspec and stable cell ids (a rebuild changes nothing needlessly)."""
    for index, cell in enumerate(cells):
        cell.id = f"{name}-{index}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def parameters_cell(source: str) -> nbformat.NotebookNode:
    """The papermill ``parameters`` cell: flat, typed, one ``# help`` comment per value."""
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


# --- train.ipynb ------------------------------------------------------------------------------


def _train_parameters() -> str:
    """The TrainConfig fields as notebook parameters, with their defaults and field comments."""
    from aalib.config import TrainConfig

    source = (HERE.parent / "aalib" / "config.py").read_text()
    lines = []
    for field in dataclasses.fields(TrainConfig):
        match = re.search(rf"^    {field.name}: (.+?) = .*?#\s*(.+)$", source, re.M)
        annotation, comment = match.group(1), match.group(2)
        # types papermill's parameter parser reads (it skips "X | None" and needs no imports)
        annotation = annotation.replace("[str, Any]", "").replace("list[int] | None", "Optional[list]")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        lines.append(f"{field.name}: {annotation} = {default!r}  # {comment}")
    lines.append('out_dir: str = ""  # run folder; "" means runs/<name>/seed<seed>')
    return "from typing import Optional\n\n" + "\n".join(lines)


def train() -> nbformat.NotebookNode:
    return notebook("train", [
    new_markdown_cell("""# Train one experiment

Runs one configuration of the study through `aalib.train` and leaves its results as files in the
run folder: `metrics.csv` (one row per epoch), `summary.json` (status, test top-1/top-5, parameters,
versions, config), `best.pt` / `last.pt` checkpoints, `train.log` and `curves.png`.

Batch runs go through papermill, with a params file's keys as this notebook's parameters:

```bash
aalib run params/long_range/simple_aacnn.yaml            # into runs/<name>/seed<k>/, executed notebook included
aalib sweep params/long_range                            # every file; finished runs skipped, interrupted ones resumed
papermill notebooks/train.ipynb out.ipynb -f params/smoke.yaml   # the same, by hand
```

Running it again on the same `out_dir` resumes from the last checkpoint; a finished run is left as it is.
The parameters are the keys of `aalib.config.TrainConfig` (see `aalib/config.py`), plus `out_dir`."""),
    parameters_cell(_train_parameters()),
    new_code_cell("""%matplotlib inline
from pathlib import Path

from aalib.report import learning_curves_figure
from aalib.runner import config_from_parameters
from aalib.runs import load_run
from aalib.train import train

config = config_from_parameters(globals())  # strict: a wrong type or value stops here, before any work
run_dir = Path(out_dir) if out_dir else Path("runs") / config.name / f"seed{config.seed}"
print(f"{config.name}: {config.model} {config.model_args} on {config.dataset} -> {run_dir}")"""),
    new_code_cell("""summary = train(config, run_dir)
print(f"status: {summary['status']}" + (f" ({summary['reason']})" if summary.get("reason") else ""))"""),
    new_markdown_cell("## Learning curves"),
    new_code_cell("""run = load_run(run_dir)
figure = learning_curves_figure([run])
figure.savefig(run_dir / "curves.png", dpi=110, bbox_inches="tight")
figure"""),
    new_markdown_cell("## Result"),
    new_code_cell("""import pandas as pd

from aalib.report import run_row

shown = ["status", "epochs", "parameters", "val_top1_best", "top1", "top5", "test_images", "s_per_epoch"]
pd.Series(run_row(run), name=config.name)[shown].to_frame()"""),
    ])


# --- report.ipynb -----------------------------------------------------------------------------


def report() -> nbformat.NotebookNode:
    return notebook("report", [
    new_markdown_cell("""# Study report

Every run under the runs folder, read from the run folders (`summary.json`, `metrics.csv`), never
from notebook output. A result is stated over seeds: each seed is a point, each table gives the mean
± standard deviation, the median and every seed's value, and on the long-range task how many seeds
solved it (test top-1 ≥ 90 %) with the exact 95 % binomial interval (Clopper-Pearson). The numbers
the reproduced study published (Roy & Meghal 2024: one run each, last epoch) and the papers'
reference numbers stand beside the datasets they were measured on.

`aalib report RUNS_DIR` executes this notebook and writes it as `report.html` (for reading: no
code) next to the tables (`summary.csv`, `runs.csv`) and figures (PNG)."""),
    parameters_cell('''runs_dir: str = "runs/long_range"  # folder holding run folders (any depth)
output_dir: str = ""  # where tables and figures go; "" means <runs_dir>/report'''),
    new_code_cell('''%matplotlib inline
from pathlib import Path

from IPython.display import Markdown, display

from aalib.report import references, write_report

report = write_report(runs_dir, Path(output_dir) if output_dir else Path(runs_dir) / "report")
runs, captions, figures = report["runs"], report["captions"], report["figures"]


def show(name):
    """A figure and its caption."""
    display(figures[name])
    display(Markdown(f"*{captions[name]}*"))


cpus = sorted(runs["cpu"].dropna().unique())
display(Markdown(f"{len(runs)} runs under `{runs_dir}`, measured on: {', '.join(cpus) or 'unknown'}."))'''),
    new_markdown_cell("## What was measured"),
    new_code_cell('''display(Markdown("\\n".join(f"- {line}" for line in report["verdict"]) or "No finished runs of the long-range task or of the study's models on an image dataset in this folder."))'''),
    new_code_cell('''show("seed_points")
if "ablations" in figures:
    display(Markdown("### Ablations: one change at a time"))
    show("ablations")'''),
    new_markdown_cell("## Results per dataset"),
    new_code_cell('''for dataset, table in report["tables"].items():
    display(Markdown(f"### {dataset}"))
    display(table)
refs = references(sorted(runs["dataset"].unique()))
if len(refs):
    display(Markdown("### Published reference numbers (papers, dataset maintainers)"))
    display(refs)'''),
    new_markdown_cell("## Why some seeds fail"),
    new_code_cell('''diagnosis = report["diagnosis"]
if not diagnosis.cases:
    display(Markdown("Every model's seeds agree (all solved or none did): nothing to diagnose."))
else:
    display(Markdown("\\n".join(f"- {line}" for line in diagnosis.findings)))
    display(diagnosis.seeds)
    for name in diagnosis.figures:
        show(name)'''),
    new_markdown_cell("## Learning curves, time and size"),
    new_code_cell('''for name in ("learning_curves", "accuracy_vs_time", "accuracy_vs_parameters"):
    show(name)'''),
    new_markdown_cell("## Every run"),
    new_code_cell('''if len(report["unfinished"]):
    display(Markdown(f"**Unfinished runs** ({len(report['unfinished'])}), left out of the verdicts:"))
    display(report["unfinished"])
if len(report["damaged"]):
    display(Markdown(f"**Damaged run folders** ({len(report['damaged'])}), left out of every table and figure:"))
    display(report["damaged"])
runs.drop(columns="path")'''),
    ])


# --- complexity.ipynb -------------------------------------------------------------------------

COMPLEXITY_INTRO = """\
# Complexity of AA-conv and LAA-conv against resolution

Attention-augmented convolution (**AA-conv**, Bello et al. 2019, [arXiv 1904.09925](https://arxiv.org/abs/1904.09925))
runs dot-product self-attention over all $N = H W$ positions: $O(N^2 (d_k + d_v))$ time and, when the
$N_h$ attention maps are materialised, $O(N_h N^2)$ memory (Sec. 3.1-3.2). **LAA-conv** swaps in efficient
attention (Shen et al. 2021, [arXiv 1812.01243](https://arxiv.org/abs/1812.01243), Sec. 3, Table 1),
$\\rho_q(Q)\\,(\\rho_k(K)^\\top V)$: $O(N d_{kh} d_{vh})$ time, $O(dN + d^2)$ memory.

Per head, softmax attention costs $2N^2(d_{kh}+d_{vh})$ FLOPs and linear attention $4N d_{kh} d_{vh}$, so
linear attention is cheaper only above $N^* = 2 d_{kh} d_{vh} / (d_{kh}+d_{vh})$ positions.

This notebook measures one layer's forward + backward time and peak memory against resolution with
`aalib.bench` (one subprocess per case), fits log-log slopes, locates the crossover (analytic and measured),
and applies the cost model to the reproduced study's Wide-(L)AAResNet, whose LAA model trained slower than
its AA model at CIFAR size. All computation lives in `aalib.complexity`; results go to `output_dir`
as `complexity.json`, `complexity.csv` and PNG figures.
"""

COMPLEXITY_PARAMETERS = """\
sizes: list = [16, 32, 64]  # square map sides measured for AA-conv (softmax; relative logits and no position)
linear_sizes: list = [16, 32, 64, 128, 256]  # map sides measured for LAA-conv (linear attention, sine-cosine positions)
impls: list = ["ours", "naive"]  # "ours" (fused / linear kernels) and/or "naive" (explicit N x N maps, as Bello et al.'s code)
batch: int = 8  # images per forward + backward pass
channels: int = 64  # input and output channels of the layer
dk: int = 32  # key/query depth of the attention branch
dv: int = 32  # value depth (the attention branch's output channels)
heads: int = 4  # attention heads Nh; head sizes dkh, dvh are dk / heads, dv / heads
repeats: int = 3  # timed runs per case (median), after one warm-up
device: str = "auto"  # "cpu", "cuda", or "auto" (cuda when available)
naive_max_gib: float = 3.0  # skip naive cases whose single (B, heads, N, N) map exceeds this many GiB
recorded: str = ""  # path to a `python -m aalib.bench attention` JSON to plot instead of measuring; empty: measure
seed_input_size: int = 32  # image side for the seed explanation (32: CIFAR-100, 64: Tiny-ImageNet)
output_dir: str = "results/complexity"  # folder for complexity.json, complexity.csv and the PNG figures
"""

COMPLEXITY_DERIVED = """\
from pathlib import Path

import torch
from IPython.display import Image, display

from aalib import complexity

out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
run_device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
seed_dataset = {32: "cifar100", 64: "tinyimagenet"}.get(seed_input_size)  # where the seed printed epoch times
"""

COMPLEXITY_MEASURE = """\
if recorded:
    records, setting = complexity.load_recorded(recorded)
else:
    records, setting = complexity.measure(
        sizes, linear_sizes, impls=impls, batch=batch, channels=channels, dk=dk, dv=dv, heads=heads,
        repeats=repeats, device=run_device, naive_max_gib=naive_max_gib,
    )
print(complexity.format_table(records, ["variant", "impl", "size", "n", "ms", "peak_mib", "note"]))
"""

COMPLEXITY_ANALYSIS_MD = """\
## Slopes and crossover

Slopes are least-squares fits of log time (log peak memory) on log N: 1 is linear in pixels, 2 quadratic.
Peak memory includes the layer's weights and buffers, which flatten the memory slopes at small maps.
The analytic crossover uses the setting's head sizes; the measured one is interpolated where the LAA
and AA time curves cross within the sizes both were measured at.
"""

COMPLEXITY_ANALYSIS = """\
analytic = complexity.analytic_crossover(setting["dk"], setting["dv"], setting["heads"])
slopes = complexity.fit_slopes(records)
crossovers = [
    complexity.measured_crossover(records, linear="LAA sincos", softmax=softmax, impl=impl)
    for impl in sorted({r["impl"] for r in records})
    for softmax in ("AA relative", "AA no-pos")
]
print(complexity.format_table(slopes, ["variant", "impl", "metric", "slope", "points", "n_min", "n_max"]))
print(f"\\nanalytic crossover: dkh={analytic['dkh']}, dvh={analytic['dvh']}: "
      f"N* = {analytic['n']:.1f} positions (side {analytic['side']:.2f})")
for cross in crossovers:
    print("measured:", cross.describe())
"""

COMPLEXITY_SEED_MD = """\
## Why the seed's LAA-WRN was not faster at CIFAR size

The seed's AA/LAA layers use $d_k = 2F_{out}$, $d_v = F_{out}/2$ and $N_h = 1, 2, 4$ by stage, so every head
is wide ($d_{kh} = 256$, $d_{vh} = 64$) and $N^*$ is large, while the maps are small. The table applies the cost
model to each attention layer at the chosen input size and compares the attention FLOPs with the model's.
"""

COMPLEXITY_SEED = """\
seed_text, seed_rows = complexity.explain_seed(
    "seed_wrn", seed_input_size, complexity.SEED_EPOCH_SECONDS.get(seed_dataset)
)
print(complexity.format_table(seed_rows, [
    "layer", "height", "width", "n", "dkh", "dvh", "n_star", "below_crossover",
    "softmax_flops", "linear_flops", "linear_over_softmax", "layer_flops",
]))
print()
print(seed_text)
"""

COMPLEXITY_WRITE = """\
figures = {
    "time_vs_resolution": complexity.plot_resolution(records, "ms", analytic_n=analytic["n"], crossovers=crossovers),
    "memory_vs_resolution": complexity.plot_resolution(records, "peak_mib", analytic_n=analytic["n"], crossovers=crossovers),
    "cost_model": complexity.plot_cost_model(setting["dk"], setting["dv"], setting["heads"]),
}
written = complexity.write_results(out, {
    "setting": setting,
    "records": records,
    "slopes": slopes,
    "analytic_crossover": analytic,
    "measured_crossovers": crossovers,
    "seed": {"model": "seed_wrn", "input_size": seed_input_size, "summary": seed_text, "layers": seed_rows},
}, figures)
for path in written:
    print("wrote", path)
for name in figures:
    display(Image(filename=str(out / f"{name}.png")))
"""


def complexity() -> nbformat.NotebookNode:
    return notebook("complexity", [
        new_markdown_cell(COMPLEXITY_INTRO),
        parameters_cell(COMPLEXITY_PARAMETERS),
        new_code_cell(COMPLEXITY_DERIVED),
        new_code_cell(COMPLEXITY_MEASURE),
        new_markdown_cell(COMPLEXITY_ANALYSIS_MD),
        new_code_cell(COMPLEXITY_ANALYSIS),
        new_markdown_cell(COMPLEXITY_SEED_MD),
        new_code_cell(COMPLEXITY_SEED),
        new_code_cell(COMPLEXITY_WRITE),
    ])


# --- attention_maps.ipynb and receptive_fields.ipynb (interactive) ----------------------------

COMMON_PARAMETERS = '''runs_dir: str = "runs/long_range"  # finished runs to load (`make demo` writes runs/long_range/<experiment>/seed<k>/)
checkpoint: str = "best"  # weights of each run: "best" or "last"
image_count: int = 8  # test images per model
image_size: int = 32  # image side of the long_range images used when no finished run is found
output_dir: str = ""  # if set, the static figures (PNG) and summaries are written to this folder'''

LOAD = '''%matplotlib inline
from IPython.display import display

from aalib.analysis import load_sources, save_figure

sources, note = load_sources(runs_dir, image_count, which=checkpoint, image_size=image_size)
print(note)
for name, source in sources.items():
    print(f"  {name}: {source!r}")'''


def attention_maps() -> nbformat.NotebookNode:
    return notebook("attention_maps", [
    new_markdown_cell("""# Attention maps of AA-conv and LAA-conv

Where does a pixel look? An **AA-conv** layer (Bello et al., *Attention Augmented Convolutional
Networks*, ICCV 2019, [arXiv:1904.09925](https://arxiv.org/abs/1904.09925)) gives every output
position a softmax distribution over all positions of its input; an **LAA-conv** layer (the same
layer with Shen et al.'s *Efficient Attention*, WACV 2021,
[arXiv:1812.01243](https://arxiv.org/abs/1812.01243)) implies the map `ρ_q(Q) ρ_k(K)ᵀ`, whose rows
also sum to 1, built from `dkh` **global context maps** (rows of `ρ_k(K)ᵀ`) shared by every query.

This notebook loads the models of the synthetic *long-range* study ("are the two square marks the
same colour?", marks farther apart than the Simple-CNN's 21-pixel receptive field), hooks their
AA/LAA layers during a forward pass, and shows, for a query pixel you choose:

* the query's attention map over the image, per layer and head, AA and LAA side by side;
* for LAA, the global context maps of the chosen head.

A trained model that solves the task should let a query on one mark attend to the other mark.
Without finished runs under `runs_dir` the notebook uses freshly built (untrained) models, and
says so. With `runs_dir = "runs/fashion_mnist"` (after `make fashion-mnist`) it loads the models
trained on Fashion-MNIST's real images instead: where does a pixel of a shirt look? The code is in
`aalib/analysis/maps.py` and `aalib/widgets.py`."""),
    parameters_cell(COMMON_PARAMETERS + '''
figure_image: int = 0  # image index of the static figure
figure_layer: int = -1  # attention layer of the static figure (index in forward order; -1 is the last)
query_y: int = 16  # query pixel row (input pixels), initial explorer value and static figure
query_x: int = 16  # query pixel column (input pixels)'''),
    new_code_cell(LOAD),
    new_markdown_cell("""## Explore

Pick a model (and one to show beside it), an image, a layer, a head and a query pixel (cyan
cross). Each map is the query's row of the layer's attention matrix, drawn over the image on the
layer's grid; the white circle is its peak. Sliders recompute when released."""),
    new_code_cell('''from aalib.widgets import AttentionMapExplorer

explorer = AttentionMapExplorer(sources, query=(query_y, query_x))
display(explorer.widget)'''),
    new_markdown_cell("""## Static figure: all heads

The query's map in every head of one layer, for each attention model; LAA's global context maps
below. Saved to `output_dir` when it is set."""),
    new_code_cell('''from aalib.analysis import attention_figure, plot_context_maps

figure, maps = attention_figure(sources, figure_image, figure_layer, (query_y, query_x))
display(figure)
print("saved:", save_figure(figure, output_dir, "attention_maps.png"))
for name, query in maps.items():
    print(f"{name}: {query.layer.name} ({query.layer.attention}), query cell {query.query_grid}, peaks at {query.argmax}")
    if query.layer.context is not None:
        context_figure = plot_context_maps(query.layer.context[0], title=f"{name}: global context maps of {query.layer.name}")
        display(context_figure)
        print("saved:", save_figure(context_figure, output_dir, f"context_maps_{name}.png"))'''),
    ])

def receptive_fields() -> nbformat.NotebookNode:
    return notebook("receptive_fields", [
    new_markdown_cell("""# Receptive fields: theoretical, effective, and what the models use

The **theoretical receptive field** of a conv net grows by `(k - 1) × jump` per layer: the seed's
Simple-CNN sees 21 × 21 pixels, less than its 32 × 32 images. One attention layer (Bello et al.,
ICCV 2019, [arXiv:1904.09925](https://arxiv.org/abs/1904.09925); Shen et al., WACV 2021,
[arXiv:1812.01243](https://arxiv.org/abs/1812.01243)) makes it global. The **effective receptive
field** (Luo et al., *Understanding the Effective Receptive Field in Deep Convolutional Neural
Networks*, NeurIPS 2016, [arXiv:1605.04640](https://arxiv.org/abs/1605.04640)) is the gradient of
a central output unit with respect to the input: roughly Gaussian, much smaller than the
theoretical one, and it changes with training.

This notebook draws, for the models of the long-range study (untrained fallback models when no
finished run is found under `runs_dir`):

* the theoretical receptive field per layer;
* ERF heatmaps, untrained vs trained, with the theoretical field outlined;
* captum's Integrated Gradients (Sundararajan et al. 2017) and Grad-CAM (Selvaraju et al. 2017)
  for the same images side by side.

With `runs_dir = "runs/fashion_mnist"` (after `make fashion-mnist`) the same views show the models
trained on Fashion-MNIST's real images. The rule for the theoretical field is documented in
`aalib/analysis/receptive.py`."""),
    parameters_cell(COMMON_PARAMETERS + '''
erf_layer: int = -1  # layer of the ERF (index in the main-path conv/AA list; -1 is the last)
attribution_count: int = 2  # images explained by IG and Grad-CAM
ig_steps: int = 32  # Integrated Gradients path steps'''),
    new_code_cell(LOAD),
    new_markdown_cell("""## Explore

Choose models and a layer: the theoretical plot follows at once (the chosen layer shaded). The
ERF and attributions take a few seconds per model: press the button."""),
    new_code_cell('''from aalib.widgets import ReceptiveFieldExplorer

explorer = ReceptiveFieldExplorer(sources, ig_steps=ig_steps)
display(explorer.widget)'''),
    new_markdown_cell("""## Static figures and summary

The same computations for all models at `erf_layer`, saved to `output_dir` when it is set, with
`erf_summary.json` (theoretical field, ERF radius holding 90 % of the mass, fraction of pixels
above 5 % of the peak)."""),
    new_code_cell('''from pathlib import Path

from aalib.analysis import attribution_figure, attribution_study, erf_figure, erf_study, erf_summary, theoretical_figure
from aalib.io import write_json

rf_figure, fields = theoretical_figure(sources)
display(rf_figure)
erfs = erf_study(sources, erf_layer, image_count)
erf_plot = erf_figure(sources, erfs, erf_layer)
display(erf_plot)
attributions = attribution_study(sources, attribution_count, n_steps=ig_steps)
attribution_plot = attribution_figure(sources, attributions)
display(attribution_plot)
summary = erf_summary(sources, erfs, erf_layer)
for row in summary:
    print(row)
for figure, name in ((rf_figure, "theoretical_rf.png"), (erf_plot, "erf.png"), (attribution_plot, "attributions.png")):
    print("saved:", save_figure(figure, output_dir, name))
if output_dir:
    write_json(Path(output_dir) / "erf_summary.json", summary)'''),
    ])


NOTEBOOKS: dict[str, Callable[[], nbformat.NotebookNode]] = {
    "train": train,
    "report": report,
    "complexity": complexity,
    "attention_maps": attention_maps,
    "receptive_fields": receptive_fields,
}


def main(names: list[str]) -> None:
    for name in names or NOTEBOOKS:
        nb = NOTEBOOKS[name]()
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print(f"wrote {HERE / name}.ipynb")


if __name__ == "__main__":
    main(sys.argv[1:])
