"""The only wiring: every other room receives its collaborators; these modules build them.

``cluster`` assembles the controller against Kubernetes (``autoscaler run``); ``local``
assembles the same controller, drain protocol and reaper against local processes
(``autoscaler run --local`` and ``autoscaler demo``). Nothing below this package
constructs the object graph, and nothing below it imports it (an import-linter layers
contract in ``pyproject.toml`` keeps it so).
"""
