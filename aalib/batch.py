"""Batch runs of the papermill notebooks: ``aalib run``, ``aalib sweep`` and the report of ``aalib report``.

Each run executes the training notebook that ships with the package as package data
(``aalib/notebooks/train.ipynb``, :data:`TRAIN_NOTEBOOK`, so any install works from any folder)
with a params file's keys as the notebook's parameters, into ``<runs_dir>/<name>/seed<k>/``: the
executed notebook, the effective ``params.yaml``, and what the trainer writes there
(``metrics.csv``, ``summary.json``, checkpoints, ``train.log``, the learning-curve figure). A
finished run is skipped; an interrupted one resumes from its last checkpoint, because the trainer
does when pointed at the same folder. The same run works without this module:
``papermill aalib/notebooks/train.ipynb OUT.ipynb -f params/x.yaml``.

Beyond one process: ``sweep(..., jobs=N)`` runs N plans at once, each as its own ``aalib run``
process (:meth:`RunPlan.command`), optionally each on its own GPU (``devices``, through
``CUDA_VISIBLE_DEVICES``); :func:`list_commands` prints the same commands, one per run, for a
scheduler's job array. Every run folder is written under its lock (:mod:`aalib.lock`), so two
processes never write one folder, however the runs are started.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .checks import check_int
from .config import ConfigError, TrainConfig, config_from_dict, read_params
from .experiment import validate_config
from .io import atomic_write
from .lock import HELD_BY_PARENT, RunFolderBusy, RunLock

__all__ = ["TRAIN_NOTEBOOK", "RunPlan", "config_from_parameters", "plan_runs", "execute_run", "sweep",
           "list_commands", "build_report", "STUDY_NOTEBOOK"]

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"  # the batch notebooks: package data, found in any install
TRAIN_NOTEBOOK = NOTEBOOKS / "train.ipynb"
CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))


def config_from_parameters(namespace: dict[str, Any], where: str = "notebook parameters") -> TrainConfig:
    """The notebook's side: a type-checked TrainConfig from its parameter variables (extra names
    ignored); :func:`aalib.train.train` checks its values before any work."""
    return config_from_dict({key: namespace[key] for key in CONFIG_KEYS if key in namespace}, where)


class RunPlan:
    """One notebook execution: the parameters it gets and the folder it writes, and how it was
    asked for (params file, overrides, runs folder, seed), so that it can run in its own process."""

    def __init__(self, params_file: Path, parameters: dict[str, Any], out_dir: Path, *, overrides: list[str],
                 runs_dir: Path) -> None:
        self.params_file = params_file
        self.parameters = parameters
        self.out_dir = out_dir
        self.overrides = list(overrides)
        self.runs_dir = runs_dir

    def command(self) -> list[str]:
        """The ``aalib run`` command line that executes this plan alone, in the same folder: the
        plan's overrides, then its seed as a one-seed ``seeds`` list (the last override wins)."""
        pairs = [arg for override in self.overrides for arg in ("-p", *override.split("=", 1))]
        return [sys.executable, "-m", "aalib", "run", str(self.params_file), *pairs,
                "-p", "seeds", f"[{self.parameters['seed']}]", "--runs-dir", str(self.runs_dir)]

    @property
    def status(self) -> str:
        """The run's ``summary.json`` status (``finished``, ``running``, ``interrupted``, ``failed``),
        or ``new`` (no readable summary yet); anything but ``finished`` is resumed."""
        summary = self.out_dir / "summary.json"
        if not summary.is_file():
            return "new"
        try:
            return json.loads(summary.read_text()).get("status", "new")
        except ValueError:
            return "new"

    def __repr__(self) -> str:
        return f"RunPlan({self.params_file} -> {self.out_dir}, {self.status})"


