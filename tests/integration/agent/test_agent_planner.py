"""The planner role: validated task lists, corrections asked of the model, and the pointer transport."""

from __future__ import annotations

import json

import pytest
from agent_servers import openai_tools, task_input

from longshot.api import handoff

pytestmark = pytest.mark.integration

PLAN = [
    {"name": "models", "description": "Add the data models", "scope": ["models/**"], "priority": 8},
    {"name": "api", "description": "Add the REST endpoints", "scope": ["api/**"], "depends_on": ["models"]},
    {"name": "docs", "description": "Document the API", "scope": ["docs/**"], "depends_on": ["api"],
     "priority": 2},
]


def planner_input(url: str, **fields):
    return task_input(url, task="b1-plan", role="planner", branch="longshot/default/b1/plan",
                      description="Build a REST API", **fields)


def test_a_scripted_planner_returns_a_validated_task_list(daemon, repo, run_agent):
    script = {"roles": {"planner": [{"list": {}}, {"finish": {"summary": "three steps", "tasks": PLAN}}]}}
    result = run_agent(planner_input(daemon.url(repo)), script=script)

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert h.outcome == "succeeded" and h.role == "planner"
    assert [t.name for t in h.tasks] == ["models", "api", "docs"]
    assert h.tasks[1].depends_on == ["models"] and h.tasks[0].priority == 8
    assert list(daemon.ls_remote(repo)) == ["HEAD", "refs/heads/main"]  # a planner pushes nothing


def test_a_plan_of_200_tasks_is_handed_off_through_a_git_ref(daemon, repo, run_agent):
    tasks = [{"name": f"task-{i:03d}", "description": f"Implement endpoint number {i} of the API " * 3,
              "scope": [f"api/e{i}.py"], "depends_on": [f"task-{i - 1:03d}"] if i else []} for i in range(200)]
    script = {"roles": {"planner": [{"finish": {"summary": "many", "tasks": tasks}}]}}
    result = run_agent(planner_input(daemon.url(repo), max_tasks=500), script=script)

    assert result.exit_code == 0, result.stdout
    pointer = handoff.parse_termination_message(result.termination)
    assert isinstance(pointer, handoff.HandoffPointer)
    assert pointer.ref == handoff.handoff_ref("default", "b1", "b1-plan", 1)
    assert daemon.ls_remote(repo)[pointer.ref] == pointer.commit
    data = daemon.repos.show(repo, pointer.commit, handoff.HANDOFF_FILE).encode()
    fetched = handoff.parse_handoff_bytes(data, pointer)
    assert len(fetched.tasks) == 200 and fetched.tasks[199].depends_on == ["task-198"]
    with pytest.raises(handoff.HandoffError, match="digest"):
        handoff.parse_handoff_bytes(data + b" ", pointer)
    # stdout still ends with the whole handoff
    assert len(result.lines[-1]["handoff"]["tasks"]) == 200


def test_too_many_tasks_fail_the_scripted_planner(daemon, repo, run_agent):
    script = {"roles": {"planner": [{"finish": {"summary": "x", "tasks": PLAN}}]}}
    result = run_agent(planner_input(daemon.url(repo), max_tasks=2), script=script)

    assert result.exit_code == 1
    assert result.handoff.failure.failure_class == "AgentError"
    tool = result.tool_calls("finish")[0]
    assert "at most 2 are allowed" in tool["result"]


def test_the_model_is_asked_to_correct_an_invalid_plan(daemon, repo, run_agent, model):
    cyclic = [dict(PLAN[0], depends_on=["docs"]), *PLAN[1:]]
    model.script(
        openai_tools(("finish", {"summary": "plan", "tasks": cyclic})),
        openai_tools(("finish", {"summary": "plan", "tasks": [*PLAN, {"name": "Bad Name", "description": "x"}]})),
        openai_tools(("finish", {"summary": "plan", "tasks": PLAN})),
    )
    backend = {"name": "openai", "model": "gpt-test", "baseUrl": model.base_url + "/v1"}
    result = run_agent(planner_input(daemon.url(repo), backend=backend), api_key="sk-test-key-000000000000000000")

    assert result.exit_code == 0, result.stdout
    assert [t.name for t in result.handoff.tasks] == ["models", "api", "docs"]
    second = model.requests[1].body["messages"][-1]
    assert second["role"] == "tool" and "cycle: models -> docs -> api -> models" in second["content"]
    third = model.requests[2].body["messages"][-1]["content"]
    assert "task 3 (Bad Name): name" in third
    assert result.handoff.usage.input_tokens == 300


def test_a_plan_still_invalid_after_the_corrections_fails(daemon, repo, run_agent, model):
    dup = [PLAN[0], PLAN[0]]
    model.script(*[openai_tools(("finish", {"summary": "plan", "tasks": dup})) for _ in range(3)])
    backend = {"name": "openai", "model": "gpt-test", "baseUrl": model.base_url + "/v1"}
    result = run_agent(planner_input(daemon.url(repo), backend=backend), env={"LONGSHOT_MAX_CORRECTIONS": "2"})

    assert result.exit_code == 1
    assert len(model.requests) == 3
    message = result.handoff.failure.message
    assert "still invalid after 2 correction(s)" in message and "repeated: models" in message
    assert json.loads(result.termination)["kind"] == "Handoff"


def test_decompose_is_refused_at_the_maximum_depth(daemon, repo, run_agent):
    script = {"roles": {"planner": [
        {"finish": {"summary": "x", "tasks": [dict(PLAN[0], decompose=True)]}},
        {"finish": {"summary": "x", "tasks": [PLAN[0]]}},
    ]}}
    result = run_agent(planner_input(daemon.url(repo), depth=1, max_depth=2), script=script)

    assert result.exit_code == 0
    assert "asks to be decomposed" in result.tool_calls("finish")[0]["result"]
    assert result.handoff.tasks[0].decompose is False
