"""Whether a path is inside a task's file scope: the check behind ``spec.scope.enforce`` (the gateway's refusal of
a push that changes files outside its task's scope, :mod:`longshot.gateway.hook`). Pure and bounded.

A scope entry is a path or a glob over ``/``-separated segments, as the scheduler reads it
(:func:`longshot.core.scheduler.patterns_overlap`; both read entries with :func:`parse_entry`): ``*``, ``?`` and
``[...]`` match within one segment, ``**`` spans any number of segments, and every entry also covers what is
below it (``src`` covers ``src/a.py``). A
path is always literal here: a file named ``*`` matches only an entry that matches the name ``*``, unlike two
entries compared by the scheduler, where wildcards on both sides err on the side of overlap.

Both sides come from people who may be hostile (the scope from a planner or a BuildRequest author, within the
CRD's bounds: 128 entries of at most 32 segments; the paths from an agent's push). One path against one entry
visits at most ``(entry segments + 1) * (path segments + 1)`` positions, each a segment match of bounded length;
:func:`outside` stops at a budget of positions and reports the paths it could not judge as outside (a refused
push names them; it never lets them through).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

MAX_PATH_LENGTH = 4096
"""Longest path judged; a longer one is outside every scope (git itself is not so bounded)."""
MAX_STEPS = 2_000_000
"""Most positions one check of a push visits (about a second); the paths left when it is spent are outside."""


WILD = frozenset("*?[")


def has_wild(segment: str) -> bool:
    return not WILD.isdisjoint(segment)


@lru_cache(maxsize=65536)
def parse_entry(pattern: str) -> tuple[str, ...]:
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


@dataclass(frozen=True)
class Verdict:
    outside: tuple[str, ...]
    """Paths outside the scope, in the order given (at most ``limit`` of them)."""
    count: int
    """How many paths are outside (``outside`` may list fewer)."""
    unjudged: int = 0
    """Of ``count``, paths not judged because the budget was spent or the path is too long."""


def _segment_matches(pattern: str, segment: str) -> bool:
    return fnmatchcase(segment, pattern) if has_wild(pattern) else pattern == segment


def walk(a: Sequence[str], b: Sequence[str], match: Callable[[str, str], bool], *,
         stars_in_b: bool) -> tuple[bool, int]:
    """Whether the segments ``a`` and ``b`` match, and the positions visited (at most ``(len(a) + 1) *
    (len(b) + 1)``: each pair once). A ``**`` of ``a`` (and of ``b`` when ``stars_in_b``) spans any number of the
    other's segments; other segments pair by ``match(a_i, b_j)``. Iterative: a worklist of positions, no
    recursion, whatever the number of segments. The scheduler's overlap of two entries and :func:`covers_steps`
    (an entry against a literal path) are both this walk."""
    n, m = len(a), len(b)
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == n and j == m:
            return True, len(seen)
        if i < n and a[i] == "**":
            todo.append((i + 1, j))  # zero segments
            if j < m:
                todo.append((i, j + 1))  # one more
        elif stars_in_b and j < m and b[j] == "**":
            todo.append((i, j + 1))
            if i < n:
                todo.append((i + 1, j))
        elif i < n and j < m and match(a[i], b[j]):
            todo.append((i + 1, j + 1))
    return False, len(seen)


def covers_steps(entry: str, path: str) -> tuple[bool, int]:
    """Whether scope ``entry`` covers ``path`` (a file of the repository), and the positions it visited. The path
    is literal: its segments are never wildcards."""
    return walk(parse_entry(entry), tuple(s for s in path.split("/") if s), _segment_matches, stars_in_b=False)


def covers(entry: str, path: str) -> bool:
    return covers_steps(entry, path)[0]


def outside(scope: Sequence[str], paths: Iterable[str], *, limit: int = 20, budget: int = MAX_STEPS) -> Verdict:
    """The paths no entry of ``scope`` covers. An empty scope covers everything (the task is not scoped)."""
    if not scope:
        return Verdict((), 0)
    entries = tuple(dict.fromkeys(scope))
    found: list[str] = []
    count = unjudged = 0
    steps = 0
    for path in paths:
        judged = len(path) <= MAX_PATH_LENGTH and steps < budget
        inside = False
        if judged:
            for e in entries:
                hit, n = covers_steps(e, path)
                steps += n
                if hit:
                    inside = True
                    break
                if steps >= budget:
                    judged = False
                    break
        if inside:
            continue
        count += 1
        unjudged += 0 if judged else 1
        if len(found) < limit:
            found.append(path)
    return Verdict(tuple(found), count, unjudged)


def refusal(scope: Sequence[str], verdict: Verdict) -> str:
    """One line for the agent (and its ledger) naming what was outside, and the scope."""
    shown = ", ".join(verdict.outside)
    more = f" and {verdict.count - len(verdict.outside)} more" if verdict.count > len(verdict.outside) else ""
    entries = ", ".join(scope[:8]) + (f" (+{len(scope) - 8} more)" if len(scope) > 8 else "")
    why = f" ({verdict.unjudged} too long or past the check's budget)" if verdict.unjudged else ""
    return (f"{verdict.count} changed file(s) outside the task's scope [{entries}]{why}: {shown}{more}; "
            f"the build enforces scopes (spec.scope.enforce): change only files the scope covers")


def inherited(fix_scope: Iterable[str], task_scope: Iterable[str], *, enforce: bool) -> tuple[str, ...]:
    """The scope of a fixer of a task's branch: under ``spec.scope.enforce`` the fixed task's own scope (an
    unscoped task's fixer is unscoped), so that the fixer may change what the task could and no more; otherwise
    what the failure names (the conflicting files), as a scheduling hint."""
    return tuple(task_scope) if enforce else tuple(fix_scope)


def _segment_covers(parent: str, child: str) -> bool:
    """Whether every name the child's segment matches is one the parent's matches (sound, not complete: a
    wildcard segment of the child is covered only by ``*`` or by itself)."""
    if child == "**":
        return False  # only a parent's ** (handled by walk) spans any number of segments
    if parent == child or parent == "*":
        return True
    return not has_wild(child) and _segment_matches(parent, child)


def entry_covered_steps(child: str, parents: Sequence[str]) -> tuple[bool, int]:
    """Whether some entry of ``parents`` covers every path ``child`` covers, and the positions visited. Sound:
    True means it does; a glob the check cannot prove inside (``src/*`` under ``src/a*``) is False."""
    steps = 0
    for parent in parents:
        hit, n = walk(parse_entry(parent), parse_entry(child), _segment_covers, stars_in_b=False)
        steps += n
        if hit:
            return True, steps
    return False, steps


def uncovered(child: Sequence[str], parent: Sequence[str], *, budget: int = MAX_STEPS) -> tuple[str, ...]:
    """The entries of a child's scope that its parent's scope does not cover (an unscoped parent covers
    everything; an empty child scope is the parent's, so it is covered). Entries past the budget are uncovered."""
    if not parent or not child:
        return ()
    entries = tuple(dict.fromkeys(parent))
    out: list[str] = []
    steps = 0
    for entry in dict.fromkeys(child):
        hit = False
        if steps < budget:
            hit, n = entry_covered_steps(entry, entries)
            steps += n
        if not hit:
            out.append(entry)
    return tuple(out)


def child_refusal(field: str, parent: Sequence[str], outside_entries: Sequence[str]) -> str:
    """One line naming the child's entries outside its parent's scope (``field``: where they were asked)."""
    shown = ", ".join(outside_entries[:8]) + (f" (+{len(outside_entries) - 8} more)" if len(outside_entries) > 8
                                               else "")
    entries = ", ".join(parent[:8]) + (f" (+{len(parent) - 8} more)" if len(parent) > 8 else "")
    return (f"{field} [{shown}] is not within the parent task's scope [{entries}]; the build enforces scopes "
            "(spec.scope.enforce): ask for a scope within the parent's, or for none to inherit it")
