"""``hack/bench_scheduler.py`` runs against the scheduler's current API (it had fallen behind it: ``select`` lost its
``succeeded`` argument when dependency readiness moved to the shell, and the bench raised TypeError unnoticed).
A tiny run admits what its limits allow; figures are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hack_modules

ROOT = hack_modules.ROOT

pytestmark = pytest.mark.integration


def test_a_tiny_run_prints_its_figures_cold_and_warm():
    out = subprocess.run([sys.executable, str(ROOT / "hack" / "bench_scheduler.py"), "--tasks", "300", "--builds",
                          "5", "--rounds", "2", "--global-limit", "7"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(" overlap")[0] for line in lines] == ["select(), cold", "select(), warm"], lines
    assert all(line.endswith(" admitted") for line in lines)
    # five builds hold one running task each and the global limit is 7: at most 2 more start
    assert all(int(line.rsplit(" ", 2)[1]) <= 2 for line in lines), lines
