"""Regenerate the bundled traces: ``python examples/traces/generate.py``.

Seeded, so the files are reproducible byte for byte; each is written here and, for
``autoscaler simulate --trace NAME``, as package data in ``autoscaler/data/trace-NAME.csv``.

- ``steady``:  ~5 msg/s (Poisson) for 20 min, then 10 min idle.
- ``burst``:   idle 2 min, then 1,000 messages in one second (a pipeline pushing a list of
  cities), then idle 15 min. The burst lands at t=120, on a KEDA poll: the baseline's
  best case (it reacts at once, instead of 15 s later on average) — the conservative choice.
- ``diurnal``: one 6-hour sinusoid, 0.5 → 20 → 0.5 msg/s (Poisson).
- ``spiky``:   ~0.5 msg/s background for 1 h with bursts of 200–600 messages at random
  times (gaps of 2–12 min), then 10 min idle.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_DATA = HERE.parent.parent / "autoscaler" / "data"


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method; fine for the small means used here (≤ 30)."""
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def steady(rng: random.Random) -> list[int]:
    return [poisson(rng, 5.0) for _ in range(20 * 60)] + [0] * (10 * 60)


def burst(rng: random.Random) -> list[int]:
    return [0] * 120 + [1000] + [0] * (15 * 60 - 1)


def diurnal(rng: random.Random, period_s: int = 6 * 3600) -> list[int]:
    low, high = 0.5, 20.0
    phase = [(1 - math.cos(2 * math.pi * t / period_s)) / 2 for t in range(period_s)]
    return [poisson(rng, low + (high - low) * p) for p in phase]


def spiky(rng: random.Random) -> list[int]:
    counts = [poisson(rng, 0.5) for _ in range(3600)] + [0] * 600
    t = rng.randint(60, 300)
    while t < 3600:
        counts[t] += rng.randint(200, 600)
        t += rng.randint(120, 720)
    return counts


TRACES: dict[str, Callable[[random.Random], list[int]]] = {
    "steady": steady,
    "burst": burst,
    "diurnal": diurnal,
    "spiky": spiky,
}


def render(counts: list[int]) -> str:
    return "t_s,arrivals\n" + "".join(f"{t},{n}\n" for t, n in enumerate(counts))


def main(argv: list[str]) -> int:
    PACKAGE_DATA.mkdir(exist_ok=True)
    for name, make in TRACES.items():
        text = render(make(random.Random(f"queue-autoscaler/{name}")))
        (HERE / f"{name}.csv").write_text(text)
        (PACKAGE_DATA / f"trace-{name}.csv").write_text(text)
        print(f"{name}: {len(text.splitlines()) - 1} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
