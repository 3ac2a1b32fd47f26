"""queue-autoscaler: a queue-driven autoscaling controller for Kubernetes.

Rooms (see DESIGN.md): ``policy`` (pure sizing), ``config`` (annotations → spec),
``sources`` (Redis, Prometheus), ``kube`` (the only Kubernetes client user),
``targets`` (what gets scaled), ``drain`` (scale-down protocol and reaper),
``consumer`` (the sidecar), ``controller`` (the loop), ``metrics``, ``cli``.
"""

__version__ = "0.1.0"
