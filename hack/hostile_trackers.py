#!/usr/bin/env python3
"""What three amplifying tracker answers at once cost the operator (issue 50, item 2; docs/security.md).

:func:`tracker_answers_peak_rss_mib` serves the three shapes of ``tests/integration/amplifying_servers.py``
(``[],`` repeated, 4 million levels of nesting, a million small objects; each at the 8 MiB answer cap) from this
process, and runs three issue listings at once, one per tenant (so that no lane serialises them), in a fresh
subprocess with the operator's own code: ``runtime.trackers`` (the client the intake and the planner use, streamed
under the size cap, parsed under its budget) inside ``controllers.lanes`` (one call per tenant, three at once), each
in a worker thread as the operator runs it. It returns the subprocess's peak resident memory (``VmHWM``) in MiB.

Run: ``PYTHONPATH=operator .venv/bin/python hack/hostile_trackers.py [--operator DIR]``; ``--operator`` points at
another checkout's ``operator/`` directory (the figure before a change). Last line: ``tracker_answers_peak_rss_mib=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def _vm(field: str) -> float:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) / 1024 if match else 0.0


def _child(url: str, shapes: list[str]) -> dict[str, Any]:
    """Three listings at once with the operator's code; what each ended with, and the process's memory."""
    from longshot.runtime import trackers

    def listing(shape: str) -> str:
        try:
            with trackers.GitHub(repository=f"org/{shape}", token=None, url=url, max_retries=0) as t:
                return f"{len(t.list_issues(['longshot']))} issues"
        except Exception as e:  # what the intake would report (the code before the change raises RecursionError)
            return f"{type(e).__name__}: {str(e)[:160]}"

    async def run() -> list[str]:
        try:
            from longshot.controllers import lanes
        except ImportError:  # a checkout without lanes: the calls run as they come
            return list(await asyncio.gather(*(asyncio.to_thread(listing, s) for s in shapes)))
        lanes_ = lanes.Lanes()

        async def one(shape: str) -> str:
            async with lanes_.lane(f"tenant-{shape}"):
                return await asyncio.to_thread(listing, shape)

        return list(await asyncio.gather(*(one(s) for s in shapes)))

    idle = _vm("VmRSS")
    results = asyncio.run(run())
    return {"idle_mib": idle, "peak_mib": _vm("VmHWM"), "results": dict(zip(shapes, results, strict=True))}


def tracker_answers_peak_rss_mib(operator_dir: Path | None = None, *, verbose: bool = False) -> float:
    """Peak RSS (MiB) of a fresh process running three concurrent tracker listings against amplifying servers."""
    from amplifying_servers import SHAPES, AmplifyingTracker, amplifying

    for shape in SHAPES:
        amplifying(shape)
    env = {**os.environ, "PYTHONPATH": str(operator_dir or ROOT / "operator")}
    with AmplifyingTracker() as server:
        out = subprocess.run([sys.executable, __file__, "--child", server.github_url, *SHAPES], env=env,
                             capture_output=True, text=True, timeout=600, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    if verbose:
        for shape, result in figures["results"].items():
            print(f"  {shape:8} {result}")
        print(f"idle_rss_mib={figures['idle_mib']:.1f} peak_rss_mib={figures['peak_mib']:.1f}")
    return float(figures["peak_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operator", type=Path, help="the operator/ directory of the code to measure")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1:])))
        return
    peak = tracker_answers_peak_rss_mib(args.operator, verbose=True)
    print(f"tracker_answers_peak_rss_mib={peak:.0f}")


if __name__ == "__main__":
    main()
