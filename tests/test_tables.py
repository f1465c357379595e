"""aalib.tables.format_table: the one plain-text table of the benchmarks and studies."""

from __future__ import annotations

from aalib.tables import format_table


def test_columns_widths_and_cells():
    rows = [{"name": "a", "ms": 1.23456, "n": 10, "note": "x"}, {"name": "longer", "ms": 100.0, "n": 2}]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["name", "ms", "n", "note"]
    assert lines[1] == "-" * len(lines[0])
    assert lines[2].split() == ["a", "1.23", "10", "x"]  # floats with floatfmt ".3g"
    assert lines[3].split() == ["longer", "100", "2"]  # a missing key is blank
    assert len({len(line) for line in lines[:3]}) == 1  # right-aligned to one width
    assert lines[2].startswith("     a")


def test_column_formats_left_alignment_and_strings_as_they_are():
    rows = [{"model": "m", "params": 1234567, "ms": 2.0}, {"model": "long model", "params": "failed", "ms": "-"}]
    lines = format_table(rows, ["model", "params", "ms"], formats={"params": ",", "ms": ".1f"}, left=("model",))
    lines = lines.splitlines()
    assert lines[2].split() == ["m", "1,234,567", "2.0"] and lines[2].startswith("m ")
    assert lines[3].split() == ["long", "model", "failed", "-"]


def test_no_rows():
    assert format_table([]) == "(no rows)"
