"""Every log line of the sidecar names its queue and consumer id.

``ConsumerLog`` adds ``queue`` and ``consumer`` to the structured fields of
``autoscaler.logs`` (the same text/JSON formats as the controller's, where ``queue`` is
also the metrics' label name), so a search for one consumer finds all of its lines.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from autoscaler.logs import FIELDS


class ConsumerLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter carrying the queue and consumer id of this process."""

    def __init__(self, logger: logging.Logger, queue: str, consumer_id: str) -> None:
        super().__init__(logger, {"queue": queue, "consumer": consumer_id})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra[FIELDS] = {**(self.extra or {}), **extra.get(FIELDS, {})}
        kwargs["extra"] = extra
        return msg, kwargs
