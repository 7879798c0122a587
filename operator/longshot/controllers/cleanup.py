"""The clean-up of a deleted BuildRequest's refs in its repository (``spec.cleanup``; ``core.cleanup`` decides).

Called by the BuildRequest reconciler (``controllers.builds``) on every reconcile of a build, before anything else:

* a build without the finalizer ``longshot.dev/cleanup`` gets it (one metadata patch, fenced on the build's
  resourceVersion; that reconcile does nothing else, and the patch's own event brings the next one);
* a build being deleted: its refs are listed on the server and the ones the policy lets go deleted, through the
  tenant's workspace (``controllers.queue.Workspaces``: the build's credentials Secret and the egress
  guard), by the replica that holds the build's shard, each ref by compare-and-swap on the commit it was listed
  at. Then the finalizer is removed (fenced too). A failed attempt is recorded in annotations of the build and
  tried again with backoff; after the last one the finalizer is removed anyway, with a Warning Event.

Git work runs in a thread, in the reconcile (like the merge queue's pushes): its answer is the decider's next event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import assert_never

from longshot.api import objects, timeutil
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.controllers import lanes
from longshot.core import cleanup, fanout, names, tasks
from longshot.core.effects import EmitEvent
from longshot.runtime import kube as kubemod
from longshot.vcs import refs as vrefs

log = logging.getLogger("longshot.cleanup")

MAX_STEPS = 4
"""Decider rounds in one reconcile: observe, list, delete, done."""


def needs_work(build: objects.BuildRequest) -> bool:
    """Whether the build's reconcile is the clean-up's (the finalizer is missing, or the build is being deleted
    with it still there): the BuildRequest reconciler then returns what :func:`reconcile` returns, only."""
    has = cleanup.FINALIZER in build.metadata.finalizers
    return not has if not build.metadata.deleting else has


def state_of(build: objects.BuildRequest) -> cleanup.State:
    ann = build.metadata.annotations
    try:
        attempts = max(0, int(ann.get(cleanup.ATTEMPTS_ANNOTATION, "0") or 0))
    except ValueError:
        attempts = 0
    retry_at = timeutil.parse(ann[cleanup.RETRY_AT_ANNOTATION]) if cleanup.RETRY_AT_ANNOTATION in ann else None
    return cleanup.State(
        namespace=build.namespace, build=build.name, policy=build.spec.cleanup.branches,
        finalizer=cleanup.FINALIZER in build.metadata.finalizers, deleting_since=build.metadata.deletion_timestamp,
        succeeded=build.status.phase == "Succeeded", attempts=attempts, retry_at=retry_at)


def task_facts(ctx: ctxmod.Context, build: objects.BuildRequest) -> dict[str, cleanup.TaskFacts]:
    """The build's AgentTasks still in the cache, with what became of their branches."""
    landed = {j.spec.branch for j in ctx.cache.jobs_of(build.key) if ctx.delivered(j)}
    out: dict[str, cleanup.TaskFacts] = {}
    for t in ctx.cache.tasks_of(build.key):
        branch = names.task_branch(build.namespace, build.name, t.name)
        lost = False
        if cachemod.purpose(t) == fanout.CANDIDATE:
            parent = ctx.cache.tasks.get((t.namespace, t.metadata.labels.get(fanout.FANOUT_LABEL, "")))
            chosen = parent.status.handoff.branch if parent is not None and parent.status.handoff is not None else None
            lost = parent is not None and parent.status.phase in tasks.TERMINAL and chosen != branch
        out[t.name] = cleanup.TaskFacts(name=t.name, role=t.spec.role, phase=t.status.phase or tasks.PENDING,
                                        landed=branch in landed, lost=lost)
    return out


async def reconcile(ctx: ctxmod.Context, build: objects.BuildRequest) -> list[ex.Action]:
    """The actions of the clean-up for ``build`` (see the module's docstring)."""
    if not ctx.owns_build(build):
        return []
    now = ctx.clock()
    state = state_of(build)
    out: list[ex.Action] = []
    event: cleanup.Event | None = cleanup.Observed()
    for _ in range(MAX_STEPS):
        if event is None:
            break
        try:
            state, effects = cleanup.decide(state, event, now=now)
        except cleanup.InvalidTransition as bug:
            log.error("%s/%s: %s", build.namespace, build.name, bug)
            break
        event = None
        for effect in effects:
            got = await _carry_out(ctx, build, effect, now, out)
            event = got or event
    return out


