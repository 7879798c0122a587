"""The chart's Argo CD health checks, run by a real Lua 5.1 interpreter (lupa) over the status fixtures: a failed
build is Degraded, a finished one Healthy, a suspended one Suspended, anything at work (or edited since it
finished) Progressing. The same table as kstatus in ``tests/integration/test_status_tools.py``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import status_tools as st
from longshot.api import agenttask

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
    assert text.startswith("InProgress: ")


@pytest.mark.parametrize("kind", ["BuildRequest", "AgentTask", "MergeJob"])
def test_the_check_exists_for_each_kind(kind: str) -> None:
    assert st.health_script("longshot.dev/v1alpha1", kind).is_file()
