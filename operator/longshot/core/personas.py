"""Models chosen per task, and personas (pure): which model and which persona a task's attempts run.

A build declares named models (``spec.agent.models``: ``{name, model, backend?, description?}``) and personas
(``spec.agent.personas``: ``{name, prompt?, model?, tools?, skills?}``), and gives personas to roles
(``spec.agent.rolePersonas``). A plan's task (``PlannedTask.model`` / ``.persona``) and a spawned child
(``spawn_task``'s ``model``) choose *by name* among them, and the choice is written on the AgentTask
(``spec.model`` / ``spec.persona``). :func:`choose` turns a task into the model its attempts run:

=====  ====================================================  ===========================================  ==========
level  when it is set                                        the attempt runs                             source
=====  ====================================================  ===========================================  ==========
1      a person's ``spec.agent.model`` on the AgentTask      that name's entry of ``models`` when it      override
       (``kubectl longshot relaunch --model``)               names one, else that model string as given
2      the task's ``spec.model`` naming an entry             that entry's ``model`` (and ``backend``)     task
3      the task's own persona (``spec.persona``) has a       that entry                                   persona
       ``model`` naming an entry
4      the role's persona (``rolePersonas.<role>``) has a    that entry                                   role
       ``model`` naming an entry
5      otherwise                                             the build's ``spec.agent.model``             build
=====  ====================================================  ===========================================  ==========

A name at levels 2 to 4 that the build does not list is skipped (``Choice.ignored`` says which): plans and spawns
that name one are refused before any task is made (:func:`plan_problem`, :func:`spawn_problem`), so only a task
written by hand, or a spec edited since, can get there. The backend is the person's ``spec.agent.backend``, else
the chosen entry's ``backend``, else the build's. The persona in effect (its prompt and tool allowlist reach the
runner, :func:`persona_input`) is the task's own persona, else its role's, else none; an unknown name is none.

Pricing follows the model: the runner sends the chosen model's name in every call, and the gateway prices each call
by the model it names (``gateway.pricing``), or by the attempt's recorded model when it names none
(:func:`priced_model`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from longshot.api import toolnames

OVERRIDE: Final = "override"
TASK: Final = "task"
PERSONA: Final = "persona"
ROLE: Final = "role"
BUILD: Final = "build"
Source = Literal["override", "task", "persona", "role", "build"]

UNKNOWN_MODEL: Final = "UnknownModel"
UNKNOWN_PERSONA: Final = "UnknownPersona"


@dataclass(frozen=True)
class Entry:
    """One named model."""

    name: str
    model: str
    backend: str | None = None
    description: str = ""


@dataclass(frozen=True)
class PersonaSpec:
    name: str
    prompt: str | None = None
    model: str | None = None
    tools: tuple[str, ...] | None = None
    skills: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    """The build's models and personas, from its ``spec.agent`` (wire form)."""

    models: Mapping[str, Entry] = field(default_factory=dict)
    personas: Mapping[str, PersonaSpec] = field(default_factory=dict)
    role_personas: Mapping[str, str] = field(default_factory=dict)
    build_model: str | None = None
    build_backend: str = "scripted"

    @classmethod
    def from_agent(cls, agent: Mapping[str, Any] | None) -> Catalog:
        agent = agent or {}
        models = {str(m["name"]): Entry(str(m["name"]), str(m.get("model") or ""), m.get("backend"),
                                        str(m.get("description") or ""))
                  for m in agent.get("models") or [] if isinstance(m, Mapping) and m.get("name")}
        personas = {}
        for p in agent.get("personas") or []:
            if not isinstance(p, Mapping) or not p.get("name"):
                continue
            tools = p.get("tools")
            personas[str(p["name"])] = PersonaSpec(
                str(p["name"]), p.get("prompt"), p.get("model"),
                None if tools is None else tuple(str(t) for t in tools),
                tuple(str(s) for s in p.get("skills") or []))
        roles = {str(k): str(v) for k, v in (agent.get("rolePersonas") or {}).items() if v}
        return cls(models, personas, roles, agent.get("model"), str(agent.get("backend") or "scripted"))

    @classmethod
    def from_build(cls, build: Mapping[str, Any]) -> Catalog:
        return cls.from_agent(((build.get("spec") or {}).get("agent")) or {})


@dataclass(frozen=True)
class Choice:
    """What a task's attempts run."""

    model: str | None
    """The model string passed to the backend (None: the backend needs none and the build names none)."""
    backend: str
    source: Source
    name: str | None = None
    """The named model chosen (None: a person's raw model string, or the build's ``spec.agent.model``)."""
    persona: str | None = None
    persona_source: Literal["task", "role"] | None = None
    ignored: tuple[str, ...] = ()
    """Names skipped because the build does not list them, each as a sentence."""


def persona_for(cat: Catalog, role: str, task_persona: str | None) -> tuple[str | None, Literal["task", "role"] | None,
                                                                          tuple[str, ...]]:
    """The persona in effect: the task's own, else its role's (``rolePersonas``), else none; and what was
    skipped."""
    ignored: list[str] = []
    if task_persona:
        if task_persona in cat.personas:
            return task_persona, "task", ()
        ignored.append(f"the task's persona {task_persona!r} is not in spec.agent.personas")
    role_persona = cat.role_personas.get(role)
    if role_persona:
        if role_persona in cat.personas:
            return role_persona, "role", tuple(ignored)
        ignored.append(f"rolePersonas.{role} {role_persona!r} is not in spec.agent.personas")
    return None, None, tuple(ignored)


