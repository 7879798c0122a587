from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import mergequeue as q
from longshot.core.mergequeue import (
    AlreadyOnTarget,
    Applied,
    CancelProbes,
    Candidate,
    Conflicted,
    DidNotApply,
    Evict,
    JoinBatch,
    Land,
    PrepareBatch,
    Prepared,
    Probe,
    QueueState,
    Recorded,
    Requeue,
    SetWindow,
    StartProbes,
    Wait,
)

pytestmark = pytest.mark.unit


def cands(*names: str, build: str = "b") -> tuple[Candidate, ...]:
    return tuple(Candidate(n, build) for n in names)


def in_batch(names: list[str], base: str = "T0", bid: str = "B") -> tuple[Candidate, ...]:
    return tuple(Candidate(n, "b", batch_id=bid, position=i, commit=f"S{i}", base=base)
                 for i, n in enumerate(names, start=1))


# --- examples ----------------------------------------------------------------------------------------


def test_a_batch_is_the_first_window_ready_candidates_of_one_build():
    s = QueueState(cands("a", "b", "c") + cands("x", build="other") + cands("d", "e"),
                   max_window={"b": 4})
    assert q.decide(s) == [PrepareBatch("b", ("a", "b", "c", "d"))]
    s = replace(s, candidates=(Candidate("a", "b", ready=False), *s.candidates[1:]))
    assert q.decide(s) == [PrepareBatch("b", ("b", "c", "d", "e"))]


def test_conflicted_candidates_wait_for_the_target_to_move():
    s = QueueState((Candidate("a", "b", conflict_base="T0"),), target_head="T0")
    assert isinstance(q.decide(s)[0], Wait)
    assert q.decide(replace(s, target_head="T1")) == [PrepareBatch("b", ("a",))]


def test_prepared_batch_gates_its_longest_prefix_once():
    result = Prepared("T0", (Applied("a", "S1"), DidNotApply("b", ("f.py",), with_target=True), Applied("c", "S2")))
    effects = q.prepared(QueueState(cands("a", "b", "c")), result)
    bid = q.batch_id("T0", ["a", "c"])
    assert effects == [Conflicted("b", ("f.py",), "T0", True), JoinBatch("a", bid, 1, "T0", "S1"),
                       JoinBatch("c", bid, 2, "T0", "S2"), StartProbes(bid, (2,))]


def test_already_merged_members_are_recorded_not_merged_again():
    effects = q.prepared(QueueState(cands("a")), Prepared("T0", (AlreadyOnTarget("a", "M1"),)))
    assert effects == [Recorded("a", "M1")]


def test_whole_batch_passes_lands_in_one_push_and_grows_the_window():
    s = QueueState(in_batch(["a", "b", "c"]), probes=(Probe(3, "passed"),), target_head="T0",
                   windows={"b": 3}, max_window={"b": 8})
    assert q.decide(s) == [Land("B", 3, "T0", "S3", ("a", "b", "c")), SetWindow("b", 4)]


def test_failed_batch_is_bisected_then_exactly_the_culprit_is_evicted():
    s = QueueState(in_batch(["a", "b", "c", "d"]), probes=(Probe(4, "failed", "boom"),), target_head="T0",
                   windows={"b": 4}, max_window={"b": 4})
    assert q.decide(s) == [StartProbes("B", (1, 2, 3))]  # all at once by default
    s = replace(s, probes=(*s.probes, Probe(1, "passed"), Probe(2, "passed"), Probe(3, "failed", "E at c")))
    assert q.decide(s) == [Land("B", 2, "T0", "S2", ("a", "b")), Evict("c", "E at c"),
                           Requeue(("d",), "batch B broke at c; tested again without it"),
                           SetWindow("b", 4, broke=True), CancelProbes("B")]


def test_an_isolated_culprit_keeps_the_window_and_failures_in_a_row_halve_it():
    failing = (Probe(4, "failed", "boom"), Probe(1, "passed"), Probe(2, "failed", "E at b"), Probe(3, "failed"))
    s = QueueState(in_batch(["a", "b", "c", "d"]), probes=failing, target_head="T0", windows={"b": 4},
                   max_window={"b": 8})
    assert SetWindow("b", 4, broke=True) in q.decide(s)
    # the build's batch before broke too: back off
    assert SetWindow("b", 2, broke=True) in q.decide(replace(s, broke=frozenset({"b"})))
    assert SetWindow("b", 1, broke=True) in q.decide(replace(s, windows={"b": 1}, broke=frozenset({"b"})))
    # another build's broken batch does not count
    assert SetWindow("b", 4, broke=True) in q.decide(replace(s, broke=frozenset({"other"})))
    # a batch that lands whole grows the window and clears the memory of the failure
    whole = QueueState(in_batch(["a", "b"]), probes=(Probe(2, "passed"),), target_head="T0", windows={"b": 2},
                       max_window={"b": 8}, broke=frozenset({"b"}))
    assert SetWindow("b", 3, broke=False) in q.decide(whole)


