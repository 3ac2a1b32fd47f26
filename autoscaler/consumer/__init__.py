"""The sidecar consumer, ``autoscaler consume`` (its contract: ``docs/architecture.md``).

It takes messages from a Redis list into its own processing list, POSTs each to the
processor in the same pod, and acks only after a 2xx; it heartbeats into the registry
and obeys the controller's drain. Modules: ``worker`` (slots, drain, stop), ``handler``
(one message's deliveries), ``forward`` (HTTP), ``heartbeat`` (registry), ``metrics``,
``logs``, ``settings``, ``cli``; ``stream``, the same consumer over a Redis stream
(``--stream``). The Redis side lives in ``autoscaler.redisqueue``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoscaler.consumer.metrics import ConsumerMetrics
    from autoscaler.consumer.settings import ConsumerSettings
    from autoscaler.consumer.worker import Worker

__all__ = ["ConsumerMetrics", "ConsumerSettings", "Worker"]
_HOMES = {"ConsumerMetrics": "metrics", "ConsumerSettings": "settings", "Worker": "worker"}


def __getattr__(name: str) -> Any:
    """Import on first use (PEP 562): ``autoscaler consume --help`` imports
    ``autoscaler.consumer.cli`` and must not pay for aiohttp and redis (~150 ms)."""
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
