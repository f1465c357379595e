# aalib: the two set-up commands are `make demo` and `make test`.
# Each creates .venv/ on first use and installs the pinned requirements into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aalib-installed

.PHONY: demo test bench venv clean

demo: $(STAMP)  ## the main job: the attention benchmark (prints a table, writes results/)
	$(PY) -m aalib.bench attention

test: $(STAMP)  ## the test suite (CPU, no network)
	$(PY) -m pytest

bench: $(STAMP)  ## every benchmark
	$(PY) -m aalib.bench attention

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
