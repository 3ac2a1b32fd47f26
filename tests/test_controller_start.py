"""The controller's start against a listing (``Controller.run(synced=...)``): the first
cycle waits until the inventory's first listing is taken in, and no automatic garbage
collection runs until that cycle has run (it walked a heap that only grows: 27% of a
10,000-workload start's CPU, docs/performance.md)."""

from __future__ import annotations

import asyncio
import gc

from tests.kubeutil import stop, wait_for
from tests.test_controller import Harness


async def test_the_first_cycle_waits_for_the_listing_and_collection_resumes_after_it(
    redis_url: str,
) -> None:
    assert gc.isenabled()
    harness = Harness(redis_url)
    controller = harness.controller
    synced = asyncio.Event()
    task = asyncio.create_task(controller.run(synced=synced))
    try:
        harness.add("first-page")
        for _ in range(20):  # let the loop run as far as it can without the listing
            await asyncio.sleep(0)
        assert controller.cycles == 0
        assert not gc.isenabled()  # paused from the start...
        harness.add("last-page")
        synced.set()
        await wait_for(lambda: controller.cycles >= 1, 10, "the first cycle")
        assert gc.isenabled()  # ...to the end of the first cycle
        assert {w.ref.name for w in controller.workloads.values() if w.last_decision} == {
            "first-page",
            "last-page",
        }  # one cycle over the whole listing
    finally:
        await stop(task)
        await harness.pool.aclose()
        gc.enable()
    assert gc.isenabled()


async def test_without_a_listing_to_wait_for_collection_is_left_alone(redis_url: str) -> None:
    harness = Harness(redis_url)
    task = asyncio.create_task(harness.controller.run())
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert gc.isenabled()  # before any cycle: nothing paused
        harness.add("local")
        await wait_for(lambda: harness.controller.cycles >= 1, 10, "a cycle")
        assert gc.isenabled()
    finally:
        await stop(task)
        await harness.pool.aclose()
