"""The trainer's log: INFO lines to stderr through ``tqdm.write`` (progress bars stay whole) and
``train.log`` in the run folder, both on the ``aalib`` logger while a run lasts.

Under ``torchrun`` rank 0 logs INFO and writes ``train.log``; the other ranks print warnings and
errors only.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

from .config import TrainConfig
from .distributed import DistInfo

__all__ = ["file_logging", "show_progress", "stderr_logging"]

_FORMAT = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")


class _TqdmHandler(logging.StreamHandler):
    """Log lines through ``tqdm.write`` so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover
            self.handleError(record)


class _LogFile(logging.FileHandler):
    """``train.log``; after a failed write (full disk) it stays silent instead of printing a
    traceback for every record: the error that matters comes from the results files' writes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if isinstance(sys.exc_info()[1], OSError):
            self.broken = True
        else:  # pragma: no cover
            super().handleError(record)

    def close(self) -> None:
        try:
            super().close()  # flushes what a failed write left buffered, then closes the file either way
        except OSError:
            self.broken = True


@contextlib.contextmanager
def _attach(handler: logging.Handler) -> Iterator[None]:
    """Attach ``handler`` to the ``aalib`` logger for the duration of the block."""
    logger = logging.getLogger("aalib")
    old_level, old_propagate = logger.level, logger.propagate
    handler.setFormatter(_FORMAT)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our own handlers: no second copy through a notebook's root handler
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def stderr_logging(info: DistInfo) -> contextlib.AbstractContextManager:
    """INFO to stderr on rank 0; warnings and errors only on the other ranks."""
    handler = _TqdmHandler()
    handler.setLevel(logging.INFO if info.is_main else logging.WARNING)
    return _attach(handler)


def file_logging(path: Path, info: DistInfo) -> contextlib.AbstractContextManager:
    """The log appended to ``path`` (``train.log``, kept across resumes) on rank 0; nothing on the
    others. Opens the file at once: an OSError here means it cannot be written."""
    if not info.is_main:
        return contextlib.nullcontext()
    return _attach(_LogFile(path))


def show_progress(config: TrainConfig, info: DistInfo) -> bool:
    """Whether rank 0 draws progress bars: ``config.progress`` on a terminal or in a notebook."""
    if not config.progress or not info.is_main:
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules
