"""Models chosen per task, and personas: every decision of ``core.personas`` and where plans and spawns use it."""

from __future__ import annotations

from typing import Any

import pytest

from longshot.api.handoff import PlannedTask
from longshot.core import delegation as dl
from longshot.core import personas, plan

pytestmark = pytest.mark.unit

AGENT: dict[str, Any] = {
    "backend": "openai", "model": "base-model",
    "models": [
        {"name": "fast", "model": "small-model", "description": "cheap and quick: docs, renames"},
        {"name": "strong", "model": "big-model", "backend": "anthropic", "description": "hard changes"},
        {"name": "mid", "model": "mid-model"},
    ],
    "personas": [
        {"name": "writer", "prompt": "You write docs for {{ task.build }}.", "model": "fast",
         "tools": ["read_file", "write_file", "docs.*"], "skills": ["style"]},
        {"name": "architect", "model": "strong"},
        {"name": "plain"},
    ],
    "rolePersonas": {"reviewer": "architect", "worker": "plain"},
    "skills": [{"name": "style", "configMap": {"name": "style"}}],
}
CAT = personas.Catalog.from_agent(AGENT)


def choose(role: str = "worker", **kw: Any) -> personas.Choice:
    return personas.choose(CAT, role=role, **kw)


# --- precedence: person's override > task's choice > persona's model > role default > build's model --------------

def test_the_build_model_when_nothing_is_chosen():
    c = choose()
    assert (c.model, c.backend, c.source, c.name) == ("base-model", "openai", personas.BUILD, None)
    assert c.persona == "plain" and c.persona_source == "role"


def test_the_role_persona_model_beats_the_build_model():
    c = choose("reviewer")
    assert (c.model, c.backend, c.source, c.name) == ("big-model", "anthropic", personas.ROLE, "strong")
    assert c.persona == "architect"


def test_the_task_persona_model_beats_the_role_persona_model():
    c = choose("reviewer", task_persona="writer")
    assert (c.model, c.source, c.name, c.persona, c.persona_source) == (
        "small-model", personas.PERSONA, "fast", "writer", "task")
    assert c.backend == "openai"  # the entry names none: the build's


def test_the_task_choice_beats_its_persona():
    c = choose("reviewer", task_model="mid", task_persona="writer")
    assert (c.model, c.source, c.name, c.persona) == ("mid-model", personas.TASK, "mid", "writer")


def test_a_person_override_beats_the_task_choice():
    c = choose("reviewer", override_model="gpt-x", task_model="strong", task_persona="writer")
    assert (c.model, c.source, c.name) == ("gpt-x", personas.OVERRIDE, None)
    assert c.backend == "openai" and c.persona == "writer"  # the persona's prompt and tools still apply


def test_a_person_override_naming_a_model_of_the_set_takes_its_entry():
    c = choose(override_model="strong")
    assert (c.model, c.backend, c.source, c.name) == ("big-model", "anthropic", personas.OVERRIDE, "strong")


def test_a_person_backend_override_beats_the_entry_backend():
    c = choose(task_model="strong", override_backend="openai")
    assert (c.model, c.backend) == ("big-model", "openai")


def test_a_persona_without_a_model_falls_to_the_role_default():
    c = choose("reviewer", task_persona="plain")
    assert (c.model, c.source, c.persona) == ("big-model", personas.ROLE, "plain")


def test_unknown_names_are_skipped_and_said():
    c = choose("worker", task_model="huge", task_persona="ghost")
    assert (c.model, c.source) == ("base-model", personas.BUILD)
    assert c.persona == "plain" and c.persona_source == "role"
    assert any("'ghost'" in why for why in c.ignored) and any("'huge'" in why for why in c.ignored)


def test_no_models_no_personas_is_todays_behaviour():
    cat = personas.Catalog.from_agent({"backend": "scripted"})
    c = personas.choose(cat, role="worker")
    assert (c.model, c.backend, c.source, c.persona) == (None, "scripted", personas.BUILD, None)
    assert personas.choose(cat, role="worker", override_model="m").model == "m"


def test_choose_for_reads_the_task_and_build_wire_forms():
    task = {"spec": {"role": "worker", "model": "fast", "agent": {"backend": "command"}}}
    c = personas.choose_for(task, {"spec": {"agent": AGENT}})
    assert (c.model, c.backend, c.name) == ("small-model", "command", "fast")


# --- what reaches prompts and the runner ---------------------------------------------------------------------------

def test_menu_lists_names_and_descriptions_in_the_build_order():
    assert personas.menu(CAT) == [{"name": "fast", "description": "cheap and quick: docs, renames"},
                                  {"name": "strong", "description": "hard changes"}, {"name": "mid"}]
    assert personas.persona_menu(CAT) == [{"name": "writer", "model": "fast"}, {"name": "architect", "model": "strong"},
                                          {"name": "plain"}]


