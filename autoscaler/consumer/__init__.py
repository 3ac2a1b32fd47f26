"""The sidecar consumer, ``autoscaler consume`` (DESIGN.md contract 3).

It takes messages from a Redis list into its own processing list, POSTs each to the
processor in the same pod, and acks only after a 2xx; it heartbeats into the registry
and obeys the controller's drain. Modules: ``worker`` (slots, drain, stop), ``handler``
(one message's deliveries), ``forward`` (HTTP), ``heartbeat`` (registry), ``metrics``,
``logs``, ``settings``, ``cli``. The Redis side lives in ``autoscaler.redisqueue``.
"""

from __future__ import annotations

from autoscaler.consumer.metrics import ConsumerMetrics
from autoscaler.consumer.settings import ConsumerSettings
from autoscaler.consumer.worker import Worker

__all__ = ["ConsumerMetrics", "ConsumerSettings", "Worker"]
