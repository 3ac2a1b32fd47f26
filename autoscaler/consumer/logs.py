"""One-line logs that always name the queue and the consumer, as text or JSON.

``ConsumerLog`` attaches the queue and consumer id to every record; the text format
appends them as ``queue=… consumer=…`` and the JSON format as fields, so a log search
for one consumer finds all of its lines.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTEXT = ("queue", "consumer")


class ConsumerLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter carrying the queue and consumer id of this process."""

    def __init__(self, logger: logging.Logger, queue: str, consumer_id: str) -> None:
        super().__init__(logger, {"queue": queue, "consumer": consumer_id})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` plus `` queue=… consumer=…`` on records that carry them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{n}={getattr(record, n)}" for n in _CONTEXT if hasattr(record, n))
        if not context:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the context
        return f"{head} {context}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, queue, consumer."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Route the root logger to stderr in ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
