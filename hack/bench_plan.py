"""Dispatch plan benchmark: the CPU of one ``controllers.dispatch.plan`` over a large world, in-process (no API
server): ``--builds`` builds of ``--tasks`` AgentTasks each (a tenth running with a Pod, three tenths succeeded, the
rest pending and ready), ``workers.max`` a tenth of the tasks. Each round one agent Pod of a build changes (ends or
runs again) and a plan is made with the dispatcher's ``Readiness`` kept between plans, as the dispatcher does. The
world is the unit tests' (``tests/unit/controllers/test_dispatch_plan.py``: the real cache, context and plan).

The last line reads ``plan_ms=<mean over the rounds> live_tasks=<n>``. ``--profile`` prints cProfile's top functions.
Usage: ``python hack/bench_plan.py [--builds 4 --tasks 2500 --rounds 40] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "unit" / "controllers"), str(ROOT / "tests" / "unit"), str(ROOT / "tests")]

from test_dispatch_plan import context_of, owner  # noqa: E402

from longshot.controllers import dispatch  # noqa: E402


def world(builds: int, tasks: int) -> dict[str, Any]:
    out = []
    for b in range(builds):
        rows = []
        for i in range(tasks):
            phase, pod = (("Running", "running") if i < tasks // 10 else
                          ("Succeeded", "none") if i < tasks * 4 // 10 else ("Pending", "none"))
            rows.append({"phase": phase, "priority": 5, "age": i % 5, "scope": (), "cancel": False,
                         "deleting": False, "conditions": True, "depends": [], "tokens": 0, "pod": pod})
        out.append({"name": f"b{b}", "workers": max(1, tasks // 10), "suspend": False, "budget": None,
                    "owned": True, "misconfigured": False, "tasks": rows})
    return {"limit": builds * max(1, tasks // 10), "killswitch": False, "builds": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=2500)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    ctx = context_of(world(args.builds, args.tasks))
    readiness = dispatch.Readiness()
    dispatch.plan(ctx, readiness)  # the first plan views every task; the rounds measure the plans after it
    running = max(1, args.tasks // 10)

    def rounds() -> None:
        for k in range(args.rounds):
            b, i = k % args.builds, (k // args.builds) % running
            ctx.cache.observe("Pod", "MODIFIED", {
                "metadata": {"name": f"b{b}-t{i}-a1", "namespace": "ns", "resourceVersion": str(10 + k),
                             "ownerReferences": [owner(f"b{b}-t{i}")]},
                "status": {"phase": "Succeeded" if k % 2 else "Running"}})
            dispatch.plan(ctx, readiness)

    start = time.process_time()
    rounds()
    spent = time.process_time() - start
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(rounds)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    live = sum(len(v) for v in ctx.cache.live_by_build.values())
    print(f"plan_ms={1000 * spent / args.rounds:.1f} live_tasks={live}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
