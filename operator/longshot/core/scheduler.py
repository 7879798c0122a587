"""Which ready AgentTasks start now.

:func:`select` is called by the shell with every admissible candidate (AgentTasks in phase ``Pending``),
the tasks that occupy a worker slot (phase ``Running``), the succeeded tasks, and one
:class:`BuildView` per build. It returns a :class:`Selection`: the tasks to admit now, in order, and the
builds held back (so the shell can set ``BudgetExceeded``, ``Suspended`` or ``Halted`` conditions).

Rules, in order:

1. Nothing starts while the operator-wide killswitch is engaged.
2. A build that is suspended, halted, or whose token or cost budget is spent starts nothing.
3. A task starts only when its dependencies are ready (``TaskView.dependencies_ready``, decided by
   :mod:`longshot.core.dependencies`: by default every ``dependsOn`` task succeeded and its branch merged).
4. At most ``BuildView.max_workers`` (``spec.workers.max``) running tasks per build, and at most
   ``global_limit`` (``Settings.max_workers``) across the operator.
5. Two tasks of the same build whose file scopes overlap never run at the same time (glob-aware;
   an empty scope overlaps nothing); a candidate that overlaps a running or just-admitted task waits. Tasks
   of one ``group`` (the candidates of a best-of-N task) do not block each other.
6. Fairness, tenants first: the next slot goes to the tenant (the namespace: ``BuildView.tenant``) with the
   smallest share, its tasks running (and admitted in this plan) divided by its weight (``core.admission
   .TenantPolicy``; 1 by default), as Kueue's fair sharing does; ties go to the tenant whose next task has the
   highest priority, then the oldest. A tenant at its ``maxAgents`` starts nothing (``Selection.capped``). Within
   the tenant, the slot goes to the build with the fewest running tasks first; ties go to the build whose next
   task has the highest priority, then the oldest. A tenant with 1,600 ready tasks therefore cannot starve a tenant
   with one, nor a build with 1,000 ready tasks a build with 2. Within a build, tasks go by priority (10 first: gates,
   fixers and final tasks have the highest), then age (``creationTimestamp``), then name.
7. Capacity (``capacity``, ``core.admission``): a task starts only when its Pod's requests fit now (a node's room,
   its tenant's own limit). The first task in the fair order that does not fit stops the round: nothing after it
   starts (the room that frees is its first), and it and the tasks after it, up to ``line`` of them, are returned in
   line (``Selection.waiting``: their place, their tenant's share). A task that would not fit even on an empty node
   or in its tenant's whole limit waits for nobody: it is returned in ``Selection.unfit`` and the next is looked at.

Containment: each build's part of the plan runs on its own. An exception while a build's candidates are
ordered or checked (bad data in a task, a bug) drops that build from this plan, with the error's class in
``Selection.failed`` (the shell sets a ``DispatchFailed`` condition on it), and every other build is planned as
usual. The scope checks of one build cost at most :data:`MAX_BUILD_SCOPE_STEPS` segment comparisons per plan
(results are remembered across plans, so the next plan goes on where this one stopped); a pair of scopes whose
check would cost more than :data:`MAX_SCOPE_STEPS` counts as overlapping (the safe answer: a task waits).

Builds are identified by an opaque key (the shell uses ``"<namespace>/<name>"``); a task's ``depends_on``
names tasks of the same build. Candidates of a build missing from ``builds`` do not start.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Final

from longshot.api import common
from longshot.core import admission
from longshot.core import scope as scopemod

PENDING = "Pending"


@dataclass(frozen=True, slots=True)
class TaskView:
    """What the scheduler needs to know about one AgentTask."""

    name: str
    build: str
    priority: int = 5
    created: datetime | None = None
    depends_on: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    phase: str = PENDING
    dependencies_ready: bool = True
    """Whether the task's dependencies allow it to start (``core.dependencies.readiness``)."""
    group: str = ""
    """Tasks of one non-empty group never block each other by scope: the candidates of a best-of-N task do the
    same work on their own branches, in parallel."""
    requests: admission.Resources = admission.NOTHING
    """What the task's agent Pod requests (cpu, memory): what admission by capacity counts."""
    urgent: bool = False
    """A task others wait on (a gate, a review, a sweep, a fixer, a final task: ``dispatch.URGENT_ROLES``): within
    its build it goes before every task that is not, and within its tenant its build goes first."""


