"""Generators of the observability files: Grafana dashboards, provisioning, alert CRD, docs.

``python -m grafana.build`` writes them all; the JSON and YAML are committed, and
``tests/test_dashboards.py`` fails when they differ from what the generators produce.

The dashboards (``overview``, ``workload``, ``sidecar``; builders in ``panels``) use
exactly the series of ``autoscaler.metrics`` (``queue_autoscaler_*``, labels
``namespace``/``workload``/``trigger`` — the controller's PodMonitor keeps them with
``honorLabels``) and ``autoscaler.consumer.metrics`` (``queue_consumer_*``, label
``queue``; ``namespace`` and ``pod`` come from the scrape).
"""