def test_binary_bisection_with_one_probe_per_round():
    s = QueueState(in_batch(list("abcdefgh")), probes=(Probe(8, "failed"),), target_head="T0", max_probes=1)
    assert q.decide(s) == [StartProbes("B", (4,))]
    s = replace(s, probes=(*s.probes, Probe(4, "passed")))
    assert q.decide(s) == [StartProbes("B", (6,))]
    s = replace(s, probes=(*s.probes, Probe(6, "failed")))
    assert q.decide(s) == [StartProbes("B", (5,))]


def test_first_candidate_failing_evicts_it_and_requeues_the_rest():
    s = QueueState(in_batch(["a", "b"]), probes=(Probe(2, "failed"), Probe(1, "failed", "x")), target_head="T0")
    effects = q.decide(s)
    assert effects[0] == Evict("a", "x") and not any(isinstance(e, Land) for e in effects)


def test_target_moved_under_the_batch_requeues_it_or_records_our_own_push():
    s = QueueState(in_batch(["a", "b"]), probes=(Probe(2, "running"),), target_head="OTHER")
    assert q.decide(s)[0] == Requeue(("a", "b"), "the target moved from T0 to OTHER; tested again")
    s = replace(s, target_head="S1")  # we pushed S1 and stopped before recording it
    assert q.decide(s)[:2] == [Land("B", 1, "T0", "S1", ("a",), pushed=True),
                               Requeue(("b",), "batch B landed up to position 1 before a restart")]


def test_an_inconsistent_batch_is_rebuilt():
    broken = (Candidate("a", "b", batch_id="B", position=1, commit="S1", base="T0"),
              Candidate("b", "b", batch_id="B", position=3, commit="S3", base="T0"))
    assert isinstance(q.decide(QueueState(broken, target_head="T0"))[0], Requeue)


def test_running_gates_wait():
    s = QueueState(in_batch(["a", "b"]), probes=(Probe(2, "running"),), target_head="T0")
    assert isinstance(q.decide(s)[0], Wait)


# --- the property: random queues, culprits, conflicts, gate timing and restarts --------------------


