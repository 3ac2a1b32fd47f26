"""The ``autoscaler`` command: the one place that assembles clients and components.

Each subcommand lives in the module that owns its room and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` to a
``(argparse.Namespace) -> int`` handler. Exit codes: 0 ok, 1 a failed check or lost
messages, 2 bad input (a flag, a file, an annotation), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from autoscaler import __version__
from autoscaler.errors import InputError

# Subcommand modules, in --help order. Each has ``register(subparsers)``.
COMMAND_MODULES = (
    "autoscaler.controller.cli",  # run
    "autoscaler.consumer.cli",  # consume
    "autoscaler.demo",  # demo
    "autoscaler.simulate.cli",  # simulate
    "autoscaler.check",  # check
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscaler",
        description="Queue-driven autoscaling for Kubernetes that drains consumers before "
        "every scale-down, so no message is lost.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):
                continue  # that room is not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except InputError as e:
        print(f"autoscaler {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
