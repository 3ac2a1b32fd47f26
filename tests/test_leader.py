"""Leader election on a Lease, over real HTTP against the fake API server.

The electors, the fake API server and the tests share one event loop on fake time
(``looptime``): waiting out a lease takes no wall-clock time, and how long a hand-over
took is read from ``loop.time()``, exact whatever the machine's load. Short durations
(lease 2 s — ``leaseDurationSeconds`` is a whole number — renew deadline 1 s, retry
0.2 s) keep the loop's work small; a sampler checks both electors every 5 ms of loop
time so that two leaders at once would be caught.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from autoscaler.kube import KubeClient, LeaderElector, LeaderSettings
from autoscaler.metrics import ControllerMetrics
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import connect, requests_of, stop, wait_for
from tests.kubeutil import metrics as metrics

SHORT = LeaderSettings(lease_duration_s=2.0, renew_deadline_s=1.0, retry_period_s=0.2)
JITTERED_RETRY_S = SHORT.retry_period_s * 1.2  # a standby's retry, jitter included
POLL_S = 0.01  # wait_for's step: a change is seen up to this late


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
    loop = asyncio.get_running_loop()

    async def sample() -> None:
        nonlocal samples
        while True:
            if sum(e.is_leader.is_set() for e in electors) > 1:
                overlaps.append(loop.time())
            samples += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(sample())
    try:
        yield lambda: samples
    finally:
        await stop(task)
    assert not overlaps, f"two leaders at once, {len(overlaps)} samples"


def lease_writes(fake_kube: FakeKubeServer) -> int:
    """Acquisitions and renewals so far (each one PATCH of the Lease)."""
    return len(requests_of(fake_kube, "patch", "/leases/"))


@contextlib.asynccontextmanager
async def leading(elector: LeaderElector, **run: bool) -> AsyncIterator[asyncio.Task[None]]:
    """``elector.run(**run)`` as a task, once it leads; stopped after the block."""
    task = asyncio.create_task(elector.run(**run))
    try:
        await wait_for(elector.is_leader.is_set, what=f"{elector.identity} leads")
        yield task
    finally:
        await stop(task)


async def seconds_until(predicate: Callable[[], object], what: str) -> float:
    """Loop time (fake, so exact) from now until ``predicate`` holds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for(predicate, timeout_s=5.0, what=what)
    return loop.time() - started


def leaders(*electors: LeaderElector) -> list[LeaderElector]:
    return [e for e in electors if e.is_leader.is_set()]


def lease(fake_kube: FakeKubeServer) -> dict[str, object]:
    found = fake_kube.get("leases", "default", SHORT.lease_name)
    assert found is not None
    spec: dict[str, object] = found["spec"]
    return spec


@pytest.mark.looptime
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
        writes, start = lease_writes(fake_kube), samples()
        # Five renewals (a second of loop time), sampled all along: still the one leader.
        await wait_for(lambda: lease_writes(fake_kube) >= writes + 5, what="five renewals")
        assert samples() > start + 100
        assert leaders(a, b) == [leader]
        assert lease(fake_kube)["holderIdentity"] == leader.identity
        assert metrics.registry.get_sample_value("queue_autoscaler_leader") == (
            1.0 if leader is a else 0.0
        )
        for task in tasks:
            await stop(task)
    assert not leaders(a, b)
    assert metrics.registry.get_sample_value("queue_autoscaler_leader") == 0.0


@pytest.mark.looptime
async def test_clean_stop_releases_and_standby_leads_within_retry_period(
    fake_kube: FakeKubeServer, clients: tuple[KubeClient, KubeClient]
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a")
    b = LeaderElector(clients[1], SHORT, identity="b")
    async with never_two_leaders(a, b), leading(a) as task_a:
        reads = len(requests_of(fake_kube, "get", "/leases/"))  # a renews without reading
        task_b = asyncio.create_task(b.run())
        await wait_for(lambda: len(requests_of(fake_kube, "get", "/leases/")) > reads,
                       what="b to find the Lease held")  # fmt: skip
        assert not b.is_leader.is_set()  # a standby now, waiting for its next retry
        await stop(task_a)  # clean shutdown: release
        assert lease(fake_kube)["holderIdentity"] == ""
        took = await seconds_until(b.is_leader.is_set, "b leads")
        await stop(task_b)
    # At b's next retry (0.2 s plus up to 20% jitter), not after a lease duration.
    assert took <= JITTERED_RETRY_S + POLL_S
    assert lease(fake_kube)["leaseTransitions"] == 1


@pytest.mark.looptime
async def test_crashed_leader_is_replaced_within_lease_duration(
    fake_kube: FakeKubeServer, clients: tuple[KubeClient, KubeClient]
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a")
    b = LeaderElector(clients[1], SHORT, identity="b")
    async with never_two_leaders(a, b), leading(a, release_on_exit=False) as task_a:
        task_b = asyncio.create_task(b.run())
        # b must have seen a renew at least once before the crash.
        renewed = lease(fake_kube)["renewTime"]
        await wait_for(lambda: lease(fake_kube)["renewTime"] != renewed, what="a renews")
        await stop(task_a)  # a crash: no release
        assert lease(fake_kube)["holderIdentity"] == "a"
        assert not b.is_leader.is_set()
        took = await seconds_until(b.is_leader.is_set, "b takes over")
        assert lease(fake_kube)["holderIdentity"] == "b"
        await stop(task_b)
    # b waits a whole lease duration from when it first saw a's last renewal: that renewal
    # was at most one retry period before the crash, and b sees it (and later sees the
    # Lease expired) at its next retry.
    assert SHORT.lease_duration_s - SHORT.retry_period_s - POLL_S <= took
    assert took <= SHORT.lease_duration_s + 2 * JITTERED_RETRY_S + POLL_S


@pytest.mark.looptime
async def test_leader_that_cannot_renew_steps_down(
    fake_kube: FakeKubeServer, clients: tuple[KubeClient, KubeClient]
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a")
    async with leading(a):
        # The API server fails every lease write for longer than the renew deadline.
        fake_kube.inject_faults(500, 10_000, path_contains="/leases/")
        took = await seconds_until(lambda: not a.is_leader.is_set(), "a steps down")
        # The deadline runs from the last renewal that went through: at most one retry
        # period before the faults began.
        assert SHORT.renew_deadline_s - SHORT.retry_period_s - POLL_S <= took
        assert took <= SHORT.renew_deadline_s + POLL_S
        fake_kube.clear_faults()
        await wait_for(a.is_leader.is_set, what="a leads again")


@pytest.mark.looptime
async def test_someone_else_taking_the_lease_ends_leadership_at_once(
    fake_kube: FakeKubeServer, clients: tuple[KubeClient, KubeClient]
) -> None:
    a = LeaderElector(clients[0], SHORT, identity="a")
    async with leading(a):
        fake_kube.patch(
            "leases", "default", SHORT.lease_name, {"spec": {"holderIdentity": "intruder"}}
        )
        took = await seconds_until(lambda: not a.is_leader.is_set(), "a steps down")
    # At a's next renewal, not at the renew deadline.
    assert took <= SHORT.retry_period_s + POLL_S
    assert lease(fake_kube)["holderIdentity"] == "intruder"  # not released: not ours


def test_settings_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderSettings(lease_duration_s=1.0, renew_deadline_s=2.0)
