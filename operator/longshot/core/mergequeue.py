"""The speculative merge queue of one repository branch: which batch to build, which prefixes to gate, what
to land. Pure: ``decide(state) -> list[Effect]`` and ``prepared(state, result) -> list[Effect]``.

The queue holds candidates (MergeJobs ready to merge, in queue order: priority, then age). A *batch* is the
first ``window`` ready candidates of one build (one build: one quality-gate command). The shell builds the
speculative commits ``S1 = target + c1``, ``S2 = S1 + c2``, ... with the build's strategy
(:class:`PrepareBatch`); the quality gate tests prefixes, never a branch alone, so every candidate is tested
as it would land. Then:

* **Longest prefix first.** The whole batch ``Sn`` is gated first (one tester Pod for the whole batch, which
  is what keeps Pods per merge low). If it passes, ``Sn`` is landed in one fenced push (compare-and-swap on the
  base): every candidate merges at once.
* **Bisection, off the line.** If a prefix fails, the culprit is the first candidate whose prefix fails while the
  prefix before it passes. The prefixes between the longest passing (``L``) and the shortest failing (``f``)
  prefix are gated, up to ``max_probes`` of them per round, evenly spread (``max_probes=1`` is binary search; the
  default gates them all at once, finding the culprit in one more round). When ``f == L + 1``: evict candidate
  ``f`` (its MergeJob gets a fixer with the failing output) and put the rest back in the queue; ``SL`` lands first
  if the target is still the batch's base and no other batch is on the line, else ``1..L`` go back too (they
  are tested again on the target as it is then). The failed batch leaves **the line** (the head batch and those
  stacked on it, :func:`lanes`) at its first failed gate: the batches stacked on it go back to the queue at once
  (built on a commit that holds the culprit, they can never land), and the next ready candidates, theirs first,
  form a new head batch on the target, gated while the bisection runs, instead of the whole queue waiting for
  the bisection round.
* **Stacked batches** (Zuul's dependent pipeline). While a batch is gated and none of its prefixes failed, the
  next ready candidates form a second batch built on the first batch's longest speculative commit, and its
  longest prefix is gated at once, on the bet that the first lands whole (the head batch's build's
  ``spec.merge.depth`` batches at most, ``QueueState.max_depth``, default 2; 1 is one batch at a time; each
  reconcile stacks one more; a build whose ``spec.merge.window`` is 1 is never stacked: the serial
  queue has one candidate under test at a time). The stacked batch never lands, bisects or evicts on its own: when the
  batch below lands whole it becomes the head batch (its base is now the target) and goes on from the gate
  results it already has; when the batch below breaks (a failed gate, a lost push, a moved target), the stacked
  batch goes back to the queue and its gates are stopped. At the end of a build this takes one gate round off
  the tail: the last candidates are gated while the batch before them still is.
* **A stacked batch waits to be full** while more candidates of its build are still to come
  (``QueueState.incoming``: its worker and fixer tasks not finished, its MergeJobs not through their checks), as
  GitHub's merge queue waits for a minimum group size: stacking a few candidates now would cost a tester Pod
  that a batch formed when the head batch lands (with everything that arrived meanwhile) shares. It is built at
  once when it fills the window, when nothing more is coming (the end of a build: the last candidates are still
  gated beside the head batch), or when a task waits for one of its candidates to merge
  (``QueueState.awaited``). The head batch never waits: a candidate waits at most one gate run longer.
* **The window** grows by one after a batch lands whole and never exceeds ``spec.merge.window``; ``window: 1``
  is the serial queue. After an eviction it halves (floor 1) when the build's batch before also broke: failures
  that come in a row (a broken target, a flaky gate) back off exponentially, as Zuul's window does. An isolated
  culprit keeps the window: bisection already found it at the cost of one round, and the passing prefix landed,
  so shrinking would only make the next batches smaller (``make bench-queue`` measures the rounds it would cost).

Invariants (checked by the property tests): the target only ever moves to a speculative commit whose gate
passed, by a compare-and-swap from the commit the batch was built on; every candidate lands exactly once or is
evicted; an evicted candidate is one whose prefix failed while the prefix before it passed, both built on the
target as it was when its batch was built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

ProbeState = Literal["running", "passed", "failed"]
DEFAULT_WINDOW: Final = 4
DEFAULT_DEPTH: Final = 2


@dataclass(frozen=True)
class Candidate:
    """A MergeJob in the queue of this repository branch."""

    name: str
    build: str
    uid: str = ""
    ready: bool = True
    """Queued, checks passed, not backing off, dependencies merged (stacked), approved when required."""
    conflict_base: str | None = None
    """The target head it last conflicted with; it waits until the target moves."""
    batch_id: str | None = None
    position: int | None = None
    """1-based position in its batch (with ``batch_id``), None when not in a batch."""
    commit: str | None = None
    """Its speculative commit (base + everything up to it) when in a batch."""
    base: str | None = None
    """The commit its batch was built on: the target head, or the longest speculative commit of the batch below
    (a stacked batch)."""


@dataclass(frozen=True)
class Probe:
    """A quality-gate run of one prefix of a batch."""

    position: int
    state: ProbeState
    output: str = ""
    batch_id: str = ""


@dataclass(frozen=True)
class QueueState:
    candidates: tuple[Candidate, ...]
    """In queue order (the shell sorts by priority, then creation time, then name)."""
    probes: tuple[Probe, ...] = ()
    """The gate runs of the batches in the queue."""
    target_head: str | None = None
    """The target head last seen (conflicted candidates wait until it differs from their conflict base)."""
    windows: dict[str, int] = field(default_factory=dict)
    """Current window per build (the shell keeps it in memory; a restart starts at the maximum)."""
    max_window: dict[str, int] = field(default_factory=dict)
    """``spec.merge.window`` per build."""
    max_probes: int = 0
    """Prefixes gated per bisection round; 0: all of them at once."""
    broke: frozenset[str] = frozenset()
    """Builds whose last batch broke (ended with an eviction); kept in memory by the shell like the window."""
    depth: int = DEFAULT_DEPTH
    """Batches under test at once: the head batch and those stacked on it (1: one batch at a time); the default of a
    build missing from ``max_depth``."""
    max_depth: dict[str, int] = field(default_factory=dict)
    """``spec.merge.depth`` per build: the head batch's build says how many batches stack on it."""
    did_not_stack: frozenset[tuple[str, str]] = frozenset()
    """``(candidate, commit)``: the candidate did not apply on that speculative commit (only on it, not on the
    target), so it is not stacked on it again; kept in memory by the shell (a restart tries once more)."""
    incoming: dict[str, int] = field(default_factory=dict)
    """Per build: candidates still to come (its worker and fixer tasks not finished, its MergeJobs not through
    their checks yet). While some are coming, a stacked batch waits to be full (see :func:`decide`)."""
    awaited: frozenset[str] = frozenset()
    """Candidates that a task waits for (it depends on their merge): never kept waiting to fill a batch."""
    held: frozenset[str] = frozenset()
    """Ready candidates whose checks passed and are not written yet (the checks step holds them in memory): written
    with their batch's status, or on their own (:class:`WriteChecks`) when :func:`decide` finds no batch to take
    them."""


