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
    DidNotStack,
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
from property_budget import examples

pytestmark = pytest.mark.unit


def cands(*names: str, build: str = "b") -> tuple[Candidate, ...]:
    return tuple(Candidate(n, build) for n in names)


def in_batch(names: list[str], base: str = "T0", bid: str = "B", commits: str = "S") -> tuple[Candidate, ...]:
    return tuple(Candidate(n, "b", batch_id=bid, position=i, commit=f"{commits}{i}", base=base)
                 for i, n in enumerate(names, start=1))


def probe(position: int, state: q.ProbeState, output: str = "", bid: str = "B") -> Probe:
    return Probe(position, state, output, bid)


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
    s = QueueState(in_batch(["a", "b", "c"]), probes=(probe(3, "passed"),), target_head="T0",
                   windows={"b": 3}, max_window={"b": 8})
    assert q.decide(s) == [Land("B", 3, "T0", "S3", ("a", "b", "c")), SetWindow("b", 4)]


def test_failed_batch_is_bisected_then_exactly_the_culprit_is_evicted():
    s = QueueState(in_batch(["a", "b", "c", "d"]), probes=(probe(4, "failed", "boom"),), target_head="T0",
                   windows={"b": 4}, max_window={"b": 4})
    assert q.decide(s) == [StartProbes("B", (1, 2, 3))]  # all at once by default
    s = replace(s, probes=(*s.probes, probe(1, "passed"), probe(2, "passed"), probe(3, "failed", "E at c")))
    assert q.decide(s) == [Land("B", 2, "T0", "S2", ("a", "b")), Evict("c", "E at c"),
                           Requeue(("d",), "batch B broke at c; tested again without it"),
                           SetWindow("b", 4, broke=True), CancelProbes("B")]


def test_an_isolated_culprit_keeps_the_window_and_failures_in_a_row_halve_it():
    failing = (probe(4, "failed", "boom"), probe(1, "passed"), probe(2, "failed", "E at b"), probe(3, "failed"))
    s = QueueState(in_batch(["a", "b", "c", "d"]), probes=failing, target_head="T0", windows={"b": 4},
                   max_window={"b": 8})
    assert SetWindow("b", 4, broke=True) in q.decide(s)
    # the build's batch before broke too: back off
    assert SetWindow("b", 2, broke=True) in q.decide(replace(s, broke=frozenset({"b"})))
    assert SetWindow("b", 1, broke=True) in q.decide(replace(s, windows={"b": 1}, broke=frozenset({"b"})))
    # another build's broken batch does not count
    assert SetWindow("b", 4, broke=True) in q.decide(replace(s, broke=frozenset({"other"})))
    # a batch that lands whole grows the window and clears the memory of the failure
    whole = QueueState(in_batch(["a", "b"]), probes=(probe(2, "passed"),), target_head="T0", windows={"b": 2},
                       max_window={"b": 8}, broke=frozenset({"b"}))
    assert SetWindow("b", 3, broke=False) in q.decide(whole)


def test_binary_bisection_with_one_probe_per_round():
    s = QueueState(in_batch(list("abcdefgh")), probes=(probe(8, "failed"),), target_head="T0", max_probes=1)
    assert q.decide(s) == [StartProbes("B", (4,))]
    s = replace(s, probes=(*s.probes, probe(4, "passed")))
    assert q.decide(s) == [StartProbes("B", (6,))]
    s = replace(s, probes=(*s.probes, probe(6, "failed")))
    assert q.decide(s) == [StartProbes("B", (5,))]


def test_first_candidate_failing_evicts_it_and_requeues_the_rest():
    s = QueueState(in_batch(["a", "b"]), probes=(probe(2, "failed"), probe(1, "failed", "x")), target_head="T0")
    effects = q.decide(s)
    assert effects[0] == Evict("a", "x") and not any(isinstance(e, Land) for e in effects)


def test_target_moved_under_the_batch_requeues_it_or_records_our_own_push():
    s = QueueState(in_batch(["a", "b"]), probes=(probe(2, "running"),), target_head="OTHER")
    assert q.decide(s)[0] == Requeue(("a", "b"), "the target moved from T0 to OTHER; tested again")
    s = replace(s, target_head="S1")  # we pushed S1 and stopped before recording it
    assert q.decide(s)[:2] == [Land("B", 1, "T0", "S1", ("a",), pushed=True),
                               Requeue(("b",), "batch B landed up to position 1 before a restart")]


