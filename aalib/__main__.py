"""Command line: ``python -m aalib COMMAND ...`` (also the ``aalib`` console script).

    python -m aalib train params/smoke.yaml
    python -m aalib run params/long_range/simple_aacnn.yaml -p epochs 2     # through the packaged train.ipynb
    python -m aalib sweep params/long_range --runs-dir runs/long_range       # many; finished runs skipped
    python -m aalib sweep params/long_range --jobs 4 --devices 0,1,2,3        # four at once, one per GPU
    python -m aalib sweep params/long_range --list > runs.txt                 # one command per run (job arrays)
    python -m aalib report runs/long_range                                   # tables, figures, HTML report
    python -m aalib report runs/study --study                                # the trade-off study's report
    python -m aalib train params/sound/cifar100_aa_wrn.yaml --set epochs=10 --set model_args.heads=4 --out runs/try
    torchrun --nproc_per_node 4 -m aalib train params/bello/cifar100_aa_wrn28_10.yaml

Each command is a subparser registered in :data:`COMMANDS` (``name -> (help, add_arguments, run)``).
A bad configuration
exits with status 2 and one line on stderr, before anything is written, and so does a run folder
that another process is writing (``aalib sweep`` skips such a folder, reports it ``busy`` and exits
with status 2 at the end); a run that stops on a non-finite loss exits with status 1, and so does
one whose output folder cannot be written (full disk, no permission: one line naming the file).
Ctrl-C and SIGTERM stop a run as ``interrupted`` (status 130); the same command resumes it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Callable

__all__ = ["main", "COMMANDS"]


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML file of TrainConfig keys (see aalib/config.py)")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config key; VALUE is read as YAML (lr=0.05, seeds=[0,1], model_args.heads=4); repeatable",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<name>)")


def _one_line(exc: BaseException) -> str:
    """The message on one line (a missing dataset's message lists the expected layout on several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _run_train(args: argparse.Namespace) -> int:
    from .config import ConfigError, read_config
    from .lock import RunFolderBusy
    from .train import OutputError, train

    try:
        config = read_config(args.config, overrides=args.overrides)
        summary = train(config, args.out)  # values checked there, before any work
    except (ConfigError, RunFolderBusy) as exc:
        print(f"aalib train: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # aalib.data.DatasetNotFoundError is one
        print(f"aalib train: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OutputError as exc:
        print(f"aalib train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aalib train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if summary["status"] == "finished" else 1


def _add_run_arguments(parser: argparse.ArgumentParser, *, many: bool) -> None:
    if many:
        parser.add_argument("params", type=Path, nargs="+", help="params YAML files, or folders of them")
    else:
        parser.add_argument("params", type=Path, help="params YAML file")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="override a parameter (VALUE read as YAML; KEY may be dotted: model_args.heads); repeatable")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="runs go to RUNS_DIR/<name>/seed<k> (default: runs)")
    if many:
        parser.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                            help="run N runs at once, each in its own process (default: 1, or one per device)")
        parser.add_argument("--devices", type=_device_list, default=None, metavar="0,1,...",
                            help="GPU indices; each process sees one of them as its only GPU (CUDA_VISIBLE_DEVICES)")
        parser.add_argument("--list", action="store_true",
                            help="print one self-contained command per run (for a job array) and run nothing")


def _positive_int(text: str) -> int:
    from .checks import check_int

    try:
        return check_int("the value", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None


def _device_list(text: str) -> list[str]:
    devices = [entry.strip() for entry in text.split(",")]
    if not all(entry.isdigit() for entry in devices):
        raise argparse.ArgumentTypeError(f"expected GPU indices separated by commas (for example 0,1,2,3), got {text!r}")
    return devices


def _run_notebooks(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .lock import RunFolderBusy
    from .batch import list_commands, sweep

    params = args.params if isinstance(args.params, list) else [args.params]
    overrides = [f"{key}={value}" for key, value in args.parameter]
    devices = getattr(args, "devices", None)
    jobs = getattr(args, "jobs", None) or (len(devices) if devices else 1)
    try:
        if getattr(args, "list", False):
            print("\n".join(list_commands(params, overrides=overrides, runs_dir=args.runs_dir)))
            return 0
        outcome = sweep(params, overrides=overrides, runs_dir=args.runs_dir, skip_busy=args.command == "sweep",
                        jobs=jobs, devices=devices)
    except (ConfigError, RunFolderBusy) as exc:
        print(f"aalib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aalib {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    for out_dir, status in outcome.items():
        print(f"{status:>11}  {out_dir}")
    if any(status == "busy" for status in outcome.values()):
        return 2
    return 0 if all(status == "finished" for status in outcome.values()) else 1


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", type=Path, help="folder holding run folders (any depth)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: RUNS_DIR/report)")
    parser.add_argument("--study", action="store_true",
                        help="the trade-off study's report (aalib/study.py: distance, resolution, Pathfinder)")
    parser.add_argument("--layer-bench", type=Path, default=None, metavar="FILE",
                        help="with --study: a results file of `python -m aalib.bench attention`, whose slopes "
                             "stand beside the training ones")


def _run_report(args: argparse.Namespace) -> int:
    from .batch import STUDY_NOTEBOOK, build_report

    if args.layer_bench is not None and not args.study:
        print("aalib report: error: --layer-bench goes with --study", file=sys.stderr)
        return 2
    if args.layer_bench is not None and not args.layer_bench.is_file():
        print(f"aalib report: error: --layer-bench {args.layer_bench}: no such file", file=sys.stderr)
        return 2
    try:
        if args.study:
            result = build_report(args.runs_dir, args.out, notebook=STUDY_NOTEBOOK,
                                  parameters={"layer_bench": str(args.layer_bench or "")})
        else:
            result = build_report(args.runs_dir, args.out)
    except FileNotFoundError as exc:
        print(f"aalib report: error: {exc}", file=sys.stderr)
        return 2
    print(result["text"])
    return 0


# name -> (add its arguments to a subparser, run it and return the exit status)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train one configuration (or resume it)", _add_train_arguments, _run_train),
    "run": ("execute the packaged train notebook (aalib/notebooks/train.ipynb) for one params file, one folder per seed", partial(_add_run_arguments, many=False), _run_notebooks),
    "sweep": ("run many params files (or folders); finished runs are skipped", partial(_add_run_arguments, many=True), _run_notebooks),
    "report": ("build the report of a runs folder: tables, figures, executed notebook, HTML", _add_report_arguments, _run_report),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aalib", description="aalib: attention-augmented convolution study kit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler's stop, ``kill``) ends a run as Ctrl-C does: ``interrupted``, resumable."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "run", "sweep"):
        signal.signal(signal.SIGTERM, _interrupt)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