@dataclass(frozen=True)
class JobFacts:
    """What the shell read about one MergeJob of the queue, beside the batches: the facts whose status the queue
    writes (:func:`observe`)."""

    name: str
    phase: str
    seen: bool = True
    """Its status was written by the operator (not absent, not the CRD's default)."""
    checking: bool = False
    """Queued with its checks pending and in no batch: its first status is its checks' (the checks step's)."""
    held: bool = False
    """Its checks passed and the checks step holds them (``QueueState.held``)."""
    fixer_merged: str | None = None
    """The commit with which the fixer that took its branch over merged."""
    retry: str | None = None
    """Finalization asks for another try (the attempt that asks)."""


# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepareBatch:
    """Fetch the target and build the speculative commits of ``members`` in this order, on the target's head or,
    for a stacked batch, on ``onto`` (the longest speculative commit of batch ``onto_batch``, at ``onto_position``);
    answer with :func:`prepared`."""

    build: str
    members: tuple[str, ...]
    onto: str | None = None
    onto_batch: str | None = None
    onto_position: int = 0


@dataclass(frozen=True)
class JoinBatch:
    """Record that ``name`` is at ``position`` of batch ``batch_id`` built on ``base``, with speculative commit
    ``commit`` (MergeJob decider: ``BatchJoined``)."""

    name: str
    batch_id: str
    position: int
    base: str
    commit: str


