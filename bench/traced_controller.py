"""``autoscaler`` under tracemalloc, for ``bench_process.py --tracemalloc``: the bench's
way to see where the real process's memory goes, without product code for it.

Usage: ``python bench/traced_controller.py SNAPSHOT_PREFIX autoscaler-args...``. Each
SIGUSR1 writes ``SNAPSHOT_PREFIX.N`` (a ``tracemalloc.Snapshot``, N counting from 0).
Tracing costs CPU and memory of its own: never read times or RSS from a traced run.
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).parent.parent))


def main() -> int:
    prefix, args = sys.argv[1], sys.argv[2:]
    # Imported before tracing starts: code, not state.
    import autoscaler.app.cluster
    import autoscaler.kube
    import autoscaler.targets.kubernetes
    tracemalloc.start(4)  # frames per allocation: more slows a 10,000 start past minutes
    taken = 0

    def snapshot(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        tracemalloc.take_snapshot().dump(f"{prefix}.{taken}")
        taken += 1

    signal.signal(signal.SIGUSR1, snapshot)
    from autoscaler.cli import main as autoscaler

    sys.argv = ["autoscaler", *args]
    return autoscaler()


if __name__ == "__main__":
    raise SystemExit(main())