def choose(cat: Catalog, *, role: str, override_model: str | None = None, override_backend: str | None = None,
           task_model: str | None = None, task_persona: str | None = None) -> Choice:
    """The model, backend and persona of a task (see the module's table)."""
    persona, persona_source, ignored = persona_for(cat, role, task_persona)
    skipped = list(ignored)

    def pick(entry: Entry, source: Source) -> Choice:
        return Choice(entry.model, override_backend or entry.backend or cat.build_backend, source, entry.name,
                      persona, persona_source, tuple(skipped))

    if override_model:
        entry = cat.models.get(override_model)
        if entry is not None:
            return pick(entry, OVERRIDE)
        return Choice(override_model, override_backend or cat.build_backend, OVERRIDE, None, persona,
                      persona_source, tuple(skipped))
    candidates: list[tuple[str | None, Source, str]] = [(task_model, TASK, "the task's model")]
    if task_persona and task_persona in cat.personas:
        candidates.append((cat.personas[task_persona].model, PERSONA, f"persona {task_persona!r}'s model"))
    role_persona = cat.role_personas.get(role)
    if role_persona and role_persona in cat.personas:
        candidates.append((cat.personas[role_persona].model, ROLE, f"persona {role_persona!r}'s model (role {role})"))
    for name, source, what in candidates:
        if not name:
            continue
        entry = cat.models.get(name)
        if entry is not None:
            return pick(entry, source)
        skipped.append(f"{what} {name!r} is not in spec.agent.models")
    return Choice(cat.build_model, override_backend or cat.build_backend, BUILD, None, persona, persona_source,
                  tuple(skipped))


def _listed(names: Sequence[str]) -> str:
    return ", ".join(sorted(names)) if names else "none"


def model_problem(cat: Catalog, model: str | None, where: str) -> str | None:
    """Why ``model`` (a name chosen by a planner or a spawning agent) is refused, or None."""
    if not model or model in cat.models:
        return None
    return (f"{where} names model {model!r}, which is not one of the build's models (spec.agent.models: "
            f"{_listed(list(cat.models))}); choose one of them or leave model out")


def persona_problem(cat: Catalog, persona: str | None, where: str) -> str | None:
    """Why ``persona`` (a name chosen by a planner) is refused, or None."""
    if not persona or persona in cat.personas:
        return None
    return (f"{where} names persona {persona!r}, which is not one of the build's personas (spec.agent.personas: "
            f"{_listed(list(cat.personas))}); choose one of them or leave persona out")


def plan_problem(cat: Catalog, task: str, model: str | None, persona: str | None) -> tuple[str, str] | None:
    """``(problem code, message)`` when a planned task names a model or persona the build does not list."""
    why = model_problem(cat, model, f"task {task!r}")
    if why:
        return UNKNOWN_MODEL, why
    why = persona_problem(cat, persona, f"task {task!r}")
    if why:
        return UNKNOWN_PERSONA, why
    return None


def spawn_problem(cat: Catalog, child: str, model: str | None) -> str | None:
    """Why a spawned child's ``model`` is refused, or None."""
    return model_problem(cat, model, f"child {child!r}")


def menu(cat: Catalog) -> list[dict[str, str]]:
    """The models a planner or a spawning agent may choose, for its prompt: ``{name, description}`` in the build's
    order (the description says when to choose it; the provider's model string is not needed to choose)."""
    return [{"name": e.name, **({"description": e.description} if e.description else {})}
            for e in cat.models.values()]


def persona_menu(cat: Catalog) -> list[dict[str, str]]:
    """The personas a planner may give a task: ``{name, model?}``."""
    return [{"name": p.name, **({"model": p.model} if p.model else {})} for p in cat.personas.values()]


def persona_input(cat: Catalog, persona: str | None) -> dict[str, Any] | None:
    """What the runner needs of the persona in effect (wire form of ``api.handoff.PersonaInput``), or None."""
    if not persona or persona not in cat.personas:
        return None
    p = cat.personas[persona]
    out: dict[str, Any] = {"name": p.name}
    if p.prompt:
        out["prompt"] = p.prompt
    if p.tools is not None:
        out["tools"] = list(p.tools)
    if p.skills:
        out["skills"] = list(p.skills)
    return out


def persona_skills(cat: Catalog, persona: str | None) -> frozenset[str] | None:
    """The skills a task of ``persona`` gets: those the persona lists, when it lists some; None (every skill of the
    build, ``spec.agent.skills``) for a persona that lists none, or no persona."""
    p = cat.personas.get(persona) if persona else None
    return frozenset(p.skills) if p is not None and p.skills else None


def tool_allowed(allowlist: Sequence[str] | None, tool: str) -> bool:
    """Whether ``tool`` is offered under a persona's allowlist (``api.toolnames.allowed``: names only;
    ``SERVER.*`` allows every tool of that MCP server; ``finish`` and ``ask`` always)."""
    return toolnames.allowed(allowlist, tool)


def priced_model(request_model: str | None, attempt_model: str | None, build_model: str | None) -> str | None:
    """The model a gateway call is priced (and reserved) as: the one the call names, else the attempt's chosen
    model (``status.attempts[-1].model``), else the build's ``spec.agent.model``."""
    return request_model or attempt_model or build_model


def choose_for(task: Mapping[str, Any], build: Mapping[str, Any], catalog: Catalog | None = None) -> Choice:
    """:func:`choose` for an AgentTask and its BuildRequest (wire form); ``catalog``: the build's, when the caller has
    it already."""
    spec = task.get("spec") or {}
    override = spec.get("agent") or {}
    return choose(catalog if catalog is not None else Catalog.from_build(build), role=str(spec.get("role") or "worker"),
                  override_model=override.get("model"), override_backend=override.get("backend"),
                  task_model=spec.get("model"), task_persona=spec.get("persona"))