@dataclass(frozen=True)
class StartProbes:
    """Gate these prefix positions of the batch (one tester Pod each)."""

    batch_id: str
    positions: tuple[int, ...]


@dataclass(frozen=True)
class Land:
    """Push ``commit`` (the speculative commit of ``position``) to the target if it still is ``base``; the
    candidates ``members`` (positions 1..position) merged (MergeJob decider: ``Landed`` with their own commit).
    ``pushed``: the target already is ``commit`` (pushed before a restart): record it, push nothing."""

    batch_id: str
    position: int
    base: str
    commit: str
    members: tuple[str, ...]
    pushed: bool = False


@dataclass(frozen=True)
class Evict:
    """``name`` broke the gate: its prefix failed while the one before passed (MergeJob decider: ``Evicted``)."""

    name: str
    output: str


@dataclass(frozen=True)
class Requeue:
    """Put these back in the queue (MergeJob decider: ``Requeued``)."""

    names: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Conflicted:
    """``name`` does not apply (MergeJob decider: ``Conflict``)."""

    name: str
    files: tuple[str, ...]
    base: str
    counted: bool


@dataclass(frozen=True)
class SetWindow:
    """The build's window from now on; ``broke``: its batch ended with an eviction (remember it, see
    :attr:`QueueState.broke`)."""

    build: str
    window: int
    broke: bool = False


@dataclass(frozen=True)
class CancelProbes:
    """Stop the gate runs of an abandoned batch."""

    batch_id: str


@dataclass(frozen=True)
class Recorded:
    """``name`` was already on the target as ``commit`` (MergeJob decider: ``Landed(already=True)``)."""

    name: str
    commit: str


@dataclass(frozen=True)
class DidNotStack:
    """``name`` did not apply on the speculative commit ``onto`` of the batch below (only there, not on the
    target): it stays in the queue, and is not stacked on that commit again (:attr:`QueueState.did_not_stack`)."""

    name: str
    onto: str


@dataclass(frozen=True)
class Wait:
    why: str


@dataclass(frozen=True)
class WriteChecks:
    """Write the held checks of a candidate that no batch takes now, no batch of its build being under test or
    built by this step (a batch that ends takes it, or writes it, at the next step)."""

    name: str


@dataclass(frozen=True)
class Observe:
    """Write the first status of a job that has none and that no step is about to write (a batch member or an
    ended job after a restore): ``Observed``."""

    name: str


@dataclass(frozen=True)
class FixerMerged:
    """The fixer that took the failed or conflicted job's branch over merged: the job is carried by it."""

    name: str
    commit: str


@dataclass(frozen=True)
class RetryAsked:
    """Finalization asked for another try of the job (its ``attempt``). ``again``: the job ended unmerged (failed
    or conflicted) and is tried again (a status write); else the ask is answered: it is taken away (the job was
    tried again, or has nothing to try)."""

    name: str
    attempt: str
    again: bool


Effect = (PrepareBatch | JoinBatch | StartProbes | Land | Evict | Requeue | Conflicted | SetWindow | CancelProbes
          | Recorded | DidNotStack | Wait | WriteChecks | Observe | FixerMerged | RetryAsked)


# --- the result of PrepareBatch ------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """A member applied cleanly: its speculative commit."""

    name: str
    commit: str


@dataclass(frozen=True)
class DidNotApply:
    """A member did not apply on the commits before it. ``with_target``: it also conflicts with the target
    alone (a real conflict, counted), not only with candidates ahead of it (in its batch, or in the batch it was
    stacked on)."""

    name: str
    files: tuple[str, ...]
    with_target: bool