def test_an_inconsistent_batch_is_rebuilt():
    broken = (Candidate("a", "b", batch_id="B", position=1, commit="S1", base="T0"),
              Candidate("b", "b", batch_id="B", position=3, commit="S3", base="T0"))
    assert isinstance(q.decide(QueueState(broken, target_head="T0"))[0], Requeue)


def test_running_gates_wait():
    s = QueueState(in_batch(["a", "b"]), probes=(probe(2, "running"),), target_head="T0")
    assert isinstance(q.decide(s)[0], Wait)


# --- stacked batches ---------------------------------------------------------------------------------


def two_stacked(probes: tuple[Probe, ...] = (), target: str = "T0") -> QueueState:
    """Batch B (a, b on T0) under test, batch C (c, d) stacked on B's longest commit S2."""
    return QueueState(in_batch(["a", "b"]) + in_batch(["c", "d"], base="S2", bid="C", commits="U"), probes=probes,
                      target_head=target, max_window={"b": 4})


def test_while_a_batch_is_gated_the_next_ready_candidates_are_stacked_on_its_longest_commit():
    s = QueueState(in_batch(["a", "b"]) + cands("c", "d"), probes=(probe(2, "running"),), target_head="T0",
                   max_window={"b": 4})
    assert q.decide(s) == [PrepareBatch("b", ("c", "d"), onto="S2", onto_batch="B", onto_position=2)]
    # not with one batch at a time, not for a serial build (window 1), not above the depth, not on a batch whose
    # gate failed
    assert isinstance(q.decide(replace(s, depth=1))[0], Wait)
    assert isinstance(q.decide(replace(s, max_window={"b": 1}))[0], Wait)
    deep = replace(two_stacked((probe(2, "running"), probe(2, "running", bid="C"))),
                   candidates=two_stacked().candidates + cands("e"))
    assert isinstance(q.decide(deep)[0], Wait)
    assert q.decide(replace(deep, depth=3)) == [PrepareBatch("b", ("e",), onto="U2", onto_batch="C",
                                                             onto_position=2)]
    # a batch whose gate failed is bisected off the line: the next candidates are a new head batch on the target
    bisecting = replace(s, probes=(probe(2, "failed"),))
    assert q.decide(bisecting) == [StartProbes("B", (1,)), PrepareBatch("b", ("c", "d"))]
    # a candidate that did not apply on that commit is not stacked on it again
    assert q.decide(replace(s, did_not_stack=frozenset({("c", "S2")}))) == [
        PrepareBatch("b", ("d",), onto="S2", onto_batch="B", onto_position=2)]


def test_the_head_batch_s_build_says_how_deep_the_stack_goes():
    """``spec.merge.depth`` per build (``QueueState.max_depth``): a third batch stacks on a build that allows three
    at once, not on one that allows two, whatever the queue-wide default."""
    deep = replace(two_stacked((probe(2, "running"), probe(2, "running", bid="C"))),
                   candidates=two_stacked().candidates + cands("e"))
    third = [PrepareBatch("b", ("e",), onto="U2", onto_batch="C", onto_position=2)]
    assert q.decide(replace(deep, max_depth={"b": 3})) == third
    assert isinstance(q.decide(replace(deep, max_depth={"b": 2}, depth=5))[0], Wait)
    assert q.decide(replace(deep, max_depth={"other": 1}, depth=3)) == third  # another build's depth: the default
    assert q.decide(replace(deep, max_depth={"b": 8, "other": 1})) == third


@pytest.mark.parametrize(("waiting", "incoming", "awaited", "window", "stacks"), [
    (("c", "d"), 0, (), 4, True),  # nothing more to come (the end of a build): gated beside the head batch
    (("c", "d"), 3, (), 4, False),  # more to come: wait to fill the batch (one tester Pod for more of them)
    (("c", "d", "e", "f"), 3, (), 4, True),  # full: no reason to wait
    (("c", "d"), 3, ("d",), 4, True),  # a task waits for d to merge
    (("c", "d"), 3, ("x",), 4, False),  # ... not for one outside the batch
])
def test_a_stacked_batch_waits_to_be_full_while_more_candidates_are_coming(
        waiting: tuple[str, ...], incoming: int, awaited: tuple[str, ...], window: int, stacks: bool) -> None:
    s = QueueState(in_batch(["a", "b"]) + cands(*waiting), probes=(probe(2, "running"),), target_head="T0",
                   max_window={"b": window}, incoming={"b": incoming}, awaited=frozenset(awaited))
    effects = q.decide(s)
    if stacks:
        assert effects == [PrepareBatch("b", waiting, onto="S2", onto_batch="B", onto_position=2)]
    else:
        assert all(isinstance(e, Wait) for e in effects)
        assert any("wait to stack" in e.why for e in effects if isinstance(e, Wait))
    # another build's candidates coming do not hold this one
    assert isinstance(q.decide(replace(s, incoming={"other": 5}))[0], PrepareBatch)


