"""queue-autoscaler: a queue-driven autoscaling controller for Kubernetes.

Rooms, top to bottom (``docs/architecture.md``; an import-linter layers contract in
``pyproject.toml`` keeps each importing only from the rooms below it): ``cli`` and the
commands (``demo``, ``check``, ``simulate``); ``app`` (the only wiring); ``controller``
(the loop); ``drain`` (scale-down protocol and reaper); ``targets`` (what gets scaled);
``kube`` (the only Kubernetes client user), ``sources`` (Redis, Prometheus), ``consumer``
(the sidecar); ``redisqueue`` (registry, leases, scripts); ``redisconn`` (the one Redis
client factory), ``metrics``, ``annotations`` (the one declaration of the annotations);
``argtypes``, ``remote``; and the ground floor: ``policy`` (pure sizing), ``workload``,
``keys``, ``errors``, ``logs``, ``aio``.
"""

__version__ = "0.1.0"

# The product's name, from which its annotation/label prefix (``queue-autoscaler.io/``),
# its Redis key prefix and its metric prefix (``queue_autoscaler_``) are made.
NAME = "queue-autoscaler"
