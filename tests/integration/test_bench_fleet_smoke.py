"""``make bench-fleet`` does not rot: the harness end to end at a tiny size.

Its own throw-away control plane, kube-scheduler, kwok, the git forge and one operator process; 8 tasks, 4 agents,
no think time, instant gates, one culprit planted: every task's work must end merged on ``main`` (the culprit's
through its fixer), and the last line must carry every figure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^merged_per_hour=(\d+) agents=4 tasks=8 operator_cpu_s_per_merge=([\d.]+) api_writes_per_merge=([\d.]+) "
    r"peak_rss_mib=(\d+) dispatch_p95_s=([\d.]+) queue_wait_p95_s=([\d.]+)"
    r"( fleet_vs_floor=[\d.]+ floor_per_hour=\d+ window_s=\d+)?$")  # the floor's figures, when it ran


@pytest.mark.timeout(240)
def test_the_fleet_benchmark_merges_every_task_and_prints_its_figures(tmp_path: Path) -> None:
    keep = tmp_path / "work"
    # rate 0.15 with seed 2 plants exactly one culprit among fleet-0-t00000..07 (bench.is_culprit)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "bench_fleet.py"), "--tasks", "8", "--agents", "4",
         "--think-seconds", "0", "--gate-seconds", "0", "--gate-failure-rate", "0.15", "--seed", "2",
         "--duration", "150", "--report-every", "1000", "--keep", str(keep)],
        capture_output=True, text=True, timeout=230, check=False)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert LAST_LINE.match(lines[-1]), lines[-1]
    assert "[bench-fleet] merged=8/8" in lines[-2]
    # the culprit went through a gate that failed and a fixer, and the queue's phases were measured
    assert "'tester/failed'" in proc.stdout and "'fixer': 1" in proc.stdout, proc.stdout[-3000:]
    assert re.search(r"merge queue phases .*land \d", proc.stdout), proc.stdout[-3000:]
    main = subprocess.run(["git", "--git-dir", str(keep / "git" / "fleet-0.git"), "ls-tree", "-r", "--name-only",
                           "main", "work/"], capture_output=True, text=True, check=True).stdout.split()
    assert len(main) == 8


GATEWAY_FIGURES = re.compile(r" gateway_cpu_s_per_merge=([\d.]+) gateway_peak_rss_mib=(\d+) clone_p50_s=([\d.]+) "
                             r"clone_p95_s=([\d.]+) push_p50_s=([\d.]+) push_p95_s=([\d.]+)$")


@pytest.mark.timeout(300)
def test_through_the_gateway_every_task_s_work_is_cloned_and_pushed_through_it_and_merged(tmp_path: Path) -> None:
    keep = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "bench_fleet.py"), "--through-gateway", "--tasks", "8", "--agents", "4",
         "--think-seconds", "0", "--gate-seconds", "0", "--gate-failure-rate", "0.15", "--seed", "2",
         "--duration", "200", "--report-every", "1000", "--keep", str(keep)],
        capture_output=True, text=True, timeout=290, check=False)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "[bench-fleet] merged=8/8" in lines[-2]
    figures = GATEWAY_FIGURES.search(lines[-1])
    assert figures, lines[-1]
    assert float(figures.group(1)) > 0 and int(figures.group(2)) > 0
    # every worker's push and the fixer's went through the gateway: it forwarded them from its mirror
    assert re.search(r"pushes forwarded (9|[1-9]\d)\b", proc.stdout), proc.stdout[-3000:]
    assert "'fixer': 1" in proc.stdout, proc.stdout[-3000:]
    assert len(list((keep / "gateway-mirrors" / "repos").glob("*.git"))) == 1
    main = subprocess.run(["git", "--git-dir", str(keep / "git" / "fleet-0.git"), "ls-tree", "-r", "--name-only",
                           "main", "work/"], capture_output=True, text=True, check=True).stdout.split()
    assert len(main) == 8
