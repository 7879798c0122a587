"""core.cigate: every row of the CI gate's transition table, the forges' words, the join with the tester, and the
API's validation of ``spec.merge.gate``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from longshot.api.buildrequest import MergeGate, MergeSettings
from longshot.core import cigate
from longshot.core.cigate import Report, Verdict

REQ = ("ci/test", "ci/lint")


def test_a_failed_required_check_fails_the_prefix_naming_the_check_and_its_link() -> None:
    reports = [Report("ci/test", "passed"), Report("ci/lint", "failed", "https://ci.example/runs/7", "2 errors")]
    v = cigate.verdict(REQ, reports, waited=1, timeout=60)
    assert (v.state, v.reason, v.check, v.url) == ("failed", "failed", "ci/lint", "https://ci.example/runs/7")
    assert v.message == "the required check ci/lint failed: 2 errors (details: https://ci.example/runs/7)"


def test_a_failure_decides_even_past_the_timeout_and_while_another_check_is_pending() -> None:
    reports = [Report("ci/test", "pending"), Report("ci/lint", "failed")]
    assert cigate.verdict(REQ, reports, waited=999, timeout=60).state == "failed"


def test_every_required_check_passed_passes() -> None:
    reports = [Report("ci/test", "passed"), Report("ci/lint", "passed"), Report("other", "failed")]
    v = cigate.verdict(REQ, reports, waited=5, timeout=60)
    assert (v.state, v.reason) == ("passed", "passed")


def test_a_check_not_required_does_not_gate() -> None:
    assert cigate.verdict(("ci/test",), [Report("ci/test", "passed"), Report("deploy", "failed")], 0, 60).state \
        == "passed"


@pytest.mark.parametrize("reports", [[Report("ci/test", "passed"), Report("ci/lint", "pending")],
                                     [Report("ci/test", "passed")], []])
def test_pending_or_not_reported_before_the_timeout_waits(reports: list[Report]) -> None:
    v = cigate.verdict(REQ, reports, waited=59.9, timeout=60)
    assert (v.state, v.reason) == ("pending", "pending")
    assert "ci/lint" in v.message


def test_still_pending_at_the_timeout_breaks_the_gate_with_the_reason_timeout() -> None:
    reports = [Report("ci/test", "passed"), Report("ci/lint", "pending", "https://ci.example/runs/8")]
    v = cigate.verdict(REQ, reports, waited=60, timeout=60)
    assert (v.state, v.reason, v.check) == ("broken", "timeout", "ci/lint")
    assert "still pending after 60s" in v.message and "https://ci.example/runs/8" in v.message


def test_never_reported_at_the_timeout_breaks_the_gate_with_the_reason_missing() -> None:
    v = cigate.verdict(REQ, [Report("ci/test", "passed")], waited=61, timeout=60)
    assert (v.state, v.reason, v.check) == ("broken", "missing", "ci/lint")
    assert "no check named ci/lint was reported" in v.message and "spec.merge.gate.checks" in v.message


def test_pending_outranks_missing_at_the_timeout_in_the_required_order() -> None:
    v = cigate.verdict(REQ, [Report("ci/lint", "pending")], waited=60, timeout=60)
    assert (v.reason, v.check) == ("timeout", "ci/lint")


def test_the_newest_report_of_a_source_counts_a_rerun_that_passed() -> None:
    newest_first = [Report("ci/test", "passed", source="check-run"), Report("ci/test", "failed", source="check-run")]
    assert cigate.verdict(("ci/test",), newest_first, 0, 60).state == "passed"


def test_across_sources_a_failure_outweighs_a_pass() -> None:
    reports = [Report("ci/test", "passed", source="status"), Report("ci/test", "failed", source="check-run")]
    assert cigate.verdict(("ci/test",), reports, 0, 60).state == "failed"


def test_hostile_text_is_bounded_and_on_one_line() -> None:
    v = cigate.verdict(("t",), [Report("t", "failed", "u" * 5000, "line1\nline2" + "x" * 5000)], 0, 60)
    assert "\n" not in v.message and len(v.url) == cigate.MAX_TEXT
    assert len(v.message) < 3 * cigate.MAX_TEXT


@pytest.mark.parametrize(("state", "expected"), [("success", "passed"), ("pending", "pending"),
                                                 ("failure", "failed"), ("error", "failed"), ("weird", "pending")])
def test_github_commit_status_states(state: str, expected: str) -> None:
    assert cigate.github_status(state) == expected


@pytest.mark.parametrize(("status", "conclusion", "expected"), [
    ("queued", None, "pending"), ("in_progress", None, "pending"), ("completed", "success", "passed"),
    ("completed", "neutral", "passed"), ("completed", "skipped", "passed"), ("completed", "failure", "failed"),
    ("completed", "timed_out", "failed"), ("completed", "cancelled", "failed"),
    ("completed", "action_required", "failed"), ("completed", "something-new", "failed")])
def test_github_check_run_states(status: str, conclusion: str | None, expected: str) -> None:
    assert cigate.github_check_run(status, conclusion) == expected


@pytest.mark.parametrize(("status", "expected"), [("success", "passed"), ("failed", "failed"), ("canceled", "failed"),
                                                  ("skipped", "failed"), ("running", "pending"), ("manual", "pending"),
                                                  ("created", "pending")])
def test_gitlab_states(status: str, expected: str) -> None:
    assert cigate.gitlab_status(status) == expected


@pytest.mark.parametrize(("tester", "ci", "expected"), [
    ("failed", "pending", "failed"), ("running", "failed", "failed"), ("passed", "failed", "failed"),
    ("running", "broken", "broken"), ("passed", "broken", "broken"), ("failed", "broken", "failed"),
    ("passed", "passed", "passed"), ("running", "passed", "pending"), ("passed", "pending", "pending")])
def test_join_of_the_tester_and_the_ci(tester: str, ci: str, expected: str) -> None:
    assert cigate.join(tester, Verdict(ci, ci)) == expected  # type: ignore[arg-type]


# --- the API ---------------------------------------------------------------------------------------------------


def test_the_gate_defaults_to_the_tester() -> None:
    g = MergeSettings().gate
    assert (g.by, g.checks, g.timeout_seconds, g.poll_seconds) == ("tester", [], 3600, 10)


def test_gate_bounds() -> None:
    with pytest.raises(ValidationError):
        MergeGate.model_validate({"by": "ci", "checks": ["x"], "timeoutSeconds": 5})
    with pytest.raises(ValidationError):
        MergeGate.model_validate({"by": "robot"})
    with pytest.raises(ValidationError):
        MergeGate.model_validate({"by": "ci", "checks": [f"c{i}" for i in range(21)]})
