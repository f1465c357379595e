"""Command line: ``python -m aalib COMMAND ...`` (also the ``aalib`` console script).

    python -m aalib train params/smoke.yaml
    python -m aalib train params/sound/cifar100_aa_wrn.yaml --set epochs=10 --set model_args.heads=4 --out runs/try
    torchrun --nproc_per_node 4 -m aalib train params/bello/cifar100_aa_wrn28_10.yaml

Each command is a subparser registered in :data:`COMMANDS` (``name -> (add_arguments, run)``), so
``run`` / ``sweep`` can be added beside ``train`` without touching the rest. A bad configuration
exits with status 2 and one line on stderr, before anything is written; a run that stops on a
non-finite loss exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
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


def _run_train(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .train import train

    try:
        config = load_config(args.config, overrides=args.overrides)
        summary = train(config, args.out)
    except ConfigError as exc:
        print(f"aalib train: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # aalib.data.DatasetNotFoundError is one
        print(f"aalib train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aalib train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if summary["status"] == "finished" else 1


# name -> (add its arguments to a subparser, run it and return the exit status)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train one configuration (or resume it)", _add_train_arguments, _run_train),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aalib", description="aalib: attention-augmented convolution study kit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
