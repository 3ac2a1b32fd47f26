"""Generators of the observability files: Grafana dashboards, provisioning, alert CRD, docs.

``python -m grafana.build`` writes them all; the JSON and YAML are committed, and
``tests/test_dashboards.py`` fails when they differ from what the generators produce.
"""
