"""The standing intake's decider (``spec.intake`` on a BuildRequest): from the eligible open issues a poll saw and
the child BuildRequests that exist, what to start, what to say on the tracker and what to close. Pure: no I/O.

A child build is named from its issues alone (:func:`child_name`: ``<intake>-i<number>``, or
``<intake>-b<first number>`` for a batch) and carries its issue numbers in an annotation
(:data:`ISSUES_ANNOTATION`). An issue that any child lists is *covered*: it never gets another build, whatever
that child's outcome, so a restart, a second replica or a race that decides twice creates the same name twice,
and the API server's AlreadyExists makes the second create a no-op. (To try an issue again, delete its child.)

Transitions, per issue (``eligible`` = open, with every label, the assignee and the milestone the spec asks for,
opened by an allowed author: :func:`author_allowed`):

    ==============================  ===============================  ===========================================
    issue / child                   condition                        decision
    ==============================  ===============================  ===========================================
    eligible, no child              a slot (active < maxActive)      create a child (perIssue: one issue; batch:
                                                                     the next ``batchSize`` uncovered issues)
    eligible, no child              no slot                          wait (``status.intake.waiting``)
    eligible, no child              no fresh poll (``fresh=False``)  nothing (never start from a stale listing)
    eligible, no child              ``maxBuildsPerDay`` children     wait (``Summary.held`` says why)
                                    created in the last 24 hours
    eligible, no child              the intake's budget is spent     wait (``Summary.held`` says why)
                                    (children's use + allotments)
    not eligible (closed, label     no child                         nothing, ever
      removed, other assignee)
    any                             child exists, active             nothing new (a child is never cancelled
                                                                     because its issue left the filter)
    child, "started" not recorded   -                                comment "started" on each of its issues
                                                                     (a restart between create and comment
                                                                     posts it now; the tracker client skips a
                                                                     marker that is there already)
    child Succeeded                 finish not recorded              comment the outcome with the build's name
    child Failed                    finish not recorded              comment the outcome; the issue stays open
    child Succeeded                 not closed                       close each of its issues
    ==============================  ===============================  ===========================================

**Authors.** An issue counts only when its author may ask for work: an account listed in ``authors.users``, or,
with ``authors.writers`` (the default), an account the tracker says may write to the project (GitHub
``author_association`` OWNER, MEMBER or COLLABORATOR; GitLab access level Developer or higher). On a public
project anyone may open an issue; a stranger's issue starts nothing.

**The intake's budget** (``spec.intake.budget``) bounds what all its children together may spend. Each child is
allotted, at its creation, the smaller of the template's ``spec.budget`` and what is left of the intake's
(written as the child's ``spec.budget``); what is left is the intake's budget minus, per child, its usage when it
has finished and the larger of its usage and its allotment while it runs. No child starts once nothing is left.
**The daily cap** (``spec.intake.maxBuildsPerDay``) bounds the children created in any 24 hours.

``comment=False`` (``tracker.comment``) posts no comments; closing still happens. The next poll is due
``pollSeconds`` after this one; a webhook delivery polls at once. ``status.intake.builds`` keeps the 50 newest
children (by first issue number).

:func:`verify_delivery` checks a webhook delivery's signature in constant time, with the intake's provider's scheme:

    ========  =============================================  ==========================================
    provider  accepted                                       refused
    ========  =============================================  ==========================================
    github,   ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256  no header, another HMAC, another token
    gitlab    of the body>``, or ``X-Gitlab-Token: <secret>``
    jira      ``X-Hub-Signature: sha256=<hex HMAC-SHA256      no header, another HMAC, another algorithm
              of the body>``
    linear    ``Linear-Signature: <hex HMAC-SHA256 of the     no header, another HMAC; a body without a
              body>`` and the body's ``webhookTimestamp``     number ``webhookTimestamp`` or one more than
              (epoch ms) at most 60 s from ``now``            60 s from ``now`` (a replay)
    ========  =============================================  ==========================================
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from longshot.api import boundedjson
from longshot.core import names

ISSUES_ANNOTATION: Final = "longshot.dev/intake-issues"
"""On a child build: its issue numbers, comma-separated, ascending."""
PARENT_LABEL: Final = "longshot.dev/intake"
"""On a child build: the name of the standing intake that started it."""
STARTED_ANNOTATION: Final = "longshot.dev/intake-started"
"""On a child build: the "started" comment was posted on its issues."""
FINISHED_ANNOTATION: Final = "longshot.dev/intake-finished"
"""On a child build: the outcome comment was posted (its value: the outcome)."""
CLOSED_ANNOTATION: Final = "longshot.dev/intake-closed"
"""On a child build: its issues were closed."""
POLL_ANNOTATION: Final = "longshot.dev/intake-poll"
"""On an intake: when a webhook delivery was last accepted (any replica writes it; the one holding the intake's
shard polls when it changes)."""
MAX_ENTRIES: Final = 50
"""Child builds listed in ``status.intake.builds``."""
MAX_ACTIONS: Final = 20
"""Most comments and closes decided at once (the rest wait for the next reconcile)."""
MAX_BODY_BYTES: Final = 1024 * 1024
"""Largest webhook delivery read."""
DAY: Final = timedelta(hours=24)

Outcome = Literal["Active", "Succeeded", "Failed"]


@dataclass(frozen=True)
class IssueView:
    """An open issue as a poll saw it."""

    number: int
    labels: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    milestone: str | None = None
    author: str = ""
    writer: bool = False
    """The tracker says the author may write to the project."""


@dataclass(frozen=True)
class Filters:
    labels: tuple[str, ...] = ()
    assignee: str | None = None
    milestone: str | None = None
    writers: bool = True
    """``authors.writers``: issues of accounts with write access count."""
    users: tuple[str, ...] = ()
    """``authors.users``: accounts whose issues count whatever their access."""


@dataclass(frozen=True)
class Money:
    """Tokens and cost (a budget's limits, None: no limit; or what was used or allotted)."""

    tokens: int | None = None
    cost: float | None = None


@dataclass(frozen=True)
class ChildView:
    """A child build that exists."""

    name: str
    issues: tuple[int, ...]
    outcome: Outcome = "Active"
    started_commented: bool = False
    finished_commented: bool = False
    closed: bool = False
    created: datetime | None = None
    used: Money = field(default_factory=lambda: Money(0, 0.0))
    """Its ``status.usage``."""
    allotted: Money = field(default_factory=Money)
    """Its ``spec.budget`` (None: no limit)."""


@dataclass(frozen=True)
class Policy:
    policy: Literal["perIssue", "batch"] = "perIssue"
    batch_size: int = 5
    max_active: int = 3
    poll_seconds: int = 60
    comment: bool = True
    max_per_day: int | None = None
    """``maxBuildsPerDay``: most children created in any 24 hours."""
    budget: Money = field(default_factory=Money)
    """``spec.intake.budget``: what all the children together may spend (None: no limit)."""
    child_budget: Money = field(default_factory=Money)
    """The template's ``spec.budget``: each child's, at most (None: no limit)."""


@dataclass(frozen=True)
class Create:
    name: str
    issues: tuple[int, ...]
    budget: Money = field(default_factory=Money)
    """The child's ``spec.budget``: the template's, at most what is left of the intake's."""


@dataclass(frozen=True)
class Comment:
    issue: int
    build: str
    kind: Literal["started", "finished"]
    outcome: Outcome = "Active"
    issues: tuple[int, ...] = ()
    """Every issue of the build (a batch's)."""


@dataclass(frozen=True)
class Close:
    issue: int
    build: str


@dataclass(frozen=True)
class Entry:
    issue: int
    issues: tuple[int, ...]
    build: str
    outcome: Outcome


@dataclass(frozen=True)
class Summary:
    eligible: int
    active: int
    started: int
    waiting: int
    builds: tuple[Entry, ...]
    held: str = ""
    """Why eligible issues wait although a slot is free (the daily cap, the intake's budget), or ""."""


@dataclass(frozen=True)
class Decision:
    create: tuple[Create, ...] = ()
    comments: tuple[Comment, ...] = ()
    close: tuple[Close, ...] = ()
    summary: Summary = field(default_factory=lambda: Summary(0, 0, 0, 0, ()))
    poll_after: float = 60.0
    """Seconds until the next poll."""


def child_name(parent: str, issues: Sequence[int]) -> str:
    """The child build of ``issues``: ``<parent>-i<n>`` for one, ``<parent>-b<first>`` for a batch (shortened to
    fit a name). It depends on the issues only: deciding twice names the same build."""
    first = min(issues)
    return names.child_name(parent, f"i{first}" if len(issues) == 1 else f"b{first}")


def parse_issues(value: str | None) -> tuple[int, ...]:
    """The issue numbers of :data:`ISSUES_ANNOTATION` (garbage and non-positive numbers left out)."""
    out: set[int] = set()
    for part in (value or "").split(",")[:MAX_ENTRIES]:
        part = part.strip()
        if part.isdigit() and 0 < int(part) < 10**12:
            out.add(int(part))
    return tuple(sorted(out))


def format_issues(issues: Iterable[int]) -> str:
    return ",".join(str(n) for n in sorted(set(issues)))


def author_allowed(issue: IssueView, filters: Filters) -> bool:
    """The issue's author is listed (``authors.users``, case-insensitive) or, with ``authors.writers``, may write
    to the project."""
    if issue.author and issue.author.casefold() in {u.casefold() for u in filters.users}:
        return True
    return filters.writers and issue.writer


def eligible(issue: IssueView, filters: Filters) -> bool:
    """Open (the poll lists open issues only) with every label, the assignee and the milestone asked for, and
    opened by an allowed author."""
    if any(label not in issue.labels for label in filters.labels):
        return False
    if filters.assignee is not None and filters.assignee not in issue.assignees:
        return False
    if filters.milestone is not None and issue.milestone != filters.milestone:
        return False
    return author_allowed(issue, filters)


def committed(children: Sequence[ChildView]) -> Money:
    """What the children hold of the intake's budget: a finished child its usage, a running one the larger of its
    usage and its allotment (None: some running child has no limit of that kind)."""
    tokens: int | None = 0
    cost: float | None = 0.0
    for c in children:
        used_t, used_c = c.used.tokens or 0, c.used.cost or 0.0
        if c.outcome == "Active":
            t = None if c.allotted.tokens is None else max(used_t, c.allotted.tokens)
            k = None if c.allotted.cost is None else max(used_c, c.allotted.cost)
        else:
            t, k = used_t, used_c
        tokens = None if tokens is None or t is None else tokens + t
        cost = None if cost is None or k is None else round(cost + k, 9)
    return Money(tokens, cost)


def _left(limit: int | float | None, held: int | float | None) -> int | float | None:
    if limit is None:
        return None
    return 0 if held is None else max(limit - held, 0)


def _smaller(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def decide(parent: str, issues: Sequence[IssueView] | None, children: Sequence[ChildView], filters: Filters,
           policy: Policy, *, fresh: bool = True, now: datetime | None = None) -> Decision:
    """What to do now (see the module's table). ``issues``: the last poll's listing (None before the first);
    ``fresh``: it was read in this reconcile (builds are started from a fresh listing only; an older one still
    counts the eligible and waiting issues); ``now``: for the daily cap (children created since ``now - 24h``)."""
    covered = {n for c in children for n in c.issues}
    active = sum(1 for c in children if c.outcome == "Active")
    wanted = sorted({i.number for i in issues or () if eligible(i, filters)})
    uncovered = [n for n in wanted if n not in covered]
    taken = {c.name for c in children}
    create: list[Create] = []
    slots = max(0, policy.max_active - active)
    held = ""
    if policy.max_per_day is not None and now is not None:
        today = sum(1 for c in children if c.created is not None and now - c.created < DAY)
        if today + slots > policy.max_per_day and uncovered:
            slots = max(0, policy.max_per_day - today)
            if not slots:
                held = (f"{today} builds started in the last 24 hours, spec.intake.maxBuildsPerDay "
                        f"({policy.max_per_day}); the next starts when the oldest of them is a day old")
    used = committed(children)
    left_tokens = _left(policy.budget.tokens, used.tokens)
    left = Money(None if left_tokens is None else int(left_tokens), _left(policy.budget.cost, used.cost))
    size = policy.batch_size if policy.policy == "batch" else 1
    rest = list(uncovered)
    def spent() -> bool:
        return (left.tokens is not None and left.tokens <= 0) or (left.cost is not None and left.cost <= 0)

    while fresh and issues is not None and slots > 0 and rest and not spent():
        allot = Money(_smaller(policy.child_budget.tokens, left.tokens), _smaller(policy.child_budget.cost,
                                                                                    left.cost))
        group, rest = tuple(rest[:size]), rest[size:]
        name = child_name(parent, group)
        if name in taken:  # a shortened name that collides: leave the group for a person, never two builds
            continue
        taken.add(name)
        create.append(Create(name, group, allot))
        slots -= 1
        left = Money(None if left.tokens is None else left.tokens - (allot.tokens or 0),
                     None if left.cost is None else round(left.cost - (allot.cost or 0.0), 9))
    waiting = len(rest)
    if rest and slots > 0 and spent():
        held = ("the intake's budget (spec.intake.budget) is spent or allotted to the builds running; raise it or "
                "wait for them to finish")

    comments: list[Comment] = []
    close: list[Close] = []
    for c in sorted(children, key=lambda c: (min(c.issues, default=0), c.name)):
        if policy.comment and not c.started_commented:
            comments.extend(Comment(n, c.name, "started", issues=c.issues) for n in c.issues)
        if c.outcome != "Active" and policy.comment and not c.finished_commented:
            comments.extend(Comment(n, c.name, "finished", c.outcome, c.issues) for n in c.issues)
        if c.outcome == "Succeeded" and not c.closed:
            close.extend(Close(n, c.name) for n in c.issues)
    everyone = [*children, *(ChildView(n.name, n.issues) for n in create)]
    entries = sorted((Entry(min(c.issues), c.issues, c.name, c.outcome) for c in everyone if c.issues),
                     key=lambda e: (e.issue, e.build))[-MAX_ENTRIES:]
    summary = Summary(eligible=len(wanted), active=active + len(create), started=len(everyone), waiting=waiting,
                      builds=tuple(reversed(entries)), held=held if waiting else "")
    return Decision(create=tuple(create), comments=tuple(comments[:MAX_ACTIONS]), close=tuple(close[:MAX_ACTIONS]),
                    summary=summary, poll_after=float(policy.poll_seconds))


def started_text(build: str, issues: Sequence[int]) -> str:
    others = [f"#{n}" for n in issues]
    batch = f" (with {', '.join(others)})" if len(issues) > 1 else ""
    return f"Longshot started build `{build}` for this issue{batch}."


def finished_text(build: str, outcome: Outcome) -> str:
    if outcome == "Succeeded":
        return f"Longshot build `{build}` finished: Succeeded. Its changes are merged; closing this issue."
    return (f"Longshot build `{build}` finished: {outcome}. The issue stays open; see `kubectl describe br {build}`."
            " Delete that BuildRequest to let the intake try again.")


def marker(build: str, kind: str) -> str:
    """The comment's marker (the tracker client posts a marked comment once)."""
    return f"intake/{build}/{kind}"


# --- webhook deliveries ----------------------------------------------------------------------------------------

REFUSED_DELIVERY: Final = (401, "no such intake, or a bad signature")
"""The one answer to a delivery that is not accepted, whatever the reason (no such intake, no webhook Secret, a bad
or missing signature): a stranger learns nothing about which intakes exist."""


LINEAR_TOLERANCE_MS: Final = 60_000
"""Largest distance between a Linear delivery's signed ``webhookTimestamp`` and the operator's clock (Linear's own
webhook client, ``@linear/sdk``, refuses beyond a minute too)."""
DELIVERY_BUDGET: Final = boundedjson.Budget(max_bytes=MAX_BODY_BYTES, max_values=200_000, max_depth=64)
"""What parsing a signed Linear delivery may cost (to read its ``webhookTimestamp``; nothing else of it is used)."""


def verify_delivery(secret: str, headers: Mapping[str, str], body: bytes, *, provider: str = "github",
                    now_ms: int = 0) -> bool:
    """A delivery is genuine for an intake of ``provider`` (the table above); ``now_ms`` is the operator's clock in
    epoch milliseconds (Linear's replay window). ``headers`` have lower-case names. Constant-time comparisons; an
    empty secret authenticates nothing."""
    if not secret:
        return False
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()  # computed for every delivery: one cost
    if provider == "jira":
        signature = headers.get("x-hub-signature")
        return signature is not None and hmac.compare_digest(signature.strip().encode(), f"sha256={digest}".encode())
    if provider == "linear":
        signature = headers.get("linear-signature")
        if signature is None or not hmac.compare_digest(signature.strip().encode(), digest.encode()):
            return False
        try:  # signed: the bytes are the intake's tracker's, still bounded
            payload = boundedjson.loads(body, DELIVERY_BUDGET)
        except boundedjson.Refused:
            return False
        stamp = payload.get("webhookTimestamp") if isinstance(payload, dict) else None
        return isinstance(stamp, int) and not isinstance(stamp, bool) and abs(now_ms - stamp) <= LINEAR_TOLERANCE_MS
    signature = headers.get("x-hub-signature-256")
    if signature is not None:
        return hmac.compare_digest(signature.strip().encode(), f"sha256={digest}".encode())
    token = headers.get("x-gitlab-token")
    if token is not None:
        return hmac.compare_digest(token.encode(), secret.encode())
    return False


def parse_path(path: str) -> tuple[str, str] | None:
    """``(namespace, name)`` of ``/intake/<namespace>/<name>``, else None (names must be DNS names)."""
    parts = path.partition("?")[0].strip("/").split("/")
    if len(parts) != 3 or parts[0] != "intake":
        return None
    ns, name = parts[1], parts[2]
    if not (_dns(ns, 63) and _dns(name, 253)):
        return None
    return ns, name


def _dns(value: str, limit: int) -> bool:
    ok = set("abcdefghijklmnopqrstuvwxyz0123456789-.")
    return 0 < len(value) <= limit and set(value) <= ok and value[0].isalnum() and value[-1].isalnum()