def test_the_head_batch_never_waits_for_candidates_to_come():
    s = QueueState(cands("a"), max_window={"b": 8}, incoming={"b": 50})
    assert q.decide(s) == [PrepareBatch("b", ("a",))]


def test_a_stacked_batch_is_built_on_the_commit_below_and_leaves_out_who_conflicts_only_with_it():
    result = Prepared("S2", (Applied("c", "U1"), DidNotApply("d", ("f.py",), with_target=False),
                             DidNotApply("e", ("g.py",), with_target=True), Applied("f", "U2")), target="T0")
    bid = q.batch_id("S2", ["c", "f"])
    assert q.prepared(QueueState(in_batch(["a", "b"]) + cands("c", "d", "e", "f")), result) == [
        DidNotStack("d", "S2"), Conflicted("e", ("g.py",), "T0", True),
        JoinBatch("c", bid, 1, "S2", "U1"), JoinBatch("f", bid, 2, "S2", "U2"), StartProbes(bid, (2,))]


def test_a_stacked_batch_is_gated_at_once_and_waits_for_the_batch_below():
    assert q.decide(two_stacked((probe(2, "running"),))) == [StartProbes("C", (2,))]
    # its gate passed first: it waits, it does not land on a target that is not its base
    waiting = q.decide(two_stacked((probe(2, "running"), probe(2, "passed", bid="C"))))
    assert all(isinstance(e, Wait) for e in waiting)
    # a failure of the stacked batch is not bisected before it is the head batch
    assert all(isinstance(e, Wait) for e in q.decide(two_stacked((probe(2, "running"), probe(2, "failed", bid="C")))))


def test_the_batch_below_landing_whole_makes_the_stacked_batch_the_head_with_its_gate_results():
    s = two_stacked((probe(2, "passed"), probe(2, "passed", bid="C")))
    assert q.decide(s) == [Land("B", 2, "T0", "S2", ("a", "b")), SetWindow("b", 4)]
    after = replace(s, candidates=s.candidates[2:], target_head="S2")
    assert q.decide(after) == [Land("C", 2, "S2", "U2", ("c", "d")), SetWindow("b", 4)]
    failed = replace(after, probes=(probe(2, "failed", "boom", bid="C"),))
    assert q.decide(failed) == [StartProbes("C", (1,))]  # now bisected, on the target


def test_the_batch_below_breaking_sends_the_stacked_batch_back_to_the_queue():
    # at the first failed gate below it, before the culprit is known
    failed = q.decide(two_stacked((probe(2, "failed", "E at b"), probe(2, "running", bid="C"))))
    assert failed[:3] == [Requeue(("c", "d"), "batch B below it failed its gate; tested again without it"),
                          CancelProbes("C"), StartProbes("B", (1,))]
    s = two_stacked((probe(2, "failed", "E at b"), probe(1, "passed"), probe(2, "passed", bid="C")))
    assert q.decide(s) == [Requeue(("c", "d"), "batch B below it failed its gate; tested again without it"),
                           CancelProbes("C"), Land("B", 1, "T0", "S1", ("a",)), Evict("b", "E at b"),
                           SetWindow("b", 4, broke=True), CancelProbes("B")]
    moved = q.decide(two_stacked((probe(2, "running"),), target="OTHER"))
    assert moved == [Requeue(("a", "b", "c", "d"), "the target moved from T0 to OTHER; tested again"),
                     CancelProbes("B"), CancelProbes("C")]


def test_pushes_made_before_a_restart_are_recorded_batch_by_batch():
    # the stacked batch's first prefix was pushed too: the batch below landed whole
    assert q.decide(two_stacked(target="U1")) == [Land("B", 2, "T0", "S2", ("a", "b"), pushed=True),
                                                  CancelProbes("B")]
    # only a prefix of the batch below was pushed: the rest and the stacked batch are tested again
    assert q.decide(two_stacked(target="S1")) == [
        Land("B", 1, "T0", "S1", ("a",), pushed=True),
        Requeue(("b",), "batch B landed up to position 1 before a restart"),
        Requeue(("c", "d"), "batch B below it landed only up to position 1; tested again"), CancelProbes("C"),
        CancelProbes("B")]


