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
    candidates, running = [], []
    for i in range(n_tasks):
        b = keys[i % n_builds]
        deps = (f"t{i - n_builds}",) if i >= n_builds and rnd.random() < 0.3 else ()
        ready = not deps or rnd.random() < 0.7  # the dependency succeeded (the shell works this out)
        scope = (rnd.choice(["src/**", f"src/m{i % 37}/*.py", f"docs/{i}.md", "tests/**"]),) \
            if rnd.random() < 0.5 else ()
        candidates.append(TaskView(f"t{i}", b, rnd.randint(1, 10), t0 + timedelta(seconds=i), deps, scope,
                                   dependencies_ready=ready))
    for i in range(n_builds):
        running.append(TaskView(f"r{i}", keys[i], 5, t0, (), (f"src/m{i % 37}/*.py",), "Running"))
    return candidates, running, builds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--builds", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--global-limit", type=int, default=500)
    args = ap.parse_args()
    candidates, running, builds = workload(args.tasks, args.builds)
    for cold in (True, False):
        times, admitted = [], 0
        for _ in range(args.rounds):
            if cold:
                scheduler.patterns_overlap.cache_clear()  # as after a restart
                scheduler._scope_cache.clear()
            start = time.perf_counter()
            sel = scheduler.select(candidates, running, builds=builds, global_limit=args.global_limit)
            times.append(time.perf_counter() - start)
            admitted = len(sel.start)
        print(f"select(), {'cold' if cold else 'warm'} overlap cache: {args.tasks} candidates, {args.builds} builds, "
              f"global limit {args.global_limit}: median {statistics.median(times) * 1000:.1f} ms, "
              f"worst {max(times) * 1000:.1f} ms, {admitted} admitted")


if __name__ == "__main__":
    main()