def test_persona_input_carries_prompt_tools_and_skills():
    assert personas.persona_input(CAT, "writer") == {
        "name": "writer", "prompt": "You write docs for {{ task.build }}.",
        "tools": ["read_file", "write_file", "docs.*"], "skills": ["style"]}
    assert personas.persona_input(CAT, "plain") == {"name": "plain"}  # no allowlist: every tool
    assert personas.persona_input(CAT, None) is None and personas.persona_input(CAT, "ghost") is None


def test_an_empty_tool_allowlist_is_kept_distinct_from_none():
    cat = personas.Catalog.from_agent({"personas": [{"name": "mute", "tools": []}]})
    assert personas.persona_input(cat, "mute") == {"name": "mute", "tools": []}


@pytest.mark.parametrize(("allow", "tool", "ok"), [
    (None, "run_command", True),
    (["read_file"], "read_file", True),
    (["read_file"], "run_command", False),
    ([], "finish", True),
    ([], "ask", True),
    (["docs.*"], "docs.search", True),
    (["docs.*"], "other.search", False),
    (["docs.search"], "docs.search", True),
    (["docs.search"], "docs.fetch", False),
    (["docs.*"], "docs", False),
    (["docs.*"], "docs.", False),
    (["*"], "run_command", False),  # names only: no globs beyond SERVER.*
])
def test_tool_allowlist_matches_names_only(allow: list[str] | None, tool: str, ok: bool):
    assert personas.tool_allowed(allow, tool) is ok


def test_a_persona_listing_skills_gets_only_those():
    assert personas.persona_skills(CAT, "writer") == frozenset({"style"})
    assert personas.persona_skills(CAT, "plain") is None and personas.persona_skills(CAT, None) is None


def test_pricing_follows_the_chosen_model():
    assert personas.priced_model("asked", "chosen", "build") == "asked"
    assert personas.priced_model(None, "chosen", "build") == "chosen"
    assert personas.priced_model(None, None, "build") == "build"


# --- plans -------------------------------------------------------------------------------------------------------

BUILD = plan.BuildRef(name="app", namespace="ns", uid="u")


def planned(name: str, **kw: Any) -> PlannedTask:
    return PlannedTask(name=name, description=f"do {name}", **kw)


def test_a_plan_choosing_models_and_personas_of_the_set_is_accepted_and_carried_on_the_tasks():
    ctx = plan.PlanContext(build=BUILD, catalog=CAT)
    result = plan.build_tasks([planned("docs", model="fast", persona="writer"), planned("core")], ctx)
    assert isinstance(result, plan.Accepted)
    docs, core = result.manifests
    assert docs["spec"]["model"] == "fast" and docs["spec"]["persona"] == "writer"
    assert "model" not in core["spec"] and "persona" not in core["spec"]


def test_a_plan_naming_an_unknown_model_is_refused_naming_the_set():
    ctx = plan.PlanContext(build=BUILD, catalog=CAT)
    result = plan.build_tasks([planned("docs", model="huge")], ctx)
    assert isinstance(result, plan.Rejected) and result.problem == plan.UNKNOWN_MODEL
    assert "'docs'" in result.message and "'huge'" in result.message and "fast, mid, strong" in result.message


def test_a_plan_naming_an_unknown_persona_is_refused():
    result = plan.build_tasks([planned("docs", persona="ghost")], plan.PlanContext(build=BUILD, catalog=CAT))
    assert isinstance(result, plan.Rejected) and result.problem == plan.UNKNOWN_PERSONA
    assert "architect, plain, writer" in result.message


def test_a_build_without_models_refuses_any_model_choice():
    result = plan.build_tasks([planned("docs", model="fast")], plan.PlanContext(build=BUILD))
    assert isinstance(result, plan.Rejected) and "spec.agent.models: none" in result.message


def test_context_for_reads_the_catalog_from_the_build():
    ctx = plan.context_for({"metadata": {"name": "app", "namespace": "ns"}, "spec": {"agent": AGENT}})
    assert set(ctx.catalog.models) == {"fast", "strong", "mid"}


# --- spawned children ---------------------------------------------------------------------------------------------

PARENT = dl.Parent(name="app-work", namespace="ns", build="app", build_uid="u")
LIMITS = dl.Limits(enabled=True, catalog=CAT)


def test_a_child_may_choose_a_model_of_the_set():
    d = dl.decide(PARENT, [dl.Request("api", "do it", (), "strong")], LIMITS, {})
    (made,) = d.create
    assert made["spec"]["model"] == "strong" and d.children[0]["phase"] == "Pending"


def test_a_child_choosing_another_model_is_refused_naming_the_set():
    d = dl.decide(PARENT, [dl.Request("api", "do it", (), "gpt-9")], LIMITS, {})
    assert d.create == ()
    (refused,) = d.children
    assert refused["phase"] == dl.REFUSED
    assert "'gpt-9'" in refused["reason"] and "fast, mid, strong" in refused["reason"]


def test_limits_from_spec_read_the_models():
    limits = dl.Limits.from_spec({"agent": AGENT, "delegation": {"enabled": True}}, total_tasks=0, budget_spent=False)
    assert set(limits.catalog.models) == {"fast", "strong", "mid"}
