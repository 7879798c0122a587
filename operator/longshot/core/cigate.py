"""The team's own CI as the merge queue's gate (``spec.merge.gate``): what the required checks reported on one
queue commit say about its prefix. Pure: the shell reads the forge (``runtime.forge``: GitHub commit statuses and
check runs, GitLab commit statuses and pipelines) and gives the reports here as :class:`Report`; :func:`verdict`
turns them, the time waited and the timeout into one :class:`Verdict`, which becomes the prefix's probe
(``core.mergequeue.Probe``: ``passed``/``failed``/``running``) or breaks the batch's gate (``broken``).

A report's state comes from the forge's own words (:func:`github_status`, :func:`github_check_run`,
:func:`gitlab_status`): ``passed``, ``failed`` or ``pending``. Several reports of one name (a rerun, a status and a
check run of one name): the newest of each source counts (the shell gives them newest first), then ``failed``
outweighs ``pending``, which outweighs ``passed``.

Transition table of one gated commit (``required``: the names of ``spec.merge.gate.checks``, in their order; the
first row that matches decides):

==========================================  ===============  ===================================================
the required checks' reports                waited            verdict
==========================================  ===============  ===================================================
one failed (the first such, in order)        any              ``failed``: the prefix failed (bisection; the
                                                              culprit's fixer gets the check's name and link)
every one reported and passed                any              ``passed``
none failed, some pending or not reported    < timeout        ``pending``: read again after ``pollSeconds``
one reported, still pending                  >= timeout       ``broken``/``timeout``: the batch's gate broke
one never reported                           >= timeout       ``broken``/``missing``: the batch's gate broke
==========================================  ===============  ===================================================

A broken gate is not a culprit: the CI (a runner that never came, a check name that no job reports) is at fault,
not a candidate, so the batch's candidates are tried again (``MergeJob`` ``Error``, three tries) with the reason,
and nobody is evicted. With ``gate.by: both`` the tester's probe and the CI's verdict are joined by :func:`join`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

CheckState = Literal["pending", "passed", "failed"]
VerdictState = Literal["pending", "passed", "failed", "broken"]
MAX_TEXT: Final = 500
"""Longest description or link kept from a report (hostile text: bounded before it reaches a fixer)."""

GITHUB_STATUS: Final[dict[str, CheckState]] = {"success": "passed", "pending": "pending", "failure": "failed",
                                              "error": "failed"}
GITHUB_CONCLUSION: Final[dict[str, CheckState]] = {
    "success": "passed", "neutral": "passed", "skipped": "passed",
    "failure": "failed", "cancelled": "failed", "timed_out": "failed", "action_required": "failed",
    "startup_failure": "failed", "stale": "failed"}
"""A completed check run's conclusion; GitHub's branch protection counts ``success``, ``neutral`` and ``skipped``
as passing a required check."""
GITLAB_STATUS: Final[dict[str, CheckState]] = {"success": "passed", "failed": "failed", "canceled": "failed",
                                              "skipped": "failed"}
"""A GitLab commit status or pipeline; any other (created, waiting_for_resource, preparing, pending, running,
manual, scheduled) is pending. ``skipped`` fails: a required check that did not run did not pass."""
_WEIGHT: Final[dict[CheckState, int]] = {"passed": 0, "pending": 1, "failed": 2}


@dataclass(frozen=True)
class Report:
    """One check's report on the commit, as the forge gave it (newest first within a ``source``)."""

    name: str
    state: CheckState
    url: str = ""
    """Its page: GitHub ``target_url`` / ``details_url``, GitLab ``target_url`` / ``web_url``."""
    description: str = ""
    source: str = "status"
    """``status``, ``check-run`` or ``pipeline``: newest-first order holds within one source."""


@dataclass(frozen=True)
class Verdict:
    state: VerdictState
    reason: str
    """``passed``, ``failed``, ``pending``, ``timeout`` or ``missing``."""
    check: str = ""
    """The check that decided (failed, timed out, missing), else ""."""
    url: str = ""
    message: str = ""
    """For a person and for the fixer: the check's name, what it said and its link."""


def github_status(state: object) -> CheckState:
    """A GitHub commit status's ``state``."""
    return GITHUB_STATUS.get(str(state), "pending")


def github_check_run(status: object, conclusion: object) -> CheckState:
    """A GitHub check run's ``status`` and ``conclusion``: pending until ``completed``; an unknown conclusion
    fails."""
    if status != "completed":
        return "pending"
    return GITHUB_CONCLUSION.get(str(conclusion), "failed")


def gitlab_status(status: object) -> CheckState:
    """A GitLab commit status's or pipeline's ``status``."""
    return GITLAB_STATUS.get(str(status), "pending")


def latest(reports: Iterable[Report]) -> dict[str, Report]:
    """Per check name: the newest report of each source, then the heaviest of those (failed > pending > passed)."""
    newest: dict[tuple[str, str], Report] = {}
    for r in reports:
        newest.setdefault((r.name, r.source), r)
    out: dict[str, Report] = {}
    for (name, _), r in newest.items():
        known = out.get(name)
        if known is None or _WEIGHT[r.state] > _WEIGHT[known.state]:
            out[name] = r
    return out


def verdict(required: Sequence[str], reports: Iterable[Report], waited: float, timeout: float) -> Verdict:
    """The required checks' verdict on one commit after ``waited`` seconds of ``timeout`` (the table above)."""
    seen = latest(reports)
    for name in required:
        r = seen.get(name)
        if r is not None and r.state == "failed":
            said = f": {_bounded(r.description)}" if r.description else ""
            link = f" (details: {_bounded(r.url)})" if r.url else ""
            return Verdict("failed", "failed", name, _bounded(r.url),
                           f"the required check {name} failed{said}{link}")
    if all(name in seen and seen[name].state == "passed" for name in required):
        return Verdict("passed", "passed", message="every required check passed: " + ", ".join(required))
    if waited < timeout:
        waiting = [n for n in required if n not in seen or seen[n].state != "passed"]
        return Verdict("pending", "pending", message="waiting for " + ", ".join(waiting))
    for name in required:
        r = seen.get(name)
        if r is not None and r.state == "pending":
            link = f" (details: {_bounded(r.url)})" if r.url else ""
            return Verdict("broken", "timeout", name, _bounded(r.url),
                           f"the required check {name} was still pending after {timeout:.0f}s{link}; raise "
                           "spec.merge.gate.timeoutSeconds or look at the CI")
    missing = next(n for n in required if n not in seen)
    return Verdict("broken", "missing", missing, "",
                   f"no check named {missing} was reported on the commit within {timeout:.0f}s: the CI does not run "
                   "on the queue branches (longshot/**/_queue/**), or spec.merge.gate.checks misspells it")


def join(tester: Literal["running", "passed", "failed"], ci: Verdict) -> VerdictState:
    """``gate.by: both``: the prefix fails when either failed, is broken when the CI's gate broke, passes when both
    passed, and waits otherwise.

    ===========  ==========  ========
    tester       CI          joined
    ===========  ==========  ========
    failed       any         failed
    any          failed      failed
    any          broken      broken
    passed       passed      passed
    otherwise                pending
    ===========  ==========  ========
    """
    if tester == "failed" or ci.state == "failed":
        return "failed"
    if ci.state == "broken":
        return "broken"
    if tester == "passed" and ci.state == "passed":
        return "passed"
    return "pending"


def _bounded(text: str) -> str:
    return " ".join(text.split())[:MAX_TEXT]