def test_batches_that_do_not_stack_are_rebuilt():
    # two batches on the same base (say, two replicas' work after a hand-over race)
    two = in_batch(["a", "b"]) + in_batch(["c"], bid="C", commits="U")
    effects = q.decide(QueueState(two, target_head="T0"))
    assert effects == [Requeue(("a", "b", "c"), "the batch was incomplete after a restart; it is rebuilt"),
                       CancelProbes("B"), CancelProbes("C")]
    assert q.stack(QueueState(two)) is None
    assert [c.name for c in (q.stack(two_stacked()) or [[]])[0]] == ["a", "b"]


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
    depth: int = q.DEFAULT_DEPTH
    did_not_stack: set[tuple[str, str]] = field(default_factory=set)
    stacked_gates: int = 0
    """Gates started on a batch that was not the head batch when they started."""
    offline_probes: int = 0
    """Bisection rounds started while another batch was on the line."""
    max_probes: int = 0

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
                          broke=frozenset(self.broke), depth=self.depth, did_not_stack=frozenset(self.did_not_stack),
                          max_probes=self.max_probes)

    def prepare(self, members: tuple[str, ...], onto: str | None) -> Prepared:
        # a stacked batch is built on the speculative commit below it, which must be the top of the stack
        if onto is not None:
            chain = q.stack(self.state())
            assert chain and chain[-1][-1].commit == onto
        content = tuple(self.target) if onto is None else self.contents[onto]
        start = self.head() if onto is None else onto
        result: list[Applied | DidNotApply | AlreadyOnTarget] = []
        for m in members:
            if m in self.target:
                result.append(AlreadyOnTarget(m, self.head()))
                continue
            assert m not in content, f"{m} is in a batch below"
            partner = self.conflicts.get(m)
            if partner is not None and partner in content:
                result.append(DidNotApply(m, ("f",), with_target=partner in self.target))
                continue
            content = (*content, m)
            result.append(Applied(m, self.commit_of(content)))
        return Prepared(start, tuple(result), target=None if onto is None else self.head())

    def apply(self, effects: list[q.Effect]) -> None:
        for e in effects:
            if isinstance(e, PrepareBatch):
                self.apply(q.prepared(self.state(), self.prepare(e.members, e.onto)))
            elif isinstance(e, JoinBatch):
                self.jobs[e.name] = replace(self.jobs[e.name], batch_id=e.batch_id, position=e.position,
                                            commit=e.commit, base=e.base)
            elif isinstance(e, StartProbes):
                chain = q.stack(self.state()) or []
                stacked = [b for b in chain[1:] if b[0].batch_id == e.batch_id]
                if stacked:
                    self.stacked_gates += 1
                    assert e.positions == (len(stacked[0]),), "a stacked batch is only gated whole"
                if e.positions != (len([c for c in self.jobs.values() if c.batch_id == e.batch_id]),) and chain \
                        and all(b[0].batch_id != e.batch_id for b in chain):
                    self.offline_probes += 1  # a bisection round while another batch is on the line
                for p in e.positions:
                    self.probes.setdefault((e.batch_id, p), Probe(p, "running", "", e.batch_id))
            elif isinstance(e, Land):
                probe = self.probes.get((e.batch_id, e.position))
                assert probe is not None and probe.state == "passed", "landed an untested prefix"
                assert e.commit in self.passed_commits
                if not e.pushed:
                    assert self.head() == e.base, "landed on a target that is not the batch's base"
                    new = list(self.contents[e.commit])
                    for m in new[len(self.target):]:
                        assert m not in self.target, f"{m} merged twice"
                    assert new[:len(self.target)] == self.target
                    self.target = new
                    self.pushes.append(e.commit)
                    if self.rng.random() < self.crash_after_push:
                        self.windows.clear()  # the operator died before recording: statuses still say Testing
                        return
                else:  # what was pushed before a restart: the target holds it (and maybe a stacked push on it)
                    landed = list(self.contents[e.commit])
                    assert self.target[:len(landed)] == landed
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
            elif isinstance(e, DidNotStack):
                self.did_not_stack.add((e.name, e.onto))
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
        self.probes[key] = Probe(pos, "passed" if ok else "failed", "" if ok else "tests failed", bid)
        return True


