"""The local target: a workload's replicas are process groups on this machine.

``file`` reads the ``run --local`` YAML file, ``proc`` runs one replica (a process group,
restarted when it dies), ``target`` scales a workload's replicas like a ReplicaSet and
plays the Kubernetes watch (``LocalInventory``). The wiring is ``autoscaler.app.local``.
"""
