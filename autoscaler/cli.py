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

# Subcommands in --help order: (name, module with ``register(subparsers)``, one-line help).
# The help is repeated here so that ``autoscaler --help`` imports no subcommand module:
# only the one named on the command line is imported (``autoscaler --help``: ~335 → see
# docs/performance.md; aiohttp alone costs ~90 ms). A test checks each line against the
# module's own ``help=``.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("run", "autoscaler.app.cluster",
     "run the controller (kubeconfig, in-cluster, or --local FILE)"),
    ("consume", "autoscaler.consumer.cli",
     "the sidecar consumer: Redis list or stream → local processor over HTTP, with acks"),
    ("demo", "autoscaler.demo",
     "everything on this machine: Redis, the controller, replicas as local processes"),
    ("simulate", "autoscaler.simulate.cli",
     "replay a workload trace through our policy and a KEDA+HPA baseline"),
    ("check", "autoscaler.check",
     "validate queue-autoscaler annotations in manifests or in a cluster"),
    ("dead-letter", "autoscaler.deadletter",
     "list, show, replay or purge a queue's dead-letter list"),
    ("status", "autoscaler.status",
     "every annotated workload at a glance (also: kubectl queue-autoscaler status)"),
)  # fmt: skip
COMMAND_MODULES = tuple(module for _, module, _ in COMMANDS)


def build_parser(
    argv: Sequence[str] | None = None, prog: str = "autoscaler"
) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the subcommand named there is imported (the others
    get a placeholder parser carrying their help line). Without, every one is."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Queue-driven autoscaling for Kubernetes that drains consumers before "
        "every scale-down, so no message is lost.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for command, name, help_ in COMMANDS:
        if chosen is not None and command != chosen:
            subparsers.add_parser(command, help=help_)
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):
                continue  # that room is not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "autoscaler") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv, prog)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except InputError as e:
        print(f"{prog} {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()
    return code


def kubectl_plugin() -> int:
    """The installed ``kubectl-queue_autoscaler`` executable: kubectl finds it on the PATH
    and runs it for ``kubectl queue-autoscaler …`` (``kubectl queue-autoscaler status``)."""
    return main(sys.argv[1:], prog="kubectl queue-autoscaler")


if __name__ == "__main__":
    raise SystemExit(main())
