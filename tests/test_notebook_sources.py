"""Every committed notebook is source: valid nbformat 4, no outputs, no execution counts or timings,
one papermill ``parameters`` cell whose values each carry a ``# help`` comment, and code cells
that compile and use no name that no earlier cell (or the cell itself) defines.

No linter is installed in the environment, so the name check is the standard library's
:mod:`symtable`, cell by cell in notebook order, after IPython turns magics into calls.
``make strip-notebooks`` clears what a JupyterLab save leaves behind.
"""

from __future__ import annotations

import builtins
import symtable
from pathlib import Path

import nbformat
import papermill
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
BATCH = ROOT / "aalib" / "notebooks"  # package data: executed by `aalib run` and `aalib report`
INTERACTIVE = ROOT / "notebooks"  # opened in JupyterLab (and run by papermill in the tests)
SOURCES = sorted([*BATCH.glob("*.ipynb"), *INTERACTIVE.glob("*.ipynb")])
KNOWN = set(dir(builtins)) | {"get_ipython"}  # what an IPython kernel defines before the first cell


def test_the_notebooks_are_where_the_package_and_jupyterlab_find_them() -> None:
    assert sorted(p.name for p in BATCH.glob("*.ipynb")) == ["report.ipynb", "study.ipynb", "train.ipynb"]
    assert sorted(p.name for p in INTERACTIVE.glob("*.ipynb")) == ["attention_maps.ipynb", "complexity.ipynb",
                                                                    "lesson.ipynb", "receptive_fields.ipynb"]
    assert not list(INTERACTIVE.glob("*.py")), "notebooks/ holds notebooks only: the .ipynb files are the source"


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def python_source(cell: nbformat.NotebookNode) -> str:
    """The cell as the kernel runs it: IPython magics (``%matplotlib inline``) become calls."""
    return TransformerManager().transform_cell(cell.source)


def undefined_names(sources: list[str]) -> list[str]:
    """``cell N: name`` for each name a cell reads that neither it nor an earlier cell binds.

    Module-level reads must be bound by an earlier cell or by the cell itself; names that a
    function, class or comprehension reads from the module (called later) by any cell up to this one.
    """
    defined = set(KNOWN)
    found = []
    for index, source in enumerate(sources):
        table = symtable.symtable(source, f"cell {index}", "exec")
        top = table.get_symbols()
        defined |= {s.get_name() for s in top if s.is_assigned() or s.is_imported()}
        for symbol in top:
            if symbol.is_referenced() and symbol.get_name() not in defined:
                found.append(f"cell {index}: {symbol.get_name()}")
        nested = list(table.get_children())
        while nested:
            scope = nested.pop()
            nested.extend(scope.get_children())
            for symbol in scope.get_symbols():
                if symbol.is_global() and symbol.is_referenced() and symbol.get_name() not in defined:
                    found.append(f"cell {index}, {scope.get_name()}: {symbol.get_name()}")
    return found


def test_the_name_check_finds_an_undefined_name() -> None:
    assert undefined_names(["x = 1", "def f():\n    return x + y", "print(z)\nz = 2", "[w for w in range(x)]"]) == \
        ["cell 1, f: y"]  # z is bound in its own cell: the check is per cell, not per line
    assert undefined_names(["print(a)"]) == ["cell 0: a"]


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_notebook_is_source(path: Path) -> None:
    nb = nbformat.reads(path.read_text(), as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"  # the kernel `aalib run` and the tests ask papermill for
    cells = code_cells(nb)
    for index, cell in enumerate(cells):
        assert cell.outputs == [] and cell.execution_count is None, \
            f"{path.name}, code cell {index}: outputs or an execution count (run `make strip-notebooks`)"
        assert not {"execution", "scrolled", "collapsed"} & set(cell.metadata), \
            f"{path.name}, code cell {index}: view state or timings in its metadata (run `make strip-notebooks`)"
    tagged = [cell for cell in cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    declared = papermill.inspect_notebook(str(path))
    assert declared and all(declared[name]["help"] for name in declared), f"{path.name}: a parameter without # help"
    sources = []
    for index, cell in enumerate(cells):
        source = python_source(cell)
        compile(source, f"{path.name}, code cell {index}", "exec")
        sources.append(source)
    assert undefined_names(sources) == [], f"{path.name}: undefined names"
