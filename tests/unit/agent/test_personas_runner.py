"""What a persona and the build's models change in the agent runner: the tools offered (a persona's allowlist), the
system prompt (a persona's template), the planner's prompt and finish schema (the models and personas to choose
from), the planner's own check of a plan's names, and ``spawn_task``'s model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from longshot.agent import delegation, errors, events, prompts, redact, results, sandbox, tools
from longshot.agent.backends import anthropic, openai
from longshot.api import handoff

pytestmark = pytest.mark.unit


def task_input(**fields: Any) -> handoff.TaskInput:
    return handoff.TaskInput.model_validate({
        "task": "b1-t", "build": "b1", "namespace": "ns", "role": "worker", "description": "Add login",
        "repository_url": "https://git.example.com/app.git", "branch": "longshot/b1/t", **fields})


def toolbox(tmp_path: Path, role: str = "worker", allow: list[str] | None = None) -> tools.Toolbox:
    (tmp_path / "a.txt").write_text("hello\n")
    ev = events.Events(redact.Redactor([]), stream=io.StringIO())
    return tools.Toolbox(sandbox.Sandbox(tmp_path), ev, role, allow=allow)


def test_the_allowlist_filters_the_tools_offered_to_the_model():
    offered = set(tools.specs("worker", allow=["read_file", "search", "docs.*"]))
    assert offered == {"read_file", "search", "ask", "finish"}
    assert set(tools.specs("worker", allow=None)) >= {"run_command", "write_file", "edit_file"}
    oa = {t["function"]["name"] for t in openai.tool_definitions("worker", allow=["read_file"])}
    an = {t["name"] for t in anthropic.tool_definitions("worker", allow=["read_file"])}
    assert oa == an == {"read_file", "ask", "finish"}


def test_a_tool_left_out_of_the_allowlist_is_not_run(tmp_path: Path):
    box = toolbox(tmp_path, allow=["read_file"])
    assert not box.call("read_file", {"path": "a.txt"}).is_error
    refused = box.call("write_file", {"path": "a.txt", "content": "x"})
    assert refused.is_error and "not offered to this task's persona" in refused.content
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert box.offers("docs.search") is False and toolbox(tmp_path, allow=["docs.*"]).offers("docs.search")
    assert not box.call("finish", {"summary": "done"}).is_error  # finish is always offered


def test_the_persona_prompt_heads_the_system_prompt_rendered_with_the_role_context():
    t = task_input()
    system, _ = prompts.role_prompts("worker", None, task=t, persona="You are the docs writer of {{ task.build }}.")
    plain, _ = prompts.role_prompts("worker", None, task=t)
    assert system.startswith("You are the docs writer of b1.\n") and system.endswith(plain)


def test_a_broken_persona_template_is_a_configuration_error():
    with pytest.raises(errors.ConfigError, match="persona's prompt template"):
        prompts.role_prompts("worker", None, task=task_input(), persona="{{ nothing.here }}")


def test_the_planner_prompt_lists_the_models_with_their_descriptions_and_the_personas():
    t = task_input(role="planner", models=[{"name": "fast", "description": "cheap: docs"}, {"name": "strong"}],
                   personas=[{"name": "writer", "model": "fast"}])
    _, prompt = prompts.role_prompts("planner", None, task=t)
    assert "- `fast`: cheap: docs" in prompt and "- `strong`" in prompt
    assert "`persona` (optional)" in prompt and "- `writer` (runs model `fast`)" in prompt
    _, plain = prompts.role_prompts("planner", None, task=task_input(role="planner"))
    assert "`model` (optional)" not in plain and "`persona` (optional)" not in plain


def test_a_delegating_worker_is_told_the_models_a_child_may_run():
    t = task_input(delegate=True, models=[{"name": "fast", "description": "cheap"}])
    _, prompt = prompts.role_prompts("worker", None, task=t)
    assert "may name one of the build's models as `model`" in prompt and "- `fast`: cheap" in prompt


def test_the_planner_finish_schema_offers_model_and_persona_as_enums():
    schema = tools.finish_schema("planner", models=["fast", "strong"], personas=["writer"])
    item = schema["parameters"]["properties"]["tasks"]["items"]["properties"]
    assert item["model"]["enum"] == ["fast", "strong"] and item["persona"]["enum"] == ["writer"]
    free = tools.finish_schema("planner")["parameters"]["properties"]["tasks"]["items"]["properties"]
    assert "enum" not in free["model"]


def test_the_planner_checks_the_names_before_the_operator_does():
    payload = {"tasks": [{"name": "docs", "description": "write docs", "model": "huge"}]}
    with pytest.raises(errors.ToolError, match="models are fast, strong"):
        results.validate_planner_finish(payload, max_tasks=5, models={"fast", "strong"}, personas=set())
    payload = {"tasks": [{"name": "docs", "description": "write docs", "model": "fast", "persona": "writer"}]}
    (t,), done = results.validate_planner_finish(payload, max_tasks=5, models={"fast"}, personas={"writer"})
    assert (t.model, t.persona, done) == ("fast", "writer", False)


class Recorder:
    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    def spawn(self, tasks: Any) -> dict[str, Any]:
        self.asked.extend(tasks)
        return {"accepted": [], "children": []}

    def children(self) -> dict[str, Any]:
        return {"children": [], "requested": []}


def test_spawn_task_passes_the_chosen_model_and_its_schema_lists_the_set():
    rec = Recorder()
    delegation.spawn(rec, {"name": "api", "prompt": "do it", "model": "fast"})
    assert rec.asked == [{"name": "api", "prompt": "do it", "model": "fast"}]
    with pytest.raises(errors.ToolError, match="model must be"):
        delegation.spawn(rec, {"name": "api", "prompt": "do it", "model": 3})
    schema = tools.specs("worker", delegate=True, models=["fast", "strong"])["spawn_task"]
    assert schema["parameters"]["properties"]["model"]["enum"] == ["fast", "strong"]
    assert "model" not in tools.specs("worker", delegate=True)["spawn_task"]["parameters"]["properties"]
