"""The task input of a task that chose a model or has a persona (``core.personas`` over the pod builder)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from longshot.api.handoff import TaskInput
from longshot.config import Settings
from longshot.runtime import pods

pytestmark = pytest.mark.unit

SETTINGS = Settings(identity="test", gateway_url="http://longshot-gateway.longshot-system.svc:8080")
MODELS = [{"name": "fast", "model": "small-model", "description": "cheap"},
          {"name": "strong", "model": "big-model", "backend": "anthropic"}]
PERSONAS = [{"name": "writer", "prompt": "Write docs.", "model": "fast", "tools": ["read_file", "docs.*"]},
            {"name": "critic", "model": "strong"}]


def agent_task(role: str = "worker", annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "app-t1", "namespace": "ns", "uid": "t", "annotations": annotations or {}},
            "spec": {"buildRef": {"name": "app"}, "description": "do it", "role": role, **spec}}


def build(**agent: Any) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": "ns", "uid": "b"},
            "spec": {"request": "r", "repository": {"url": "https://git.example.com/app.git"},
                     "agent": {"backend": "openai", "model": "base-model", "models": MODELS, "personas": PERSONAS,
                               "rolePersonas": {"reviewer": "critic"}, **agent},
                     "delegation": {"enabled": True}}}


def task_input(task: dict[str, Any], b: dict[str, Any] | None = None, **kw: Any) -> TaskInput:
    p = pods.build_agent_pod(task, b or build(), SETTINGS, 1, **kw)
    return TaskInput.model_validate(json.loads(p["metadata"]["annotations"]["longshot.dev/task-input"]))


def test_the_task_choice_reaches_the_agent_with_its_backend():
    ti = task_input(agent_task(model="strong"))
    assert (ti.backend.name, ti.backend.model) == ("anthropic", "big-model")


def test_a_persona_brings_its_model_prompt_and_tools():
    ti = task_input(agent_task(persona="writer"))
    assert (ti.backend.name, ti.backend.model) == ("openai", "small-model")
    assert ti.persona is not None and ti.persona.prompt == "Write docs." and ti.persona.tools == ["read_file", "docs.*"]


def test_the_role_persona_applies_to_the_role():
    ti = task_input(agent_task("reviewer"))
    assert ti.persona is not None and ti.persona.name == "critic" and ti.backend.model == "big-model"
    assert task_input(agent_task("worker")).persona is None


def test_a_person_override_wins_over_every_choice():
    ti = task_input(agent_task(model="strong", persona="writer", agent={"model": "human-pick"}))
    assert (ti.backend.name, ti.backend.model) == ("openai", "human-pick")
    assert ti.persona is not None and ti.persona.name == "writer"


def test_the_attempt_model_the_operator_chose_still_wins():
    assert task_input(agent_task(model="strong"), model="fallback").backend.model == "fallback"


def test_the_planner_and_a_delegating_worker_get_the_menu_others_do_not():
    planner = task_input(agent_task("planner"))
    assert [m.name for m in planner.models] == ["fast", "strong"] and planner.models[0].description == "cheap"
    assert [p.name for p in planner.personas] == ["writer", "critic"]
    worker = task_input(agent_task("worker"))
    assert worker.delegate and [m.name for m in worker.models] == ["fast", "strong"] and worker.personas == []
    assert task_input(agent_task("reviewer")).models == []


def test_a_build_without_models_or_personas_is_unchanged():
    b = build(models=[], personas=[], rolePersonas={})
    ti = task_input(agent_task(), b)
    assert (ti.backend.name, ti.backend.model, ti.persona, ti.models) == ("openai", "base-model", None, [])


def test_a_persona_listing_skills_mounts_and_lists_only_those():
    skills = [{"name": "style", "configMap": {"name": "cm-style"}}, {"name": "api", "configMap": {"name": "cm-api"}}]
    b = build(skills=skills, personas=[*PERSONAS[:1], {**PERSONAS[0], "name": "styled", "skills": ["style"]}])
    p = pods.build_agent_pod(agent_task(persona="styled"), b, SETTINGS, 1)
    ti = TaskInput.model_validate(json.loads(p["metadata"]["annotations"]["longshot.dev/task-input"]))
    assert [s.name for s in ti.skills] == ["style"]
    mounted = [v["configMap"]["name"] for v in p["spec"]["volumes"] if v["name"].startswith("skill-")]
    assert mounted == ["cm-style"]
    everything = pods.build_agent_pod(agent_task(persona="writer"), b, SETTINGS, 1)
    assert [v["configMap"]["name"] for v in everything["spec"]["volumes"] if v["name"].startswith("skill-")] == [
        "cm-style", "cm-api"]
