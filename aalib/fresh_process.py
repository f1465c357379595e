"""One function call in a fresh Python process, its JSON result handed back: how a measurement
whose peak memory must be its own (a process's peak includes everything it ran before) is run.

Protocol: the parent runs ``python -m aalib.fresh_process MODULE:FUNCTION ARGUMENTS``, where
``ARGUMENTS`` is a JSON object; the child imports ``MODULE``, calls ``FUNCTION(**ARGUMENTS)`` and
prints one line, :data:`RESULT_TAG` and the JSON of the returned dict, so that whatever else the
child prints cannot be read as the result. An exception in the call is printed as that line
too, ``{"error": "Type: first line of the message"}``, with the traceback on stderr.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from .checks import first_line

__all__ = ["RESULT_TAG", "run_in_fresh_process", "main"]

RESULT_TAG = "AALIB_RESULT "


def run_in_fresh_process(target: str, arguments: Mapping[str, Any], *, timeout: float,
                         env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``FUNCTION(**arguments)`` of ``target`` (``"module:function"``) in a fresh interpreter.

    Returns the function's dict, or ``{"error": message}``: the child's exception, ``"timed out
    after N s"`` (the child is killed), or ``"exit CODE: LAST LINE"`` when the child ended
    without a result (killed for memory, crashed). ``env`` is the child's environment (default:
    this process's).
    """
    command = [sys.executable, "-m", "aalib.fresh_process", target, json.dumps(dict(arguments))]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else dict(env), check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": f"exit {proc.returncode}: {lines[-1]}" if lines else f"exit {proc.returncode}"}


def main(argv: list[str] | None = None) -> int:
    """The child: ``MODULE:FUNCTION ARGUMENTS`` -> the result line; exit 1 after an exception."""
    target, arguments = sys.argv[1:] if argv is None else argv
    module, _, name = target.partition(":")
    try:
        result = getattr(importlib.import_module(module), name)(**json.loads(arguments))
    except Exception as exc:
        traceback.print_exc()
        result, status = {"error": f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__}, 1
    else:
        status = 0
    print(RESULT_TAG + json.dumps(result), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