@dataclass(frozen=True)
class AlreadyOnTarget:
    """A member's work is already on the target (found by its own record: the MergeJob's UID in a trailer of
    a commit the queue wrote): it merged before a restart. Never merged again."""

    name: str
    commit: str


@dataclass(frozen=True)
class Prepared:
    base: str
    """The commit the batch was built on: the target head, or ``PrepareBatch.onto``."""
    members: tuple[Applied | DidNotApply | AlreadyOnTarget, ...]
    target: str | None = None
    """The target head when the batch was stacked (``base`` is then a speculative commit); None: ``base``."""


# --- helpers -----------------------------------------------------------------------------------------


def batch_id(base: str, members: Sequence[str]) -> str:
    """A short, deterministic id of a batch: the same base and members give the same id."""
    return hashlib.sha256((base + "\0" + "\0".join(members)).encode()).hexdigest()[:10]


def window_of(state: QueueState, build: str) -> int:
    top = max(1, state.max_window.get(build, DEFAULT_WINDOW))
    return max(1, min(state.windows.get(build, top), top))


def stack(state: QueueState) -> list[list[Candidate]] | None:
    """The line: the batches in the queue that may land next, each by position, from the head batch (built on the
    target) up through those stacked on it. Batches being bisected, and those stacked on them, are not in it
    (:func:`lanes`). None when the batches are not whole, or do not stack one on another (half-written after a
    crash)."""
    found = lanes(state)
    return None if found is None else found.line


@dataclass(frozen=True)
class Lanes:
    """The batches of the queue, by what happens to them next."""

    line: list[list[Candidate]]
    """The head batch and those stacked on it: none of their gates has failed, except perhaps a stacked one's."""
    bisecting: list[list[Candidate]]
    """Batches that are not stacked on another and whose gate failed: their culprit is looked for off the line."""
    doomed: list[list[Candidate]]
    """Batches stacked on a batch being bisected: built on a commit that holds its culprit, never to land."""


def lanes(state: QueueState) -> Lanes | None:
    """The batches of the queue as :class:`Lanes`; None when they are not whole batches that stack one on another
    (half-written after a crash, or two lines)."""
    groups: dict[str, list[Candidate]] = {}
    for c in state.candidates:
        if c.batch_id is not None:
            groups.setdefault(c.batch_id, []).append(c)
    batches = [sorted(b, key=lambda c: c.position or 0) for b in groups.values()]
    if not all(_consistent(b) for b in batches):
        return None
    tops = {b[-1].commit for b in batches}
    failed = {p.batch_id for p in state.probes if p.state == "failed"}
    line: list[list[Candidate]] = []
    bisecting: list[list[Candidate]] = []
    doomed: list[list[Candidate]] = []
    for root in (b for b in batches if b[0].base not in tops):
        above = [root]
        while True:
            up = [b for b in batches if b[0].base == above[-1][-1].commit]
            if len(up) > 1:
                return None
            if not up:
                break
            above.append(up[0])
        if root[0].batch_id in failed:
            bisecting.append(root)
            doomed += above[1:]
        elif line:
            return None
        else:
            line = above
    if sum(map(len, (line, bisecting, doomed))) != len(batches):
        return None  # a cycle of batches, each on another's top
    return Lanes(line, bisecting, doomed)


def _consistent(batch: Sequence[Candidate]) -> bool:
    ids = {c.batch_id for c in batch}
    bases = {c.base for c in batch}
    positions = [c.position for c in batch]
    return (len(ids) == 1 and len(bases) == 1 and None not in bases
            and positions == list(range(1, len(batch) + 1)) and all(c.commit for c in batch))


def _spread(lo: int, hi: int, k: int) -> tuple[int, ...]:
    """Up to ``k`` positions strictly between ``lo`` and ``hi``, evenly spread (``k <= 0``: all of them)."""
    inner = list(range(lo + 1, hi))
    if k <= 0 or len(inner) <= k:
        return tuple(inner)
    step = (hi - lo) / (k + 1)
    return tuple(sorted({lo + max(1, round(step * (i + 1))) for i in range(k)} & set(inner)))


# --- the decisions -------------------------------------------------------------------------------------


