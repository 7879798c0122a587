#!/usr/bin/env python3
"""Benchmark of ``longshot.core.scheduler.select``: 10,000 candidate tasks over 100 builds.

Run: ``.venv/bin/python hack/bench_scheduler.py [--tasks N] [--builds N] [--rounds N]``. Prints the median
and worst time of one ``select`` call. The target is well under 100 ms (a figure, not a test assertion).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from longshot.core import scheduler
from longshot.core.scheduler import BuildView, TaskView


def workload(n_tasks: int, n_builds: int, seed: int = 1):
    rnd = random.Random(seed)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    builds = {f"ns/b{i}": BuildView(f"ns/b{i}", max_workers=rnd.choice([2, 4, 8, 16])) for i in range(n_builds)}
    keys = list(builds)
    candidates, running, succeeded = [], [], set()
    for i in range(n_tasks):
        b = keys[i % n_builds]
        deps = (f"t{i - n_builds}",) if i >= n_builds and rnd.random() < 0.3 else ()
        if deps and rnd.random() < 0.7:
            succeeded.add((b, deps[0]))
        scope = (rnd.choice(["src/**", f"src/m{i % 37}/*.py", f"docs/{i}.md", "tests/**"]),) \
            if rnd.random() < 0.5 else ()
        candidates.append(TaskView(f"t{i}", b, rnd.randint(1, 10), t0 + timedelta(seconds=i), deps, scope))
    for i in range(n_builds):
        running.append(TaskView(f"r{i}", keys[i], 5, t0, (), (f"src/m{i % 37}/*.py",), "Running"))
    return candidates, running, succeeded, builds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--builds", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--global-limit", type=int, default=500)
    args = ap.parse_args()
    candidates, running, succeeded, builds = workload(args.tasks, args.builds)
    times, admitted = [], 0
    for _ in range(args.rounds):
        scheduler.patterns_overlap.cache_clear()  # measure cold caches, as after a restart
        start = time.perf_counter()
        sel = scheduler.select(candidates, running, succeeded=succeeded, builds=builds,
                               global_limit=args.global_limit)
        times.append(time.perf_counter() - start)
        admitted = len(sel.start)
    print(f"select(): {args.tasks} candidates, {args.builds} builds, global limit {args.global_limit}: "
          f"median {statistics.median(times) * 1000:.1f} ms, worst {max(times) * 1000:.1f} ms, "
          f"{admitted} admitted")


if __name__ == "__main__":
    main()
