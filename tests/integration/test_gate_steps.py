"""Quality gates made of named steps on the real API server: ``profile: custom`` with ``steps`` is accepted and
without them refused naming the field, and a build whose custom gate's coverage step fails below its threshold goes
to a fixer told which step failed and why, then merges once the fixer raised the coverage.

Agent Pods are run by the process kubelet (tests/integration/process_kubelet.py): the real agent runner with the
scripted backend, pushing to a real git repository.
"""

from __future__ import annotations

import copy
import json

import kubernetes
import pytest
import sample_repo
from k8s_builders import build, create, dump, get
from test_delivery import finalization_status, finalized, script_configmap

TEST = sample_repo.TEST_COMMAND
STEPS = [{"name": "unit", "command": TEST, "timeoutSeconds": 300},
         {"name": "coverage", "coverage": {"report": "lcov.info", "format": "lcov", "minPercent": 85}}]


def lcov(found: int, hit: int) -> str:
    return f"TN:\nSF:calc/add.py\nDA:1,1\nLF:{found}\nLH:{hit}\nend_of_record\n"


def refusal(custom, namespace, obj) -> tuple[dict[str, str], str]:
    with pytest.raises(kubernetes.client.ApiException) as err:
        create(custom, namespace, copy.deepcopy(obj))
    assert err.value.status == 422, err.value.body
    status = json.loads(err.value.body)
    return {c.get("field"): c.get("message", "") for c in status["details"]["causes"]}, status["message"]


def test_the_api_server_takes_a_custom_gate_with_steps_and_defaults_the_coverage_format(custom, namespace):
    create(custom, namespace, build("steps", qualityGate={"profile": "custom", "review": True, "steps": STEPS}))
    gate = get(custom, namespace, "buildrequests", "steps")["spec"]["qualityGate"]
    assert [s["name"] for s in gate["steps"]] == ["unit", "coverage"]
    assert gate["steps"][1]["coverage"]["format"] == "lcov" and gate["review"] is True
    create(custom, namespace, build("preset", qualityGate={"profile": "standard", "steps": STEPS[1:]}))
    create(custom, namespace, build("named", qualityGate={"profile": "custom", "steps": [
        {"name": "test", "command": "make test"}, {"name": "lint", "command": "make lint"}]}))


@pytest.mark.parametrize(("gate", "field", "text"), [
    ({"profile": "custom"}, "spec.qualityGate.steps", "custom runs exactly qualityGate.steps"),
    ({"profile": "custom", "steps": []}, "spec.qualityGate.steps", "custom runs exactly qualityGate.steps"),
    ({"profile": "custom", "steps": [{"name": "a", "command": "true"}, {"name": "a", "command": "false"}]},
     "spec.qualityGate.steps", "names must be unique"),
    ({"steps": [{"name": "test", "command": "make test"}]}, "spec.qualityGate.steps",
     "whose names typecheck, lint and test they must not take"),
    ({"profile": "custom", "steps": [{"name": "lint"}]}, "spec.qualityGate.steps[0].command",
     "needs a command, a coverage threshold, or both"),
    ({"profile": "custom", "steps": [{"name": "Lint", "command": "true"}]}, "spec.qualityGate.steps[0].name",
     "should match"),
    ({"profile": "custom", "steps": [{"name": "c", "coverage": {"report": "c.xml", "minPercent": 101}}]},
     "spec.qualityGate.steps[0].coverage.minPercent", "should be less than or equal to 100"),
    ({"profile": "custom", "steps": [{"name": f"s{i}", "command": "true"} for i in range(21)]},
     "spec.qualityGate.steps", "must have at most 20 items"),
])
def test_the_api_server_refuses_a_bad_gate_naming_the_field(custom, namespace, gate, field, text):
    causes, message = refusal(custom, namespace, build("bad", qualityGate=gate))
    assert field in causes, message
    assert text in causes[field], message


def test_a_coverage_step_below_its_threshold_goes_to_a_fixer_naming_the_step_then_merges(
        operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [{"name": "add", "description": "Add add()"}]}}]},
        "tasks": {"add": [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                          {"write": {"path": "lcov.info", "content": lcov(20, 10)}}, {"finish": "Add add()"}],
                  "demo-add-fix": [{"write": {"path": "lcov.info", "content": lcov(20, 19)}},
                                   {"finish": "covered the missing lines"}]}})
    b = build("demo", repository__url=url)
    b["spec"].update({"agent": {"backend": "scripted", "script": {"name": "script"}},
                      "reconciler": {"command": TEST, "intervalSeconds": 30},
                      "qualityGate": {"profile": "custom", "steps": STEPS},
                      "finalization": {"maxAttempts": 2}})
    create(custom, namespace, b)
    done = finalized(custom, namespace, timeout=150)
    assert finalization_status(done) == ("True", "Passed"), dump(custom, namespace)
    job = get(custom, namespace, "mergejobs", "demo-add")
    assert job["status"]["phase"] == "Superseded" and job["status"]["fixer"] == "demo-add-fix", job["status"]
    description = get(custom, namespace, "agenttasks", "demo-add-fix")["spec"]["description"]
    assert "step unit passed (exit 0)" in description, description
    assert "step coverage failed: 50.0% of lines covered, below the 85% minimum (lcov.info)" in description
    assert get(custom, namespace, "mergejobs", "demo-add-fix")["status"]["phase"] == "Merged"
    assert sample_repo.show(url, "lcov.info") == lcov(20, 19)


def test_review_true_adds_the_reviewers_approval_to_a_standard_gate(operator, kubelet, core_v1, custom, namespace,
                                                                     tmp_path):
    """Without ``review`` only ``strict`` has a reviewer; with it a ``standard`` gate's job waits for one, and its
    changes-requested goes to a fixer."""
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [{"name": "add", "description": "Add add()"}]}}],
                  "reviewer": [{"finish": {"summary": "fine now", "verdict": "approved"}}]},
        "tasks": {"add": [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                          {"finish": "Add add()"}],
                  "demo-add-review": [{"finish": {"summary": "needs a docstring", "verdict": "changes-requested",
                                                  "reasons": ["add() needs a docstring"]}}],
                  "demo-add-fix": [{"write": {"path": "calc/add.py", "content":
                                              'def add(a, b):\n    """Sum."""\n    return a + b\n'}},
                                   {"finish": "docstring"}]}})
    b = build("demo", repository__url=url)
    b["spec"].update({"agent": {"backend": "scripted", "script": {"name": "script"}},
                      "reconciler": {"command": TEST, "intervalSeconds": 30},
                      "qualityGate": {"profile": "standard", "testCommand": TEST, "review": True},
                      "finalization": {"maxAttempts": 2}})
    create(custom, namespace, b)
    done = finalized(custom, namespace, timeout=150)
    assert finalization_status(done) == ("True", "Passed"), dump(custom, namespace)
    job = get(custom, namespace, "mergejobs", "demo-add")
    assert job["status"]["phase"] == "Superseded", job["status"]
    assert "add() needs a docstring" in get(custom, namespace, "agenttasks", "demo-add-fix")["spec"]["description"]
    assert '"""Sum."""' in sample_repo.show(url, "calc/add.py")