Owed = Observe | FixerMerged | RetryAsked
"""The status writes :func:`observe` says the queue owes its jobs beside the batches."""


def observe(facts: Sequence[JobFacts]) -> list[Owed]:
    """The status writes the queue owes its jobs beside the batches: a first status where no step is about to write
    one (:class:`Observe`), a fixer's merge (:class:`FixerMerged`), finalization's ask for another try
    (:class:`RetryAsked`). A job being checked is the checks step's to write first, a held one its batch's."""
    out: list[Owed] = []
    for f in facts:
        if not f.seen and not f.checking and not f.held:
            out.append(Observe(f.name))
        if f.fixer_merged and f.phase in ("Failed", "Conflicted"):
            out.append(FixerMerged(f.name, f.fixer_merged))
        if f.retry is not None:
            out.append(RetryAsked(f.name, f.retry, again=f.phase in ("Failed", "Conflicted")))
    return out


def decide(state: QueueState) -> list[Effect]:
    """The next step of the queue, and the held checks that step leaves unwritten (:class:`WriteChecks`)."""
    effects = _decide(state)
    if not state.held:
        return effects
    batches = [e for e in effects if isinstance(e, PrepareBatch)]
    taken = {n for e in batches for n in e.members}
    busy = {c.build for c in state.candidates if c.batch_id is not None} | {e.build for e in batches}
    writes: list[Effect] = [WriteChecks(c.name) for c in state.candidates
                            if c.name in state.held and c.name not in taken and c.batch_id is None
                            and c.build not in busy]
    if not writes:
        return effects
    return [*(e for e in effects if not isinstance(e, Wait)), *writes]


def _decide(state: QueueState) -> list[Effect]:
    found = lanes(state)
    if found is None:
        # half-written after a crash: start over (nothing was pushed: the push is the last step)
        members = tuple(c.name for c in state.candidates if c.batch_id is not None)
        return [Requeue(members, "the batch was incomplete after a restart; it is rebuilt"),
                *[CancelProbes(i) for i in sorted({c.batch_id for c in state.candidates if c.batch_id})]]
    chain = found.line
    effects: list[Effect] = []
    freed: set[str] = set()
    for b in found.doomed:  # stacked on a batch whose gate failed: back to the queue, in the batch built next
        names = tuple(c.name for c in b)
        freed.update(names)
        below = _bid_of(state, b[0].base or "")
        effects += [Requeue(names, f"batch {below} below it failed its gate; tested again without it"),
                    CancelProbes(b[0].batch_id or "")]
    moving = bool(chain)  # the target may move before a bisected batch's passing prefix would land
    for b in found.bisecting:
        step = _bisect(state, b, line=moving)
        moving = moving or any(isinstance(e, Land) for e in step)
        effects += step
    if any(isinstance(e, Land) for e in effects):
        return effects  # the target moves: the line is built on it at the next step
    if not chain:
        eligible = _eligible(state, None, freed)
        if not eligible:
            return effects or [Wait("no candidate is ready")]
        build = eligible[0].build
        members = tuple(c.name for c in eligible if c.build == build)[:window_of(state, build)]
        return [*(e for e in effects if not isinstance(e, Wait)), PrepareBatch(build, members)]
    head = _step_batch(state, chain[0], chain[1:])
    if any(not isinstance(e, (Wait, StartProbes)) for e in head):
        return effects + head  # the head batch landed or broke: the stacked ones were handled with it
    effects += head
    for b in chain[1:]:
        if not _results(state, b):
            effects.append(StartProbes(b[0].batch_id or "", (len(b),)))
    failing = any(p.state == "failed" for b in chain for p in _results(state, b).values())
    top = chain[-1][-1]
    depth = max(1, state.max_depth.get(chain[0][0].build, state.depth))
    eligible = _eligible(state, top.commit) if len(chain) < depth and not failing else []
    if eligible and state.max_window.get(eligible[0].build, DEFAULT_WINDOW) > 1:  # window 1: serial, no stack
        build = eligible[0].build
        members = tuple(c.name for c in eligible if c.build == build)[:window_of(state, build)]
        coming = state.incoming.get(build, 0)
        if coming and len(members) < window_of(state, build) and not state.awaited.intersection(members):
            effects.append(Wait(f"{len(members)} candidate(s) wait to stack until the batch is full or the "
                                f"{coming} still to come arrive"))
        else:
            effects.append(PrepareBatch(build, members, onto=top.commit, onto_batch=top.batch_id,
                                        onto_position=top.position or 0))
    work: list[Effect] = [e for e in effects if not isinstance(e, Wait)]
    return work or effects


