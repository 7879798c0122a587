"""Delegation through the gateway: an attempt asks for child tasks and reads how they are doing.

::

    POST /delegation/spawn      {"tasks": [{"name": "api", "prompt": "...", "scope": ["api/**"], "model": "fast"}]}
                                -> 202 {"accepted": ["api"], "children": [...]}
    GET  /delegation/children   -> 200 {"children": [...], "requested": ["api", ...]}

The caller is the attempt its Pod-bound token names (``longshot.gateway.identity``): it can only ask for children
of its own task, never name another. The gateway checks what it can at once (the build's ``spec.delegation``,
the role, the depth, the number of children, the sizes: a name is a DNS-1123 label of at most 40 characters, a
prompt at most 16 KiB, a scope within the CRD's bounds and, under ``spec.scope.enforce``, within the caller's own
scope, a ``model`` naming one of the build's ``spec.agent.models``) and records the request in the task's
``status.delegation.requests`` (fenced on the task's resourceVersion, like ``status.progress``). It never creates
an AgentTask: the operator does, and writes ``status.children`` (``core.delegation``), which
``/delegation/children`` returns. A name asked again is the same child (idempotent across the attempt's retries).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from longshot.api import agenttask, boundedjson, buildrequest, common
from longshot.core import delegation as dl
from longshot.core import personas
from longshot.gateway import cluster as gcluster
from longshot.gateway.identity import Caller

MAX_BODY = 1024 * 1024
"""Largest spawn body read (1 MiB, the server's own cap)."""
NAME = re.compile(agenttask.CHILD_NAME)
MODEL = re.compile(buildrequest.MODEL_NAME)
SCOPE_ENTRY = re.compile(common.SCOPE_ENTRY)
MAX_RETRIES = 20
BODY_BUDGET = boundedjson.Budget(max_bytes=MAX_BODY, max_values=20_000, max_depth=8)
"""What parsing a spawn body may cost (``api.boundedjson``): the most children (20) with the most scope entries
(128 each) are under 3,000 values, 4 levels deep."""


class Refused(Exception):
    """The request is refused: ``status`` and a message the agent reads (naming the limit or the field)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Wanted:
    name: str
    prompt: str
    scope: tuple[str, ...]
    model: str | None = None


def parse(raw: bytes, max_children: int) -> list[Wanted]:
    """The children a spawn body asks for, or :class:`Refused` (400) saying what is wrong."""
    try:
        data = boundedjson.loads(raw, BODY_BUDGET) if raw else None
    except boundedjson.Refused as e:
        if e.reason != "not_json":
            raise Refused(413, f"the body was refused: {e}") from None
        data = None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list) or not tasks:
        raise Refused(400, 'the body must be a JSON object {"tasks": [{"name": "api", "prompt": "..."}]}')
    if len(tasks) > max_children:
        raise Refused(400, f"{len(tasks)} children asked at once; spec.delegation.maxChildren is {max_children}")
    out: list[Wanted] = []
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            raise Refused(400, f"tasks[{i}] must be an object with name and prompt")
        name, prompt, scope = t.get("name"), t.get("prompt"), t.get("scope") or []
        if not isinstance(name, str) or not NAME.match(name):
            raise Refused(400, f"tasks[{i}].name must be a lowercase DNS label (a-z, 0-9, '-') of at most 40 "
                               "characters")
        if not isinstance(prompt, str) or not prompt.strip():
            raise Refused(400, f"tasks[{i}].prompt must be a non-empty string")
        if len(prompt) > agenttask.MAX_CHILD_PROMPT:
            raise Refused(400, f"tasks[{i}].prompt has {len(prompt)} characters; at most "
                               f"{agenttask.MAX_CHILD_PROMPT}")
        if not isinstance(scope, list) or len(scope) > common.MAX_SCOPE_ENTRIES or not all(
                isinstance(s, str) and len(s) <= common.MAX_SCOPE_ENTRY_LENGTH and SCOPE_ENTRY.match(s)
                for s in scope):
            raise Refused(400, f"tasks[{i}].scope must be a list of at most {common.MAX_SCOPE_ENTRIES} paths or "
                               f"globs of at most {common.MAX_SCOPE_ENTRY_LENGTH} characters and "
                               f"{common.MAX_SCOPE_SEGMENTS} segments")
        model = t.get("model")
        if model is not None and (not isinstance(model, str) or not MODEL.match(model)):
            raise Refused(400, f"tasks[{i}].model must be the name of one of the build's models (a DNS label)")
        out.append(Wanted(name, prompt, tuple(scope), model))
    return out


def settings_of(caller: Caller) -> Mapping[str, Any]:
    return caller.build_spec.get("delegation") or {}


def check_caller(caller: Caller) -> None:
    """Refuse (403) an attempt that may not delegate at all, naming why."""
    settings = settings_of(caller)
    if settings.get("enabled") is not True:
        raise Refused(403, "delegation is off for this build: spec.delegation.enabled is false on the BuildRequest")
    if caller.role != "worker":
        raise Refused(403, f"only worker tasks may delegate; this task is a {caller.role}")
    depth = dl.depth_of((caller.task_obj.get("metadata") or {}).get("annotations") or {})
    max_depth = int(settings.get("maxDepth", 2))
    if depth + 1 > max_depth:
        raise Refused(403, f"this task is {depth} deep; a child would pass spec.delegation.maxDepth ({max_depth})")


def check_scopes(caller: Caller, wanted: list[Wanted]) -> None:
    """Refuse (403) a child whose scope is not within the caller's under ``spec.scope.enforce``, naming it (the
    operator checks again when it makes the child: :func:`longshot.core.delegation.scope_refusal`)."""
    if (caller.build_spec.get("scope") or {}).get("enforce") is not True:
        return
    mine = tuple(str(e) for e in ((caller.task_obj.get("spec") or {}).get("scope") or []))
    parent = dl.Parent(name=caller.task, namespace=caller.namespace, build=caller.build, build_uid="", scope=mine)
    for i, w in enumerate(wanted):
        why = dl.scope_refusal(parent, dl.Request(w.name, w.prompt, w.scope), dl.Limits(enforce_scope=True),
                               f"tasks[{i}].scope")
        if why:
            raise Refused(403, why)


def check_models(caller: Caller, wanted: list[Wanted]) -> None:
    """Refuse (403) a child whose model is not one of the build's ``spec.agent.models``, naming the build's models
    (the operator checks again when it makes the child: ``core.delegation``)."""
    catalog = personas.Catalog.from_agent(caller.build_spec.get("agent") or {})
    for i, w in enumerate(wanted):
        why = personas.spawn_problem(catalog, f"tasks[{i}] ({w.name})", w.model)
        if why:
            raise Refused(403, why)


def spawn(cluster: gcluster.Cluster, caller: Caller, raw: bytes) -> dict[str, Any]:
    """Record the children asked for on the caller's task; the answer's ``children`` is its ``status.children``."""
    check_caller(caller)
    max_children = int(settings_of(caller).get("maxChildren", 5))
    wanted = parse(raw, max_children)
    check_scopes(caller, wanted)
    check_models(caller, wanted)
    for _ in range(MAX_RETRIES):
        task = _current(cluster, caller)
        status = task.get("status") or {}
        requests: list[dict[str, Any]] = list(((status.get("delegation") or {}).get("requests")) or [])
        known = {r.get("name"): r for r in requests}
        new = []
        for w in wanted:
            old = known.get(w.name)
            if old is not None:
                if old.get("prompt") != w.prompt or old.get("model") != w.model:
                    raise Refused(409, f"a child named {w.name!r} was asked for already with another prompt "
                                       "or model; choose another name")
                continue
            new.append({"name": w.name, "prompt": w.prompt, **({"scope": list(w.scope)} if w.scope else {}),
                        **({"model": w.model} if w.model else {}), "attempt": caller.attempt})
            known[w.name] = new[-1]
        if len(requests) + len(new) > max_children:
            raise Refused(403, f"this task asked for {len(requests)} children already; {len(new)} more would pass "
                               f"spec.delegation.maxChildren ({max_children})")
        if new:
            try:
                cluster.patch_task_status(caller.namespace, caller.task, task["metadata"]["resourceVersion"],
                                          {"delegation": {"requests": requests + new}})
            except gcluster.Conflict:
                continue
        return {"accepted": [w.name for w in wanted], "children": status.get("children") or []}
    raise Refused(503, "the task kept changing; ask again")


def children(cluster: gcluster.Cluster, caller: Caller) -> dict[str, Any]:
    """The caller's task's ``status.children`` and the names it asked for."""
    task = _current(cluster, caller)
    status = task.get("status") or {}
    requests = ((status.get("delegation") or {}).get("requests")) or []
    return {"children": status.get("children") or [], "requested": [r.get("name") for r in requests]}


def _current(cluster: gcluster.Cluster, caller: Caller) -> dict[str, Any]:
    task = cluster.get_task(caller.namespace, caller.task, fresh=True)  # rare, and written on what it reads
    if task is None or (task.get("metadata") or {}).get("uid") != (caller.task_obj.get("metadata") or {}).get("uid"):
        raise Refused(404, f"the AgentTask {caller.namespace}/{caller.task} is gone")
    return task
