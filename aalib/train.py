"""The trainer: ``python -m aalib train CONFIG.yaml`` or :func:`train` from a notebook.

One run = one output folder holding

* ``last.pt`` (every epoch) and ``best.pt`` (best validation top-1): see :mod:`aalib.checkpoint`;
  ``last.pt`` carries model, optimizer, scheduler, epoch, step, RNG states, config and the metrics
  history, so running the same command again resumes exactly where it stopped;
* ``metrics.csv``: one row per epoch (:data:`aalib.checkpoint.METRIC_COLUMNS`), rebuilt from the
  checkpoint's history on resume, so a killed run never duplicates rows;
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
unsafe or foreign one is a one-line :class:`aalib.checkpoint.CheckpointError`.

Losses are per-sample means on one scale for training and validation (the reproduced study
averaged them on different scales: its defect 5 in docs/reproduced_study.md);
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
  freed host memory for the next step instead of unmapping it and faulting it back in (CPU step
  times with and without it: ``python -m aalib.bench train``, ``--system-malloc``).

Distributed: launched by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the same
entry point runs DDP, NCCL on CUDA and gloo on the CPU; ``batch_size`` is the global batch, split
evenly over the processes; every rank reads the output folder when resuming (multi-machine runs
need it on a shared file system) and rank 0 alone writes. Metrics are all-reduced sums, so they
are global. Exact resume is guaranteed for single-process runs; under DDP, ranks other than 0
reseed their dropout from (seed, rank, epoch) every epoch, so they are reproducible too.

Status: the CPU paths are tested (tests/test_train.py), DDP on gloo included, and bf16 and
channels_last on the CPU; ``compile`` is not tested on the CPU. CUDA, NCCL, bf16 on CUDA and
peak-memory figures on CUDA follow the PyTorch documentation; they are tested only on a machine
with a GPU (tests/test_cuda.py and ``python -m aalib.bench gpu-check``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_state,
    read_resumable,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_metrics_csv,
)
from .checks import first_line
from .config import ConfigError, TrainConfig
from .data import DeviceLoader, ImageSplits
from .distributed import DistInfo, all_reduce, barrier, dist_info_from_env, process_group, resolve_device
from .experiment import build_model_for, load_dataset, validate_config
from .io import interrupts_deferred, write_json
from .lock import RunLock, held
from .machine import device_name, synchronize
from .memory import peak_memory_mib, retain_freed_memory
from .models import count_parameters
from .recipe import build_criterion, build_optimizer, build_scheduler, lr_factor
from .run_log import file_logging, show_progress, stderr_logging

__all__ = ["NonFiniteLoss", "OutputError", "train"]

log = logging.getLogger("aalib.train")

_WRITTEN = ("last.pt", "best.pt", "summary.json", "metrics.csv")  # what the trainer writes atomically


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"non-finite training loss ({value}) at epoch {epoch}, step {step}")


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


# --- the run folder's files -------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


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


def _new_summary(config: TrainConfig, device: torch.device, info: DistInfo, parameters: int,
                 splits: ImageSplits) -> dict[str, Any]:
    """``summary.json`` of a run that starts: status ``running``, environment, config, data sizes."""
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
            "device_name": device_name(device),
            "world_size": info.world_size,
            "git_commit": _git_commit(),
        },
        "config": dataclasses.asdict(config),
        "split_sizes": {split: len(getattr(splits, split)[1]) for split in ("train", "val", "test")},
        # with the config, enough to rebuild the model (aalib.runs)
        "num_classes": splits.num_classes,
        "image_shape": list(splits.train[0].shape[1:]),  # C, H, W
    }


def _finished_summary(out_dir: Path, checkpoint: dict[str, Any], config: TrainConfig) -> dict[str, Any] | None:
    """The summary of a finished run in ``out_dir`` that ``checkpoint`` (its last.pt) ends, or None."""
    summary_path = out_dir / "summary.json"
    if checkpoint["epoch"] < config.epochs or not summary_path.exists():
        return None
    previous = json.loads(summary_path.read_text())
    if previous.get("status") != "finished":
        return None
    log.info("%s holds a finished run (%d epochs, test top-1 %.2f%%): nothing to do",
             out_dir, previous["epochs_completed"], (previous.get("test") or {}).get("top1", float("nan")))
    return previous


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


# --- the device side of a step ----------------------------------------------------------------


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if not config.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _check_finite(losses: Tensor, upto: int, epoch: int, first_step: int, info: DistInfo) -> None:
    """Raise NonFiniteLoss at the first non-finite loss among ``losses[:upto]`` on any rank (one sync)."""
    bad = (~torch.isfinite(losses[:upto])).nonzero()
    first = torch.tensor([bad[0, 0].item() if bad.numel() else upto], device=losses.device)
    all_reduce(first, info, dist.ReduceOp.MIN if info.enabled else None)
    index = int(first.item())
    if index < upto:
        raise NonFiniteLoss(epoch, first_step + index, float(losses[index]) if index < losses.numel() else float("nan"))


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


# --- setting a run up -------------------------------------------------------------------------


def train(config: TrainConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train (or resume, or report a finished run) and return the summary dict.

    ``out_dir`` defaults to ``runs/<config.name>``. With ``config.seeds`` each seed runs into
    ``<out_dir>/seed<k>`` and the result is ``{"status": ..., "runs": {"seed<k>": summary}}``
    (status "finished" only if every run finished). Raises :class:`ConfigError` for a bad config,
    a bad dataset, inputs smaller than the model's kernels, or a checkpoint that is corrupt, unsafe
    or from another configuration (:class:`aalib.checkpoint.CheckpointError`), and
    FileNotFoundError for a missing dataset, all before writing anything; :class:`OutputError`
    when the output folder cannot be written (full disk, no permission), leaving every file there
    complete.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    validate_config(config)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    info = dist_info_from_env()
    with process_group(config.device, info), stderr_logging(info):
        if config.seeds is None:
            return _train_one(config, out_dir, info)
        runs = {}
        for seed in config.seeds:
            log.info("seed %d of %s", seed, config.seeds)
            runs[f"seed{seed}"] = _train_one(dataclasses.replace(config, seed=seed, seeds=None),
                                             out_dir / f"seed{seed}", info)
        status = "finished" if all(r["status"] == "finished" for r in runs.values()) else "failed"
        return {"status": status, "runs": runs}


def _train_one(config: TrainConfig, out_dir: Path, info: DistInfo) -> dict[str, Any]:
    """One run into ``out_dir``: read the folder, build the run, take the folder, train."""
    device = resolve_device(config.device, info)
    # 1. Read what the folder holds (nothing is written before the config is known to be good).
    if info.is_main:
        _check_not_busy(out_dir)
    checkpoint = read_resumable(out_dir / "last.pt", config)
    if checkpoint is not None:
        finished = _finished_summary(out_dir, checkpoint, config)
        if finished is not None:
            return finished
    # 2. Data, model, loaders, optimizer: errors here still precede any write.
    run = _Run.build(config, out_dir, info, device)
    if checkpoint is not None:
        run.resume(checkpoint)
    barrier(info)  # every rank has read the folder before rank 0 writes to it

    # 3. The folder is this run's: the lock is the first write.
    with contextlib.ExitStack() as held_lock:
        if info.is_main:
            with _writing(out_dir):
                held_lock.enter_context(RunLock(out_dir))  # creates the folder
            _remove_stale_temporaries(out_dir)
            if run.resumed:
                run.keep_start_time()
        barrier(info)
        with _writing(out_dir / "train.log"):
            log_file = file_logging(out_dir / "train.log", info)
        with log_file:
            if config.retain_freed_memory and retain_freed_memory():
                log.info("host memory: freed blocks stay in the heap for reuse (retain_freed_memory)")
            return run.execute()


def _loaders(config: TrainConfig, splits: ImageSplits, device: torch.device, info: DistInfo) -> dict[str, Any]:
    """This rank's ``train`` loader and its ``val`` / ``test`` loaders (for the splits that have images)."""
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


