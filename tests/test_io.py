"""Atomic writes and the interrupts they hold back (aalib/io.py), in process."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import IO, Iterator

import pytest

from aalib.io import atomic_write, interrupts_deferred


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here, even where the test process was started ignoring it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.txt"
    atomic_write(path, lambda handle: handle.write("one\n"))
    atomic_write(path, lambda handle: handle.write("two\n"))
    assert path.read_text() == "two\n" and sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("previous\n")

    def fail(handle: IO) -> None:
        handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_ctrl_c_during_a_write_comes_after_the_file_is_in_place(tmp_path: Path, ctrl_c_raises: None) -> None:
    path = tmp_path / "out.txt"
    path.write_text("previous\n")

    def interrupted_half_way(handle: IO) -> None:
        handle.write("first half, ")
        signal.raise_signal(signal.SIGINT)  # would raise KeyboardInterrupt here without the deferral
        handle.write("second half\n")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted_half_way)
    assert path.read_text() == "first half, second half\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_each_signal_reaches_its_own_handler_once_after_the_block(ctrl_c_raises: None) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with interrupts_deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert seen == []
        assert seen == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):  # nested blocks: the outer one delivers
            with interrupts_deferred():
                with interrupts_deferred():
                    signal.raise_signal(signal.SIGINT)
                assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        with interrupts_deferred():
            pass  # nothing came: nothing is raised
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_error_in_the_block_still_gets_the_interrupt_after_it(ctrl_c_raises: None) -> None:
    with pytest.raises(KeyboardInterrupt) as raised:
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            raise ValueError("the block's own error")
    assert isinstance(raised.value.__context__, ValueError)


def test_ignored_signals_and_other_threads_are_left_alone(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_deferred():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)  # ignored, as without the block
    finally:
        signal.signal(signal.SIGINT, previous)
    handlers: list[object] = []

    def write_off_the_main_thread() -> None:
        with interrupts_deferred():
            handlers.append(signal.getsignal(signal.SIGTERM))
        atomic_write(tmp_path / "thread.txt", lambda handle: handle.write("ok\n"))

    worker = threading.Thread(target=write_off_the_main_thread)
    worker.start()
    worker.join()
    assert handlers == [signal.getsignal(signal.SIGTERM)] and (tmp_path / "thread.txt").read_text() == "ok\n"
