"""The standing intake (``spec.intake`` on a BuildRequest): the shell around ``core.standing``.

The BuildRequest reconciler hands an intake-mode build to :meth:`Standing.reconcile` and does nothing else with it
(no preflight, no planner, no finalization). A reconcile:

1. polls the tracker when a poll is due (``pollSeconds`` after the last one, at once after a webhook delivery or a
   spec change): the open issues with the labels, through the bounded tracker client (``runtime.trackers``: pages,
   bytes and seconds bounded, rate limits honoured, the egress policy applied), in a thread;
2. reads its children from the cache (BuildRequests labelled ``longshot.dev/intake=<name>``);
3. asks ``core.standing.decide``; creates the new children (owned by the intake, ``AlreadyExists`` is fine: a
   name is a function of its issues), posts the comments and closes the issues (in a thread, marked comments
   once), then records what was posted in the children's annotations;
4. writes ``status.intake`` and the conditions, and requeues itself at the next poll.

A child's change enqueues its intake (``controllers.manager``): a finished child is commented on at once, not at
the next poll. Bad settings (a missing Secret, a refused token, an unknown project) set Ready=False with the field
named; the token is never logged or written anywhere.

The webhook (:func:`delivery`) runs in a worker thread of the webhook server (its own port, ``webhook_port``; the body
read under the route's limits by ``longshot.net.ingress``): it finds the intake in the cache, reads the Secret of
``spec.intake.webhook``, checks the signature (one answer for every refusal) and only asks for a poll: it writes the
time into the intake's annotation ``longshot.dev/intake-poll`` (whichever replica holds the intake's shard polls when
it changes) and schedules a local reconcile. The body's content is not used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from longshot import metrics
from longshot.api import conditions as cond
from longshot.api import keys, objects, timeutil
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.controllers import intake as intakec
from longshot.core import names, standing
from longshot.net import guard as gd
from longshot.runtime import kube as kubemod
from longshot.runtime import trackers

log = logging.getLogger("longshot.standing")

FIELD = "intake.tracker"
MAX_REQUEST = 100_000
"""The longest request a child build may have (``spec.request``)."""


PollError = intakec.IntakeError
"""A poll's failure: the planner intake's error (failure class, message, when to try again)."""


@dataclass
class _Memo:
    generation: int
    next_poll: datetime
    last_poll: datetime | None = None
    issues: dict[int, trackers.Issue] = field(default_factory=dict)
    error: PollError | None = None
    poked: str | None = None
    """The intake's :data:`~longshot.core.standing.POLL_ANNOTATION` at this poll."""


def client(k: kubemod.KubeAPI, build: objects.BuildRequest, guard: gd.Guard | None = None,
           **options: Any) -> trackers.Tracker:
    spec = build.spec.intake
    assert spec is not None
    source = spec.tracker
    options.setdefault("max_wait", intakec.TRACKER_MAX_WAIT)  # the planner's intake's
    if guard is not None:
        try:
            guard.check_url(trackers.api_url(source), f"spec.{FIELD}.url", purpose="tracker")
        except gd.Refused as e:
            raise PollError("Configuration", str(e)) from None
        options.setdefault("egress", guard)
    token, email = intakec.secret_credentials(k, build.namespace, source.credentials_secret, FIELD)
    return trackers.make_tracker(source, token, email=email, field=FIELD, **options)


def _mapped(e: trackers.TrackerError) -> PollError:
    return intakec.mapped(e, FIELD)


def poll(k: kubemod.KubeAPI, build: objects.BuildRequest, guard: gd.Guard | None = None,
         **options: Any) -> list[trackers.Issue]:
    """The open issues with the intake's labels (assignee, milestone and author are the decider's filters; on
    GitLab the authors' access levels are looked up here)."""
    spec = build.spec.intake
    assert spec is not None
    labels = list(dict.fromkeys([*spec.tracker.labels, *spec.labels]))
    listed = {u.casefold() for u in spec.authors.users}
    try:
        with client(k, build, guard, **options) as t:
            issues = t.list_issues(labels)
            if spec.authors.writers and isinstance(t, trackers.GitLab):  # GitHub's listing says it already
                ids = {i.author: i.author_id for i in issues
                       if i.author and i.author_id is not None and i.author.casefold() not in listed}
                writers = t.writers(ids)
                issues = [dataclasses.replace(i, author_writer=i.author in writers) for i in issues]
            elif spec.authors.writers and isinstance(t, trackers.Jira):  # the permission search, per author
                jira_writers = t.writers([i.author for i in issues if i.author and i.author.casefold() not in listed])
                issues = [dataclasses.replace(i, author_writer=i.author in jira_writers) for i in issues]
            return issues
    except trackers.TrackerError as e:
        raise _mapped(e) from None


