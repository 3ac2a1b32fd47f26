"""Validators for command-line flags: ``type=`` callables for ``argparse``.

Every subcommand checks its numbers, ports and URLs with these, so that one flag reads
the same error in every command: argparse prints ``argument --flag: <message>`` and exits
2. Each raises ``argparse.ArgumentTypeError`` naming what was expected; a URL is echoed
only redacted (it may carry a password).
"""

from __future__ import annotations

import argparse
import logging
import math
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from autoscaler.remote import redact_url


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer ≥ 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    value = _integer(text)
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ≥ 0 (seconds, mostly)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0: {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0: {text!r}")
    return value


def seconds_at_least(low_s: float) -> Callable[[str], float]:
    """A number of seconds ≥ ``low_s``: an interval below it would only flood Redis (a
    heartbeat every nanosecond is ~30,000 commands a second, and no faster detection)."""

    def check(text: str) -> float:
        value = _number(text)
        if value < low_s:
            raise argparse.ArgumentTypeError(f"must be at least {low_s:g} (seconds): {text!r}")
        return value

    check.__name__ = "seconds"  # argparse names the type in its "invalid … value" message
    return check


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """A logging level name, any case (``info``, ``WARNING``); returned upper-case."""
    name = text.strip().upper()
    if name not in LOG_LEVELS or not isinstance(logging.getLevelName(name), int):
        raise argparse.ArgumentTypeError(
            f"not a log level: {text!r} (one of {', '.join(LOG_LEVELS)})"
        )
    return name


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1: {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: off, or any free port, as the flag says)."""
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port (0-65535): {text!r}")
    return value


def nonempty(text: str) -> str:
    """Any text but blank."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {redact_url(text)!r}")
    return text


def redis_url(text: str) -> str:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise argparse.ArgumentTypeError(f"not a redis:// URL: {redact_url(text)!r}")
    return text


PLOT_FORMATS = ("png", "svg", "pdf")


def plot_file(text: str) -> Path:
    """A file to draw into, checked before a run of minutes: the format is its extension
    (``.png``, ``.svg``, ``.pdf``) and its directory must exist."""
    path = Path(text)
    suffix = path.suffix.lower().removeprefix(".")
    if suffix not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"{text}: the file name must end in {', '.join('.' + f for f in PLOT_FORMATS)} "
            "(the format follows the extension)"
        )
    return _writable_file(path)


def output_dir(text: str) -> Path:
    """A directory to write into (created if missing); its parent must exist."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a directory")
    if not path.exists() and not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: directory {path.parent} does not exist")
    return path


def _writable_file(path: Path) -> Path:
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a directory, expected a file name")
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: directory {path.parent} does not exist")
    return path
