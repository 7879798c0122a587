"""A tester's Pod gets the build's gate as named steps when its AgentTask was made to run the build's gate command,
and only then (a sweep's own command, or a gate edited since the task was made, runs as one command)."""

from __future__ import annotations

from typing import Any

import pytest

from longshot.api import handoff, keys
from longshot.config import Settings
from longshot.runtime import pods

pytestmark = pytest.mark.unit

SETTINGS = Settings(identity="test", gateway_url="http://longshot-gateway.longshot-system.svc:8080")
GATE = {"profile": "custom", "steps": [
    {"name": "unit", "command": "pytest --cov --cov-report=xml", "timeoutSeconds": 600},
    {"name": "coverage", "coverage": {"report": "coverage.xml", "minPercent": 85}}]}
GATE_COMMAND = "pytest --cov --cov-report=xml && test -f coverage.xml"


def gate_tester(command: str, role: str = "tester") -> dict[str, Any]:
    return {"metadata": {"name": "app-gate-b1-1", "namespace": "ns", "uid": "task-uid",
                         "annotations": {keys.TEST_COMMAND: command}},
            "spec": {"buildRef": {"name": "app"}, "description": "gate", "role": role}}


def build_request(gate: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": "ns", "uid": "build-uid"},
            "spec": {"request": "build a REST API", "agent": {"backend": "scripted"}, "qualityGate": gate,
                     "repository": {"url": "https://git.example.com/org/app.git"}}}


def task_input(task: dict[str, Any], build: dict[str, Any]) -> handoff.TaskInput:
    pod = pods.build_agent_pod(task, build, SETTINGS, 1)
    return handoff.TaskInput.model_validate_json(pod["metadata"]["annotations"][handoff.TASK_INPUT_ANNOTATION])


def test_a_gate_tester_gets_the_named_steps_instead_of_the_command():
    ti = task_input(gate_tester(GATE_COMMAND), build_request(GATE))
    assert [s.name for s in ti.gate_steps] == ["unit", "coverage"]
    assert ti.gate_steps[0].timeout_seconds == 600 and ti.gate_steps[1].coverage is not None
    assert ti.gate_steps[1].coverage.min_percent == 85
    assert ti.test_command is None


def test_a_preset_gate_tester_gets_the_presets_steps():
    ti = task_input(gate_tester("ruff check . && make test"), build_request({"lintCommand": "ruff check ."}))
    assert [(s.name, s.command) for s in ti.gate_steps] == [("lint", "ruff check ."), ("test", "make test")]


@pytest.mark.parametrize(("command", "role"), [
    ("make test", "tester"),          # a sweep of the reconciler's command
    ("pytest --cov", "tester"),       # the gate was edited since the task was made
    (GATE_COMMAND, "worker"),
])
def test_other_tasks_run_their_command_as_before(command, role):
    ti = task_input(gate_tester(command, role), build_request(GATE))
    assert ti.gate_steps == [] and ti.test_command == command
