"""Argument checks shared by the whole package: one wording for each kind of bad value.

Each check raises ``ValueError`` with one line that names the argument, the value it got and the
values it allows, and returns the value it accepted, so a constructor can check and assign at once.
Booleans are never accepted as ints (``True`` is an ``int`` in Python, but never a meant count).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["check_int", "check_choice", "int_pair"]

T = TypeVar("T")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int | None = 1, high: int | None = None, odd: bool = False) -> int:
    """``value`` if it is an int in ``[low, high]`` (either bound may be None: open), odd if asked."""
    ok = _is_int(value) and (low is None or value >= low) and (high is None or value <= high) and (not odd or value % 2)
    if not ok:
        if low is not None and high is not None:
            allowed = f"an int in [{low}, {high}]"
        elif low == 1:
            allowed = "a positive int"
        elif low == 0:
            allowed = "an int >= 0"
        elif low is not None:
            allowed = f"an int >= {low}"
        elif high is not None:
            allowed = f"an int <= {high}"
        else:
            allowed = "an int"
        if odd:
            allowed = allowed.replace("an int", "an odd int").replace("a positive int", "a positive odd int")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def int_pair(name: str, value: Any, low: int = 1) -> tuple[int, int]:
    """``(value, value)`` for one int, ``tuple(value)`` for two, each an int >= ``low``."""
    pair = (value, value) if _is_int(value) else tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if pair is None or len(pair) != 2 or not all(_is_int(v) and v >= low for v in pair):
        what = "a positive int" if low == 1 else f"an int >= {low}"
        raise ValueError(f"{name} must be {what} or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def check_choice(name: str, value: T, allowed: Iterable[T]) -> T:
    """``value`` if it is one of ``allowed``."""
    options = tuple(allowed)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value
