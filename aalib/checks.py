"""Argument checks shared by the whole package: one wording for each kind of bad value.

Each check raises ``ValueError`` with one line that names the argument, the values it allows and
the value it got (``"heads must be a positive int, got 0"``), and returns the value it accepted,
so a constructor can check and assign at once. Booleans are never accepted as ints (``True`` is an
``int`` in Python, but never a meant count). ``note`` adds why the rule holds or what the bound
depends on (``"for 16x16 images"``), after the allowed values.
"""

from __future__ import annotations

import math

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["check_int", "check_float", "check_choice", "check_arguments", "int_pair", "first_line"]

T = TypeVar("T")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none): what a one-line error
    quotes of the exception behind it."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(name: str, allowed: str, value: Any, note: str) -> None:
    raise ValueError(f"{name} must be {allowed}{' ' + note if note else ''}, got {value!r}")


def check_int(name: str, value: Any, low: int | None = 1, high: int | None = None, *, odd: bool = False,
              note: str = "") -> int:
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
        _fail(name, allowed, value, note)
    return value


def check_float(name: str, value: Any, low: float, high: float | None = None, *, strict: bool = True,
                note: str = "") -> float:
    """``value`` as a float if it is a finite real number above ``low`` (at least ``low`` unless
    ``strict``) and at most ``high`` (None: open)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (number and (value > low if strict else value >= low) and (high is None or value <= high)):
        allowed = f"a finite number {'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        _fail(name, allowed, value, note)
    return float(value)


def int_pair(name: str, value: Any, low: int = 1) -> tuple[int, int]:
    """``(value, value)`` for one int, ``tuple(value)`` for two, each an int >= ``low``."""
    pair = (value, value) if _is_int(value) else tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if pair is None or len(pair) != 2 or not all(_is_int(v) and v >= low for v in pair):
        _fail(name, ("a positive int" if low == 1 else f"an int >= {low}") + " or a pair of them", value, "")
    return pair  # type: ignore[return-value]


def check_choice(name: str, value: T, allowed: Iterable[T], *, note: str = "") -> T:
    """``value`` if it is one of ``allowed`` (the message lists them as a tuple)."""
    options = tuple(allowed)
    if value not in options:
        _fail(name, f"one of {options!r}", value, note)
    return value


def check_arguments(what: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """ValueError naming the keyword arguments in ``given`` that ``what`` (``"model 'wrn'"``) does not
    take, and the ones it does."""
    allowed = list(allowed)
    unknown = [key for key in given if key not in allowed]
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))} not taken by {what}; allowed: {', '.join(allowed)}")
