"""Cost of ``autoscaler simulate`` on long traces: 100,000, 300,000 and 1,000,000 seconds.

A user replayed a 1,000,000-row trace and waited 43 s with no output: the KEDA model
summed every scale event of the whole run at each HPA sync (quadratic). Per size this
prints the CPU seconds (``time.process_time``) to parse the trace, to replay it through
each policy, and the µs per trace-second — flat across sizes when the replay is linear —
next to a floor measured in the same run: one bare Python loop over the same rows doing a
comparison and an addition each (no replay can do less per second of trace).
Usage: ``.venv/bin/python bench/bench_simulate.py [--sizes 100000,300000,1000000]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from autoscaler.simulate import Params, run
from autoscaler.simulate.keda import KedaHpa, KedaSettings
from autoscaler.simulate.ours import Ours, default_spec
from autoscaler.simulate.trace import parse_trace


def trace_bytes(seconds: int) -> bytes:
    rng = random.Random(1)
    rows = "".join(f"{t},{rng.randint(0, 20)}\n" for t in range(seconds))
    return ("t_s,arrivals\n" + rows).encode()


def floor_s(arrivals: tuple[int, ...]) -> float:
    started = time.process_time()
    backlog = 0
    for n in arrivals:
        backlog = backlog + n if backlog < 10**12 else 0
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,300000,1000000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    spec, params = default_spec(), Params()
    k = params.ticks_per_s()
    print(f"{'seconds':>9}  {'parse s':>8}  {'ours s':>7}  {'keda s':>7}  "
          f"{'ours µs/s':>9}  {'keda µs/s':>9}  {'floor µs/s':>10}")  # fmt: skip
    for size in sizes:
        data = trace_bytes(size)
        started = time.process_time()
        trace = parse_trace(data, f"random-{size}")
        parse_s = time.process_time() - started
        started = time.process_time()
        run(trace, Ours(spec, k), params)
        ours_s = time.process_time() - started
        started = time.process_time()
        run(trace, KedaHpa(KedaSettings.like(spec), k), params)
        keda_s = time.process_time() - started
        floor = floor_s(trace.arrivals)
        per = 1e6 / size
        print(f"{size:>9,}  {parse_s:>8.2f}  {ours_s:>7.2f}  {keda_s:>7.2f}  "
              f"{ours_s * per:>9.1f}  {keda_s * per:>9.1f}  {floor * per:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