async def _carry_out(ctx: ctxmod.Context, build: objects.BuildRequest, e: cleanup.Effect, now: datetime,
                     out: list[ex.Action]) -> cleanup.Event | None:
    meta = build.metadata
    match e:
        case cleanup.AddFinalizer():
            out.append(ex.PatchObject("BuildRequest", build.namespace, build.name, {"metadata": {
                "finalizers": [*meta.finalizers, cleanup.FINALIZER], "resourceVersion": meta.resource_version}}))
        case cleanup.RemoveFinalizer():
            out.append(ex.PatchObject("BuildRequest", build.namespace, build.name, {"metadata": {
                "finalizers": [f for f in meta.finalizers if f != cleanup.FINALIZER],
                "resourceVersion": meta.resource_version}}))
        case cleanup.RecordAttempt(attempts=n, retry_at=at):
            out.append(ex.PatchObject("BuildRequest", build.namespace, build.name, {"metadata": {"annotations": {
                cleanup.ATTEMPTS_ANNOTATION: str(n), cleanup.RETRY_AT_ANNOTATION: timeutil.rfc3339(at)}}}))
        case cleanup.RetryAt(at=at):
            out.append(ex.Requeue(("BuildRequest", *build.key), at))
        case EmitEvent(type=type_, reason=reason, message=message):
            out.append(ex.RecordEvent(build.ref(), type_, reason, message))
        case cleanup.ListRefs(prefixes=prefixes):
            secret = build.spec.repository.credentials_secret
            try:
                if secret and await asyncio.to_thread(ctx.kube.get_secret, build.namespace, secret) is None:
                    return cleanup.CredentialsGone(secret)
            except kubemod.Forbidden:
                # as good as gone: a namespace being deleted removes the secret-reader RoleBinding with the Secret,
                # and backing off for minutes would hold the namespace in Terminating (issue 55)
                return cleanup.CredentialsGone(secret or "", forbidden=True)
            except Exception as err:
                return _failed(build, "list", err)
            try:
                w = await ctx.workspaces.get(build)
                found = await lanes.git(vrefs.list_refs, w, prefixes)
            except Exception as err:  # the forge, the Secret, the egress guard: retried by the decider
                return _failed(build, "list", err)
            return cleanup.Listed(tuple(cleanup.Ref(r, sha) for r, sha in found), task_facts(ctx, build))
        case cleanup.DeleteRefs(refs=chosen):
            return await _delete(ctx, build, chosen)
        case _:
            assert_never(e)
    return None


async def _delete(ctx: ctxmod.Context, build: objects.BuildRequest,
                  chosen: Sequence[cleanup.Ref]) -> cleanup.Event:
    try:
        w = await ctx.workspaces.get(build)
        await lanes.git(vrefs.delete_refs, w, [(r.name, r.sha) for r in chosen])
        after = dict(await lanes.git(vrefs.list_refs, w, cleanup.prefixes(build.namespace, build.name)))
    except Exception as err:
        return _failed(build, "delete", err)
    left = tuple(r.name for r in chosen if after.get(r.name) == r.sha)
    log.info("%s/%s: deleted %d ref(s) of the build from its repository (%d left)", build.namespace, build.name,
             len(chosen) - len(left), len(left))
    return cleanup.Deleted(left)


def _failed(build: objects.BuildRequest, what: str, err: Exception) -> cleanup.ForgeFailed:
    # GitError messages have the workspace's secrets replaced (vcs.workspace.redact); others name no secret
    message = f"{type(err).__name__}: {err}"
    log.warning("%s/%s: the clean-up could not %s the build's refs: %s", build.namespace, build.name, what, message)
    return cleanup.ForgeFailed(f"could not {what} the refs: {message}")
