"""Plain-text tables for a terminal or a notebook's output, and GitHub-flavoured Markdown tables
for the reports' ``report.md``: the formatters the benchmarks and the studies print with."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

__all__ = ["format_table", "markdown_table"]


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    floatfmt: str = ".3g",
    formats: Mapping[str, str] | None = None,
    left: Collection[str] = (),
) -> str:
    """A header line, a rule and one line per row, columns two spaces apart.

    ``columns`` are the keys shown, in order (default: the first row's). A string is shown as it
    is; another value with the ``format()`` spec of its column in ``formats``, a float without one
    with ``floatfmt``, anything else with ``str``; a missing key is blank. Columns are
    right-aligned, those named in ``left`` left-aligned. No rows: ``"(no rows)"``.
    """
    if not rows:
        return "(no rows)"
    columns = list(rows[0]) if columns is None else list(columns)
    formats = formats or {}

    def cell(row: Mapping[str, Any], column: str) -> str:
        value = row.get(column, "")
        if isinstance(value, str):
            return value
        if column in formats:
            return format(value, formats[column])
        return format(value, floatfmt) if isinstance(value, float) else str(value)

    cells = [[cell(row, column) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.ljust(width) if column in left else value.rjust(width)
                         for value, width, column in zip(values, widths, columns)).rstrip()

    header = line(columns)
    return "\n".join([header, "-" * len(header), *(line(values) for values in cells)])


def markdown_table(table: Any, floatfmt: str | None = None) -> str:
    """A pandas DataFrame as a GitHub-flavoured Markdown table: a header, a rule, one line per row.

    Cells are shown with ``str``; with ``floatfmt``, floats with that ``format()`` spec instead and
    missing floats (NaN) as blanks.
    """
    def cell(value: Any) -> str:
        if floatfmt is not None and isinstance(value, float):
            return "" if value != value else format(value, floatfmt)
        return str(value)

    rows = [[cell(value) for value in row] for row in table.itertuples(index=False)]
    header = [str(column) for column in table.columns]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows])
