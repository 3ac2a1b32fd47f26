"""KubeClient over real HTTP against the fake API server: config, retries, errors, throttle."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from autoscaler.errors import KubeConflictError, KubeError, KubeNotFoundError, KubeTransientError
from autoscaler.kube import ClientSettings, KubeClient
from autoscaler.kube.client import MERGE_PATCH, Obj, TokenBucket, Turns
from autoscaler.metrics import ControllerMetrics
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import FAST, connect, requests_of, workload
from tests.kubeutil import kube as kube
from tests.kubeutil import metrics as metrics


def _count(metrics: ControllerMetrics, verb: str, code: str) -> float:
    value = metrics.registry.get_sample_value(
        "queue_autoscaler_kube_requests_total", {"verb": verb, "code": code}
    )
    return value or 0.0


async def _read_scale(kube: KubeClient, name: str = "web") -> Obj:
    return await kube.call(kube.apps.read_namespaced_deployment_scale, name, "default")


async def test_connect_from_kubeconfig_env(fake_kube: FakeKubeServer) -> None:
    fake_kube.create(workload("Deployment", "web", replicas=2))
    assert fake_kube.kubeconfig is not None
    environ = {"KUBECONFIG": str(fake_kube.kubeconfig)}
    async with await KubeClient.connect(environ=environ) as client:
        scale = await _read_scale(client)
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 2


async def test_bad_kubeconfig_is_a_kube_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("this: is: not: a kubeconfig")
    problem = r"not YAML: mapping values are not allowed here \(line 1, column 9\)$"
    with pytest.raises(KubeError, match=r"kubeconfig .*: " + problem):
        await KubeClient.connect(path)


async def test_calls_are_counted_by_verb_and_code(
    fake_kube: FakeKubeServer, kube: KubeClient, metrics: ControllerMetrics
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    await _read_scale(kube)
    await kube.call(kube.core.list_namespaced_pod, "default", label_selector="app=web")
    with pytest.raises(KubeNotFoundError):
        await _read_scale(kube, "missing")
    assert _count(metrics, "get", "200") == 1
    assert _count(metrics, "list", "200") == 1
    assert _count(metrics, "get", "404") == 1  # a 404 is an answer: not retried
    assert len(requests_of(fake_kube, "get", "/missing/")) == 1


@pytest.mark.looptime  # the Retry-After wait takes no wall-clock time; loop.time() shows it
async def test_429_burst_is_retried_after_retry_after(
    fake_kube: FakeKubeServer, kube: KubeClient, metrics: ControllerMetrics
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    fake_kube.inject_faults(429, 3, methods={"get"}, retry_after_s=0)
    scale = await _read_scale(kube)
    assert scale["metadata"]["name"] == "web"
    assert _count(metrics, "get", "429") == 3
    assert _count(metrics, "get", "200") == 1
    # Retry-After is honoured even when it is longer than our own backoff.
    fake_kube.inject_faults(429, 1, methods={"get"}, retry_after_s=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _read_scale(kube)
    assert round(loop.time() - started, 6) >= 1.0  # the fake clock is exact, floats are not


async def test_500_burst_is_retried_then_gives_up(
    fake_kube: FakeKubeServer, kube: KubeClient, metrics: ControllerMetrics
) -> None:
    fake_kube.create(workload("Deployment", "web", replicas=1))
    fake_kube.inject_faults(500, 3, methods={"PATCH"})
    body = {"spec": {"replicas": 3}}
    scale = await kube.call(
        kube.apps.patch_namespaced_deployment_scale,
        "web",
        "default",
        body,
        _content_type=MERGE_PATCH,
    )
    assert scale["spec"]["replicas"] == 3
    assert len(fake_kube.pod_names("default", "app=web")) == 3
    assert _count(metrics, "patch", "500") == 3
    # More failures than attempts: the last error is raised, translated.
    fake_kube.inject_faults(503, FAST.max_attempts)
    with pytest.raises(KubeTransientError) as raised:
        await _read_scale(kube)
    assert raised.value.status == 503
    assert _count(metrics, "get", "503") == FAST.max_attempts


async def test_409_is_raised_by_call_and_reread_by_read_modify_write(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    fake_kube.inject_faults(409, 1, methods={"PATCH"})
    body = {"metadata": {"annotations": {"x": "1"}}}
    with pytest.raises(KubeConflictError):  # a plain write is not retried on 409
        await kube.call(
            kube.apps.patch_namespaced_deployment,
            "web",
            "default",
            body,
            _content_type=MERGE_PATCH,
        )

    reads: list[str] = []

    async def read() -> Obj:
        current = await kube.call(kube.apps.read_namespaced_deployment, "web", "default")
        reads.append(current["metadata"]["resourceVersion"])
        return current

    async def write(current: Obj) -> Obj:
        count = int(current["metadata"].get("annotations", {}).get("count", "0"))
        patch = {
            "metadata": {
                "resourceVersion": current["metadata"]["resourceVersion"],
                "annotations": {"count": str(count + 1)},
            }
        }
        return await kube.call(
            kube.apps.patch_namespaced_deployment,
            "web",
            "default",
            patch,
            _content_type=MERGE_PATCH,
        )

    fake_kube.inject_faults(409, 2, methods={"PATCH"})
    written = await kube.read_modify_write(read, write)
    assert written["metadata"]["annotations"]["count"] == "1"
    assert len(reads) == 3  # read, 409, re-read, 409, re-read, written


async def test_stale_resource_version_is_a_real_conflict(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    current = await kube.call(kube.apps.read_namespaced_deployment, "web", "default")
    fake_kube.patch("deployments", "default", "web", {"metadata": {"labels": {"x": "y"}}})
    stale = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}}
    with pytest.raises(KubeConflictError, match="409"):
        await kube.call(
            kube.apps.patch_namespaced_deployment,
            "web",
            "default",
            stale,
            _content_type=MERGE_PATCH,
        )


async def test_connection_refused_is_transient(tmp_path: Path, metrics: ControllerMetrics) -> None:
    async with FakeKubeServer() as server:
        server.write_kubeconfig(tmp_path / "kubeconfig")
    # The server is gone: every attempt fails to connect.
    client = await connect(server, metrics=metrics)
    try:
        with pytest.raises(KubeTransientError, match="Connect"):
            await _read_scale(client)
    finally:
        await client.close()
    assert _count(metrics, "get", "error") == FAST.max_attempts


async def test_throttle_limits_qps(fake_kube: FakeKubeServer) -> None:
    fake_kube.create(workload("Deployment", "web"))
    settings = ClientSettings(qps=20, burst=5)  # 5 at once, then 5 per 0.25 s
    client = await connect(fake_kube, settings=settings)
    try:
        started = time.monotonic()
        done: list[float] = []

        async def one() -> None:
            await _read_scale(client)
            done.append(time.monotonic() - started)

        await asyncio.gather(*(one() for _ in range(25)))
    finally:
        await client.close()
    done.sort()
    assert done[4] < 0.24  # the burst goes through at once, within the first window
    # 25 requests = 5 windows of 5: the last cannot start before 4 × 0.25 s.
    assert done[-1] >= 0.95
    assert len(requests_of(fake_kube, "get", "/scale")) == 25


async def test_watch_sends_lowercase_true_and_raises_410_in_stream(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    listed = await kube.call(kube.apps.list_namespaced_deployment, "default")
    version = listed["metadata"]["resourceVersion"]
    fake_kube.create(workload("Deployment", "other"))
    fake_kube.compact()  # the history after ``version`` is gone
    with pytest.raises(KubeError) as raised:
        async with kube.watch(
            kube.apps.list_namespaced_deployment,
            "default",
            resource_version=version,
            timeout_s=5,
        ) as events:
            async for _ in events:
                pass
    assert raised.value.status == 410
    (watch,) = requests_of(fake_kube, "watch")
    # The official client sends watch=true (kubernetes_asyncio sends "True").
    assert watch.query["watch"] == "true"
    assert watch.query["timeoutSeconds"] == "5"


async def test_foreground_calls_go_before_every_waiting_background_call(
    fake_kube: FakeKubeServer,
) -> None:
    """A scale write never waits behind queued Events or statuses: at the limiter it goes
    before every background call that waits, behind at most the one holding the turn."""
    fake_kube.create(workload("Deployment", "bg"))
    fake_kube.create(workload("Deployment", "fg"))
    client = await connect(fake_kube, settings=ClientSettings(qps=50, burst=1))
    read = client.apps.read_namespaced_deployment_scale
    try:
        await client.call(read, "bg", "default")  # the burst is spent: the rest wait
        background = [
            asyncio.create_task(client.call(read, "bg", "default", background=True))
            for _ in range(8)
        ]
        await asyncio.sleep(0)  # they queue (one holds the turn, polling the limiter)
        await client.call(read, "fg", "default")
        await asyncio.gather(*background)
    finally:
        await client.close()
    order = [r.path.split("/")[-2] for r in requests_of(fake_kube, "get", "/scale")]
    assert len(order) == 10
    assert order.index("fg") <= 2  # the first call, then at most the turn's holder


async def test_a_cancelled_waiter_handed_the_turn_passes_it_on() -> None:
    turns = Turns()
    await turns.acquire()
    cancelled = asyncio.create_task(turns.acquire(background=True))
    after = asyncio.create_task(turns.acquire(background=True))
    await asyncio.sleep(0)
    turns.release()  # handed to `cancelled`, which is cancelled before it runs
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    async with asyncio.timeout(5):
        await after  # the turn went on to the next waiter
    turns.release()
    await turns.acquire()  # and nobody holds it now


@pytest.mark.looptime
async def test_the_limiter_refills_one_token_at_a_time_not_a_window() -> None:
    """client-go's token bucket: the burst at once, then a request every 1 / qps — not
    none until a window of ``burst / qps`` seconds has passed (asyncio-throttle's sliding
    window: a scale write then waited up to 2 s behind a window of status writes)."""
    bucket, loop = TokenBucket(qps=10, burst=10), asyncio.get_running_loop()
    start = loop.time()
    for _ in range(10):
        await bucket.take()
    assert loop.time() == start  # the burst
    await bucket.take()
    assert loop.time() - start == pytest.approx(0.1)  # one token, not the rest of 1 s
    await asyncio.sleep(5.0)  # refilled up to the burst, no further
    again = loop.time()
    for _ in range(10):
        await bucket.take()
    assert loop.time() == again
    await bucket.take()
    assert loop.time() - again == pytest.approx(0.1)
