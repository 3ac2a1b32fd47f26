"""The controller: the asyncio loop that drives sources → policy → drain → targets.

It receives its collaborators (sources, a target factory, the drain protocol, the reaper,
metrics) from ``autoscaler.app``, which wires them.
"""

from autoscaler.controller.durability import DurabilityWatch
from autoscaler.controller.loop import Controller
from autoscaler.controller.memory import MemoryWatch
from autoscaler.controller.workload import Workload

__all__ = ["Controller", "DurabilityWatch", "MemoryWatch", "Workload"]
