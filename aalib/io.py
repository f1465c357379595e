"""Atomic file writes: a crash, a kill or a full disk never leaves half a file behind.

Every results file, checkpoint and cache goes through :func:`atomic_write`: the bytes go to a
temporary file in the destination folder, are flushed and fsynced, and only then replace the
destination with ``os.replace`` (atomic within one file system). On any error the temporary file
is removed and the previous version of the destination, if any, is untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["atomic_write", "write_json", "write_png"]


def atomic_write(path: str | Path, write: Callable[[IO], Any], *, binary: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any, *, default: Callable[[Any], Any] = str) -> None:
    """Atomically write ``obj`` as indented JSON (non-JSON values via ``default``, ``str`` unless given)."""
    atomic_write(path, lambda handle: handle.write(json.dumps(obj, indent=2, default=default) + "\n"))


def write_png(path: str | Path, figure: "Figure", *, dpi: int) -> None:
    """Atomically save a matplotlib figure as a PNG, cropped to its content."""
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi, bbox_inches="tight"), binary=True)