@dataclass(frozen=True, slots=True)
class BuildView:
    """What the scheduler needs to know about one BuildRequest."""

    name: str
    max_workers: int = 4
    suspended: bool = False
    halted: bool = False
    tokens_used: int = 0
    max_tokens: int | None = None
    cost_used: float = 0.0
    max_cost: float | None = None
    tenant: str | None = None
    """The build's tenant (its namespace); None: the part of its key before ``/``."""

    @property
    def budget_spent(self) -> bool:
        return (self.max_tokens is not None and self.tokens_used >= self.max_tokens) or (
            self.max_cost is not None and self.cost_used >= self.max_cost
        )


@dataclass(frozen=True)
class Selection:
    """The scheduler's answer."""

    start: tuple[TaskView, ...]
    """Tasks to admit now, in admission order."""
    budget_blocked: frozenset[str] = frozenset()
    """Builds with ready work held back because their budget is spent (condition ``BudgetExceeded``)."""
    suspended: frozenset[str] = frozenset()
    """Builds with ready work held back by ``spec.suspend``."""
    halted: frozenset[str] = frozenset()
    """Builds held back by the killswitch (every build with ready work when it is engaged)."""
    failed: Mapping[str, str] = field(default_factory=dict)
    """Builds whose part of the plan raised, with the exception's class name: they start nothing this round."""
    waiting: tuple[Waiting, ...] = ()
    """Tasks held back because their Pod would not run now, in the order they will start as room frees (at most
    ``line`` of them; the first is the one the room that frees goes to)."""
    unfit: tuple[TaskView, ...] = ()
    """Tasks whose requests fit on no matching node, or exceed their tenant's limit: they never start as they are."""
    capped: frozenset[str] = frozenset()
    """Tenants held back at their own limits (``maxAgents``, ``tokensPerHour``, ``cpu``/``memory``, ResourceQuota)."""
    tenant_held: tuple[TenantHeld, ...] = ()
    """For each tenant held back at its own limits with ready work, its next task and why."""


def share(demands: Mapping[str, int], total: int) -> dict[str, int]:
    """``total`` units shared between keys that each want ``demands[key]``, max-min fair: every key gets the same
    share, a key that wants less gets what it wants and the rest goes on to the others; the one or two left over
    after an even split go to keys in sorted order. Dispatch shares the slots of ended agents whose end is not
    recorded yet (``controllers.dispatch.MAX_UNRECORDED_ENDS``) between builds this way, so that one build whose
    agents end in bulk cannot take them all while another build's ended agents hold theirs."""
    given = {k: 0 for k in demands}
    left = max(0, total)
    wanting = sorted(k for k, d in demands.items() if d > 0)
    while left > 0 and wanting:
        each = left // len(wanting)
        if each == 0:  # fewer units than keys: one each, in order
            for k in wanting[:left]:
                given[k] += 1
            break
        still: list[str] = []
        for k in wanting:
            take = min(each, demands[k] - given[k])
            given[k] += take
            left -= take
            if given[k] < demands[k]:
                still.append(k)
        wanting = still
    return given


# --- scopes ----------------------------------------------------------------------------------------

_WILD = scopemod.WILD
_has_wild = scopemod.has_wild
_parse = scopemod.parse_entry


def _literal_edges(segment: str) -> tuple[str, str]:
    """The literal text before the first wildcard and after the last one ("" when a class hides it)."""
    first = min(i for i, c in enumerate(segment) if c in _WILD)
    if "[" in segment:
        return segment[:first], ""
    last = max(i for i, c in enumerate(segment) if c in _WILD)
    return segment[:first], segment[last + 1:]


def _segments_overlap(a: str, b: str) -> bool:
    if a == b:
        return True
    wa, wb = _has_wild(a), _has_wild(b)
    if not wa and not wb:
        return False
    if wa and not wb:
        return fnmatchcase(b, a)
    if wb and not wa:
        return fnmatchcase(a, b)
    # Both wild: conservative; they overlap unless their literal prefixes or suffixes disagree.
    pa, sa = _literal_edges(a)
    pb, sb = _literal_edges(b)
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


