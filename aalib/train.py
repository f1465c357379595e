"""The trainer: ``python -m aalib train CONFIG.yaml`` or :func:`train` from a notebook.

One run = one output folder holding

* ``last.pt`` (every epoch) and ``best.pt`` (best validation top-1): see :func:`save_checkpoint`;
  ``last.pt`` carries model, optimizer, scheduler, epoch, step, RNG states, config and the metrics
  history, so running the same command again resumes exactly where it stopped;
* ``metrics.csv``: one row per epoch (:data:`METRIC_COLUMNS`), rebuilt from the checkpoint's
  history on resume, so a killed run never duplicates rows;
* ``summary.json``: status, best and last rows, test accuracy (on all test images, the true
  denominator), parameter count, versions, device (the CPU's model name on the CPU), git commit,
  config. Status is ``running`` while it trains, ``finished``, ``interrupted`` (Ctrl-C or SIGTERM:
  the same command resumes it) or ``failed`` (an error or a non-finite loss, named in ``reason``);
* ``train.log``: the log a person reads;
* ``.lock``: the folder's one writer (:mod:`aalib.lock`): a second run on a folder that a live
  process is writing raises :class:`aalib.lock.RunFolderBusy` before it writes anything.

Faults (tests/test_reliability.py, RELIABILITY.md): every file is written
atomically (:mod:`aalib.io`), so a kill at any moment leaves the previous ``last.pt`` loadable and
running the same command again resumes from it (temporary files of an interrupted write are
removed on the way); a write that fails (full disk, file size limit, no permission) raises
:class:`OutputError` naming the file; a non-finite loss stops the run with status ``failed`` and
the epoch and step in ``reason``; checkpoints load with ``weights_only=True`` and a corrupt,
unsafe or foreign one is a one-line :class:`CheckpointError`.

Losses are per-sample means on one scale for training and validation (the seed's defect 5);
training loss and top-1 are measured on the augmented training batches, in train mode.

Hardware switches, none of which changes what a run computes (all but the last off by default):

* ``bf16``: ``torch.autocast(device_type, dtype=torch.bfloat16)`` around forward and loss (no grad
  scaler: bfloat16 has float32's exponent range). Allowed on the CPU too, where autocast supports
  bfloat16; it is mostly slower there but lets the path be exercised without a GPU.
* ``channels_last``: model and batches in NHWC, which cuDNN prefers for convolutions under
  autocast.
* ``compile``: ``model.compile()`` on the bare module, before the DDP wrapper, as the PyTorch
  guide "Where to apply torch.compile?" recommends (state_dict keys stay unprefixed).
* ``retain_freed_memory`` (on): :func:`aalib.memory.retain_freed_memory`, so that glibc keeps
  freed host memory for the next step instead of unmapping it and faulting it back in (the seed's
  Wide-AAResNet / Wide-ResNet step ratio on 2 CPU cores: 1.75 to 1.48).

Distributed: launched by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the same
entry point runs DDP, NCCL on CUDA and gloo on the CPU; ``batch_size`` is the global batch, split
evenly over the processes; every rank reads the output folder when resuming (multi-machine runs
need it on a shared file system) and rank 0 alone writes. Metrics are all-reduced sums, so they
are global. Exact resume is guaranteed for single-process runs; under DDP, ranks other than 0
reseed their dropout from (seed, rank, epoch) every epoch, so they are reproducible too.

Status: the CPU paths are tested (tests/test_train.py), DDP on gloo included, and bf16 and
channels_last on the CPU; ``compile`` was run by hand on the CPU only. CUDA, NCCL, bf16 on CUDA and
peak-memory figures on CUDA are written from the PyTorch documentation and untested here (no GPU
on the development machine).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import gc
import io
import json
import logging
import math
import os
import pickle
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .config import ConfigError, TrainConfig, config_diff
from .experiment import build_model_for, load_dataset, validate_config
from .io import atomic_write, write_json
from .lock import RunLock, held
from .machine import cpu_name
from .memory import peak_rss_bytes, retain_freed_memory
from .models import count_parameters

__all__ = [
    "METRIC_COLUMNS",
    "CheckpointError",
    "NonFiniteLoss",
    "OutputError",
    "build_criterion",
    "build_optimizer",
    "build_model_for",
    "build_scheduler",
    "load_checkpoint",
    "load_dataset",
    "lr_factor",
    "save_checkpoint",
    "train",
]

log = logging.getLogger("aalib.train")

METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",  # 1-based
    "lr",  # learning rate of the epoch's last step
    "train_loss",  # per-sample mean over the epoch (augmented batches, train mode)
    "train_top1",  # % correct on the same batches
    "val_loss",  # per-sample mean, same criterion and scale as train_loss
    "val_top1",  # %
    "val_top5",  # %
    "train_seconds",  # wall time of the training pass
    "eval_seconds",  # wall time of the validation pass
    "images_per_second",  # training images (all ranks) / train_seconds
    "peak_mem_mb",  # CUDA: peak allocated this epoch; CPU: peak resident set of the process so far
)

CHECKPOINT_FORMAT = 1


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"non-finite training loss ({value}) at epoch {epoch}, step {step}")


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be used: corrupt, refused as unsafe, or not this run's model."""


