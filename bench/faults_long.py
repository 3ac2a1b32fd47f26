"""The long fault variant: many sidecars, a big backlog, a sidecar SIGKILLed every 0.5 s.

    .venv/bin/python -m bench.faults_long [--sidecars 20] [--concurrency 8]
                                          [--messages 50000] [--kill-every 0.5]

Uses the fault matrix's rig (``tests/faults/harness.py``): a redis-server with AOF
``always``, real ``autoscaler consume`` processes restarted under the same id when killed
(as a kubelet would), the product's reaper, and a processor counting messages by id.
Prints one JSON row: produced, processed, duplicated, lost, dead-lettered, seconds.
Exit 1 when anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import tempfile
import time
from pathlib import Path

from tests.faults.harness import DurableRedis, Q, Recorder, message, report, rig


async def main(args: argparse.Namespace) -> int:
    server = DurableRedis()
    server.start()
    rng = random.Random(2026)
    row: dict[str, object] = {"lost": -1}
    try:
        with tempfile.TemporaryDirectory(prefix="faults-long-") as tmp:
            recorder = Recorder(latency_s=0.002)
            flags = ("--concurrency", str(args.concurrency))
            async with rig(server.url, Path(tmp), args.sidecars, *flags, recorder=recorder) as r:
                ids = set(range(args.messages))
                for start in range(0, args.messages, 1000):
                    batch = [message(i) for i in range(start, min(start + 1000, args.messages))]
                    await r.redis.lpush(Q, *batch)
                started = time.monotonic()
                kills = 0

                async def settled() -> bool:
                    dead = {json.loads(m)["id"] for m in await r.dead()}
                    return ids <= set(recorder.accepted) | dead

                while not await settled():
                    if time.monotonic() - started > args.timeout:
                        break
                    await asyncio.sleep(args.kill_every)
                    alive = [c for c, p in r.consumers.items() if p.process.returncode is None]
                    if alive:
                        r.consumers[rng.choice(alive)].process.send_signal(signal.SIGKILL)
                        kills += 1
                row = report(f"{args.sidecars} sidecars x c{args.concurrency}, SIGKILL every "
                             f"{args.kill_every}s ({kills} kills)", r, ids, await r.dead(),
                             time.monotonic() - started)  # fmt: skip
    finally:
        server.stop()
    return 1 if row["lost"] else 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sidecars", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--kill-every", type=float, default=0.5, help="seconds")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