def _pushed(state: QueueState, batch: Sequence[Candidate]) -> int:
    """The longest prefix of ``batch`` whose commit is the target head (our own push), 0: none."""
    return next((k for k in range(len(batch), 0, -1) if batch[k - 1].commit == state.target_head), 0)


def _bid_of(state: QueueState, commit: str) -> str:
    """The batch whose speculative commit ``commit`` is."""
    return next((c.batch_id or "" for c in state.candidates if c.commit == commit), "")


def _eligible(state: QueueState, onto: str | None, freed: set[str] | frozenset[str] = frozenset()
              ) -> list[Candidate]:
    """Ready candidates outside any batch (or in one this step sends back to the queue: ``freed``) that may be built
    on ``onto`` (None: the target head; else the longest commit of the top batch): a conflicted one waits for the
    target to move, and one that did not apply on a stacked commit is not stacked on it again."""
    return [c for c in state.candidates if c.ready and (c.batch_id is None or c.name in freed)
            and (c.conflict_base is None or c.conflict_base != state.target_head)
            and (onto is None or (c.name, onto) not in state.did_not_stack)]


def _results(state: QueueState, batch: Sequence[Candidate]) -> dict[int, Probe]:
    bid, n = batch[0].batch_id, len(batch)
    return {p.position: p for p in state.probes if p.batch_id == bid and 1 <= p.position <= n}


def prepared(state: QueueState, result: Prepared) -> list[Effect]:
    """The batch is built: record it and gate its longest prefix; conflicting members leave it. Of a stacked batch
    (``result.target`` set), a member that conflicts only with the batch below is left for a later batch."""
    effects: list[Effect] = []
    applied: list[Applied] = []
    target = result.target or result.base
    stacked = target != result.base
    for m in result.members:
        if isinstance(m, Applied):
            applied.append(m)
        elif isinstance(m, AlreadyOnTarget):
            effects.append(Recorded(m.name, m.commit))
        elif stacked and not m.with_target:
            effects.append(DidNotStack(m.name, result.base))
        else:
            effects.append(Conflicted(m.name, m.files, target, m.with_target))
    if not applied:
        return effects
    bid = batch_id(result.base, [m.name for m in applied])
    for i, m in enumerate(applied, start=1):
        effects.append(JoinBatch(m.name, bid, i, result.base, m.commit))
    effects.append(StartProbes(bid, (len(applied),)))
    return effects


def _step_batch(state: QueueState, batch: list[Candidate], stacked: Sequence[list[Candidate]]) -> list[Effect]:
    """The head batch's next step. When it does not land whole, the batches stacked on it go back to the queue."""
    names = tuple(c.name for c in batch)
    bid = batch[0].batch_id or ""
    base = batch[0].base or ""
    build = batch[0].build
    n = len(batch)
    above = tuple(c.name for b in stacked for c in b)

    def drop_stacked(why: str) -> list[Effect]:
        if not above:
            return []
        return [Requeue(above, why), *[CancelProbes(b[0].batch_id or "") for b in stacked]]

    if state.target_head is not None and state.target_head != base:
        k = _pushed(state, batch)
        if k:  # our own push of prefix k landed and the operator stopped before recording it
            rest = names[k:]
            effects: list[Effect] = [Land(bid, k, base, state.target_head, names[:k], pushed=True)]
            if rest:
                effects.append(Requeue(rest, f"batch {bid} landed up to position {k} before a restart"))
                effects += drop_stacked(f"batch {bid} below it landed only up to position {k}; tested again")
            return [*effects, CancelProbes(bid)]
        if any(c.commit == state.target_head for b in stacked for c in b):
            # a stacked batch was pushed on top of this one before a restart: this one landed whole
            return [Land(bid, n, base, batch[-1].commit or "", names, pushed=True), CancelProbes(bid)]
        # the target moved under the batch (another writer): its commits are not what would land any more
        return [Requeue(names + above, f"the target moved from {base[:12]} to {state.target_head[:12]}; tested again"),
                CancelProbes(bid), *[CancelProbes(b[0].batch_id or "") for b in stacked]]
    results = _results(state, batch)
    if not results:
        return [StartProbes(bid, (n,))]
    if any(r.state == "passed" for p, r in results.items() if p == n):
        window = window_of(state, build)
        top = state.max_window.get(build, DEFAULT_WINDOW)
        return [Land(bid, n, base, batch[-1].commit or "", names), SetWindow(build, min(top, window + 1))]
    if any(r.state == "running" for r in results.values()):
        return [Wait(f"batch {bid}: gates running")]
    return [StartProbes(bid, (n,))]  # (n was never gated: a restart lost it)