class OutputError(OSError):
    """The output folder cannot be written (full disk, file size limit, no permission).

    Every file goes through :func:`aalib.io.atomic_write`, so when this is raised no file is
    half-written: each holds its previous complete version, or does not exist.
    """


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into an :class:`OutputError` naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}; the files already there are complete "
            "(free space or fix the folder's permissions, then run the same command again to resume, "
            "or choose another --out)"
        ) from exc


# --- small helpers ----------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """``metrics.csv``: a header and one row per epoch of ``history``, written atomically."""

    def write(handle: io.TextIOBase) -> None:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})

    atomic_write(path, write)


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """``torch.save`` to a temp file, fsync, os.replace (a crash leaves the previous file intact).

    A failed write (full disk, file size limit) raises the OSError itself: torch's zip writer
    reports it as a RuntimeError ("unexpected pos ...") raised while handling the OSError.
    """

    def write(handle: io.BufferedWriter) -> None:
        try:
            torch.save(checkpoint, handle)
        except RuntimeError as exc:
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise

    atomic_write(path, write, binary=True)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: checkpoints hold only tensors and plain Python types.

    Raises :class:`CheckpointError` (one line) for a file that is truncated or corrupt, that is
    not a checkpoint dict, or whose pickle asks for anything else (code would run on loading);
    a missing file stays FileNotFoundError.
    """
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as exc:
        unsafe = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]  # a global it will not import
        if not unsafe:
            raise CheckpointError(f"{path}: corrupt checkpoint file ({_first_line(exc)}); "
                                  "delete it to start over, or use another --out") from None
        raise CheckpointError(
            f"{path}: refused to load: {unsafe[0]} (checkpoints are loaded with weights_only=True; "
            "allowed: tensors, numbers, strings, lists, dicts)"
        ) from None
    except Exception as exc:  # noqa: BLE001 (truncated zip, garbage bytes, empty file: all "corrupt")
        raise CheckpointError(f"{path}: corrupt checkpoint file ({_first_line(exc)}); "
                              "delete it to start over, or use another --out") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not an aalib checkpoint (holds a {type(checkpoint).__name__}, expected a dict)")
    return checkpoint


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the first sentence of a long one)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.split(". ")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# --- RNG state (plain types and tensors, so weights_only loading works) ----------------------


def rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# --- distributed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_dist() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available; use device: cpu or auto")
        if info.enabled:
            return torch.device("cuda", info.local_rank)  # one process per GPU under torchrun
        return torch.device(spec)
    if spec == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available; use device: cpu or auto")
    return torch.device(spec)


def _all_reduce(tensor: Tensor, info: DistInfo, op: Any = None) -> Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


# --- recipe -----------------------------------------------------------------------------------


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` for the optimizer step with 0-based index ``step``.

    Linear warm-up over ``warmup_epochs`` (if any), then: ``cosine`` decays to 0 at the last step
    (per step, as the seed's CosineAnnealingLR stepped per iteration); ``multistep`` multiplies by
    ``gamma`` at each epoch in ``milestones`` (Z&K: x0.2 at 60/120/160); ``constant`` keeps 1.
    """
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if config.schedule == "multistep":
        epoch = step // steps_per_epoch  # 0-based epoch of this step
        return config.gamma ** sum(epoch >= m for m in config.milestones)
    return 1.0


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step; its state is (last_epoch = steps taken) plain numbers."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, steps_per_epoch))


