# aalib: the two set-up commands are `make demo` and `make test`.
# Each creates .venv/ on first use and installs the pinned requirements into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aalib-installed
# the layer benchmark whose slopes stand beside the trade-off study's training slopes
LAYER_BENCH := benchmarks/attention_cpu-2core_2026-12-01.json

# $(call publish,RUNS_DIR,DOCS_DIR): a report's tables, figures and report.md into a committed docs folder
publish = mkdir -p $(2) && cp $(1)/report/*.csv $(1)/report/*.png $(1)/report/report.md $(2)/

.PHONY: demo long-range fashion-mnist study test bench gpu-check lab strip-notebooks venv clean

demo: $(STAMP)  ## the main job: the long-range study (3 shallow models, papermill), then its report
	$(PY) -m aalib sweep params/long_range --runs-dir runs/long_range
	$(PY) -m aalib report runs/long_range

long-range: $(STAMP)  ## the long-range study in full (about an hour on 2 cores): 5 seeds, the ablations, the diagnosis; results into docs/long_range/
	$(PY) -m aalib sweep params/long_range params/long_range_ablations --runs-dir runs/long_range_study -p seeds "[0, 1, 2, 3, 4]"
	$(PY) -m aalib report runs/long_range_study
	$(call publish,runs/long_range_study,docs/long_range)

fashion-mnist: $(STAMP)  ## the shallow study on real images (about an hour on 2 cores; needs Debian's dataset-fashion-mnist): 4 models x 3 seeds; results into docs/fashion_mnist/
	$(PY) -m aalib sweep params/fashion_mnist --runs-dir runs/fashion_mnist
	$(PY) -m aalib report runs/fashion_mnist
	$(call publish,runs/fashion_mnist,docs/fashion_mnist)

study: $(STAMP)  ## the AA vs LAA trade-off study (at most 90 minutes on 2 cores): distance, resolution and Pathfinder sweeps, then its report; results into docs/study/
	$(PY) -m aalib sweep params/study/distance params/study/pathfinder params/study/resolution --runs-dir runs/study
	$(PY) -m aalib report runs/study --study --layer-bench $(LAYER_BENCH)
	$(call publish,runs/study,docs/study)
	cp runs/study/report/answers.md docs/study/

test: $(STAMP)  ## the test suite (CPU, no network)
	$(PY) -m pytest

bench: $(STAMP)  ## the CPU benchmarks (tables printed, JSON in results/); the soak is `python -m aalib.bench soak`
	$(PY) -m aalib.bench attention
	$(PY) -m aalib.bench kernels
	$(PY) -m aalib.bench train

gpu-check: $(STAMP)  ## the GPU verified in one call (at most 8 minutes on one CUDA GPU; --dry-run lists the steps): JSON in benchmarks/
	$(PY) -m aalib.bench gpu-check --out-dir benchmarks

lab: $(STAMP)  ## JupyterLab from the project's environment (ipywidgets work)
	$(VENV)/bin/jupyter lab --notebook-dir=.

strip-notebooks: $(STAMP)  ## clear the outputs, execution counts and timings a JupyterLab save leaves in the committed notebooks
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace '--ClearOutputPreprocessor.remove_metadata_fields={"collapsed","scrolled","execution"}' notebooks/*.ipynb aalib/notebooks/*.ipynb

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