@settings(max_examples=examples(200), deadline=None)
@given(n=st.integers(1, 14), culprit_rate=st.sampled_from([0.0, 0.1, 0.3]), window=st.integers(1, 8),
       conflict_pairs=st.integers(0, 3), seed=st.integers(0, 2**32 - 1), crash=st.sampled_from([0.0, 0.3]),
       depth=st.integers(1, 3), arrivals=st.booleans(), max_probes=st.sampled_from([0, 1, 2]))
def test_queue_invariants_under_random_histories(n, culprit_rate, window, conflict_pairs, seed, crash, depth,
                                                 arrivals, max_probes):
    rng = random.Random(seed)
    order = [f"c{i:02d}" for i in range(n)]
    culprits = {c for c in order if rng.random() < culprit_rate}
    conflicts: dict[str, str] = {}
    for _ in range(conflict_pairs):
        a, b = rng.sample(order, 2) if n >= 2 else (order[0], order[0])
        if a != b:
            conflicts[b] = a
    w = World(culprits=culprits, conflicts=conflicts, order=order, max_window=window, rng=rng,
              crash_after_push=crash, depth=depth, max_probes=max_probes)
    # with arrivals, candidates become ready one by one while batches are gated (workers finishing)
    w.jobs = {c: Candidate(c, "b", ready=not arrivals) for c in order}
    for _ in range(3000):
        if len(w.out) == n:
            break
        waiting = [c for c in order if not w.jobs[c].ready]
        if waiting and rng.random() < 0.3:
            w.jobs[waiting[0]] = replace(w.jobs[waiting[0]], ready=True)
            continue
        if rng.random() < 0.05:
            w.windows.clear()  # a restart forgets the in-memory window and what did not stack
            w.broke.clear()
            w.did_not_stack.clear()
        if w.finish_a_probe() and rng.random() < 0.5:
            continue
        effects = q.decide(w.state())
        if all(isinstance(e, Wait) for e in effects) and not w.finish_a_probe():
            if waiting:
                continue
            # every conflicted candidate waits for the target to move and nothing else can happen
            assert all(w.jobs[c].conflict_base == w.head() for c in order if c not in w.out)
            break
        w.apply(effects)
        chain = q.stack(w.state())
        assert chain is not None and len(chain) <= depth
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
    if depth == 1 or window == 1:
        assert w.stacked_gates == 0


def test_candidates_arriving_while_a_batch_is_gated_are_gated_on_top_of_it():
    """The random histories above, steered: the stacked gates happen (a property test that never stacked
    would pass vacuously)."""
    stacked = 0
    for seed in range(30):
        rng = random.Random(seed)
        order = [f"c{i:02d}" for i in range(8)]
        w = World(culprits=set(), conflicts={}, order=order, max_window=4, rng=rng, depth=2)
        w.jobs = {c: Candidate(c, "b", ready=i < 2) for i, c in enumerate(order)}
        for _ in range(500):
            if len(w.out) == len(order):
                break
            waiting = [c for c in order if not w.jobs[c].ready]
            if waiting and rng.random() < 0.5:
                w.jobs[waiting[0]] = replace(w.jobs[waiting[0]], ready=True)
            elif rng.random() < 0.3:
                w.finish_a_probe()
            else:
                w.apply(q.decide(w.state()))
        assert w.target == order  # each lands in queue order, each once
        stacked += w.stacked_gates
    assert stacked > 0


# --- bisection off the line ----------------------------------------------------------------------------