@dataclass
class World:
    culprits: set[str]
    conflicts: dict[str, str]
    """candidate -> another candidate it conflicts with (content touches the same lines)."""
    order: list[str]
    max_window: int
    max_retries: int = 2
    rng: random.Random = field(default_factory=random.Random)
    target: list[str] = field(default_factory=list)
    jobs: dict[str, Candidate] = field(default_factory=dict)
    out: dict[str, str] = field(default_factory=dict)
    """Finished candidates: merged / evicted / conflicted."""
    retries: dict[str, int] = field(default_factory=dict)
    probes: dict[tuple[str, int], Probe] = field(default_factory=dict)
    contents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """speculative commit -> the candidates it contains."""
    passed_commits: set[str] = field(default_factory=set)
    windows: dict[str, int] = field(default_factory=dict)
    broke: set[str] = field(default_factory=set)
    pushes: list[str] = field(default_factory=list)
    crash_after_push: float = 0.0

    def head(self) -> str:
        return "T:" + ",".join(self.target)

    def commit_of(self, content: tuple[str, ...]) -> str:
        c = "S:" + ",".join(content)
        self.contents[c] = content
        return c

    def state(self) -> QueueState:
        cs = tuple(self.jobs[n] for n in self.order if n not in self.out)
        return QueueState(cs, probes=tuple(p for (b, _), p in self.probes.items()
                                           if any(c.batch_id == b for c in cs)),
                          target_head=self.head(), windows=dict(self.windows), max_window={"b": self.max_window},
                          broke=frozenset(self.broke))

    def prepare(self, members: tuple[str, ...]) -> Prepared:
        content = tuple(self.target)
        result: list[Applied | DidNotApply | AlreadyOnTarget] = []
        for m in members:
            if m in self.target:
                result.append(AlreadyOnTarget(m, self.head()))
                continue
            partner = self.conflicts.get(m)
            if partner is not None and partner in content:
                result.append(DidNotApply(m, ("f",), with_target=partner in self.target))
                continue
            content = (*content, m)
            result.append(Applied(m, self.commit_of(content)))
        return Prepared(self.head(), tuple(result))

    def apply(self, effects: list[q.Effect]) -> None:
        for e in effects:
            if isinstance(e, PrepareBatch):
                self.apply(q.prepared(self.state(), self.prepare(e.members)))
            elif isinstance(e, JoinBatch):
                self.jobs[e.name] = replace(self.jobs[e.name], batch_id=e.batch_id, position=e.position,
                                            commit=e.commit, base=e.base)
            elif isinstance(e, StartProbes):
                for p in e.positions:
                    self.probes.setdefault((e.batch_id, p), Probe(p, "running"))
            elif isinstance(e, Land):
                probe = self.probes.get((e.batch_id, e.position))
                assert probe is not None and probe.state == "passed", "landed an untested prefix"
                assert e.commit in self.passed_commits
                if not e.pushed:
                    if self.head() != e.base:
                        self.requeue(e.members)  # CAS lost: nothing pushed
                        return
                    new = list(self.contents[e.commit])
                    for m in new[len(self.target):]:
                        assert m not in self.target, f"{m} merged twice"
                    assert new[:len(self.target)] == self.target
                    self.target = new
                    self.pushes.append(e.commit)
                    if self.rng.random() < self.crash_after_push:
                        self.windows.clear()  # the operator died before recording: statuses still say Testing
                        return
                else:
                    assert self.head() == "T:" + ",".join(self.contents[e.commit])
                for m in e.members:
                    assert m in self.target
                    self.out[m] = "merged"
            elif isinstance(e, Recorded):
                assert e.name in self.target
                self.out[e.name] = "merged"
            elif isinstance(e, Evict):
                self.out[e.name] = "evicted"
            elif isinstance(e, Requeue):
                self.requeue(e.names)
            elif isinstance(e, q.Conflicted):
                if not e.counted:
                    self.requeue((e.name,))
                    continue
                n = self.retries.get(e.name, 0) + 1
                self.retries[e.name] = n
                if n > self.max_retries:
                    self.out[e.name] = "conflicted"
                else:
                    self.jobs[e.name] = replace(self.jobs[e.name], conflict_base=e.base, batch_id=None,
                                                position=None, commit=None, base=None)
            elif isinstance(e, SetWindow):
                assert 1 <= e.window <= self.max_window
                self.windows[e.build] = e.window
                (self.broke.add if e.broke else self.broke.discard)(e.build)
            elif isinstance(e, CancelProbes):
                for k in [k for k in self.probes if k[0] == e.batch_id and self.probes[k].state == "running"]:
                    del self.probes[k]

    def requeue(self, names: tuple[str, ...]) -> None:
        for n in names:
            self.jobs[n] = replace(self.jobs[n], batch_id=None, position=None, commit=None, base=None)

    def finish_a_probe(self) -> bool:
        running = [k for k, p in self.probes.items() if p.state == "running"]
        if not running:
            return False
        key = self.rng.choice(running)
        bid, pos = key
        member = next((c for c in self.jobs.values() if c.batch_id == bid and c.position == pos), None)
        if member is None or member.commit is None:
            del self.probes[key]
            return True
        ok = not (set(self.contents[member.commit]) & self.culprits)
        if ok:
            self.passed_commits.add(member.commit)
        self.probes[key] = Probe(pos, "passed" if ok else "failed", "" if ok else "tests failed")
        return True


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 14), culprit_rate=st.sampled_from([0.0, 0.1, 0.3]), window=st.integers(1, 8),
       conflict_pairs=st.integers(0, 3), seed=st.integers(0, 2**32 - 1), crash=st.sampled_from([0.0, 0.3]))
def test_queue_invariants_under_random_histories(n, culprit_rate, window, conflict_pairs, seed, crash):
    rng = random.Random(seed)
    order = [f"c{i:02d}" for i in range(n)]
    culprits = {c for c in order if rng.random() < culprit_rate}
    conflicts: dict[str, str] = {}
    for _ in range(conflict_pairs):
        a, b = rng.sample(order, 2) if n >= 2 else (order[0], order[0])
        if a != b:
            conflicts[b] = a
    w = World(culprits=culprits, conflicts=conflicts, order=order, max_window=window, rng=rng,
              crash_after_push=crash)
    w.jobs = {c: Candidate(c, "b") for c in order}
    for _ in range(2000):
        if len(w.out) == n:
            break
        if rng.random() < 0.05:
            w.windows.clear()  # a restart forgets the in-memory window
            w.broke.clear()
        if w.finish_a_probe() and rng.random() < 0.5:
            continue
        effects = q.decide(w.state())
        if all(isinstance(e, Wait) for e in effects) and not w.finish_a_probe():
            # every conflicted candidate waits for the target to move and nothing else can happen
            assert all(w.jobs[c].conflict_base == w.head() for c in order if c not in w.out)
            break
        w.apply(effects)
    # every candidate merged exactly once (the asserts in apply), the target only at tested commits
    assert all(p in w.passed_commits for p in w.pushes)
    assert len(w.target) == len(set(w.target))
    # no innocent candidate evicted, no culprit merged
    evicted = {c for c, how in w.out.items() if how == "evicted"}
    assert evicted <= culprits
    assert not (set(w.target) & culprits)
    # with no conflicts, the queue always finishes: every innocent merged, every culprit evicted
    if not conflicts:
        assert set(w.target) == set(order) - culprits and evicted == culprits