def _bisect(state: QueueState, batch: list[Candidate], *, line: bool) -> list[Effect]:
    """The next step of a batch whose gate failed, off the line (``line``: a batch is on the line meanwhile). Its
    prefixes are gated on the commit it was built on until the culprit is found: the first candidate whose prefix
    fails while the prefix before it passes. Then the culprit is evicted, and the passing prefix lands if the target
    is still that commit and the line is empty; otherwise it goes back to the queue with the candidates after the
    culprit, to be tested again on the target as it is now."""
    names = tuple(c.name for c in batch)
    bid = batch[0].batch_id or ""
    base = batch[0].base or ""
    build = batch[0].build
    n = len(batch)
    if state.target_head is not None and state.target_head != base and (k := _pushed(state, batch)):
        # our own push of prefix k landed and the operator stopped before recording it
        effects: list[Effect] = [Land(bid, k, base, state.target_head, names[:k], pushed=True)]
        if names[k:]:
            effects.append(Requeue(names[k:], f"batch {bid} landed up to position {k} before a restart"))
        return [*effects, CancelProbes(bid)]
    here = state.target_head in (None, base) and not line  # what passed may land as it was tested
    results = _results(state, batch)
    passed = [p for p, r in results.items() if r.state == "passed"]
    longest = max(passed, default=0)
    if longest == n:  # (a flaky gate: a prefix failed, the whole batch passed)
        if here:
            return [Land(bid, n, base, batch[-1].commit or "", names), CancelProbes(bid)]
        return [Requeue(names, f"batch {bid}: its gates disagree (a flaky gate?); tested again"), CancelProbes(bid)]
    failed_after = sorted(p for p, r in results.items() if r.state == "failed" and p > longest)
    running = [p for p in range(longest + 1, (failed_after or [n + 1])[0]) if p in results
               and results[p].state == "running"]
    if not failed_after:
        if running:
            return [Wait(f"batch {bid}: gates running")]
        return [StartProbes(bid, (n,))]
    first_failed = failed_after[0]
    if first_failed == longest + 1:
        culprit = batch[first_failed - 1]
        effects = []
        land = longest >= 1 and here
        if land:
            effects.append(Land(bid, longest, base, batch[longest - 1].commit or "", names[:longest]))
        effects.append(Evict(culprit.name, results[first_failed].output))
        back = names[first_failed:] if land else names[:longest] + names[first_failed:]
        if back:
            effects.append(Requeue(back, f"batch {bid} broke at {culprit.name}; tested again without it"))
        window = window_of(state, build)
        effects.append(SetWindow(build, max(1, window // 2 if build in state.broke else window), broke=True))
        effects.append(CancelProbes(bid))
        return effects
    if running:
        return [Wait(f"batch {bid}: bisecting, gates running at {running}")]
    between = [p for p in range(longest + 1, first_failed) if p not in results]
    probes = _spread(longest, first_failed, state.max_probes)
    probes = tuple(p for p in probes if p in between) or tuple(between[:1])
    return [StartProbes(bid, probes)]