def test_a_failed_batch_is_bisected_off_the_line_while_the_next_batch_is_gated_on_the_target():
    """bench-fleet at a thousand agents: each culprit stopped the line for its bisection round (the batch stacked on
    it dropped, nothing else gated), two to three batch cycles of ~10 s each, and 14 came in a run. Now the failed
    batch leaves the line: the batch stacked on it and the next candidates are gated on the target at once, while
    its prefixes are gated on the commit it was built on."""
    s = QueueState(in_batch(["a", "b", "c", "d"]) + cands("e", "f"), probes=(probe(4, "failed", "boom"),),
                   target_head="T0", max_window={"b": 4})
    assert q.decide(s) == [StartProbes("B", (1, 2, 3)), PrepareBatch("b", ("e", "f"))]
    line = in_batch(["e", "f"], bid="N", commits="N")
    s = replace(s, candidates=in_batch(["a", "b", "c", "d"]) + line,
                probes=(*s.probes, probe(1, "running"), probe(2, "running"), probe(3, "running"),
                        probe(2, "running", bid="N")))
    assert q.lanes(s) == q.Lanes(line=[list(line)], bisecting=[list(in_batch(["a", "b", "c", "d"]))], doomed=[])
    assert [e for e in q.decide(s) if not isinstance(e, Wait)] == []  # both wait for their gates
    # the culprit is found while the line's batch is still under test: what passed goes back to the queue (landing
    # it would move the target under the line's batch)
    found = (probe(4, "failed", "boom"), probe(1, "passed"), probe(2, "failed", "E at b"), probe(3, "failed"),
             probe(2, "running", bid="N"))
    assert q.decide(replace(s, probes=found)) == [
        Evict("b", "E at b"), Requeue(("a", "c", "d"), "batch B broke at b; tested again without it"),
        SetWindow("b", 4, broke=True), CancelProbes("B")]
    # ... or after the line's batch landed: the target moved, the same
    landed = replace(s, candidates=in_batch(["a", "b", "c", "d"]), probes=found[:4], target_head="N2")
    assert q.decide(landed)[:2] == [Evict("b", "E at b"),
                                    Requeue(("a", "c", "d"), "batch B broke at b; tested again without it")]
    # nothing on the line and the target where the batch was built: the passing prefix lands, as before
    alone = replace(landed, target_head="T0")
    assert q.decide(alone)[:3] == [Land("B", 1, "T0", "S1", ("a",)), Evict("b", "E at b"),
                                   Requeue(("c", "d"), "batch B broke at b; tested again without it")]


def test_a_bisection_goes_on_off_the_line_round_by_round_and_a_restart_reads_it_back():
    s = QueueState(in_batch(list("abcdefgh")) + in_batch(["x"], bid="N", commits="N"),
                   probes=(probe(8, "failed"), probe(4, "passed"), probe(1, "running", bid="N")), target_head="T0",
                   max_probes=1)
    assert q.decide(s) == [StartProbes("B", (6,))]  # the line's batch waits for its gate meanwhile
    # our own push of the passing prefix before a restart: recorded (the rest tested again), the line untouched
    pushed = replace(s, candidates=in_batch(list("abcdefgh")), target_head="S4")
    assert q.decide(pushed) == [Land("B", 4, "T0", "S4", tuple("abcd"), pushed=True),
                                Requeue(tuple("efgh"), "batch B landed up to position 4 before a restart"),
                                CancelProbes("B")]
    # two batches bisected at once on the same target, the line empty: one lands what passed, the other does not
    # land on a target that is about to move (its passing prefix is tested again)
    two_failed = QueueState(in_batch(["a", "b"]) + in_batch(["c", "d"], bid="C", commits="U"), target_head="T0",
                            probes=(probe(2, "failed", "E at b"), probe(1, "passed"),
                                    probe(2, "failed", "E at d", bid="C"), probe(1, "passed", bid="C")))
    effects = q.decide(two_failed)
    assert [e for e in effects if isinstance(e, Land)] == [Land("B", 1, "T0", "S1", ("a",))]
    assert Requeue(("c",), "batch C broke at d; tested again without it") in effects
    assert Evict("b", "E at b") in effects and Evict("d", "E at d") in effects
    # two batches on the line's root (neither failed) are still a broken stack
    two = QueueState(in_batch(["a"]) + in_batch(["b"], bid="C", commits="U"), target_head="T0")
    assert q.lanes(two) is None


def test_culprits_are_found_off_the_line_in_random_histories():
    """The property test above, steered: bisection rounds run while another batch is on the line (a property test
    that never did would pass vacuously), and still no innocent is evicted, no culprit merged, every innocent lands
    once."""
    offline = 0
    for seed in range(40):
        rng = random.Random(seed)
        order = [f"c{i:02d}" for i in range(16)]
        culprits = {order[3], order[9]}
        w = World(culprits=culprits, conflicts={}, order=order, max_window=4, rng=rng, depth=2,
                  max_probes=seed % 3)
        w.jobs = {c: Candidate(c, "b", ready=i < 6) for i, c in enumerate(order)}
        for _ in range(3000):
            if len(w.out) == len(order):
                break
            waiting = [c for c in order if not w.jobs[c].ready]
            if waiting and rng.random() < 0.3:
                w.jobs[waiting[0]] = replace(w.jobs[waiting[0]], ready=True)
            elif rng.random() < 0.4:
                w.finish_a_probe()
            else:
                w.apply(q.decide(w.state()))
        assert {c for c, how in w.out.items() if how == "evicted"} == culprits
        assert sorted(w.target) == sorted(set(order) - culprits) and len(w.target) == len(set(w.target))
        offline += w.offline_probes
    assert offline > 0
