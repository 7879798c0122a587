"""A MergeJob as a member of a speculative batch (``vcs.speculate.Member``): its branch, commit, strategy and what
the intake hook adds to its merged commit."""

from __future__ import annotations

from longshot.api import objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.core import plan
from longshot.runtime import trackers
from longshot.vcs import speculate

FIX_CHAIN_LIMIT = 5
"""How many fixers that took a branch over are followed back to the planned task whose work it carries."""


def member(ctx: ctxmod.Context, job: objects.MergeJob, build: objects.BuildRequest) -> speculate.Member:
    check_off, references = intake_of(ctx, job, build)
    return speculate.Member(name=job.name, namespace=job.namespace, uid=job.metadata.uid, branch=job.spec.branch,
                            commit=job.spec.commit or "", strategy=job.spec.strategy, task=job.task_name,
                            build=build.name, check_off=check_off, references=references,
                            stacked_on=tuple(job.spec.stacked_on))


def _planned_task(ctx: ctxmod.Context, job: objects.MergeJob) -> objects.AgentTask | None:
    """The task whose work the job's branch carries: its own, or the one its fixers took the branch over from."""
    ns = job.namespace
    task = ctx.cache.tasks.get((ns, job.task_name))
    for _ in range(FIX_CHAIN_LIMIT):
        fixes = task.metadata.annotations.get(cachemod.FIXES_ANNOTATION) if task is not None else None
        if not fixes:
            break
        fixed = ctx.cache.jobs.get((ns, fixes))
        task = ctx.cache.tasks.get((ns, fixed.task_name if fixed is not None else fixes))
    return task


def intake_of(ctx: ctxmod.Context, job: objects.MergeJob, build: objects.BuildRequest
              ) -> tuple[tuple[str, str] | None, tuple[str, ...]]:
    """What the intake hook adds to the job's merged commit: the roadmap item to check off (a roadmap-driven
    build) or the issue reference (an issue-driven build), from the planned task whose work the branch
    carries (through the fixers that took branches over)."""
    source = build.spec.planner.source
    if source == "llm":
        return None, ()
    task = _planned_task(ctx, job)
    local = task.metadata.annotations.get(plan.PLAN_NAME_ANNOTATION) if task is not None else None
    if not local or (task is not None and task.spec.parent_task):
        return None, ()
    if source == "roadmap":
        return (build.spec.planner.roadmap_path, local), ()
    number = trackers.issue_number(local)
    return None, ((trackers.commit_reference(number, build.spec.planner.issues),) if number is not None else ())
