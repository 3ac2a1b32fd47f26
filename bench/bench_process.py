"""The real controller process at 10,000 busy workloads: start → first complete cycle,
RSS, event-loop lag, and how soon a backlog is scaled while the start's status writes
are still going out.

A fake API server (``tests.fakekube``, paged lists and watches over real HTTP) holds N
annotated Deployments (polling 1 s); a private redis-server holds their queues, and every
queue's length changes every second (busy workloads). ``autoscaler run`` starts as a
subprocess. Printed beside each figure, its floor measured in the same run: for the
start, the same process's ``autoscaler --help`` (interpreter and import) and one paged
listing of the workloads from the same fake (which runs in this process, on the same 2
cores); for RSS, a bare Python process; for the reaction, the polling interval. The first
cycle is seen as the first status PATCH (every workload is new: the first cycle ends with
its status writes); /metrics is not scraped during the start (each scrape renders). The
controller is stopped whatever happens (``finally``). ``--tracemalloc PREFIX`` runs it
under tracemalloc (``bench/traced_controller.py``) and writes two snapshots.
``--failover``: two controllers elect a leader on a Lease (3 s); the leader is SIGKILLed
5 s after its first cycle (while it is still writing the fresh fleet's statuses, 20 a
second), and every figure after the start is the new leader's: its first cycle after the
kill, the backlog pushed 3 s after it, its RSS and lag; plus how many of the statuses
the old leader had written it wrote again (the same in substance: none is due). Usage:
``.venv/bin/python bench/bench_process.py [--workloads N] [--failover]`` (repeat for the
median).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from bench_cycle import start_redis

from autoscaler.annotations import ANNOTATION_PREFIX, STATUS_ANNOTATION
from tests.fakekube import FakeKubeServer
from tests.kubeutil import workload

MOVE = """for i = 0, tonumber(ARGV[1]) - 1 do
  if redis.call('LLEN', 'q' .. i) > 2 then redis.call('RPOP', 'q' .. i)
  else redis.call('LPUSH', 'q' .. i, 'm') end
