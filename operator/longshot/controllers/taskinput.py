"""The task input fields an attempt gets from other objects (``core.taskinput``), read from the cache when its Pod
is built: the previous iteration's results for a planner, the dependencies' results (and, for a stacked build,
the unmerged dependency commits to start from), the last failure, the
question and its answer, and a judge's candidates."""

from __future__ import annotations

from typing import Any

from longshot.api import keys, objects
from longshot.controllers import context as ctxmod
from longshot.core import fanout, plan, taskinput, tasks
from longshot.core import mergejobs as mj


def result_of(ctx: ctxmod.Context, t: objects.AgentTask, build: objects.BuildRequest) -> taskinput.TaskResult:
    """How ``t`` ended, for a later prompt."""
    handoff = t.status.handoff
    job = ctx.cache.job_of_task(t)
    merged_commit = job.status.merged_commit if job is not None and job.status.phase in mj.DELIVERED else None
    last = max(t.status.attempts, key=lambda a: a.number) if t.status.attempts else None
    dep = ctx.views(build.key).deps.get(t.name)
    return taskinput.TaskResult(
        name=t.metadata.annotations.get(plan.PLAN_NAME_ANNOTATION) or t.name,
        phase=t.status.phase or tasks.PENDING,
        description=t.spec.description,
        merging=t.spec.role in tasks.MERGING_ROLES,
        commit=handoff.commit if handoff is not None else None,
        branch=handoff.branch if handoff is not None else None,
        delivered=bool(dep is not None and dep.delivered),
        merged_commit=merged_commit,
        summary=handoff.summary if handoff is not None else "",
        files=tuple(handoff.files_changed[:taskinput.MAX_FILES]) if handoff is not None else (),
        failure_class=last.failure_class if last is not None and t.status.phase != tasks.SUCCEEDED else None,
        failure=(last.exit_reason or "") if last is not None and last.failure_class else "",
    )


def _parent(ctx: ctxmod.Context, task: objects.AgentTask) -> objects.AgentTask | None:
    name = task.metadata.labels.get(fanout.FANOUT_LABEL)
    return ctx.cache.tasks.get((task.namespace, name)) if name else None


def extra(ctx: ctxmod.Context, task: objects.AgentTask, build: objects.BuildRequest) -> dict[str, Any]:
    """The added task input fields (wire form) of the next attempt of ``task``."""
    out: dict[str, Any] = {}
    st = task.status
    last = max(st.attempts, key=lambda a: a.number) if st.attempts else None
    if last is not None and last.failure_class:
        failure = taskinput.previous_failure(last.failure_class, last.exit_reason)
        if failure is not None:
            out["previousFailure"] = failure
    if st.question and st.answer:
        out["question"], out["answer"] = st.question, st.answer
    role = task.spec.role
    parent = _parent(ctx, task)
    if role in tasks.MERGING_ROLES:
        out.update(_merging(ctx, task, build, parent))
    elif role == "planner" and plan.PLAN_NAME_ANNOTATION not in task.metadata.annotations:
        out.update(_replanning(ctx, task, build))
    elif role == "reviewer" and parent is not None and parent.status.fanout is not None:
        out.update(_judging(ctx, task, parent))
    return taskinput.fit(out)


def _merging(ctx: ctxmod.Context, task: objects.AgentTask, build: objects.BuildRequest,
             parent: objects.AgentTask | None) -> dict[str, Any]:
    """A worker's or fixer's: what its dependencies did, and the stack it starts from."""
    out: dict[str, Any] = {}
    depends = task.spec.depends_on or (parent.spec.depends_on if parent is not None else [])
    found = [ctx.cache.tasks.get((task.namespace, d)) for d in depends]
    found_results = [result_of(ctx, t, build) for t in found if t is not None]
    deps = taskinput.dependencies(found_results)
    if deps:
        out["dependencies"] = deps
    stack = taskinput.stack(found_results, build.spec.dependencies)
    if stack:
        out["stack"] = stack
    return out


def _replanning(ctx: ctxmod.Context, task: objects.AgentTask, build: objects.BuildRequest) -> dict[str, Any]:
    """A build's planner after the first iteration: what the last iteration's planned tasks did."""
    iteration = plan.iteration_of({"labels": task.metadata.labels})
    if iteration <= 1:
        return {}
    before = str(iteration - 1)
    results = [result_of(ctx, t, build) for t in ctx.cache.tasks_of(build.key)
               if t.metadata.labels.get(plan.ITERATION_LABEL) == before and t.spec.role != "planner"
               and plan.PLAN_NAME_ANNOTATION in t.metadata.annotations]
    return {"previous": taskinput.previous(results)}


def _judging(ctx: ctxmod.Context, task: objects.AgentTask, parent: objects.AgentTask) -> dict[str, Any]:
    """A best-of-N judge: the candidates it chooses from (passing first; failing too when it summarizes)."""
    assert parent.status.fanout is not None
    summarize = task.metadata.annotations.get(keys.REDUCTION) == fanout.SUMMARIZE
    gates = ("Passed", "Failed") if summarize else ("Passed",)
    chosen = []
    for c in sorted(parent.status.fanout.candidates, key=lambda c: c.gate != "Passed"):  # passing first
        if c.gate not in gates or not c.branch or not c.commit:
            continue
        cand = ctx.cache.tasks.get((task.namespace, c.name))
        summary = cand.status.handoff.summary if cand is not None and cand.status.handoff is not None else ""
        chosen.append({"name": c.name, "branch": c.branch, "commit": c.commit, "gate": c.gate,
                       "gate_summary": c.reason or "", "model": c.model, "summary": summary})
    if not chosen:
        return {}
    out: dict[str, Any] = {"candidates": taskinput.judged(chosen)}
    if summarize:
        out["reduction"] = fanout.SUMMARIZE
    return out