def act(k: kubemod.KubeAPI, build: objects.BuildRequest, comments: tuple[standing.Comment, ...],
        closes: tuple[standing.Close, ...], guard: gd.Guard | None = None,
        **options: Any) -> tuple[list[standing.Comment], list[standing.Close], PollError | None]:
    """Post ``comments`` (each once: its marker) and close the issues of ``closes``; what was done, and the error
    that stopped it (the rest waits for the next reconcile)."""
    posted: list[standing.Comment] = []
    closed: list[standing.Close] = []
    try:
        with client(k, build, guard, **options) as t:
            for c in comments:
                body = (standing.started_text(c.build, c.issues or (c.issue,)) if c.kind == "started"
                        else standing.finished_text(c.build, c.outcome))
                t.comment(c.issue, body, marker=standing.marker(c.build, f"{c.kind}/{c.issue}"))
                posted.append(c)
            for x in closes:
                t.close_issue(x.issue)
                closed.append(x)
    except trackers.TrackerError as e:
        return posted, closed, _mapped(e)
    except PollError as e:
        return posted, closed, e
    return posted, closed, None


class Standing:
    """Part of the BuildRequest reconciler: the reconcile of an intake-mode build."""

    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx
        self.memos: dict[cachemod.Key, _Memo] = {}
        self.wanted: set[cachemod.Key] = set()
        """Intakes a webhook delivery asked to poll now."""

    def forget(self, key: cachemod.Key) -> None:
        self.memos.pop(key, None)
        self.wanted.discard(key)

    def poll_now(self, key: cachemod.Key) -> None:
        """Poll ``key`` at its next reconcile (a webhook delivery; call on the event loop)."""
        self.wanted.add(key)
        self.ctx.queue.add_all([("BuildRequest", *key)])

    def children(self, build: objects.BuildRequest) -> list[standing.ChildView]:
        label = names.fit(build.name)
        out = []
        for (ns, _), b in list(self.ctx.cache.builds.items()):
            if ns != build.namespace or b.metadata.labels.get(standing.PARENT_LABEL) != label:
                continue
            ann = b.metadata.annotations
            issues = standing.parse_issues(ann.get(standing.ISSUES_ANNOTATION))
            if not issues:
                continue
            phase = b.status.phase
            outcome: standing.Outcome = "Succeeded" if phase == "Succeeded" else "Failed" if phase == "Failed" \
                else "Active"
            out.append(standing.ChildView(b.name, issues, outcome, standing.STARTED_ANNOTATION in ann,
                                          standing.FINISHED_ANNOTATION in ann, standing.CLOSED_ANNOTATION in ann,
                                          b.metadata.creation_timestamp,
                                          standing.Money(b.status.usage.tokens, b.status.usage.cost),
                                          standing.Money(b.spec.budget.max_tokens, b.spec.budget.max_cost)))
        return out

    async def reconcile(self, build: objects.BuildRequest) -> list[ex.Action]:
        spec = build.spec.intake
        assert spec is not None
        now = self.ctx.clock()
        memo, fresh, due = await self._poll(build, now)
        children = self.children(build)
        filters, policy = _rules(build)
        listing = fresh if fresh is not None else list(memo.issues.values()) if memo.last_poll is not None else None
        views = None if listing is None else [standing.IssueView(i.number, i.labels, i.assignees, i.milestone,
                                                                 i.author, i.author_writer is True)
                                              for i in listing]
        # spec.suspend on an intake: no new builds (its children are not suspended by it; comments and closes go on)
        decision = standing.decide(build.name, views, children, filters, policy,
                                   fresh=fresh is not None and not build.spec.suspend, now=now)
        out: list[ex.Action] = []
        for c in decision.create:
            out.append(ex.Call(self._creator(self._manifest(build, c, memo.issues)), f"intake child {c.name}"))
        error = memo.error
        if (decision.comments or decision.close) and not (due and fresh is None):  # not while the tracker fails
            failed = await self._tell(build, children, decision, now, out)
            error = error or failed
        out.append(ex.Requeue(("BuildRequest", *build.key), memo.next_poll))
        status = self._status(build, decision.summary, memo, error, now)
        if status is not None:
            out.append(status)
        return out

    async def _poll(self, build: objects.BuildRequest,
                    now: datetime) -> tuple[_Memo, list[trackers.Issue] | None, bool]:
        """(the intake's memo, the issues read now (None: not polled, or the poll failed), whether a poll was due)."""
        spec = build.spec.intake
        assert spec is not None
        key = build.key
        memo = self.memos.get(key)
        poked = build.metadata.annotations.get(standing.POLL_ANNOTATION)
        due = (memo is None or key in self.wanted or memo.generation != build.generation or now >= memo.next_poll
               or poked != memo.poked)
        if not due:
            assert memo is not None
            return memo, None, False
        self.wanted.discard(key)
        last = memo.last_poll if memo is not None else _parse(build)
        fresh: list[trackers.Issue] | None = None
        try:
            async with self.ctx.lanes.lane(build.namespace):
                fresh = await asyncio.to_thread(poll, self.ctx.kube, build, guard=self.ctx.egress)
        except PollError as e:
            metrics.INTAKE_POLLS.labels(result="error").inc()
            retry = e.retry_at or now + timedelta(seconds=min(spec.poll_seconds, 30))
            memo = _Memo(build.generation, max(retry, now + timedelta(seconds=1)), last,
                         memo.issues if memo is not None else {}, e, poked)
            log.warning("intake %s/%s: poll failed: %s", build.namespace, build.name, e.message)
        else:
            metrics.INTAKE_POLLS.labels(result="ok").inc()
            memo = _Memo(build.generation, now + timedelta(seconds=spec.poll_seconds), now,
                         {i.number: i for i in fresh}, None, poked)
        self.memos[key] = memo
        return memo, fresh, True

    async def _tell(self, build: objects.BuildRequest, children: list[standing.ChildView],
                    decision: standing.Decision, now: datetime, out: list[ex.Action]) -> PollError | None:
        """Post the decision's comments and closes on the tracker; the error when one failed."""
        spec = build.spec.intake
        assert spec is not None
        ref = ("BuildRequest", *build.key)
        async with self.ctx.lanes.lane(build.namespace):
            posted, closed, failed = await asyncio.to_thread(act, self.ctx.kube, build, decision.comments,
                                                             decision.close, guard=self.ctx.egress)
        out += self._record(build, children, decision, posted, closed)
        if failed is not None:
            out.append(ex.RecordEvent(build.ref(), "Warning", "IssueCommentFailed", failed.message[:1024]))
            out.append(ex.Requeue(ref, now + timedelta(seconds=min(spec.poll_seconds, 30))))
        elif len(posted) + len(closed) >= standing.MAX_ACTIONS:
            out.append(ex.Requeue(ref, now + timedelta(seconds=1)))
        return failed

    def _creator(self, manifest: dict[str, Any]) -> Callable[[], None]:
        def create() -> None:
            if self.ctx.kube.create(manifest) is not None:  # None: it exists already (a restart, a race)
                metrics.INTAKE_BUILDS.inc()
                log.info("intake started build %s/%s", manifest["metadata"]["namespace"],
                         manifest["metadata"]["name"])
        return create

    def _manifest(self, build: objects.BuildRequest, c: standing.Create,
                  issues: Mapping[int, trackers.Issue]) -> dict[str, Any]:
        spec: dict[str, Any] = build.spec.model_dump(by_alias=True, mode="json", exclude_none=True,
                                                     exclude_defaults=True)  # the server defaults them again
        spec.pop("intake", None)
        spec.pop("suspend", None)  # the intake's suspend pauses the intake, not its children
        planner = spec.setdefault("planner", {})
        if planner.get("source") == "issues":  # the child works on its issues, given in its request
            planner["source"] = "llm"
            planner.pop("issues", None)
        if c.budget.tokens is not None or c.budget.cost is not None:  # its share of spec.intake.budget
            spec["budget"] = {k: v for k, v in (("maxTokens", c.budget.tokens), ("maxCost", c.budget.cost))
                              if v is not None}
        texts = [trackers.describe(issues[n]) if n in issues else f"Issue #{n}" for n in c.issues]
        request = (build.spec.request.strip() + "\n\n" + "\n\n---\n\n".join(texts))
        spec["request"] = request[:MAX_REQUEST]
        return {
            "apiVersion": build.api_version, "kind": "BuildRequest",
            "metadata": {
                "name": c.name, "namespace": build.namespace,
                "labels": {standing.PARENT_LABEL: names.fit(build.name), keys.MANAGED_BY: keys.OPERATOR},
                "annotations": {standing.ISSUES_ANNOTATION: standing.format_issues(c.issues)},
                "ownerReferences": [build.owner_reference()],
            },
            "spec": spec,
        }

    def _record(self, build: objects.BuildRequest, children: list[standing.ChildView],
                decision: standing.Decision, posted: list[standing.Comment],
                closed: list[standing.Close]) -> list[ex.Action]:
        """Annotate each child whose comments (all of its issues') and closes were all done."""
        out: list[ex.Action] = []
        done_c: set[tuple[int, str, str]] = {(c.issue, c.build, c.kind) for c in posted}
        done_x: set[tuple[int, str, str]] = {(x.issue, x.build, "close") for x in closed}
        for child in children:
            ann: dict[str, str] = {}
            if _all_done(child, [(c.issue, c.build, c.kind) for c in decision.comments
                                 if c.build == child.name and c.kind == "started"], done_c):
                ann[standing.STARTED_ANNOTATION] = "true"
            if _all_done(child, [(c.issue, c.build, c.kind) for c in decision.comments
                                 if c.build == child.name and c.kind == "finished"], done_c):
                ann[standing.FINISHED_ANNOTATION] = child.outcome
            if _all_done(child, [(x.issue, x.build, "close") for x in decision.close if x.build == child.name],
                         done_x):
                ann[standing.CLOSED_ANNOTATION] = "true"
            if ann:
                out.append(ex.PatchObject("BuildRequest", build.namespace, child.name,
                                          {"metadata": {"annotations": ann}}))
        return out

    def _status(self, build: objects.BuildRequest, summary: standing.Summary, memo: _Memo,
                error: PollError | None, now: datetime) -> ex.WriteStatus | None:
        conds = cond.since_creation(ctxmod.conditions_of(build), build.metadata.creation_timestamp)
        for t, s, r, m in _condition_sets(build, summary, error):
            conds, _ = cond.set_condition(conds, t, s, r, m, now=now)
        intake: dict[str, Any] = {
            "eligible": summary.eligible, "active": summary.active, "started": summary.started,
            "waiting": summary.waiting,
            "builds": [{"issue": e.issue, "issues": list(e.issues), "build": e.build, "outcome": e.outcome}
                       for e in summary.builds],
        }
        if memo.last_poll is not None:
            intake["lastPoll"] = timeutil.rfc3339(memo.last_poll)
        stalled = error is not None and error.failure_class in ("Configuration", "Auth")
        patch: dict[str, Any] = {"phase": "Stalled" if stalled else "Watching",
                                 "conditions": ex.stamp_generation(conds, build.generation),
                                 "observedGeneration": build.generation, "intake": intake}
        current = build.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        if current.get("intake") == intake and current.get("phase") == patch["phase"] and \
                current.get("observedGeneration") == build.generation and \
                _same_conditions(current.get("conditions") or [], patch["conditions"]):
            return None
        return ex.WriteStatus("BuildRequest", build.namespace, build.name, build.metadata.resource_version, patch)


