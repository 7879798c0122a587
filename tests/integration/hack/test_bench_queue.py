"""``hack/bench_queue.py`` drives the real merge queue (``core.mergequeue`` + ``vcs.speculate``) on real git
repositories: a tiny run (no sleep in the gate) must merge every innocent candidate once, evict exactly the planted
culprits, and leave no red commit on the target, in both modes. Figures are printed, never asserted."""

from __future__ import annotations

import re

import pytest

import hack_modules

pytestmark = pytest.mark.integration


def test_a_small_run_evicts_exactly_the_culprits_and_keeps_the_target_green(capsys: pytest.CaptureFixture[str]):
    bench = hack_modules.load("bench_queue")
    assert bench.main(["--candidates", "8", "--culprit-every", "4", "--gate-seconds", "0", "--window", "4",
                       "--gate", "tester"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    figures = dict(kv.split("=", 1) for kv in last.split())
    assert set(figures) == {"speculative_vs_serial", "red_target_commits", "culprits_evicted", "innocent_evicted"}
    assert float(figures["speculative_vs_serial"]) > 0
    assert figures["red_target_commits"] == "0"
    assert figures["culprits_evicted"] == "2/2"
    assert figures["innocent_evicted"] == "0"
    for mode in ("serial", "speculative"):
        line = next(line for line in out.splitlines() if f"] {mode} (window" in line)
        assert ("depth 1" in line) == (mode == "serial"), line
        assert re.search(r": 6 merged, 2 evicted", line), line
        assert "merged twice 0" in line and "lost" not in out


def test_a_small_run_gated_by_the_ci_stand_in_through_the_forge(capsys: pytest.CaptureFixture[str]):
    """``--gate ci``: the CI stand-in process runs the tests on each pushed queue branch and posts check runs; the
    driver reads them through ``runtime.forge`` and decides with ``core.cigate``; every exchange keeps GitHub's
    description (the forge stand-in checks them when it stops)."""
    bench = hack_modules.load("bench_queue")
    assert bench.main(["--candidates", "8", "--culprit-every", "4", "--gate-seconds", "0", "--window", "4",
                       "--gate", "ci"]) == 0
    out = capsys.readouterr().out
    last = next(line for line in out.splitlines() if line.startswith("external_checks "))
    figures = dict(kv.split("=", 1) for kv in last.split()[1:])
    assert (figures["red_target_commits"], figures["culprits_evicted"], figures["innocent_evicted"]) == ("0", "2/2",
                                                                                                         "0")
    assert re.search(r"external checks: \d+ requests to the forge", out), out
    for mode in ("serial", "speculative"):
        line = next(line for line in out.splitlines() if f"] {mode} (window" in line)
        assert re.search(r": 6 merged, 2 evicted", line), line


def test_culprits_are_one_per_group():
    bench = hack_modules.load("bench_queue")
    import random

    culprits = bench.plant_culprits(64, 16, random.Random(1))
    groups = sorted(int(c[1:]) // 16 for c in culprits)
    assert groups == [0, 1, 2, 3]