@lru_cache(maxsize=8192)
def patterns_overlap(a: str, b: str) -> bool:
    """Whether some path could be matched by both scope entries (``**`` spans directories).

    ``src/**`` overlaps ``src/a.py``; ``src`` overlaps ``src/a.py`` (an entry covers what is below it);
    ``*.py`` and ``*.md`` do not. When two wildcard segments cannot be compared exactly the answer errs
    on the side of overlap (the cost is a task waiting, not a conflict).
    """
    return overlap_steps(a, b)[0]


def overlap_steps(a: str, b: str) -> tuple[bool, int]:
    """:func:`patterns_overlap` and the number of segment positions it visited (at most ``(n + 1) * (m + 1)`` for
    entries of ``n`` and ``m`` segments: each pair of positions is visited once). Iterative: a worklist of
    positions, no recursion, whatever the number of segments."""
    return scopemod.walk(_parse(a), _parse(b), _segments_overlap, stars_in_b=True)


def bounded_scope(entries: Iterable[str]) -> list[str]:
    """``entries`` within the CRD's scope bounds (``api.common.MAX_SCOPE_*``), never narrower: an entry with too
    many segments or characters is cut to its leading segments (an entry covers what is below it), and when
    there are too many entries they are cut to fewer segments until they fit (``**``, everything, at worst).
    For scopes the operator writes from what git reports (a fixer's conflicting files), not for a planner's
    scope, which is refused when it is out of bounds."""
    def cut(entry: str, depth: int) -> str:
        segs = [s for s in entry.strip().strip("/").split("/") if s not in ("", ".")][:depth]
        while segs and len("/".join(segs)) > common.MAX_SCOPE_ENTRY_LENGTH:
            segs.pop()
        return "/".join(segs) or "**"

    out = list(dict.fromkeys(cut(e, common.MAX_SCOPE_SEGMENTS) for e in entries))
    depth = common.MAX_SCOPE_SEGMENTS
    while len(out) > common.MAX_SCOPE_ENTRIES and depth > 1:
        depth -= 1
        out = list(dict.fromkeys(cut(e, depth) for e in out))
    return out if len(out) <= common.MAX_SCOPE_ENTRIES else ["**"]


MAX_SCOPE_STEPS = 100_000
"""Most segment positions one check of two scopes visits (about 0.1 s); past it the scopes count as overlapping.
Scopes a person or planner writes take a few dozen."""
MAX_BUILD_SCOPE_STEPS = 300_000
"""Most segment positions the scope checks of one build visit in one plan (results already known are free)."""
_SCOPE_CACHE_SIZE = 65536
_scope_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], bool] = {}


def scopes_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    """Whether two task scopes overlap; an empty scope overlaps nothing."""
    return scope_check(tuple(a), tuple(b))[0]


