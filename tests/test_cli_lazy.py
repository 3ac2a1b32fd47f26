"""The CLI imports only the subcommand named on the command line (``autoscaler --help``
and ``autoscaler consume --help`` stay fast: docs/performance.md)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from autoscaler.cli import COMMANDS, build_parser

HEAVY = ("aiohttp", "redis", "prometheus_client", "kubernetes_asyncio", "yaml")


def _imported_by(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from autoscaler.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split("\n")[-2].split())


def test_help_lines_are_the_modules_own() -> None:
    full = build_parser()
    actions = [a for a in full._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in actions[0]._choices_actions}
    assert helps == {name: help_ for name, _, help_ in COMMANDS}


@pytest.mark.parametrize("argv", [["--help"], ["consume", "--help"]])
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    assert _imported_by(argv).isdisjoint(HEAVY)


def test_only_the_named_subcommand_is_built() -> None:
    parser = build_parser(["check", "--help"])
    args = parser.parse_args(["check", "f.yaml"])
    assert args.func.__module__ == "autoscaler.check"
    with pytest.raises(SystemExit):
        parser.parse_args(["consume", "--queue", "q"])  # a placeholder: no such flag