def build_criterion(config: TrainConfig) -> nn.Module:
    """Cross-entropy with label smoothing; mean over the batch (multiplied back by n to sum)."""
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


# --- logging and progress ---------------------------------------------------------------------


class _TqdmHandler(logging.StreamHandler):
    """Log lines through ``tqdm.write`` so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover
            self.handleError(record)


_FORMAT = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")


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


def _stderr_logging(info: DistInfo) -> contextlib.AbstractContextManager:
    """INFO to stderr on rank 0; warnings and errors only on the other ranks."""
    handler = _TqdmHandler()
    handler.setLevel(logging.INFO if info.is_main else logging.WARNING)
    return _attach(handler)


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


def _file_logging(out_dir: Path, info: DistInfo) -> contextlib.AbstractContextManager:
    """<out_dir>/train.log, appended to across resumes, written by rank 0."""
    if not info.is_main:
        return contextlib.nullcontext()
    with _writing(out_dir / "train.log"):
        return _attach(_LogFile(out_dir / "train.log"))


def _show_progress(config: TrainConfig, info: DistInfo) -> bool:
    if not config.progress or not info.is_main:
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


# --- one pass ---------------------------------------------------------------------------------


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if not config.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    criterion: nn.Module,
    config: TrainConfig,
    device: torch.device,
    info: DistInfo,
) -> dict[str, float]:
    """Per-sample mean loss, top-1 and top-5 (%) over all ranks; ``images`` is the denominator."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss * n, top-1 hits, top-5 hits, n
    for images, labels in loader:
        with _autocast(config, device):
            logits = model(images)
        logits = logits.float()
        loss = criterion(logits, labels)
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # B, k
        hits = top == labels[:, None]
        n = labels.numel()
        sums += torch.stack(
            [loss.double() * n, hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
             torch.full((), n, dtype=torch.float64, device=device)]  # torch.full: no host-to-device copy
        )
    _all_reduce(sums, info)
    model.train(was_training)
    loss_sum, top1, top5, n = sums.tolist()
    if n == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "images": 0}
    return {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "images": int(n)}


