"""Leader election on a Lease, over real HTTP against the fake API server.

Short durations (lease 2 s — ``leaseDurationSeconds`` is a whole number — renew deadline
1 s, retry 0.2 s) keep the tests fast; a sampler checks both electors every 5 ms so that
two leaders at once would be caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from autoscaler.kube import KubeClient, LeaderElector, LeaderSettings
from autoscaler.metrics import ControllerMetrics
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import connect, stop, wait_for
from tests.kubeutil import metrics as metrics

SHORT = LeaderSettings(lease_duration_s=2.0, renew_deadline_s=1.0, retry_period_s=0.2)


@pytest_asyncio.fixture
async def clients(fake_kube: FakeKubeServer) -> AsyncIterator[tuple[KubeClient, KubeClient]]:
    a, b = await connect(fake_kube), await connect(fake_kube)
    yield a, b
    await a.close()
    await b.close()


@contextlib.asynccontextmanager
async def never_two_leaders(*electors: LeaderElector) -> AsyncIterator[Callable[[], int]]:
    """Sample ``is_leader`` of all electors while the block runs; fail on two at once."""
    overlaps: list[float] = []
    samples = 0

    async def sample() -> None:
        nonlocal samples
        while True:
            if sum(e.is_leader.is_set() for e in electors) > 1:
                overlaps.append(time.monotonic())
            samples += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(sample())
    try:
        yield lambda: samples
    finally:
        await stop(task)
    assert not overlaps, f"two leaders at once, {len(overlaps)} samples"


def leaders(*electors: LeaderElector) -> list[LeaderElector]:
    return [e for e in electors if e.is_leader.is_set()]


def lease(fake_kube: FakeKubeServer) -> dict[str, object]:
    found = fake_kube.get("leases", "default", SHORT.lease_name)
    assert found is not None
    spec: dict[str, object] = found["spec"]
    return spec


async def test_two_electors_exactly_one_leader(
    fake_kube: FakeKubeServer,
    clients: tuple[KubeClient, KubeClient],
    metrics: ControllerMetrics,
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a", metrics=metrics)
    b = LeaderElector(clients[1], SHORT, identity="b")
    async with never_two_leaders(a, b) as samples:
        tasks = [asyncio.create_task(e.run()) for e in (a, b)]
        await wait_for(lambda: leaders(a, b), what="a leader")
        (leader,) = leaders(a, b)
        start = samples()
        await wait_for(lambda: samples() > start + 200, what="samples")  # ≥ 1 s: renewals
        assert leaders(a, b) == [leader]
        assert lease(fake_kube)["holderIdentity"] == leader.identity
        assert metrics.registry.get_sample_value("queue_autoscaler_leader") == (
            1.0 if leader is a else 0.0
        )
        for task in tasks:
            await stop(task)
    assert not leaders(a, b)
    assert metrics.registry.get_sample_value("queue_autoscaler_leader") == 0.0


async def test_clean_stop_releases_and_standby_leads_within_retry_period(
    fake_kube: FakeKubeServer, clients: tuple[KubeClient, KubeClient]
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a")
    b = LeaderElector(clients[1], SHORT, identity="b")
    async with never_two_leaders(a, b):
        task_a = asyncio.create_task(a.run())
        await wait_for(a.is_leader.is_set, what="a leads")
        task_b = asyncio.create_task(b.run())
        await wait_for(lambda: lease(fake_kube).get("holderIdentity") == "a")
        await stop(task_a)  # clean shutdown: release
        released = time.monotonic()
        assert lease(fake_kube)["holderIdentity"] == ""
        await wait_for(b.is_leader.is_set, timeout_s=2.0, what="b leads")
        took = time.monotonic() - released
        await stop(task_b)
    # About one retry period (0.2 s plus jitter): far less than the lease duration.
    assert took < SHORT.lease_duration_s / 2
    assert lease(fake_kube)["leaseTransitions"] == 1


async def test_crashed_leader_is_replaced_within_lease_duration(
    fake_kube: FakeKubeServer, clients: tuple[KubeClient, KubeClient]
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a")
    b = LeaderElector(clients[1], SHORT, identity="b")
    async with never_two_leaders(a, b):
        task_a = asyncio.create_task(a.run(release_on_exit=False))
        await wait_for(a.is_leader.is_set, what="a leads")
        task_b = asyncio.create_task(b.run())
        # b must have seen a renew at least once before the crash.
        renewed = lease(fake_kube)["renewTime"]
        await wait_for(lambda: lease(fake_kube)["renewTime"] != renewed, what="a renews")
        await stop(task_a)  # a crash: no release
        crashed = time.monotonic()
        assert lease(fake_kube)["holderIdentity"] == "a"
        assert not b.is_leader.is_set()
        await wait_for(b.is_leader.is_set, timeout_s=5.0, what="b takes over")
        took = time.monotonic() - crashed
        assert lease(fake_kube)["holderIdentity"] == "b"
        await stop(task_b)
    # b waits a whole lease duration from when it last saw the Lease change.
    assert 0.5 < took < SHORT.lease_duration_s + 1.0


async def test_leader_that_cannot_renew_steps_down(
    fake_kube: FakeKubeServer, clients: tuple[KubeClient, KubeClient]
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a")
    task = asyncio.create_task(a.run())
    try:
        await wait_for(a.is_leader.is_set, what="a leads")
        # The API server fails every lease write for longer than the renew deadline.
        fake_kube.inject_faults(500, 10_000, path_contains="/leases/")
        failing = time.monotonic()
        await wait_for(lambda: not a.is_leader.is_set(), timeout_s=3.0, what="a steps down")
        assert time.monotonic() - failing < SHORT.renew_deadline_s + SHORT.retry_period_s + 0.5
        fake_kube.clear_faults()
        await wait_for(a.is_leader.is_set, timeout_s=5.0, what="a leads again")
    finally:
        await stop(task)


async def test_someone_else_taking_the_lease_ends_leadership_at_once(
    fake_kube: FakeKubeServer, clients: tuple[KubeClient, KubeClient]
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a")
    task = asyncio.create_task(a.run())
    try:
        await wait_for(a.is_leader.is_set, what="a leads")
        fake_kube.patch(
            "leases", "default", SHORT.lease_name, {"spec": {"holderIdentity": "intruder"}}
        )
        await wait_for(lambda: not a.is_leader.is_set(), timeout_s=1.0, what="a steps down")
    finally:
        await stop(task)
    assert lease(fake_kube)["holderIdentity"] == "intruder"  # not released: not ours


def test_settings_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderSettings(lease_duration_s=1.0, renew_deadline_s=2.0)
