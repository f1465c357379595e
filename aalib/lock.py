"""One writer per run folder: an exclusive operating-system lock on ``<folder>/.lock``.

``aalib train``, ``aalib run`` and ``aalib sweep`` hold :class:`RunLock` on a run folder while they
write it; a second writer on the same folder gets :class:`RunFolderBusy` at once, naming the
folder and the holder's pid and start time, before it writes anything. The lock is ``flock`` on
an open file, so the kernel drops it when its process ends, however it ends: a killed run never
leaves a stale lock, and the ``.lock`` file that stays behind holds no lock. Readers (reports,
notebooks, widgets) never take it; :func:`held` tells them whether a folder is being written.

A notebook kernel that ``aalib run`` starts trains into the folder its parent already holds: the
parent names that folder in the environment variable :data:`HELD_BY_PARENT` for the kernel, and
the trainer inside takes no second lock on it. On systems without ``fcntl`` (Windows) the lock is
a no-op.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

__all__ = ["HELD_BY_PARENT", "RunFolderBusy", "RunLock", "held"]

LOCK_NAME = ".lock"
HELD_BY_PARENT = "AALIB_RUN_FOLDER_HELD"  # a run folder the parent process holds the lock of


class RunFolderBusy(RuntimeError):
    """Another process is writing the run folder (one line: folder, holder pid, start time)."""


def _holder(path: Path) -> str:
    """``"pid 1234, started 2026-12-01T10:00:00+00:00"`` from a lock file, or what is known."""
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its pid"


def _inherited(folder: Path) -> bool:
    held_by_parent = os.environ.get(HELD_BY_PARENT)
    return bool(held_by_parent) and Path(held_by_parent).resolve() == folder.resolve()


class RunLock:
    """Exclusive lock of one run folder, as a context manager (the folder is created if missing).

    Raises :class:`RunFolderBusy` on entering when another process holds it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._handle = None

    def __enter__(self) -> RunLock:
        if fcntl is None or _inherited(self.folder):
            return self
        path = self.folder / LOCK_NAME
        if not self.folder.is_dir() and not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # never truncated before the lock is ours
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunFolderBusy(
                f"{self.folder} is being written by another process ({_holder(path)}); "
                "wait for it to end, or use another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")
        handle.write(json.dumps({"pid": os.getpid(), "started": started}))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None


def held(folder: str | Path) -> bool:
    """Whether some process holds the lock of ``folder`` now (False without ``fcntl``)."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return False
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False