def _check_finite(losses: Tensor, upto: int, epoch: int, first_step: int, info: DistInfo) -> None:
    """Raise NonFiniteLoss at the first non-finite loss among ``losses[:upto]`` on any rank (one sync)."""
    bad = (~torch.isfinite(losses[:upto])).nonzero()
    first = torch.tensor([bad[0, 0].item() if bad.numel() else upto], device=losses.device)
    _all_reduce(first, info, dist.ReduceOp.MIN if info.enabled else None)
    index = int(first.item())
    if index < upto:
        raise NonFiniteLoss(epoch, first_step + index, float(losses[index]) if index < losses.numel() else float("nan"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_bytes() / 2**20


# --- the run ----------------------------------------------------------------------------------


def _loaders(config: TrainConfig, splits: Any, device: torch.device, info: DistInfo) -> dict[str, Any]:
    from .data import DeviceLoader

    if config.batch_size % info.world_size:
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by the {info.world_size} processes")
    normalize = (splits.mean, splits.std) if config.normalize else None
    common = dict(device=device, normalize=normalize, seed=config.seed, rank=info.rank,
                  world_size=info.world_size, channels_last=config.channels_last)
    loaders = {
        "train": DeviceLoader(
            *splits.train,
            batch_size=config.batch_size // info.world_size,
            shuffle=True,
            crop_padding=config.crop_padding if config.augment else 0,
            flip=config.augment,
            drop_last=False,
            **common,
        )
    }
    # Evaluation: each rank takes every world_size-th image itself, unpadded (the loader's own
    # sharding pads ranks with repeats, which would count some images twice); the bare model runs
    # it, so uneven batch counts need no collective, and the all-reduced sums cover each image once.
    for split in ("val", "test"):
        images, labels = getattr(splits, split)
        images, labels = images[info.rank :: info.world_size], labels[info.rank :: info.world_size]
        if len(getattr(splits, split)[1]) and len(labels):
            loaders[split] = DeviceLoader(
                images, labels, batch_size=config.eval_batch_size, shuffle=False,
                **{**common, "rank": 0, "world_size": 1},
            )
        elif len(getattr(splits, split)[1]):
            loaders[split] = []  # more ranks than images: this rank contributes nothing
    return loaders


def _summary_skeleton(config: TrainConfig, device: torch.device, info: DistInfo, parameters: int) -> dict[str, Any]:
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = cpu_name()
    return {
        "name": config.name,
        "status": "running",
        "reason": None,
        "epochs": config.epochs,
        "epochs_completed": 0,
        "parameters": parameters,
        "best": None,
        "last": None,
        "test": None,
        "test_best": None,
        "started": _now(),
        "updated": _now(),
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "device_name": device_name,
            "world_size": info.world_size,
            "git_commit": _git_commit(),
        },
        "config": dataclasses.asdict(config),
    }


def _describe_diff(old: dict[str, Any], new: dict[str, Any], keys: list[str]) -> str:
    def get(cfg: dict[str, Any], key: str) -> Any:
        top, _, sub = key.partition(".")
        value = cfg.get(top)
        return value.get(sub, "<unset>") if sub and isinstance(value, dict) else value

    return "; ".join(f"{k}: {get(old, k)!r} -> {get(new, k)!r}" for k in keys)


def train(config: TrainConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train (or resume, or report a finished run) and return the summary dict.

    ``out_dir`` defaults to ``runs/<config.name>``. With ``config.seeds`` each seed runs into
    ``<out_dir>/seed<k>`` and the result is ``{"status": ..., "runs": {"seed<k>": summary}}``
    (status "finished" only if every run finished). Raises :class:`ConfigError` for a bad config,
    a bad dataset, inputs smaller than the model's kernels, or a checkpoint that is corrupt, unsafe
    or from another configuration (:class:`CheckpointError`), and FileNotFoundError for a missing
    dataset, all before writing anything; :class:`OutputError` when the output folder cannot be
    written (full disk, no permission), leaving every file there complete.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    validate_config(config)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    info = _env_dist()
    own_group = False
    if info.enabled and not dist.is_initialized():
        wants_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
        if wants_cuda and torch.cuda.is_available():
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if wants_cuda and torch.cuda.is_available() else "gloo")
        own_group = True
    try:
        with _stderr_logging(info):
            if config.seeds is None:
                return _train_one(config, out_dir, info)
            runs = {}
            for seed in config.seeds:
                log.info("seed %d of %s", seed, config.seeds)
                runs[f"seed{seed}"] = _train_one(dataclasses.replace(config, seed=seed, seeds=None),
                                                 out_dir / f"seed{seed}", info)
            status = "finished" if all(r["status"] == "finished" for r in runs.values()) else "failed"
            return {"status": status, "runs": runs}
    finally:
        if own_group:
            # The DDP wrapper sits in reference cycles; collected only at interpreter exit, it takes
            # gloo's threads down with it and the process aborts now and then. Collect it first.
            gc.collect()
            dist.destroy_process_group()


_RESUME_KEYS = ("format", "model", "optimizer", "scheduler", "epoch", "rng", "config", "history")
_WRITTEN = ("last.pt", "best.pt", "summary.json", "metrics.csv")  # what the trainer writes atomically


def _load_state(path: Path, what: str, module: Any, state: Any) -> None:
    """``module.load_state_dict(state)``, a mismatch reported as one line naming a few keys."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        if what == "model":
            own, theirs = module.state_dict(), state
            missing = [k for k in own if k not in theirs]
            unexpected = [k for k in theirs if k not in own]
            shapes = [f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in own
                      if k in theirs and hasattr(theirs[k], "shape") and theirs[k].shape != own[k].shape]
            detail = "; ".join(f"{label}: {len(keys)} (e.g. {', '.join(keys[:2])})"
                               for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                   ("shape differs (checkpoint vs model)", shapes)) if keys)
        else:
            detail = _first_line(exc)
        raise CheckpointError(
            f"{path} holds a {what} state of another model configuration ({detail or _first_line(exc)}); "
            "use another --out, or delete the folder to start over"
        ) from None


def _train_one(config: TrainConfig, out_dir: Path, info: DistInfo) -> dict[str, Any]:
    device = resolve_device(config.device, info)
    config_dict = dataclasses.asdict(config)

    # 1. Read what the folder holds (nothing is written before the config is known to be good).
    if info.is_main:
        _check_not_busy(out_dir)
    last_path, summary_path = out_dir / "last.pt", out_dir / "summary.json"
    checkpoint = None
    if last_path.exists():
        checkpoint = load_checkpoint(last_path, map_location="cpu")
        lacking = [key for key in _RESUME_KEYS if key not in checkpoint]
        if lacking:
            raise CheckpointError(f"{last_path}: not a resumable aalib checkpoint (lacks {', '.join(lacking)}); "
                                  "use another --out, or delete the folder to start over")
        if checkpoint["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{last_path}: checkpoint format {checkpoint['format']!r}, this version reads "
                                  f"{CHECKPOINT_FORMAT}; use another --out")
        differ = config_diff(checkpoint["config"], config_dict)
        if differ:
            raise ConfigError(
                f"{last_path} was written by a different configuration; keys differ: "
                f"{_describe_diff(checkpoint['config'], config_dict, differ)} "
                f"(use another --out, or delete the folder to start over)"
            )
        if checkpoint["epoch"] >= config.epochs and summary_path.exists():
            previous = json.loads(summary_path.read_text())
            if previous.get("status") == "finished":
                log.info("%s holds a finished run (%d epochs, test top-1 %.2f%%): nothing to do",
                         out_dir, previous["epochs_completed"], (previous.get("test") or {}).get("top1", float("nan")))
                return previous

    # 2. Data (it gives num_classes), model, loaders, optimizer: errors here still precede any write.
    seed_everything(config.seed)
    splits = load_dataset(config)
    model = build_model_for(config, splits.num_classes, tuple(splits.train[0].shape[1:]))
    parameters = count_parameters(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        loaders = _loaders(config, splits, device, info)
    except ConfigError:
        raise
    except ValueError as exc:  # e.g. crop_padding >= the image side
        raise ConfigError(f"dataset {config.dataset!r}: {str(exc).splitlines()[0]}") from None
    steps_per_epoch = len(loaders["train"])
    if steps_per_epoch == 0:
        raise ConfigError(f"the training split of {config.dataset!r} is empty")
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    criterion = build_criterion(config)

    history: list[dict[str, float]] = []
    start_epoch = 1
    best_top1 = -math.inf
    if checkpoint is not None:
        _load_state(last_path, "model", model, checkpoint["model"])
        _load_state(last_path, "optimizer", optimizer, checkpoint["optimizer"])
        _load_state(last_path, "scheduler", scheduler, checkpoint["scheduler"])
        history = list(checkpoint["history"])
        start_epoch = checkpoint["epoch"] + 1
        best_top1 = checkpoint.get("best_val_top1", -math.inf)
        if info.is_main:
            set_rng_state(checkpoint["rng"])
    _barrier(info)  # every rank has read the folder before rank 0 writes to it

    summary = _summary_skeleton(config, device, info, parameters)
    summary["split_sizes"] = {split: len(getattr(splits, split)[1]) for split in ("train", "val", "test")}
    # with the config, enough to rebuild the model (aalib.runs)
    summary["num_classes"] = splits.num_classes
    summary["image_shape"] = list(splits.train[0].shape[1:])  # C, H, W
    with contextlib.ExitStack() as held_lock:
        if info.is_main:
            with _writing(out_dir):
                held_lock.enter_context(RunLock(out_dir))  # creates the folder: the first write
            _remove_stale_temporaries(out_dir)
            if summary_path.exists() and checkpoint is not None:
                with contextlib.suppress(ValueError, KeyError):
                    summary["started"] = json.loads(summary_path.read_text())["started"]
        _barrier(info)

        with _file_logging(out_dir, info):
            if config.retain_freed_memory and retain_freed_memory():
                log.info("host memory: freed blocks stay in the heap for reuse (retain_freed_memory)")
            return _run(
                config, out_dir, info, device, model, loaders, optimizer, scheduler, criterion,
                history, start_epoch, best_top1, summary, steps_per_epoch, checkpoint,
            )


def _check_not_busy(out_dir: Path) -> None:
    """Fail at once, before reading or loading anything, when a live process writes ``out_dir``
    (the lock taken before the first write is what guarantees one writer; this only saves the
    second writer the work of loading its data first)."""
    if held(out_dir):
        with RunLock(out_dir):  # raises RunFolderBusy naming the holder
            pass  # pragma: no cover (the holder ended between the two calls)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Delete the temporary files of writes that a kill interrupted (:func:`aalib.io.atomic_write`
    names them ``.<file>.<random>.tmp``); the files they were to replace are intact."""
    for name in _WRITTEN:
        for stale in out_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
            log.warning("removed %s, left by an interrupted write", stale.name)


def _run(
    config: TrainConfig,
    out_dir: Path,
    info: DistInfo,
    device: torch.device,
    model: nn.Module,
    loaders: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    criterion: nn.Module,
    history: list[dict[str, float]],
    start_epoch: int,
    best_top1: float,
    summary: dict[str, Any],
    steps_per_epoch: int,
    checkpoint: dict[str, Any] | None,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    main = info.is_main
    last_path, best_path, summary_path = out_dir / "last.pt", out_dir / "best.pt", out_dir / "summary.json"
    metrics_path = out_dir / "metrics.csv"

    def publish(**changes: Any) -> None:
        summary.update(changes, updated=_now(), epochs_completed=len(history))
        if history:
            summary["last"] = history[-1]
            rows = [r for r in history if r.get("val_top1") is not None and not math.isnan(r["val_top1"])]
            summary["best"] = max(rows, key=lambda r: r["val_top1"]) if rows else history[-1]
        if main:
            with _writing(summary_path):
                write_json(summary_path, summary)

    if main:
        with _writing(metrics_path):
            write_metrics_csv(metrics_path, history)  # rebuilt from the checkpoint: no duplicate rows
    publish()
    if checkpoint is not None:
        log.info("resuming %s from epoch %d of %d", out_dir, start_epoch - 1, config.epochs)
    else:
        log.info("training %s into %s", config.name, out_dir)
    log.info("model %s (%s parameters), dataset %s (train %d / val %d / test %d images), device %s, %d process(es)",
             config.model, f"{summary['parameters']:,}", config.dataset, *summary["split_sizes"].values(),
             device, info.world_size)

    train_model = model
    if config.compile:
        model.compile()  # in place: the bare module is compiled before DDP wraps it
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    show = _show_progress(config, info)
    saved = len(history)  # epochs that last.pt and metrics.csv hold

    try:
        epochs_bar = tqdm(range(start_epoch, config.epochs + 1), total=config.epochs, initial=start_epoch - 1,
                          desc=config.name, unit="epoch", disable=not show, dynamic_ncols=True)
        for epoch in epochs_bar:
            row = _train_epoch(config, info, device, model, train_model, loaders, optimizer, scheduler, criterion,
                               epoch, steps_per_epoch, show)
            history.append(row)
            improved = row["val_top1"] is not None and not math.isnan(row["val_top1"]) and row["val_top1"] > best_top1
            if "val" not in loaders:
                improved = True  # without a validation split, best is last
            if improved:
                best_top1 = row["val_top1"] if "val" in loaders else best_top1
            if main:
                # best.pt before last.pt: a run killed in between redoes this epoch, rewriting both.
                if improved:
                    with _writing(best_path):
                        save_checkpoint(best_path, {
                            "format": CHECKPOINT_FORMAT,
                            "model": model.state_dict(),
                            "epoch": epoch,
                            "config": dataclasses.asdict(config),
                            "metrics": row,
                        })
                with _writing(last_path):
                    save_checkpoint(last_path, {
                        "format": CHECKPOINT_FORMAT,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        "step": epoch * steps_per_epoch,
                        "rng": rng_state(),
                        "config": dataclasses.asdict(config),
                        "history": history,
                        "best_val_top1": best_top1,
                    })
                with _writing(metrics_path):
                    write_metrics_csv(metrics_path, history)
            saved = len(history)
            publish()  # every rank keeps the summary (best epoch decides the test_best pass); rank 0 writes it
            log.info(
                "epoch %d/%d  lr %.4g  train loss %.4f top-1 %.2f%%  val loss %.4f top-1 %.2f%% top-5 %.2f%%  "
                "%.1f s + %.1f s eval, %.0f img/s, peak %.0f MiB",
                epoch, config.epochs, row["lr"], row["train_loss"], row["train_top1"],
                _nan(row["val_loss"]), _nan(row["val_top1"]), _nan(row["val_top5"]),
                row["train_seconds"], row["eval_seconds"], row["images_per_second"], row["peak_mem_mb"],
            )
            epochs_bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_top1=f"{_nan(row['val_top1']):.2f}")
        epochs_bar.close()

        # Test: the last weights (what the seed reported) and, if another epoch was best, those too.
        test = evaluate(model, loaders["test"], criterion, config, device, info) if "test" in loaders else None
        test_best = None
        if (test is not None and summary.get("best") is not None and summary["best"]["epoch"] != history[-1]["epoch"]
                and best_path.exists()):
            _barrier(info)  # rank 0 has finished writing best.pt
            best = load_checkpoint(best_path, map_location=device)
            model.load_state_dict(best["model"])
            test_best = evaluate(model, loaders["test"], criterion, config, device, info)
            test_best["epoch"] = best["epoch"]
        publish(status="finished", test=test, test_best=test_best)
        if test is not None:
            log.info("finished: test loss %.4f top-1 %.2f%% top-5 %.2f%% on %d images",
                     test["loss"], test["top1"], test["top5"], test["images"])
        return summary
    except NonFiniteLoss as exc:
        log.error("%s; stopping. %s keeps the last good epoch (%d).", exc, last_path.name, len(history))
        publish(status="failed", reason=str(exc))
        return summary
    except BaseException as exc:
        del history[saved:]  # an epoch stopped before its files were written is redone on resume
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        with contextlib.suppress(OSError):  # on a full disk this may fail too; the original error matters
            publish(status=status, reason=f"{type(exc).__name__}: {exc}".strip(": "))
        raise


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _train_epoch(
    config: TrainConfig,
    info: DistInfo,
    device: torch.device,
    model: nn.Module,
    train_model: nn.Module,
    loaders: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    criterion: nn.Module,
    epoch: int,
    steps_per_epoch: int,
    show: bool,
) -> dict[str, float]:
    from tqdm.auto import tqdm

    if info.rank > 0:  # rank 0's RNG is checkpointed; the others' dropout is a function of (seed, rank, epoch)
        torch.manual_seed((config.seed * 1_000_003 + info.rank * 10_007 + epoch) % 2**63)
    loader = loaders["train"]
    loader.set_epoch(epoch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_model.train()
    first_step = (epoch - 1) * steps_per_epoch + 1  # 1-based global step of this epoch's first batch
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, top-1 hits, n
    losses = torch.zeros(steps_per_epoch, dtype=torch.float32, device=device)  # non-finite ones stop the run
    _sync(device)
    start = time.perf_counter()
    bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch}", unit="batch", leave=False,
               disable=not show, dynamic_ncols=True)
    for index, (images, labels) in enumerate(bar):
        with _autocast(config, device):
            logits = train_model(images)
        loss = criterion(logits.float(), labels)
        step_lr = optimizer.param_groups[0]["lr"]  # the lr this step uses (the scheduler moves it after)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            detached = loss.detach()
            losses[index] = detached
            n = labels.numel()
            sums += torch.stack([detached.double() * n, (logits.argmax(dim=1) == labels).sum().double(),
                                 torch.full((), n, dtype=torch.float64, device=device)])
        step = first_step + index
        if config.log_every and step % config.log_every == 0:
            _check_finite(losses, index + 1, epoch, first_step, info)
            value = float(losses[index])
            bar.set_postfix(loss=f"{value:.3f}")
            log.info("epoch %d step %d (%d/%d)  loss %.4f  lr %.4g", epoch, step, index + 1, steps_per_epoch,
                     value, step_lr)
    bar.close()
    _check_finite(losses, steps_per_epoch, epoch, first_step, info)
    _all_reduce(sums, info)
    _sync(device)
    train_seconds = time.perf_counter() - start
    loss_sum, hits, n = sums.tolist()

    start = time.perf_counter()
    val = evaluate(model, loaders["val"], criterion, config, device, info) if "val" in loaders else None
    _sync(device)
    eval_seconds = time.perf_counter() - start
    # The lr that the epoch's last step used (the scheduler has already moved one step past it).
    lr = config.lr * lr_factor(config, epoch * steps_per_epoch - 1, steps_per_epoch)
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": loss_sum / n,
        "train_top1": 100.0 * hits / n,
        "val_loss": val["loss"] if val else None,
        "val_top1": val["top1"] if val else None,
        "val_top5": val["top5"] if val else None,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "images_per_second": n / train_seconds if train_seconds > 0 else float("nan"),
        "peak_mem_mb": _peak_memory_mb(device),
    }
