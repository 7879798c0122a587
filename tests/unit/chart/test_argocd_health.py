"""The chart's Argo CD health checks, run by a real Lua 5.1 interpreter (lupa) over the status fixtures: a failed
build is Degraded, a finished one Healthy, a suspended one Suspended, anything at work (or edited since it
finished) Progressing. The same table as kstatus in ``tests/integration/test_status_tools.py``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import status_tools as st
from longshot.api import agenttask, buildrequest, mergejob
from longshot.api import conditions as c
from longshot.core import builds, plan

FIXTURES = st.fixtures()


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(FIXTURES) == sorted(st.EXPECTED)


@pytest.mark.parametrize("name", sorted(st.EXPECTED))
def test_health_of_each_state(name: str) -> None:
    _, health, message = st.EXPECTED[name]
    status, text = st.argo_health(FIXTURES[name])
    assert status == health, text
    assert message in text


def test_the_three_scripts_share_one_body() -> None:
    bodies = {p.parent.name: p.read_text().split("-- The body below", 1)[1]
              for p in st.ARGOCD.glob("longshot.dev/*/health.lua")}
    assert sorted(bodies) == ["AgentTask", "BuildRequest", "MergeJob"]
    assert len(set(bodies.values())) == 1


def test_the_pending_fixture_is_the_crd_s_default_status() -> None:
    assert FIXTURES["at-pending"]["status"] == agenttask.initial_status()


def test_a_degraded_message_names_the_reason() -> None:
    status, text = st.argo_health(FIXTURES["at-configuration"])
    assert (status, text.split(":")[0]) == ("Degraded", "Configuration")


def test_an_object_the_operator_has_not_seen_is_progressing() -> None:
    fresh: dict[str, Any] = copy.deepcopy(FIXTURES["br-in-progress"])
    del fresh["status"]
    assert st.argo_health(fresh) == ("Progressing", "Waiting for the operator to report a status")


def test_a_ready_condition_from_an_older_generation_is_not_healthy() -> None:
    # an operator that does not write status.observedGeneration: the Ready condition's own generation counts
    obj: dict[str, Any] = copy.deepcopy(FIXTURES["br-finalized-passed"])
    del obj["status"]["observedGeneration"]
    obj["metadata"]["generation"] = 3
    status, text = st.argo_health(obj)
    assert status == "Progressing"
    assert text == "BuildRequest generation is 3, but the operator has observed generation 1"


def test_stalled_false_and_ready_false_without_reconciling_is_still_progressing() -> None:
    obj: dict[str, Any] = copy.deepcopy(FIXTURES["br-in-progress"])
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] != "Reconciling"]
    status, text = st.argo_health(obj)
    assert status == "Progressing"
    assert text.startswith("Working: ")  # the Ready condition speaks


@pytest.mark.parametrize("kind", ["BuildRequest", "AgentTask", "MergeJob"])
def test_the_check_exists_for_each_kind(kind: str) -> None:
    assert st.health_script("longshot.dev/v1alpha1", kind).is_file()


def test_the_fresh_fixtures_are_the_crd_s_default_status() -> None:
    assert FIXTURES["br-fresh"]["status"] == buildrequest.initial_status()
    assert FIXTURES["mj-fresh"]["status"] == mergejob.initial_status()


# --- docs/conditions.md "What a tool sees": every row checked against its fixture and the Lua check -------------

DOCS = st.docs_table()


def test_the_docs_table_has_a_row_for_every_build_fixture() -> None:
    assert sorted(DOCS) == sorted(n for n in FIXTURES if n.startswith("br-"))


@pytest.mark.parametrize("name", sorted(DOCS))
def test_the_docs_argo_cd_cell_is_what_the_health_check_says(name: str) -> None:
    status, text = st.argo_health(FIXTURES[name])
    assert DOCS[name]["Argo CD"] == status, text
    # the kstatus cell is checked against kstatus itself in tests/integration/test_status_tools.py
    assert DOCS[name]["kstatus"] == st.EXPECTED[name][0]


@pytest.mark.parametrize("name", sorted(DOCS))
def test_the_docs_condition_cells_are_the_fixture_s_conditions(name: str) -> None:
    assert st.condition_mismatches(DOCS[name], FIXTURES[name]) == []


def test_a_docs_cell_that_contradicts_the_tool_is_caught() -> None:
    row = {**DOCS["br-killswitch"], "Reconciling": "True"}
    assert st.condition_mismatches(row, FIXTURES["br-killswitch"]) == [
        "Reconciling: the docs say True, the object has False"]
    assert st.argo_health(FIXTURES["br-killswitch"])[0] != "Suspended"  # what the docs used to say


def _counts(**k: int) -> builds.TaskCounts:
    k.setdefault("total", sum(k.get(x, 0) for x in ("pending", "running", "succeeded", "failed", "cancelled")))
    return builds.TaskCounts(**k)


_ASKING = (builds.TaskIssue("rest-api-auth", "awaiting", "which OAuth provider should /login use?"),)
DECIDED: dict[str, dict[str, Any]] = {
    # the fixtures written from core.builds.summary: the state each one stands for
    "br-configuration": {"phase": "Pending", "configuration_error": "spec.repository.url: host git.example.invalid "
                         "does not resolve (Could not resolve host: git.example.invalid); fix the URL"},
    "br-configuration-busy": {"phase": "Working", "counts": _counts(running=2, pending=1, succeeded=3),
                              "configuration_error": "spec.agent.credentialsSecret: Secret 'llm-key' not found in "
                                                     "namespace team-a; create it or fix the name"},
    "br-budget-exceeded-busy": {"phase": "Working", "counts": _counts(running=2, pending=5, succeeded=5),
                                "budget_exceeded": True},
    "br-awaiting-input": {"phase": "Working", "counts": _counts(pending=1, succeeded=2), "issues": _ASKING},
    "br-awaiting-input-busy": {"phase": "Working", "counts": _counts(pending=2, running=1, succeeded=2),
                               "issues": _ASKING},
    "br-killswitch": {"phase": "Working", "counts": _counts(pending=5, succeeded=2), "halted": True},
}


@pytest.mark.parametrize("name", sorted(DECIDED))
def test_the_decided_fixtures_are_what_the_decider_writes(name: str) -> None:
    obj = FIXTURES[name]
    state = builds.BuildState(ref=plan.BuildRef(obj["metadata"]["name"], "team-a", "u"), **DECIDED[name])
    written = {x["type"]: (x["status"], x["reason"], x["message"]) for x in obj["status"]["conditions"]}
    for e in builds.summary(state):
        assert written[e.type] == (e.status, e.reason, e.message), e.type
    # and in the order the CRD's default status gives them: kstatus reads Stalled before Reconciling
    order = [x["type"] for x in obj["status"]["conditions"]]
    assert order[:4] == [c.READY, c.STALLED, c.RECONCILING, c.PROGRESSING]
