"""Checks of what a model hands back at ``finish``: a planner's task list and a reviewer's verdict.

Every check raises :class:`~longshot.agent.errors.ToolError` whose message tells the model exactly what
to fix (the dispatcher shows it and asks again, a bounded number of times).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Final

import pydantic

from longshot.agent import errors
from longshot.api import handoff


def validate_plan(raw: Any, *, max_tasks: int, depth: int = 0, max_depth: int = 2) -> list[handoff.PlannedTask]:
    """A validated task list: well-formed tasks, unique names, known dependencies, no cycle, bounded."""
    if not isinstance(raw, list):
        raise errors.ToolError("tasks must be a list of task objects")
    if len(raw) > max_tasks:
        raise errors.ToolError(f"the plan has {len(raw)} tasks; at most {max_tasks} are allowed, merge some")
    tasks: list[handoff.PlannedTask] = []
    for index, item in enumerate(raw):
        try:
            tasks.append(handoff.PlannedTask.model_validate(item))
        except pydantic.ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(task)"
            name = item.get("name") if isinstance(item, dict) else None
            raise errors.ToolError(
                f"task {index} ({name or 'unnamed'}): {where}: {first['msg']}"
                + (" (names are lowercase letters, digits and '-', at most 40 characters)"
                   if where == "name" else "")
            ) from None
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise errors.ToolError(f"task names must be unique; repeated: {', '.join(duplicates)}")
    known = set(names)
    for task in tasks:
        unknown = [d for d in task.depends_on if d not in known]
        if unknown:
            raise errors.ToolError(f"task {task.name} depends on unknown task(s): {', '.join(unknown)}")
        if task.name in task.depends_on:
            raise errors.ToolError(f"task {task.name} depends on itself")
        if task.decompose and depth + 1 >= max_depth:
            raise errors.ToolError(
                f"task {task.name} asks to be decomposed but the plan is at depth {depth} of {max_depth}; "
                "split it yourself instead"
            )
    cycle = find_cycle({t.name: t.depends_on for t in tasks})
    if cycle:
        raise errors.ToolError(f"the dependencies have a cycle: {' -> '.join(cycle)}")
    return tasks


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that starts and ends with the same name, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in graph:
        if colour[start] != white:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        colour[start] = grey
        while stack:
            node, index = stack[-1]
            deps = graph.get(node, [])
            if index < len(deps):
                stack[-1] = (node, index + 1)
                nxt = deps[index]
                if colour.get(nxt, black) == grey:
                    return [*path[path.index(nxt):], nxt]
                if colour.get(nxt) == white:
                    colour[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None


def validate_review(payload: dict[str, Any]) -> tuple[str, list[str]]:
    verdict = payload.get("verdict")
    if verdict not in ("approved", "changes-requested"):
        raise errors.ToolError("verdict must be 'approved' or 'changes-requested'")
    reasons = payload.get("reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise errors.ToolError("reasons must be a list of strings")
    if verdict == "changes-requested" and not reasons:
        raise errors.ToolError("a changes-requested verdict needs at least one reason")
    return verdict, reasons


def validate_planner_finish(payload: dict[str, Any], *, max_tasks: int, depth: int = 0, max_depth: int = 2,
                            taken: Collection[str] = (), models: Collection[str] | None = None,
                            personas: Collection[str] | None = None) -> tuple[list[handoff.PlannedTask], bool]:
    """``(tasks, done)`` of a planner's finish: a validated task list, or ``done: true`` with no tasks.

    ``taken`` holds the names earlier iterations used; a new plan must not reuse them (their AgentTasks
    exist already). ``models`` and ``personas``, when given, are the only names a task's ``model`` and ``persona``
    may take (the operator refuses the plan otherwise: ``core.plan``, ``UnknownModel``)."""
    done = payload.get("done", False)
    if not isinstance(done, bool):
        raise errors.ToolError("done must be true or false")
    if done:
        if payload.get("tasks"):
            raise errors.ToolError("done: true means the request is met and takes no tasks; pass either tasks "
                                   "(with done: false) or done: true alone")
        return [], True
    if "tasks" not in payload:
        raise errors.ToolError("finish needs `tasks`, the task list (or `done: true` when the request is met)")
    if payload["tasks"] == []:
        # the operator rejects an empty plan (a whole re-plan); the model can still fix it in this session
        raise errors.ToolError("the plan has no tasks: pass at least one task, or done: true (and no tasks) when "
                               "the request is already met")
    tasks = validate_plan(payload["tasks"], max_tasks=max_tasks, depth=depth, max_depth=max_depth)
    reused = sorted({t.name for t in tasks} & set(taken))
    if reused:
        raise errors.ToolError(f"task name(s) {', '.join(reused)} were used by an earlier iteration; give the new "
                               "tasks new names (earlier tasks are already merged and cannot be depended on)")
    for t in tasks:
        for what, name, known in (("model", t.model, models), ("persona", t.persona, personas)):
            if name and known is not None and name not in known:
                raise errors.ToolError(f"task {t.name!r} names {what} {name!r}; the build's {what}s are "
                                       f"{', '.join(sorted(known)) or 'none'}: choose one of them or leave {what} out")
    return tasks, False


MIN_SUMMARY_PER_CANDIDATE: Final = 20
"""A ``summarize`` judge's summary has at least this many characters for each candidate it compares."""


def validate_judgement(payload: dict[str, Any], candidates: Sequence[handoff.CandidateInput], *,
                       summarize: bool = False) -> tuple[str, list[str]]:
    """``(winner, reasons)`` of a judge: the winner is a candidate that passed its gate, with reasons. A
    ``summarize`` judge's ``summary`` must also compare the candidates: name every one of them, with some words
    for each."""
    if "verdict" in payload and "winner" not in payload:
        raise errors.ToolError("you are judging candidates: pass `winner` (a candidate name), not a verdict")
    winner = payload.get("winner")
    names = [c.name for c in candidates]
    eligible = [c.name for c in candidates if c.gate == "Passed"]
    if not isinstance(winner, str) or winner not in names:
        raise errors.ToolError(f"winner must be one of the candidates: {', '.join(eligible or names)}")
    if winner not in eligible:
        raise errors.ToolError(f"candidate {winner} failed its gate and cannot win; choose one of: "
                               f"{', '.join(eligible)}")
    reasons = payload.get("reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise errors.ToolError("reasons must be a list of strings")
    reasons = [r for r in reasons if r.strip()]
    if not reasons:
        raise errors.ToolError("give at least one reason why the winner is the best candidate")
    if summarize:
        summary = payload.get("summary")
        if not isinstance(summary, str):
            raise errors.ToolError("summary must be a string: your comparison of every candidate")
        unnamed = [n for n in names if n not in summary]
        if unnamed:
            raise errors.ToolError("summary must compare every candidate by name (what each did, how they differ, "
                                   f"what its gate said); it does not name {', '.join(unnamed)}")
        if len(summary.strip()) < MIN_SUMMARY_PER_CANDIDATE * len(names):
            raise errors.ToolError(f"summary is too short to compare {len(names)} candidates: say what each did and "
                                   "how they differ")
    return winner, reasons
