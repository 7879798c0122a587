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
6. Fairness: slots go to the build with the fewest running tasks first; ties go to the build whose next
   task has the highest priority, then the oldest. A build with 1,000 ready tasks therefore cannot starve a
   build with 2. Within a build, tasks go by priority (10 first), then age (``creationTimestamp``), then name.

Builds are identified by an opaque key (the shell uses ``"<namespace>/<name>"``); a task's ``depends_on``
names tasks of the same build. Candidates of a build missing from ``builds`` do not start.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import lru_cache

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


# --- scopes ----------------------------------------------------------------------------------------

_WILD = frozenset("*?[")


def _has_wild(segment: str) -> bool:
    return not _WILD.isdisjoint(segment)


@lru_cache(maxsize=65536)
def _parse(pattern: str) -> tuple[str, ...]:
    """Path segments of a scope entry; every entry also covers what is below it (``<entry>/**``)."""
    p = pattern.strip()
    while p.startswith("./"):
        p = p[2:]
    segs = tuple(s for s in p.strip("/").split("/") if s not in ("", "."))
    if not segs:
        return ("**",)
    if segs[-1] != "**":
        segs = (*segs, "**")
    return segs


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
    pa, pb = _parse(a), _parse(b)
    memo: dict[tuple[int, int], bool] = {}

    def ov(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(pa) and j == len(pb):
            r = True
        elif i < len(pa) and pa[i] == "**":
            r = ov(i + 1, j) or (j < len(pb) and ov(i, j + 1))
        elif j < len(pb) and pb[j] == "**":
            r = ov(i, j + 1) or (i < len(pa) and ov(i + 1, j))
        elif i == len(pa) or j == len(pb):
            r = False
        else:
            r = _segments_overlap(pa[i], pb[j]) and ov(i + 1, j + 1)
        memo[key] = r
        return r

    return ov(0, 0)


def scopes_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    """Whether two task scopes overlap; an empty scope overlaps nothing."""
    bl = tuple(b)
    if not bl:
        return False
    return any(patterns_overlap(x, y) for x in a for y in bl)


# --- selection -------------------------------------------------------------------------------------

_NEVER = datetime.max


def _naive_utc(t: datetime | None) -> datetime:
    if t is None:
        return _NEVER
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t


def _order(t: TaskView) -> tuple[int, datetime, str]:
    return (-t.priority, _naive_utc(t.created), t.name)


def select(
    candidates: Iterable[TaskView],
    running: Iterable[TaskView],
    *,
    builds: Mapping[str, BuildView],
    global_limit: int,
    killswitch: bool = False,
) -> Selection:
    """The tasks to start now (see the module doc for the rules).

    ``running`` are the tasks holding a slot; their scopes block overlapping candidates of the same build.
    """
    running_by_build: dict[str, list[TaskView]] = {}
    for r in running:
        running_by_build.setdefault(r.build, []).append(r)
    n_running = sum(len(v) for v in running_by_build.values())

    ready: dict[str, list[TaskView]] = {}
    budget_blocked: set[str] = set()
    suspended: set[str] = set()
    halted: set[str] = set()
    for t in candidates:
        if t.phase != PENDING:
            continue
        b = builds.get(t.build)
        if b is None:
            continue
        if killswitch or b.halted:
            halted.add(t.build)
            continue
        if b.suspended:
            suspended.add(t.build)
            continue
        if b.budget_spent:
            budget_blocked.add(t.build)
            continue
        if not t.dependencies_ready:
            continue
        ready.setdefault(t.build, []).append(t)

    slots = global_limit - n_running
    start: list[TaskView] = []
    if slots > 0 and ready:
        # Heap of builds keyed by (running, -priority of next task, age of next task, build).
        queues: dict[str, list[TaskView]] = {}
        pos: dict[str, int] = {}
        taken: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        heap: list[tuple[int, int, datetime, str, str]] = []
        for key, tasks in ready.items():
            busy = len(running_by_build.get(key, ()))
            if busy >= builds[key].max_workers:
                continue
            tasks.sort(key=_order)
            queues[key] = tasks
            pos[key] = 0
            taken[key] = [(r.scope, r.group) for r in running_by_build.get(key, ()) if r.scope]
            head = tasks[0]
            prio, created, name = _order(head)
            heap.append((busy, prio, created, name, key))
        heapq.heapify(heap)
        while heap and slots > 0:
            busy, _, _, _, key = heapq.heappop(heap)
            tasks, scopes = queues[key], taken[key]
            i = pos[key]
            chosen = None
            while i < len(tasks):
                t = tasks[i]
                i += 1
                if t.scope and any(scopes_overlap(t.scope, s) for s, g in scopes if not (g and g == t.group)):
                    continue  # waits for the overlapping task; conflicts only grow in this round
                chosen = t
                break
            pos[key] = i
            if chosen is None:
                continue
            start.append(chosen)
            slots -= 1
            busy += 1
            if chosen.scope:
                scopes.append((chosen.scope, chosen.group))
            if busy < builds[key].max_workers and i < len(tasks):
                prio, created, name = _order(tasks[i])
                heapq.heappush(heap, (busy, prio, created, name, key))
    return Selection(tuple(start), frozenset(budget_blocked), frozenset(suspended), frozenset(halted))