# --- the run ----------------------------------------------------------------------------------


@dataclass
class _Run:
    """One run's state, shared by the steps of :meth:`execute`: what it trains with, where it
    writes, and what it has done so far (the history of epoch rows, the best validation top-1)."""

    config: TrainConfig
    out_dir: Path
    info: DistInfo
    device: torch.device
    model: nn.Module  # the bare module: evaluation, state_dict and checkpoints
    loaders: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    steps_per_epoch: int
    summary: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 1
    best_top1: float = -math.inf
    resumed: bool = False
    train_model: nn.Module | None = None  # the module that trains: the DDP wrapper under torchrun
    show: bool = False  # progress bars
    saved: int = 0  # epochs that last.pt and metrics.csv hold

    @classmethod
    def build(cls, config: TrainConfig, out_dir: Path, info: DistInfo, device: torch.device) -> _Run:
        """Seed, load the data, build the model, its loaders and its recipe (a ConfigError for a
        dataset the loaders cannot serve)."""
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
            raise ConfigError(f"dataset {config.dataset!r}: {first_line(exc)}") from None
        steps_per_epoch = len(loaders["train"])
        if steps_per_epoch == 0:
            raise ConfigError(f"the training split of {config.dataset!r} is empty")
        optimizer = build_optimizer(config, model)
        return cls(config, out_dir, info, device, model, loaders, optimizer,
                   scheduler=build_scheduler(config, optimizer, steps_per_epoch),
                   criterion=build_criterion(config), steps_per_epoch=steps_per_epoch,
                   summary=_new_summary(config, device, info, parameters, splits))

    def _path(self, name: str) -> Path:
        return self.out_dir / name

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Take up the states, history and (rank 0) RNG state of ``checkpoint``, the folder's last.pt."""
        last_path = self._path("last.pt")
        load_state(last_path, "model", self.model, checkpoint["model"])
        load_state(last_path, "optimizer", self.optimizer, checkpoint["optimizer"])
        load_state(last_path, "scheduler", self.scheduler, checkpoint["scheduler"])
        self.history = list(checkpoint["history"])
        self.start_epoch = checkpoint["epoch"] + 1
        self.best_top1 = checkpoint.get("best_val_top1", -math.inf)
        self.resumed = True
        if self.info.is_main:
            set_rng_state(checkpoint["rng"])

    def keep_start_time(self) -> None:
        """A resumed run keeps the ``started`` time of the summary it continues."""
        summary_path = self._path("summary.json")
        if summary_path.exists():
            with contextlib.suppress(ValueError, KeyError):
                self.summary["started"] = json.loads(summary_path.read_text())["started"]

    def execute(self) -> dict[str, Any]:
        """Train the remaining epochs, test, and return the summary; it says ``finished``,
        ``failed`` (a non-finite loss, returned; any other error, raised) or ``interrupted``."""
        self._start()
        try:
            self._train_epochs()
            self._test()
            return self.summary
        except NonFiniteLoss as exc:
            log.error("%s; stopping. last.pt keeps the last good epoch (%d).", exc, len(self.history))
            self._publish(status="failed", reason=str(exc))
            return self.summary
        except BaseException as exc:
            del self.history[self.saved :]  # an epoch stopped before its files were written is redone on resume
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            with contextlib.suppress(OSError):  # on a full disk this may fail too; the original error matters
                self._publish(status=status, reason=f"{type(exc).__name__}: {exc}".strip(": "))
            raise

    def _start(self) -> None:
        """Rebuild metrics.csv from the history, publish the summary, log the set-up, compile and
        wrap the model."""
        config, info = self.config, self.info
        if info.is_main:
            metrics_path = self._path("metrics.csv")
            with _writing(metrics_path):
                write_metrics_csv(metrics_path, self.history)  # rebuilt from the checkpoint: no duplicate rows
        self._publish()
        if self.resumed:
            log.info("resuming %s from epoch %d of %d", self.out_dir, self.start_epoch - 1, config.epochs)
        else:
            log.info("training %s into %s", config.name, self.out_dir)
        log.info("model %s (%s parameters), dataset %s (train %d / val %d / test %d images), device %s, %d process(es)",
                 config.model, f"{self.summary['parameters']:,}", config.dataset, *self.summary["split_sizes"].values(),
                 self.device, info.world_size)
        self.train_model = self.model
        if config.compile:
            self.model.compile()  # in place: the bare module is compiled before DDP wraps it
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.show = show_progress(config, info)
        self.saved = len(self.history)

    def _train_epochs(self) -> None:
        """Each remaining epoch: train and validate, keep the row, write the files, log it."""
        from tqdm.auto import tqdm

        config = self.config
        epochs_bar = tqdm(range(self.start_epoch, config.epochs + 1), total=config.epochs,
                          initial=self.start_epoch - 1, desc=config.name, unit="epoch", disable=not self.show,
                          dynamic_ncols=True)
        for epoch in epochs_bar:
            row = self._train_epoch(epoch)
            self.history.append(row)
            with interrupts_deferred():  # Ctrl-C and SIGTERM wait until all of the epoch's files are written
                self._save_epoch(row, improved=self._improved(row))
                self.saved = len(self.history)
            self._publish()  # every rank keeps the summary (best epoch decides the test_best pass); rank 0 writes it
            log.info(
                "epoch %d/%d  lr %.4g  train loss %.4f top-1 %.2f%%  val loss %.4f top-1 %.2f%% top-5 %.2f%%  "
                "%.1f s + %.1f s eval, %.0f img/s, peak %.0f MiB",
                epoch, config.epochs, row["lr"], row["train_loss"], row["train_top1"],
                _nan(row["val_loss"]), _nan(row["val_top1"]), _nan(row["val_top5"]),
                row["train_seconds"], row["eval_seconds"], row["images_per_second"], row["peak_mem_mb"],
            )
            epochs_bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_top1=f"{_nan(row['val_top1']):.2f}")
        epochs_bar.close()

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """Train on one epoch's batches, then validate: the epoch's metrics row
        (:data:`aalib.checkpoint.METRIC_COLUMNS`)."""
        loss_sum, hits, n, train_seconds = self._train_pass(epoch)
        start = time.perf_counter()
        val = self._evaluate(self.loaders["val"]) if "val" in self.loaders else None
        synchronize(self.device)
        eval_seconds = time.perf_counter() - start
        # The lr that the epoch's last step used (the scheduler has already moved one step past it).
        lr = self.config.lr * lr_factor(self.config, epoch * self.steps_per_epoch - 1, self.steps_per_epoch)
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
            "peak_mem_mb": peak_memory_mib(self.device),
        }

    def _train_pass(self, epoch: int) -> tuple[float, float, float, float]:
        """One pass over the training batches: summed loss * n, top-1 hits and n over all ranks,
        and its seconds. Raises NonFiniteLoss at a log line's step and at the end of the pass."""
        from tqdm.auto import tqdm

        config, info, device, steps = self.config, self.info, self.device, self.steps_per_epoch
        if info.rank > 0:  # rank 0's RNG is checkpointed; the others' dropout is a function of (seed, rank, epoch)
            torch.manual_seed((config.seed * 1_000_003 + info.rank * 10_007 + epoch) % 2**63)
        loader = self.loaders["train"]
        loader.set_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.train_model.train()
        first_step = (epoch - 1) * steps + 1  # 1-based global step of this epoch's first batch
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, top-1 hits, n
        losses = torch.zeros(steps, dtype=torch.float32, device=device)  # non-finite ones stop the run
        synchronize(device)
        start = time.perf_counter()
        bar = tqdm(loader, total=steps, desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=not self.show, dynamic_ncols=True)
        for index, (images, labels) in enumerate(bar):
            loss, logits, step_lr = self._step(images, labels)
            with torch.no_grad():
                losses[index] = loss
                n = labels.numel()
                sums += torch.stack([loss.double() * n, (logits.argmax(dim=1) == labels).sum().double(),
                                     torch.full((), n, dtype=torch.float64, device=device)])
            step = first_step + index
            if config.log_every and step % config.log_every == 0:
                _check_finite(losses, index + 1, epoch, first_step, info)
                value = float(losses[index])
                bar.set_postfix(loss=f"{value:.3f}")
                log.info("epoch %d step %d (%d/%d)  loss %.4f  lr %.4g", epoch, step, index + 1, steps, value, step_lr)
        bar.close()
        _check_finite(losses, steps, epoch, first_step, info)
        all_reduce(sums, info)
        synchronize(device)
        train_seconds = time.perf_counter() - start
        loss_sum, hits, n = sums.tolist()
        return loss_sum, hits, n, train_seconds

    def _step(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, float]:
        """One optimizer and scheduler step: the detached loss, the logits and the lr the step used."""
        with _autocast(self.config, self.device):
            logits = self.train_model(images)
        loss = self.criterion(logits.float(), labels)
        step_lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses (the scheduler moves it after)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), logits, step_lr

    @torch.no_grad()
    def _evaluate(self, loader: Any) -> dict[str, float]:
        """Per-sample mean loss, top-1 and top-5 (%) of the bare model over all ranks; ``images``
        is the denominator."""
        model, device = self.model, self.device
        was_training = model.training
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss * n, top-1 hits, top-5 hits, n
        for images, labels in loader:
            with _autocast(self.config, device):
                logits = model(images)
            logits = logits.float()
            loss = self.criterion(logits, labels)
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices  # B, k
            hits = top == labels[:, None]
            n = labels.numel()
            sums += torch.stack(
                [loss.double() * n, hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                 torch.full((), n, dtype=torch.float64, device=device)]  # torch.full: no host-to-device copy
            )
        all_reduce(sums, self.info)
        model.train(was_training)
        loss_sum, top1, top5, n = sums.tolist()
        if n == 0:
            return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "images": 0}
        return {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "images": int(n)}

    def _improved(self, row: dict[str, float]) -> bool:
        """Whether ``row`` is the best epoch so far (highest validation top-1, which it then
        becomes; without a validation split, every epoch: best is last)."""
        if "val" not in self.loaders:
            return True
        top1 = row["val_top1"]
        if top1 is None or math.isnan(top1) or not top1 > self.best_top1:
            return False
        self.best_top1 = top1
        return True

    def _save_epoch(self, row: dict[str, float], improved: bool) -> None:
        """Rank 0 writes best.pt (when ``improved``), last.pt and metrics.csv. best.pt goes first:
        a run killed in between redoes this epoch, rewriting both."""
        if not self.info.is_main:
            return
        config, epoch = dataclasses.asdict(self.config), row["epoch"]
        if improved:
            best_path = self._path("best.pt")
            with _writing(best_path):
                save_checkpoint(best_path, {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                                            "epoch": epoch, "config": config, "metrics": row})
        last_path = self._path("last.pt")
        with _writing(last_path):
            save_checkpoint(last_path, {
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "epoch": epoch,
                "step": epoch * self.steps_per_epoch,
                "rng": rng_state(),
                "config": config,
                "history": self.history,
                "best_val_top1": self.best_top1,
            })
        metrics_path = self._path("metrics.csv")
        with _writing(metrics_path):
            write_metrics_csv(metrics_path, self.history)

    def _test(self) -> None:
        """Test the last weights (what the study reported) and, if another epoch was best, the
        best ones too; the summary says ``finished``."""
        test = self._evaluate(self.loaders["test"]) if "test" in self.loaders else None
        test_best = None
        best_path, best = self._path("best.pt"), self.summary.get("best")
        if test is not None and best is not None and best["epoch"] != self.history[-1]["epoch"] and best_path.exists():
            barrier(self.info)  # rank 0 has finished writing best.pt
            checkpoint = load_checkpoint(best_path, map_location=self.device)
            self.model.load_state_dict(checkpoint["model"])
            test_best = self._evaluate(self.loaders["test"])
            test_best["epoch"] = checkpoint["epoch"]
        self._publish(status="finished", test=test, test_best=test_best)
        if test is not None:
            log.info("finished: test loss %.4f top-1 %.2f%% top-5 %.2f%% on %d images",
                     test["loss"], test["top1"], test["top5"], test["images"])

    def _publish(self, **changes: Any) -> None:
        """Update the summary (``changes``, the time, the epochs done, last and best rows); rank 0
        writes it to summary.json."""
        summary, history = self.summary, self.history
        summary.update(changes, updated=_now(), epochs_completed=len(history))
        if history:
            summary["last"] = history[-1]
            rows = [r for r in history if r.get("val_top1") is not None and not math.isnan(r["val_top1"])]
            summary["best"] = max(rows, key=lambda r: r["val_top1"]) if rows else history[-1]
        if self.info.is_main:
            summary_path = self._path("summary.json")
            with _writing(summary_path):
                write_json(summary_path, summary)
