"""Atomic file writes: a crash, a kill or a full disk never leaves half a file behind.

Every results file, checkpoint and cache goes through :func:`atomic_write`: the bytes go to a
temporary file in the destination folder, are flushed and fsynced, and only then replace the
destination with ``os.replace`` (atomic within one file system). On any error the temporary file
is removed and the previous version of the destination, if any, is untouched. Ctrl-C or SIGTERM
during a write (on the main thread) waits for the write to end, then acts as it would have: a
library writer such as ``torch.save`` never sees the interrupt half-way through its file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["atomic_write", "interrupts_deferred", "write_json", "write_png"]

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs; when it ends, restore their handlers and
    raise the signals that came, in their order, so each has the effect it would have had
    (``KeyboardInterrupt``, the process's SIGTERM handler, the default action); a handler that
    raises ends the list. Off the main thread, where Python runs no signal handlers, and for a
    signal that is ignored or whose handler Python did not install, this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in DEFERRED_SIGNALS}
    held = [sig for sig, handler in previous.items() if handler is not None and handler != signal.SIG_IGN]
    for sig in held:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig in held:
            signal.signal(sig, previous[sig])
        for sig in dict.fromkeys(received):  # each signal once, in the order they came
            signal.raise_signal(sig)


def atomic_write(path: str | Path, write: Callable[[IO], Any], *, binary: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it into place; an
    interrupt that comes meanwhile is acted on once the file is in place (:func:`interrupts_deferred`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with interrupts_deferred():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb" if binary else "w",
                           **({} if binary else {"encoding": "utf-8", "newline": ""})) as handle:
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
