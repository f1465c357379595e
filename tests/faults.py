"""``python tests/faults.py ARGS...``: ``python -m aalib ARGS...`` with one fault injected.

The reliability tests (tests/test_reliability.py) run the real command line through this
wrapper when a fault must strike at an exact point, which polling from outside cannot hit
deterministically on a 4-step epoch. The fault is read from the environment and changes nothing
else; the package itself has no fault hooks.

* ``AALIB_FAULT=kill_at_step:N``: SIGKILL this process right after optimizer step N (1-based,
  counted over the whole run), i.e. in the middle of an epoch.
* ``AALIB_FAULT=kill_in_save:E``: while ``last.pt`` of epoch E is being written, write half of
  its bytes, then SIGKILL this process (a kill inside ``torch.save``).
* ``AALIB_FAULT=signal_in_save:E:SIGNAL``: while ``torch.save`` writes ``last.pt`` of epoch E,
  send SIGNAL (``SIGINT``, ``SIGTERM``) to this process after its first bytes; Ctrl-C's default
  action is restored first, in case the test runs where SIGINT is ignored.
* ``AALIB_FAULT=nan_at_step:N`` / ``inf_at_step:N``: the training loss of step N (1-based) and
  later is NaN / +inf.
* ``AALIB_PATCH={"module:attr": value, ...}`` (JSON): set module attributes first, e.g. point a
  dataset's download URL at a crafted local archive.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import signal
import sys
from typing import Any

import torch


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at_step(step: int) -> None:
    import aalib.train as train_module

    build_optimizer = train_module.build_optimizer
    steps = [0]

    def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        steps[0] += 1
        if steps[0] == step:
            _kill()

    def build(config: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
        optimizer = build_optimizer(config, model)
        optimizer.register_step_post_hook(after_step)
        return optimizer

    train_module.build_optimizer = build


def _is_last_checkpoint(obj: Any, epoch: int) -> bool:
    """Whether ``torch.save`` was given last.pt of ``epoch`` (best.pt holds no optimizer)."""
    return isinstance(obj, dict) and "optimizer" in obj and obj.get("epoch") == epoch


def _kill_in_save(epoch: int) -> None:
    save = torch.save

    def half_then_die(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        if _is_last_checkpoint(obj, epoch):
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            handle.flush()
            _kill()
        save(obj, handle, *args, **kwargs)

    torch.save = half_then_die


class _SignalOnFirstWrite:
    """A file handle that sends ``sig`` to this process once its first bytes are written."""

    def __init__(self, handle: Any, sig: signal.Signals) -> None:
        self.handle, self.sig, self.sent = handle, sig, False

    def write(self, data: bytes) -> int:
        written = self.handle.write(data)
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.sig)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def _signal_in_save(epoch: int, sig: signal.Signals) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    save = torch.save

    def save_with_signal(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        if _is_last_checkpoint(obj, epoch):
            handle = _SignalOnFirstWrite(handle, sig)
        save(obj, handle, *args, **kwargs)

    torch.save = save_with_signal


class Poisoned(torch.nn.Module):
    """``inner``'s loss times ``value`` (NaN, inf) from training step ``step`` (1-based) on."""

    def __init__(self, inner: torch.nn.Module, step: int, value: float) -> None:
        super().__init__()
        self.inner, self.step, self.value, self.calls = inner, step, value, 0

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.inner(logits, labels)
        if logits.requires_grad:  # a training step (evaluation runs without gradients)
            self.calls += 1
            if self.calls >= self.step:
                return loss * self.value
        return loss


def _bad_loss(step: int, value: float) -> None:
    import aalib.train as train_module

    build_criterion = train_module.build_criterion
    train_module.build_criterion = lambda config: Poisoned(build_criterion(config), step, value)


def main() -> int:
    for target, value in json.loads(os.environ.get("AALIB_PATCH", "{}")).items():
        module, _, attr = target.partition(":")
        setattr(importlib.import_module(module), attr, value)
    fault = os.environ.get("AALIB_FAULT", "")
    kind, _, arg = fault.partition(":")
    if kind == "kill_at_step":
        _kill_at_step(int(arg))
    elif kind == "kill_in_save":
        _kill_in_save(int(arg))
    elif kind == "signal_in_save":
        epoch, _, name = arg.partition(":")
        _signal_in_save(int(epoch), signal.Signals[name])
    elif kind in ("nan_at_step", "inf_at_step"):
        _bad_loss(int(arg), float("nan") if kind == "nan_at_step" else float("inf"))
    elif kind:
        raise SystemExit(f"unknown AALIB_FAULT {fault!r}")
    from aalib.__main__ import main as aalib_main

    return aalib_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