def _all_done(child: standing.ChildView, wanted: list[tuple[int, str, str]],
              done: set[tuple[int, str, str]]) -> bool:
    """Whether there was something of this kind for every issue of the child, and all of it was done."""
    return bool(wanted) and len(wanted) == len(child.issues) and all(w in done for w in wanted)


def _rules(build: objects.BuildRequest) -> tuple[standing.Filters, standing.Policy]:
    """The intake's filters and policy (``spec.intake``)."""
    spec = build.spec.intake
    assert spec is not None
    filters = standing.Filters(labels=tuple(dict.fromkeys([*spec.tracker.labels, *spec.labels])),
                               assignee=spec.assignee, milestone=spec.milestone, writers=spec.authors.writers,
                               users=tuple(spec.authors.users))
    total = spec.budget
    policy = standing.Policy(policy=spec.policy, batch_size=spec.batch_size, max_active=spec.max_active_builds,
                             poll_seconds=spec.poll_seconds, comment=spec.tracker.comment,
                             max_per_day=spec.max_builds_per_day,
                             budget=standing.Money(total.max_tokens, total.max_cost) if total is not None
                             else standing.Money(),
                             child_budget=standing.Money(build.spec.budget.max_tokens, build.spec.budget.max_cost))
    return filters, policy


def _condition_sets(build: objects.BuildRequest, summary: standing.Summary,
                    error: PollError | None) -> list[tuple[str, str, str, str]]:
    """The intake's conditions: watching, or why the tracker failed (a person's to fix, or tried again)."""
    if error is None:
        message = (f"watching the tracker: {summary.eligible} eligible issues, {summary.active} builds active, "
                   f"{summary.waiting} waiting for a slot, {summary.started} started"
                   + (f"; {summary.held}" if summary.held else "")
                   + ("; suspended: no new build starts" if build.spec.suspend else ""))
        sets = [(cond.READY, cond.TRUE, "Watching", message),
                (cond.STALLED, cond.FALSE, "NotStalled", "nothing needs a person"),
                (cond.RECONCILING, cond.FALSE, "Watching", message)]
    else:
        person = error.failure_class in ("Configuration", "Auth")
        reason = {"Configuration": "Configuration", "Auth": "AuthFailed",
                  "RateLimited": "RateLimited"}.get(error.failure_class, "IntakeFailed")
        text = error.message[:1024]
        sets = [(cond.READY, cond.FALSE, reason, text),
                (cond.STALLED, cond.TRUE if person else cond.FALSE, reason if person else "NotStalled",
                 text if person else "the tracker is tried again"),
                (cond.RECONCILING, cond.FALSE if person else cond.TRUE, reason, text)]
    sets.append((cond.PROGRESSING, cond.TRUE if summary.active else cond.FALSE,
                 "BuildsRunning" if summary.active else "Idle",
                 f"{summary.active} child builds active" if summary.active else "no child build is active"))
    return sets


