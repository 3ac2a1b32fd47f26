"""The controller: the asyncio loop that wires sources → policy → drain → targets."""

from autoscaler.controller.loop import Controller, Drainer
from autoscaler.controller.workload import Workload

__all__ = ["Controller", "Drainer", "Workload"]