def expand_params(paths: Iterable[str | Path]) -> list[Path]:
    """Params files named directly, or every ``*.yaml`` under a named folder (sorted)."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(entry.rglob("*.yaml"))
            if not found:
                raise ConfigError(f"{entry}: no *.yaml params files in this folder")
            files.extend(found)
        elif entry.is_file():
            files.append(entry)
        else:
            raise ConfigError(f"{entry}: no such params file or folder")
    return files


def plan_runs(params_file: str | Path, *, overrides: list[str] = (), runs_dir: str | Path = "runs") -> list[RunPlan]:
    """The executions one params file asks for: one per seed, into ``runs_dir/<name>/seed<k>``."""
    params_file = Path(params_file)
    raw = read_params(params_file, list(overrides))
    config = config_from_dict(raw, str(params_file))
    validate_config(config, str(params_file))
    plans = []
    for seed in config.seeds or [config.seed]:
        out_dir = Path(runs_dir) / config.name / f"seed{seed}"
        parameters = {**raw, "seed": seed, "seeds": None, "out_dir": str(out_dir)}
        plans.append(RunPlan(params_file, parameters, out_dir, overrides=list(overrides), runs_dir=Path(runs_dir)))
    return plans


def execute_run(plan: RunPlan, *, notebook: Path = TRAIN_NOTEBOOK, log: Callable[[str], None] = print) -> str:
    """Execute the training notebook for one plan (skipped when finished); returns the final status.

    The run folder's lock (:mod:`aalib.lock`) is held from before the first write to the end;
    raises :class:`aalib.lock.RunFolderBusy`, having written nothing, when another process holds it.
    """
    import papermill

    if plan.status == "finished":
        log(f"{plan.out_dir}: finished, skipped")
        return "finished"
    if not notebook.is_file():
        raise FileNotFoundError(f"training notebook not found: {notebook}")
    with RunLock(plan.out_dir):
        log(f"{plan.out_dir}: {'resuming' if plan.status != 'new' else 'starting'} ({plan.params_file})")
        atomic_write(plan.out_dir / "params.yaml", lambda h: yaml.safe_dump(plan.parameters, h, sort_keys=False))
        previous = os.environ.get(HELD_BY_PARENT)
        os.environ[HELD_BY_PARENT] = str(plan.out_dir.resolve())  # the kernel trains under this lock
        try:
            papermill.execute_notebook(
                str(notebook),
                str(plan.out_dir / "train.ipynb"),
                parameters=plan.parameters,
                kernel_name="python3",
                progress_bar=False,
                log_output=False,
                stdout_file=sys.stdout,
                stderr_file=sys.stderr,
            )
        except papermill.PapermillExecutionError as exc:
            log(f"{plan.out_dir}: the notebook stopped with {exc.ename}: {exc.evalue} (see {plan.out_dir / 'train.ipynb'})")
            return plan.status if plan.status != "new" else "failed"
        finally:
            if previous is None:
                os.environ.pop(HELD_BY_PARENT, None)
            else:
                os.environ[HELD_BY_PARENT] = previous
    return plan.status


def _plan_all(paths: Iterable[str | Path], overrides: list[str], runs_dir: str | Path) -> list[RunPlan]:
    """Every params file planned (and so validated) before any work."""
    return [plan for path in expand_params(paths) for plan in plan_runs(path, overrides=overrides, runs_dir=runs_dir)]


def _check_jobs(jobs: int, devices: list[str] | None) -> None:
    try:
        check_int("jobs", jobs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if devices is not None and (not devices or not all(isinstance(d, str) and d.strip() for d in devices)):
        raise ConfigError(f"devices must be a non-empty list of GPU indices (for example 0,1,2,3), got {devices!r}")


def sweep(
    paths: Iterable[str | Path],
    *,
    overrides: list[str] = (),
    runs_dir: str | Path = "runs",
    notebook: Path = TRAIN_NOTEBOOK,
    log: Callable[[str], None] = print,
    skip_busy: bool = True,
    jobs: int = 1,
    devices: list[str] | None = None,
) -> dict[Path, str]:
    """Plan every params file first (all errors before any work), then execute the plans.

    A run folder that another process is writing (a second sweep over the same params, a job
    array with a duplicate entry) is skipped with status ``busy``, so overlapping sweeps share the
    work and never write one folder twice at once; with ``skip_busy=False`` it raises
    :class:`aalib.lock.RunFolderBusy` instead.

    ``jobs=1`` without ``devices`` executes the plans in order in this process. Otherwise up to
    ``jobs`` plans run at once, each in its own ``aalib run`` process (:meth:`RunPlan.command`,
    output lines prefixed with ``[name seed k]``), under the same rules: a finished plan starts no
    process, an unfinished one resumes, a busy folder (the process exits with status 2 after its
    lock was refused) is reported ``busy``. With ``devices`` (GPU indices) each process sees one
    of them as its only GPU, through ``CUDA_VISIBLE_DEVICES``: ``jobs`` slots take the devices in
    turn, so ``jobs=len(devices)`` puts one run on each. Ctrl-C or SIGTERM stops every process
    as ``interrupted`` (resumable) and starts no more.
    """
    _check_jobs(jobs, devices)
    plans = _plan_all(paths, list(overrides), runs_dir)
    if jobs == 1 and devices is None:
        return {plan.out_dir: _execute_logged(plan, index, len(plans), notebook, log, skip_busy)
                for index, plan in enumerate(plans, 1)}
    if not skip_busy or notebook != TRAIN_NOTEBOOK:
        raise ValueError("skip_busy=False and another notebook need jobs=1 and no devices (runs in other processes "
                         "execute the package's train.ipynb and report busy folders)")
    return _ProcessPool(jobs, devices, log).run(plans)


def _execute_logged(plan: RunPlan, index: int, total: int, notebook: Path, log: Callable[[str], None],
                    skip_busy: bool) -> str:
    log(f"[{index}/{total}] {plan.parameters['name']} seed {plan.parameters['seed']}")
    try:
        return execute_run(plan, notebook=notebook, log=log)
    except RunFolderBusy as exc:
        if not skip_busy:
            raise
        log(f"skipped: {exc}")
        return "busy"


class _ProcessPool:
    """Runs plans in up to ``jobs`` ``aalib run`` processes at once; the slots hold the devices."""

    def __init__(self, jobs: int, devices: list[str] | None, log: Callable[[str], None]) -> None:
        self.jobs, self._log = jobs, log
        self.log_lock = threading.Lock()
        self.slots: queue.Queue[str | None] = queue.Queue()
        for slot in range(jobs):
            self.slots.put(None if devices is None else devices[slot % len(devices)].strip())
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def log(self, line: str) -> None:
        """One whole line at a time: ``print`` from two threads can run their lines together."""
        with self.log_lock:
            self._log(line)

    def run(self, plans: list[RunPlan]) -> dict[Path, str]:
        total = len(plans)
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="aalib-sweep") as pool:
            futures = [pool.submit(self._execute, plan, index, total) for index, plan in enumerate(plans, 1)]
            try:
                outcome = {plan.out_dir: future.result() for plan, future in zip(plans, futures)}
            except KeyboardInterrupt:
                self._stop(futures)
                raise
        return outcome

    def _execute(self, plan: RunPlan, index: int, total: int) -> str:
        name, seed = plan.parameters["name"], plan.parameters["seed"]
        if self.stopping:
            return plan.status
        if plan.status == "finished":
            self.log(f"[{index}/{total}] {plan.out_dir}: finished, skipped")
            return "finished"
        device = self.slots.get()
        try:
            env = {key: value for key, value in os.environ.items() if key != HELD_BY_PARENT}
            if device is not None:
                env["CUDA_VISIBLE_DEVICES"] = device
            command = plan.command()
            self.log(f"[{index}/{total}] {name} seed {seed}" + ("" if device is None else f" on GPU {device}")
                     + f": {shlex.join(command)}")
            with self.lock:
                if self.stopping:
                    return plan.status
                process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, bufsize=1, start_new_session=True)
                self.running.add(process)
            for line in process.stdout:
                self.log(f"[{name} seed {seed}] {line.rstrip()}")
            returncode = process.wait()
            with self.lock:
                self.running.discard(process)
        finally:
            self.slots.put(device)
        # the plan was validated here, so status 2 is the one error left to ``aalib run``: a busy folder
        return "busy" if returncode == 2 else plan.status

    def _stop(self, futures: list) -> None:
        """Ctrl-C / SIGTERM: no new processes; each running one gets SIGTERM (its run stops as
        ``interrupted``) and is waited for."""
        with self.lock:
            self.stopping = True
            for future in futures:
                future.cancel()
            for process in self.running:
                process.terminate()
        deadline = time.monotonic() + 120
        for process in list(self.running):
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


def list_commands(paths: Iterable[str | Path], *, overrides: list[str] = (), runs_dir: str | Path = "runs") -> list[str]:
    """One self-contained shell command per planned run (``cd`` into this folder, then
    ``aalib run`` for that run alone), for a scheduler's job array: line ``i`` is task ``i``.
    Finished runs are listed too (their command skips them), so the numbering is stable."""
    here = shlex.quote(str(Path.cwd()))
    return [f"cd {here} && {shlex.join(plan.command())}" for plan in _plan_all(paths, list(overrides), runs_dir)]


REPORT_NOTEBOOK = NOTEBOOKS / "report.ipynb"
STUDY_NOTEBOOK = NOTEBOOKS / "study.ipynb"  # the trade-off study's report (aalib.study)


def build_report(runs_dir: str | Path, out_dir: str | Path | None = None, *, notebook: Path = REPORT_NOTEBOOK,
                 parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute the report notebook on ``runs_dir`` into ``out_dir`` and convert it to HTML.

    The notebook reads and judges the runs, once (:func:`aalib.report.write_report`, or
    :func:`aalib.study.write_study_report` for :data:`STUDY_NOTEBOOK`, which also write the
    terminal summary ``summary.txt``); ``parameters``: the notebook's other parameters. This
    returns the paths of the HTML and of the executed notebook and that summary with the paths,
    for the terminal. A folder without runs is a FileNotFoundError before anything is written.
    """
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from .report import require_runs

    runs_dir = Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir / "report"
    require_runs(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / "report.ipynb"
    papermill.execute_notebook(str(notebook), str(executed), parameters={**(parameters or {}), "runs_dir": str(runs_dir), "output_dir": str(out_dir)},
                               kernel_name="python3", progress_bar=False)
    # report.html is for reading: outputs only (the executed notebook keeps the code)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    atomic_write(out_dir / "report.html", lambda handle: handle.write(html))
    text = "\n".join([
        (out_dir / "summary.txt").read_text(),
        f"report: {out_dir / 'report.html'}",
        f"executed notebooks: {executed} and {runs_dir}/<name>/seed<k>/train.ipynb",
    ])
    return {"html": out_dir / "report.html", "notebook": executed, "text": text}