end"""
AUTOSCALER = str(Path(sys.executable).parent / "autoscaler")
ELECTION = ("--lease-duration=3", "--renew-deadline=2", "--retry-period=0.5")
KILL_AFTER_S = 5.0  # --failover: the leader's life after its first cycle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sample(session: aiohttp.ClientSession, port: int, name: str) -> float | None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with session.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def status_text(i: int) -> str:
    """A status annotation as a controller before this one wrote it for workload ``i``
    (``--with-status``: a restart over an annotated fleet, or a fleet whose statuses
    have all been written, which a fresh fleet reaches after ~500 s at 20 writes/s)."""
    trigger, since = f"redis:q{i}", "2026-01-01T00:00:00Z"
    message = f"{trigger} 3 / 3 per replica \u2192 1"
    conditions = [
        ("Ready", "True", "TriggersRead", ""),
        ("Active", "True", "Active", message),
        ("Fallback", "False", "NoFallback", ""),
        ("Paused", "False", "NotPaused", ""),
    ]
    doc = {
        "active": True, "backlog": 2, "current": 1, "desired": 1, "inFlight": 1,
        "message": message, "readings": {trigger: 3}, "reason": "DesiredWithinRange",
        "time": 1767225600.0, "triggers": [trigger],
        "conditions": [
            {"type": t, "status": s, "reason": r, "lastTransitionTime": since}
            | ({"message": m} if m else {})
            for t, s, r, m in conditions
        ],
    }  # fmt: skip
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


async def populate(client: aioredis.Redis, n: int, *, with_status: bool = False) -> FakeKubeServer:
    """N queues in Redis and N annotated Deployments in a fake API server (not started)."""
    for _ in range(100):
        with contextlib.suppress(Exception):
            await client.ping()
            break
        await asyncio.sleep(0.05)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.lpush(f"q{i}", b"m")
        await pipe.execute()
    fake = FakeKubeServer(history_limit=4 * n + 1000)
    for i in range(n):
        annotations = {
            ANNOTATION_PREFIX + "redis-list": f"q{i}",
            # 3 per replica: the moving lengths (2-3) want 1 replica, as the fleet has, so
            # every reading changes and no replica count does. At 2 per replica all 10,000
            # want 2 at the first cycle: 10,000 scale writes at the client's 20 requests/s
            # (~500 s), which the backlog's scale-up would queue behind whatever the order.
            ANNOTATION_PREFIX + "messages-per-replica": "3",
            ANNOTATION_PREFIX + "min-replicas": "1",
            ANNOTATION_PREFIX + "polling-interval": "1",
        }
        if with_status:
            annotations[STATUS_ANNOTATION] = status_text(i)
        fake.create(workload("Deployment", f"w{i}", annotations=annotations))
    return fake


async def list_all(fake: FakeKubeServer) -> float:
    """Seconds to list the labelled Deployments from the fake as the controller does
    (pages of 500, JSON parsed): what the start cannot beat on this fake."""
    url = f"{fake.url}/apis/apps/v1/deployments"
    query = {"labelSelector": "queue-autoscaler.io/enabled=true", "limit": "500"}
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url, params=query) as response:
                page = json.loads(await response.read())
            token = page["metadata"].get("continue")
            if not token:
                return time.perf_counter() - started
            query["continue"] = token


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def status_patches(fake: FakeKubeServer, since: int = 0, until: int | None = None) -> list[str]:
    """The workloads whose status annotation was PATCHed in requests ``since``..``until``
    (a /scale write is a subresource's PATCH: not counted)."""
    return [
        r.name
        for r in fake.requests[since:until]
        if r.method == "PATCH" and r.resource == "deployments" and not r.subresource
    ]


def holder(fake: FakeKubeServer) -> str | None:
    """Who holds the controllers' Lease (``POD_NAMESPACE`` default)."""
    lease = fake.get("leases", "default", "queue-autoscaler-leader")
    return None if lease is None else lease["spec"].get("holderIdentity")


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def first_patch(
    fake: FakeKubeServer, since: int, proc: asyncio.subprocess.Process, log: Path, limit_s: float
) -> float:
    """perf_counter() when the first workload PATCH after request ``since`` arrived: a
    first cycle's end (every workload is new to it, or its status changed)."""
    started, scanned = time.perf_counter(), since
    while True:
        await asyncio.sleep(0.02)
        if proc.returncode is not None or time.perf_counter() - started > limit_s:
            sys.exit(f"controller did not cycle; log:\n{tail(log)}")
        new, scanned = fake.requests[scanned:], len(fake.requests)
        if any(r.method == "PATCH" and "/deployments/" in r.path for r in new):
            return time.perf_counter()


async def fail_over(
    fake: FakeKubeServer,
    leader: asyncio.subprocess.Process,
    standby: asyncio.subprocess.Process,
    log: Path,
) -> tuple[int, float]:
    """SIGKILL ``leader``; (the fake's request count then, seconds from the kill to the
    first workload PATCH of ``standby`` as the new leader: its first cycle's end)."""
    leader.kill()
    await leader.wait()
    killed, at_kill = time.perf_counter(), len(fake.requests)
    await leading(fake, "bench-b", standby, log)  # PATCHes the dead one sent may come first
    return at_kill, await first_patch(fake, len(fake.requests), standby, log, 60) - killed


async def leading(
    fake: FakeKubeServer, name: str, proc: asyncio.subprocess.Process, log: Path
) -> None:
    """Until ``name`` holds the Lease (at most a minute, else the bench exits)."""
    since = time.perf_counter()
    while holder(fake) != name:
        await asyncio.sleep(0.02)
        if proc.returncode is not None or time.perf_counter() - since > 60:
            sys.exit(f"{name} did not lead:\n{tail(log)}")


async def scaled_up(fake: FakeKubeServer, name: str) -> float:
    """Seconds until ``name`` has 5 replicas or more (busy, it has 1-2)."""
    pushed = time.perf_counter()
    while True:
        deployment = fake.get("deployments", "default", name)
        if deployment is not None and deployment["spec"]["replicas"] >= 5:
            return time.perf_counter() - pushed
        await asyncio.sleep(0.05)


def run_command(traced: Path | None, failover: bool, kubeconfig: Path, redis_url: str) -> list[str]:
    """``autoscaler run`` as the bench starts it; ``traced``: under tracemalloc
    (bench/traced_controller.py); ``failover``: with leader election on a short Lease."""
    command = [sys.executable, str(Path(__file__).parent / "traced_controller.py"),
               str(traced)] if traced else [AUTOSCALER]  # fmt: skip
    election = ELECTION if failover else ("--no-leader-elect",)
    return [*command, "run", "--kubeconfig", str(kubeconfig), "--redis-url", redis_url,
            "--log-format", "json", "--log-level", "WARNING", *election]  # fmt: skip


def print_failover(
    fake: FakeKubeServer, at_kill: int, written_before: set[str], takeover: float
) -> None:
    again = [name for name in status_patches(fake, since=at_kill) if name in written_before]
    print(
        f"leader killed {KILL_AFTER_S:.0f} s after its first cycle → the new leader's first "
        f"cycle {takeover:6.2f} s   (floor: the lease, 3 s, + a retry period, 0.5 s)"
    )
    print(
        f"statuses the old leader had written: {len(written_before)}; the new leader wrote "
        f"{len(again)} of them again (a status shows its decision's readings: those of the "
        "queues that moved since differ; all queues move together here)"
    )


async def main(
    n: int,
    redis_url: str,
    traced: Path | None = None,
    *,
    with_status: bool = False,
    failover: bool = False,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    fake = await populate(client, n, with_status=with_status)
    await fake.start()
    tmp = Path(tempfile.mkdtemp())
    kubeconfig = fake.write_kubeconfig(tmp / "kubeconfig")
    port = free_port()

    t = time.perf_counter()
    helped = await asyncio.create_subprocess_exec(AUTOSCALER, "--help", stdout=subprocess.DEVNULL)
    await helped.wait()
    help_s = time.perf_counter() - t
    list_s = await list_all(fake)
    bare = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(3)")
    await asyncio.sleep(1)
    bare_mb = rss_mb(bare.pid)
    bare.kill()
    await bare.wait()

    print(f"fake API server with {n} workloads up; starting the controller", file=sys.stderr)
    log = (tmp / "controller.log").open("w")
    started = time.perf_counter()
    command = run_command(traced, failover, kubeconfig, redis_url)

    async def controller(name: str, metrics_port: int) -> asyncio.subprocess.Process:
        env = {**os.environ, "POD_NAME": name, "POD_NAMESPACE": "default"}
        return await asyncio.create_subprocess_exec(
            *command, "--metrics-port", str(metrics_port), stdout=log, stderr=log, env=env
        )

    proc = await controller("bench-a", port)
    standby_port, standby = free_port(), None
    if failover:  # the standby starts once bench-a leads: it sees the fleet before any status
        await leading(fake, "bench-a", proc, tmp / "controller.log")
        standby = await controller("bench-b", standby_port)
    mover_stop = asyncio.Event()

    async def mover() -> None:  # every queue moves every second
        while not mover_stop.is_set():
            await client.eval(MOVE, 0, n)
            await asyncio.sleep(1.0)

    moving = asyncio.create_task(mover())
    limit_s = 600 if traced else 120
    try:
        async with aiohttp.ClientSession() as session:
            # The first cycle ends with its status writes (every workload is new): the
            # first workload PATCH is the first cycle's end (+ one request). Not scraped
            # meanwhile: a scrape is served the previous render (up to ~1.5 s old at
            # 10,000) and each starts a render that competes with the start for the CPU.
            log_path = tmp / "controller.log"
            first = await first_patch(fake, 0, proc, log_path, limit_s) - started
            at_kill, written_before, takeover = 0, set(), 0.0
            if standby is not None:  # the leader dies while writing the fleet's statuses
                await asyncio.sleep(KILL_AFTER_S)
                at_kill, takeover = await fail_over(fake, proc, standby, log_path)
                written_before = set(status_patches(fake, until=at_kill))
                proc, port = standby, standby_port
            seen = None
            while not seen:  # and /metrics agrees that a cycle completed
                with contextlib.suppress(aiohttp.ClientError):
                    seen = await sample(
                        session, port, "queue_autoscaler_loop_duration_seconds_count"
                    )
                await asyncio.sleep(0.2)
            rss_first = rss_mb(proc.pid)
            print(f"first cycle after {first:.2f} s", file=sys.stderr)
            if traced:
                proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(3.0)
            await client.lpush("q0", *[b"b"] * 200)  # wants more than the 1-2 it has
            reaction = await scaled_up(fake, "w0")
            since = at_kill if standby is not None else 0  # the new leader's, after a failover
            patches = [
                r
                for r in fake.requests[since:]
                if r.method == "PATCH" and "/deployments/" in r.path
            ]
            lags, rss = [], []
            for _ in range(6):
                await asyncio.sleep(5.0)
                lag = await sample(session, port, "queue_autoscaler_event_loop_lag_seconds")
                lags.append(lag or 0.0)
                rss.append(rss_mb(proc.pid))
            if traced:
                proc.send_signal(signal.SIGUSR1)
                await asyncio.sleep(10.0)  # a snapshot at 10,000 takes seconds to write
    finally:  # an error or a timeout above must not leave a controller running
        mover_stop.set()
        await moving
        await stop(proc)
        if standby is not None:
            await stop(standby)
        await fake.stop()
        await client.aclose()
    print(json.dumps({"workloads": n, "with_status": with_status, "failover": failover}))
    if standby is not None:
        print_failover(fake, at_kill, written_before, takeover)
    print(
        f"start → first complete cycle   {first:6.2f} s   (floor: autoscaler --help {help_s:.2f} s "
        f"+ the fake's paged listing {list_s:.2f} s)"
    )
    print(
        f"backlog → /scale after {'failover' if failover else 'start'}   {reaction:6.2f} s   "
        "(floor: polling interval 1 s; "
        f"{len(patches)} status/scale PATCHes had been sent by then)"
    )
    print(
        f"RSS at first cycle / steady    {rss_first:6.0f} / {max(rss):.0f} MB "
        f"(floor: bare python {bare_mb:.0f} MB)"
    )
    print(
        f"event-loop lag, max of 10 s windows over 30 s  {1000 * max(lags):6.0f} ms "
        f"(each: {', '.join(f'{1000 * v:.0f}' for v in lags)})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument(
        "--tracemalloc", type=Path, metavar="PREFIX",
        help="run the controller under tracemalloc; write snapshots PREFIX.0 (first cycle) "
        "and PREFIX.1 (end); its times and RSS are then not the product's",
    )  # fmt: skip
    parser.add_argument(
        "--with-status", action="store_true",
        help="every workload starts with a status annotation (status_text), as after a "
        "restart, or once a fresh fleet's statuses are all written",
    )  # fmt: skip
    parser.add_argument(
        "--failover", action="store_true",
        help="a leader and a standby; the leader is killed after its first cycle and the "
        "figures after the start are the new leader's",
    )  # fmt: skip
    args = parser.parse_args()
    faulthandler.dump_traceback_later(900)  # a hang shows where (and then times out)
    server, url = start_redis()
    try:
        run = main(
            args.workloads,
            url,
            args.tracemalloc,
            with_status=args.with_status,
            failover=args.failover,
        )
        asyncio.run(asyncio.wait_for(run, 960))
    finally:
        server.terminate()
        server.wait()
