"""The package's import graph points one way: leaves, then the library, then what runs and reads it.

Every module of ``aalib`` is placed in one layer; a module may import modules of its own layer or
of a lower one, and a few edges inside a layer are ruled out by name. The graph is read from the
source (``ast``), imports inside functions included, so a lazy import cannot hide a wrong edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aalib"

# Lowest first. A module's layer is the longest prefix of its dotted name listed here.
LAYERS: list[tuple[str, ...]] = [
    ("aalib.config", "aalib.checks", "aalib.io", "aalib.lock", "aalib.machine", "aalib.memory", "aalib.stats",
     "aalib.tables", "aalib.fresh_process"),
    ("aalib.native",),
    ("aalib.attention",),
    ("aalib.layers",),
    ("aalib.models", "aalib.data", "aalib.layer_cost"),
    ("aalib.experiment",),
    ("aalib.checkpoint", "aalib.distributed", "aalib.recipe", "aalib.run_log"),
    ("aalib.train",),
    ("aalib.runs", "aalib.verdict", "aalib.complexity"),
    ("aalib.analysis",),
    ("aalib.report", "aalib.widgets"),
    ("aalib.study", "aalib.lesson"),
    ("aalib.batch",),
    ("aalib.bench", "aalib.__main__", "aalib"),
]

# modules that import nothing from aalib
LEAVES = {"aalib.config", "aalib.checks", "aalib.io", "aalib.lock"}
# edges ruled out inside a layer
FORBIDDEN = {
    ("aalib.data", "aalib.models"),
    ("aalib.models", "aalib.data", "aalib.layer_cost"),
}
ANALYSIS_SIDE = ("aalib.runs", "aalib.verdict", "aalib.analysis", "aalib.report", "aalib.widgets", "aalib.complexity")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent / dotted.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """The ``aalib`` modules ``path`` imports (``from .x import y`` resolved; ``y`` counted when it is a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "aalib"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "aalib":
                continue
            for alias in node.names:  # `from . import data` imports the module aalib.data, not aalib
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
    found.discard(name)
    return found


def _layer(module: str) -> tuple[int, str]:
    best: tuple[int, str] | None = None
    for index, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (index, prefix)
    if best is None:
        raise AssertionError(f"module {module} is in no layer of tests/test_imports.py: place it")
    return best


GRAPH = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_placed() -> None:
    for module in GRAPH:
        _layer(module)


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_leaves_import_nothing_from_the_package(module: str) -> None:
    assert not GRAPH[module], f"{module} is a leaf but imports {sorted(GRAPH[module])}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    level, home = _layer(module)
    for target in sorted(GRAPH[module]):
        if target == "aalib" and module.startswith("aalib."):
            raise AssertionError(f"{module} imports the package root; import the module that holds the name")
        target_level, target_home = _layer(target)
        if target_home == home:
            continue
        assert target_level <= level, f"{module} (layer {home}) imports {target} from a higher layer ({target_home})"
        assert (home, target_home) not in FORBIDDEN, f"{module} must not import {target}"


def test_library_does_not_import_the_commands_or_the_trainer_to_read_files() -> None:
    for module, targets in GRAPH.items():
        if not module.startswith("aalib.bench") and module != "aalib.__main__":
            assert not any(t.startswith("aalib.bench") for t in targets), f"{module} imports the benchmarks"
        if module.startswith(ANALYSIS_SIDE):
            assert "aalib.train" not in targets, f"{module} reads runs through the trainer"
