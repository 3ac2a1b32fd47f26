"""Prints the fault matrix (one row per scenario) at the end of the session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.harness import ROWS, DurableRedis

COLUMNS = ("fault", "produced", "processed", "duplicated", "lost", "dead_lettered",
           "recovery_s", "restarts")  # fmt: skip


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault matrix")
    terminalreporter.write_line("| " + " | ".join(COLUMNS) + " |")
    terminalreporter.write_line("|" + "---|" * len(COLUMNS))
    for row in ROWS:
        terminalreporter.write_line("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")


@pytest.fixture
def durable() -> Iterator[DurableRedis]:
    """A private redis-server with AOF ``appendfsync always``."""
    server = DurableRedis()
    server.start()
    yield server
    server.stop()