def scope_check(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[bool, int]:
    """:func:`scopes_overlap` and the segment positions it visited now (0 when the answer was remembered). At
    most :data:`MAX_SCOPE_STEPS`: a check that would take longer answers True (overlap, the safe side)."""
    if not a or not b:
        return False, 0
    key = (a, b)
    known = _scope_cache.get(key)
    if known is not None:
        return known, 0
    steps = 0
    answer = False
    for x in a:
        for y in b:
            hit, n = overlap_steps(x, y)
            steps += n
            if hit or steps > MAX_SCOPE_STEPS:
                answer = True
                break
        if answer:
            break
    if len(_scope_cache) >= _SCOPE_CACHE_SIZE:
        _scope_cache.clear()
    _scope_cache[key] = answer
    return answer, steps


MAX_INDEXED_PREFIXES = 20_000
"""Most segments of literal entries the scope index of one build takes in one plan (a thousand running tasks of a
few entries each take a few thousand); scopes past it are checked pair by pair, within the build's step share, as
wildcard scopes always are. Indexing an entry costs its prefixes (up to 528 tuple slices for 32 segments), so once
a scope does not fit, the rest are not even parsed: a thousand running scopes at the CRD's bounds (128 entries of 32
segments) cost ~20 ms a plan here (1.5 s when every one was parsed to find it did not fit)."""


def _literal(scope: tuple[str, ...]) -> tuple[tuple[str, ...], ...] | None:
    """The entries of a scope with no wildcard, as their segments (without the ``**`` every entry ends in), or
    None when an entry has a wildcard (or is everything)."""
    out = []
    for entry in scope:
        segs = _parse(entry)[:-1]
        if not segs or any(_has_wild(x) for x in segs):
            return None
        out.append(segs)
    return tuple(out)


class _Taken:
    """The scopes of one build's running and just-admitted tasks, for one plan. Two literal entries overlap when
    one is a path prefix of the other (an entry covers what is below it), so literal scopes are indexed by their
    entries and by every prefix of them: a literal candidate is checked in time of its own segments, not of the
    thousand scopes running (issue 34). Scopes with a wildcard (on either side) are compared pair by pair with
    :func:`scope_check`, as before, within the build's step share. Same answers as comparing every pair."""

    def __init__(self, scopes: Iterable[tuple[tuple[str, ...], str]] = ()) -> None:
        self.exact: dict[tuple[str, ...], list[str]] = {}
        """A literal entry's segments -> the groups of the taken scopes with that entry."""
        self.under: dict[tuple[str, ...], list[str]] = {}
        """A proper prefix of a literal entry -> the groups of the taken scopes with an entry below it."""
        self.literal: list[tuple[tuple[str, ...], str]] = []
        self.other: list[tuple[tuple[str, ...], str]] = []
        self.prefixes = 0
        self.full = False
        """A literal scope did not fit in :data:`MAX_INDEXED_PREFIXES`: the scopes after it are not indexed."""
        for scope, group in scopes:
            self.add(scope, group)

    def add(self, scope: tuple[str, ...], group: str) -> None:
        if self.full:  # not even parsed (a thousand scopes at the CRD's bounds)
            self.other.append((scope, group))
            return
        entries = _literal(scope)
        if entries is not None and self.prefixes + sum(len(e) for e in entries) > MAX_INDEXED_PREFIXES:
            self.full = True
        if entries is None or self.full:
            self.other.append((scope, group))
            return
        self.literal.append((scope, group))
        for segs in entries:
            self.prefixes += len(segs)
            self.exact.setdefault(segs, []).append(group)
            for k in range(1, len(segs)):
                self.under.setdefault(segs[:k], []).append(group)

    def blocks(self, scope: tuple[str, ...], group: str, spent: int) -> tuple[bool, int, bool]:
        """Whether a taken scope blocks ``scope`` (of ``group``), the steps it cost, and whether the checks stopped
        at the share (``spent`` already used, of :data:`MAX_BUILD_SCOPE_STEPS`) before an answer."""
        def hit(groups: list[str] | None) -> bool:
            return groups is not None and any(not g or g != group for g in groups)

        entries = _literal(scope)
        steps = 0
        pairwise = self.other
        if entries is None:
            pairwise = [*self.literal, *self.other]
        else:
            for segs in entries:
                steps += len(segs)
                if hit(self.under.get(segs)) or any(hit(self.exact.get(segs[:k])) for k in range(1, len(segs) + 1)):
                    return True, steps, False
        for s, g in pairwise:
            if g and g == group:
                continue
            found, n = scope_check(scope, s)
            steps += n
            if found:
                return True, steps, False
            if spent + steps > MAX_BUILD_SCOPE_STEPS:
                return False, steps, True
        return False, steps, False


# --- selection -------------------------------------------------------------------------------------

_NEVER = datetime.max


def _naive_utc(t: datetime | None) -> datetime:
    if t is None:
        return _NEVER
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t


URGENT_BOOST: Final = 100
"""What an urgent task adds to its priority in :func:`order_key` (priorities are 1-10): urgent first, then by
priority."""


def _order(t: TaskView) -> tuple[int, datetime, str]:
    return (-(t.priority + (URGENT_BOOST if t.urgent else 0)), _naive_utc(t.created), t.name)


order_key = _order
"""The order :func:`select` starts one build's candidates in: urgent ones first, then priority, age, name."""


def head_of_line(ready: Sequence[tuple[tuple[int, datetime, str], TaskView]], need: int) -> list[TaskView]:
    """The candidates of one build that :func:`select` can start when it may start at most ``need`` of them: the
    first in :func:`order_key` up to and including the ``need``-th one without a scope (a candidate without a scope
    is never held back, so select never looks past it; one with a scope may be, so every one before it is kept).
    ``ready`` are the build's candidates whose dependencies allow them to start, each with its :func:`order_key`
    (the caller's memo). Select gives the same answer for these as for all of ``ready``: a 10,000-task build at its
    limit hands it the few tasks that can start, not 6,000 to sort."""
    if need <= 0:
        return []
    take = 2 * need + 8
    while True:
        whole = len(ready) <= take
        heads = sorted(ready) if whole else heapq.nsmallest(take, ready)  # (a build's order keys are unique)
        unscoped = 0
        for i, (_, t) in enumerate(heads):
            if not t.scope:
                unscoped += 1
                if unscoped == need:
                    return [v for _, v in heads[:i + 1]]
        if whole:
            return [v for _, v in heads]
        take *= 4  # candidates with a scope filled the first ones: look further down the line


LINE: Final = 64
"""How many of the tasks waiting for capacity :func:`select` places in line (their place is said in their
``Admitted`` condition); the rest wait behind them without a place."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """A task held back because its Pod would not run now (``core.admission``): its place in the line (1: the next
    to start when room frees), its tenant, and the tenant's share when the line was made."""

    task: TaskView
    position: int
    tenant: str
    share: float
    running: int
    """The tenant's agents running (and admitted in this plan) before this one."""
    weight: float


@dataclass(frozen=True, slots=True)
class TenantHeld:
    """A tenant's next task, held back by the tenant's own limits, not the cluster's room: ``reason`` is
    ``TenantLimit`` (``maxAgents``, ``cpu``/``memory``, its namespace's ResourceQuota) or ``TokensPerHour``."""

    task: TaskView
    tenant: str
    reason: str
    message: str


def tenant_of(key: str, builds: Mapping[str, BuildView]) -> str:
    """A build's tenant: ``BuildView.tenant``, else the part of its key before ``/`` (the namespace), else ""."""
    b = builds.get(key)
    if b is not None and b.tenant is not None:
        return b.tenant
    return key.split("/", 1)[0] if "/" in key else ""


def select(
    candidates: Iterable[TaskView],
    running: Iterable[TaskView],
    *,
    builds: Mapping[str, BuildView],
    global_limit: int,
    killswitch: bool = False,
    capacity: admission.Capacity | None = None,
    tenants: Mapping[str, admission.TenantPolicy] | None = None,
    tenant_tokens: Mapping[str, int] | None = None,
    line: int = LINE,
) -> Selection:
    """The tasks to start now (see the module doc for the rules).

    ``running`` are the tasks holding a slot; their scopes block overlapping candidates of the same build.
    ``capacity``: the room agent Pods may take (``core.admission``; None: only the numeric limits); ``tenants``:
    the namespaces' weights and caps; ``tenant_tokens``: each tenant's tokens in the last hour (for its
    ``tokensPerHour``).
    """
    tenants = tenants or {}
    tenant_tokens = tenant_tokens or {}
    failed: dict[str, str] = {}
    running_by_build: dict[str, list[TaskView]] = {}
    for r in running:
        running_by_build.setdefault(r.build, []).append(r)
    n_running = sum(len(v) for v in running_by_build.values())
    in_tenant: dict[str, int] = {}
    for key, rs in running_by_build.items():
        owner = tenant_of(key, builds)
        in_tenant[owner] = in_tenant.get(owner, 0) + len(rs)

    ready: dict[str, list[TaskView]] = {}
    budget_blocked: set[str] = set()
    suspended: set[str] = set()
    halted: set[str] = set()
    for t in candidates:
        if t.phase != PENDING:
            continue
        b = builds.get(t.build)
        if b is None or t.build in failed:
            continue
        try:
            if killswitch or b.halted:
                halted.add(t.build)
                continue
            if b.suspended:
                suspended.add(t.build)
                continue
            if b.budget_spent:
                budget_blocked.add(t.build)
                continue
        except Exception as e:  # this build's data: it starts nothing now, every other build goes on
            failed[t.build] = type(e).__name__
            ready.pop(t.build, None)
            continue
        if not t.dependencies_ready:
            continue
        ready.setdefault(t.build, []).append(t)

    slots = global_limit - n_running
    start: list[TaskView] = []
    waiting: list[Waiting] = []
    unfit: list[TaskView] = []
    capped: set[str] = set()
    held_by: dict[str, TenantHeld] = {}
    if slots > 0 and ready:
        # Per tenant, a heap of builds keyed by (running, -priority of next task, age of next task, build); and a
        # heap of tenants keyed by (share, the same of their next build's next task, tenant).
        queues: dict[str, list[TaskView]] = {}
        pos: dict[str, int] = {}
        taken: dict[str, _Taken] = {}
        bheaps: dict[str, list[tuple[bool, int, int, datetime, str, str]]] = {}
        spent: dict[str, int] = {}
        for key, tasks in ready.items():
            try:
                busy = len(running_by_build.get(key, ()))
                if busy >= builds[key].max_workers:
                    continue
                tasks.sort(key=_order)
                queues[key] = tasks
                pos[key] = 0
                taken[key] = _Taken((tuple(r.scope), r.group) for r in running_by_build.get(key, ()) if r.scope)
                head = tasks[0]
                prio, created, name = _order(head)
                # urgent heads first: a tenant's gates and fixers go before its other builds' workers
                bheaps.setdefault(tenant_of(key, builds), []).append((not head.urgent, busy, prio, created, name,
                                                                      key))
            except Exception as e:  # this build's data: it starts nothing now, every other build goes on
                failed[key] = type(e).__name__

        def weight(tenant: str) -> float:
            return admission.policy_of(tenants, tenant).weight

        def hold(tenant: str, task: TaskView | None, reason: str, message: str) -> None:
            capped.add(tenant)
            if task is not None and tenant not in held_by:
                held_by[tenant] = TenantHeld(task, tenant, reason, message)

        def room(tenant: str, head: TaskView | None) -> bool:
            policy = admission.policy_of(tenants, tenant)
            cap = policy.max_agents
            if cap is not None and in_tenant.get(tenant, 0) >= cap:
                hold(tenant, head, "TenantLimit", f"namespace {tenant} runs {in_tenant.get(tenant, 0)} agent(s), "
                                                  f"its maxAgents is {cap} (admission.tenants)")
                return False
            used = tenant_tokens.get(tenant, 0)
            if policy.tokens_per_hour is not None and used >= policy.tokens_per_hour:
                hold(tenant, head, "TokensPerHour", f"namespace {tenant} used {used} tokens in the last hour, its "
                                                    f"tokensPerHour is {policy.tokens_per_hour} (admission.tenants): "
                                                    "it starts again as the hour moves on")
                return False
            return True

        theap: list[tuple[float, int, datetime, str, str]] = []

        def push_tenant(tenant: str) -> None:
            bh = bheaps.get(tenant)
            if not bh or tenant in capped:
                return
            key = bh[0][5]
            head = queues[key][pos[key]] if pos[key] < len(queues[key]) else None
            if room(tenant, head):
                _, _, prio, created, name, _ = bh[0]
                heapq.heappush(theap, (in_tenant.get(tenant, 0) / weight(tenant), prio, created, name, tenant))

        for tenant, bh in bheaps.items():
            heapq.heapify(bh)
            push_tenant(tenant)
        dry = False  # the fairest task did not fit: the rest are placed in line, not started
        while theap and (dry or slots > 0) and (not dry or len(waiting) < line):
            share, _, _, _, tenant = heapq.heappop(theap)
            bh = bheaps[tenant]
            _, busy, _, _, _, key = heapq.heappop(bh)
            try:
                chosen, over = _next(queues[key], pos, key, taken[key], spent)
            except Exception as e:  # as above; what this build was given in this round is taken back
                failed[key] = type(e).__name__
                kept = [t for t in start if t.build != key]
                slots += len(start) - len(kept)
                gone = len(start) - len(kept) + sum(1 for w in waiting if w.task.build == key)
                in_tenant[tenant] = in_tenant.get(tenant, 0) - gone
                start = kept
                waiting = [w for w in waiting if w.task.build != key]
                push_tenant(tenant)
                continue
            if chosen is None or over:
                push_tenant(tenant)
                continue  # nothing startable, or its scope checks used this plan's share: the next plan goes on
            tasks, scopes, i = queues[key], taken[key], pos[key]
            if capacity is not None and not capacity.ever_fits(chosen.requests, tenant):
                unfit.append(chosen)  # it waits for nobody: the build's next task is looked at
                if i < len(tasks):
                    prio, created, name = _order(tasks[i])
                    heapq.heappush(bh, (not tasks[i].urgent, busy, prio, created, name, key))
                push_tenant(tenant)
                continue
            if not dry and capacity is not None and not capacity.tenant_fits(chosen.requests, tenant):
                limit = capacity.limit(tenant)
                hold(tenant, chosen, "TenantLimit",
                     f"namespace {tenant}'s agents request {_amounts(capacity.tenant_used.get(tenant))}; its limit "
                     f"(admission.tenants, its ResourceQuotas): {_amounts(limit)}: the next Pod does not fit")
                continue  # the tenant's own limit, not the cluster's room: the other tenants go on
            if not dry and capacity is not None and capacity.take(chosen.requests, tenant) is None:
                dry = True  # the room that frees is this task's first: nobody after it starts in this plan
            if dry:
                waiting.append(Waiting(chosen, len(waiting) + 1, tenant, share, in_tenant.get(tenant, 0),
                                       weight(tenant)))
            else:
                start.append(chosen)
                slots -= 1
            busy += 1
            in_tenant[tenant] = in_tenant.get(tenant, 0) + 1
            if chosen.scope:
                scopes.add(tuple(chosen.scope), chosen.group)
            if busy < builds[key].max_workers and i < len(tasks):
                prio, created, name = _order(tasks[i])
                heapq.heappush(bh, (not tasks[i].urgent, busy, prio, created, name, key))
            push_tenant(tenant)
    return Selection(tuple(start), frozenset(budget_blocked), frozenset(suspended), frozenset(halted), failed,
                     waiting=tuple(waiting), unfit=tuple(unfit), capped=frozenset(capped),
                     tenant_held=tuple(held_by.values()))


def _amounts(r: admission.Resources | None) -> str:
    if r is None:
        return "nothing"
    cpu = "no cpu limit" if r.cpu >= admission.UNLIMITED else f"cpu {r.cpu}m"
    memory = "no memory limit" if r.memory >= admission.UNLIMITED else f"memory {r.memory // (1 << 20)}Mi"
    pods = "" if r.pods >= admission.UNLIMITED else f", {r.pods} Pods"
    return f"{cpu}, {memory}{pods}"


def _next(tasks: list[TaskView], pos: dict[str, int], key: str, scopes: _Taken,
          spent: dict[str, int]) -> tuple[TaskView | None, bool]:
    """The build's next candidate whose scope overlaps no taken scope, and whether its scope checks ran out of
    their share of this plan (:data:`MAX_BUILD_SCOPE_STEPS`; the candidate they stopped at is looked at again in
    the next plan)."""
    i = pos[key]
    while i < len(tasks):
        t = tasks[i]
        if t.scope:
            blocked, steps, over = scopes.blocks(tuple(t.scope), t.group, spent.get(key, 0))
            spent[key] = spent.get(key, 0) + steps
            if over:
                pos[key] = i
                return None, True
            if blocked:
                i += 1
                if spent[key] > MAX_BUILD_SCOPE_STEPS:
                    pos[key] = i
                    return None, True
                continue  # waits for the overlapping task; conflicts only grow in this round
        pos[key] = i + 1
        return t, False
    pos[key] = i
    return None, False