def _same_conditions(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    def key(c: Mapping[str, Any]) -> tuple[Any, ...]:
        return (c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))
    return sorted(map(key, have)) == sorted(map(key, want))


def _parse(build: objects.BuildRequest) -> datetime | None:
    got = build.status.intake.last_poll if build.status.intake is not None else None
    return got if isinstance(got, datetime) else None


# --- the webhook receiver -----------------------------------------------------------------------------------------

def delivery(ctx: ctxmod.Context, schedule: Callable[[cachemod.Key], None], path: str, headers: Mapping[str, str],
             body: bytes) -> tuple[int, str]:
    """A webhook delivery to ``POST /intake/<namespace>/<name>`` (called in a worker thread of the webhook server,
    after its body was read under the route's limits): 202 and ``schedule`` (thread-safe) is asked to poll the
    intake, else :data:`~longshot.core.standing.REFUSED_DELIVERY` whatever the reason (no such intake, no
    ``spec.intake.webhook``, a bad or missing signature), at the same cost: the body is hashed either way. The body
    is only hashed, never interpreted."""
    key = standing.parse_path(path)
    build = ctx.cache.builds.get(key) if key is not None else None
    ref = build.spec.intake.webhook if (build is not None and build.spec.intake is not None
                                        and not build.metadata.deleting) else None
    provider = build.spec.intake.tracker.provider if ref is not None and build is not None \
        and build.spec.intake is not None else "github"
    secret = ""
    if key is not None and ref is not None:
        try:
            secret = str((ctx.kube.get_secret(key[0], ref.name) or {}).get("token", ""))
        except Exception as e:  # RBAC or the API server: refuse, say so in the log only
            log.warning("intake %s/%s: webhook Secret unreadable: %s", key[0], key[1], type(e).__name__)
    lowered = {k.lower(): v for k, v in headers.items()}
    # an unknown intake is checked against a random secret: the same work, the same answer
    genuine = standing.verify_delivery(secret or secrets.token_hex(16), lowered, body, provider=provider,
                                       now_ms=int(ctx.clock().timestamp() * 1000))
    if key is None or not secret or not genuine:
        metrics.INTAKE_WEBHOOKS.labels(result="refused").inc()
        return standing.REFUSED_DELIVERY
    metrics.INTAKE_WEBHOOKS.labels(result="accepted").inc()
    # the replica that holds the intake's shard polls when this annotation changes (the delivery may have reached
    # another replica); this one also schedules its own reconcile, the quick path when it is the holder
    try:
        ctx.kube.patch("BuildRequest", key[0], key[1], {"metadata": {"annotations": {
            standing.POLL_ANNOTATION: ctx.clock().isoformat()}}})  # microseconds: every delivery changes it
    except Exception as e:
        log.warning("intake %s/%s: could not record a webhook delivery: %s", key[0], key[1], type(e).__name__)
    schedule(key)
    return 202, "poll scheduled"
