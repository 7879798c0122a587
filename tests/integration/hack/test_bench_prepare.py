"""``hack/bench_prepare.py`` times the real ``speculate.prepare`` on a long target history: a tiny run must apply
every plain and stacked member, leave out the conflicting one and recognise the one merged long ago. Figures are
printed, never asserted."""

from __future__ import annotations

import pytest

import hack_modules

pytestmark = pytest.mark.integration


def test_a_small_run_prepares_the_batch_it_describes(capsys: pytest.CaptureFixture[str]):
    bench = hack_modules.load("bench_prepare")
    assert bench.main(["--history", "60", "--members", "8", "--stacked", "2", "--fork-spread", "20",
                       "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    figures = dict(kv.split("=", 1) for kv in last.split())
    assert set(figures) == {"prepare_s_per_batch", "members", "history", "git_calls"}
    assert float(figures["prepare_s_per_batch"]) > 0
    assert figures["members"] == "8" and figures["history"] == "60"
    assert "{'AlreadyOnTarget': 1, 'Applied': 6, 'DidNotApply': 1}" in out
    assert "not applied: ['conflicting']" in out
