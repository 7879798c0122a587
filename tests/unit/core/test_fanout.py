"""Best-of-N decisions (core.fanout): candidates, gates, the judge, and how the round ends."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from longshot.api.agenttask import AgentTaskSpec
from longshot.core import fanout
from longshot.core.fanout import CandidateView, CreateCandidates, Finish, GateCandidate, JudgeView, Snapshot, StartJudge

pytestmark = pytest.mark.unit


def cand(i: int, phase: str = "Succeeded", gate: str = "Pending", **kw: Any) -> CandidateView:
    commit = kw.pop("commit", f"c{i}c{i}c{i}0")
    return CandidateView(name=f"b-api-c{i}", phase=phase, branch=f"longshot/b/b-api-c{i}", commit=commit,
                         handoff={"commit": commit}, gate=gate, **kw)  # type: ignore[arg-type]


def snap(*candidates: CandidateView, judge: JudgeView | None = None, **kw: Any) -> Snapshot:
    return Snapshot(task="b-api", round=1, candidates=candidates, judge=judge, **kw)


def test_settings_the_tasks_own_win_the_builds_apply_to_planned_workers():
    assert fanout.effective({"count": 2}, {"count": 3}, role="worker", planned=True) == fanout.Settings(2)
    assert fanout.effective(None, {"count": 3, "models": ["a"]}, role="worker", planned=True) == \
        fanout.Settings(3, ("a",))
    assert fanout.effective(None, {"count": 3}, role="worker", planned=False) is None  # a hand-made task
    assert fanout.effective(None, {"count": 3}, role="fixer", planned=True) is None
    assert fanout.effective({"count": 2}, None, role="fixer", planned=False) == fanout.Settings(2)
    assert fanout.effective({"count": 1}, {"count": 3}, role="worker", planned=True) is None
    assert fanout.effective({"count": 2}, None, role="reviewer", planned=True) is None


def test_names_branches_and_models_are_deterministic():
    assert [fanout.candidate_name("b-api", 1, i) for i in (1, 2)] == ["b-api-c1", "b-api-c2"]
    assert fanout.candidate_name("b-api", 2, 1) == "b-api-r2-c1" and fanout.judge_name("b-api", 2) == "b-api-r2-judge"
    s = fanout.Settings(3, ("m-a", "m-b"))
    assert [fanout.model_for(s, i, "default") for i in (1, 2, 3)] == ["m-a", "m-b", "m-a"]
    assert fanout.model_for(fanout.Settings(2), 1, "default") == "default"
    assert len(fanout.candidate_name("x" * 70, 1, 10)) <= 63


def test_candidate_manifests_are_owned_by_the_task_and_carry_its_work():
    task = {"metadata": {"name": "b-api", "namespace": "ns", "uid": "u1"},
            "spec": {"buildRef": {"name": "b"}, "description": "answer()", "role": "worker", "priority": 7,
                     "scope": ["calc/**"], "dependsOn": ["b-models"], "timeoutSeconds": 600}}
    ms = fanout.candidate_manifests(task, "b", 1, fanout.Settings(2, ("m-a",)), "default", {"app": "x"})
    assert [m["metadata"]["name"] for m in ms] == ["b-api-c1", "b-api-c2"]
    m = ms[1]
    assert m["metadata"]["ownerReferences"][0] == {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                                                    "name": "b-api", "uid": "u1", "controller": True,
                                                    "blockOwnerDeletion": True}
    assert m["metadata"]["labels"][fanout.FANOUT_LABEL] == "b-api"
    assert m["metadata"]["labels"][fanout.PURPOSE_LABEL] == "candidate"
    assert m["metadata"]["annotations"] == {fanout.MODEL_ANNOTATION: "m-a"}
    assert m["spec"]["branch"] == "longshot/ns/b/b-api-c2" and "dependsOn" not in m["spec"]
    assert m["spec"]["priority"] == 7 and m["spec"]["timeoutSeconds"] == 600
    AgentTaskSpec.model_validate(m["spec"])
    judge = fanout.judge_manifest(task, "b", 1, ["b-api-c1", "b-api-c2"], {})
    assert judge["spec"]["role"] == "reviewer" and judge["metadata"]["name"] == "b-api-judge"
    AgentTaskSpec.model_validate(judge["spec"])


def test_missing_candidates_are_created_first():
    s = snap(CandidateView("b-api-c1", "Missing"), cand(2, "Running"))
    assert fanout.decide(s) == [CreateCandidates(("b-api-c1",))]


def test_each_succeeded_candidate_is_gated_once_and_the_round_waits():
    s = snap(cand(1), cand(2, "Running"), cand(3, gate_started=True))
    assert fanout.decide(s) == [GateCandidate("b-api-c1")]


def test_without_a_gate_command_candidates_pass_and_one_passing_candidate_wins_alone():
    s = snap(cand(1, gate="Passed"), cand(2, "Failed", failure="no idea"))
    (finish,) = fanout.decide(s)
    assert finish == Finish("b-api-c1", ("the only candidate that passed its gate",),
                            "b-api-c1 wins: the only candidate that passed its gate")


def test_two_passing_candidates_go_to_the_judge():
    s = snap(cand(1, gate="Passed"), cand(2, gate="Failed", gate_reason="1 test failed"), cand(3, gate="Passed"))
    assert fanout.decide(s) == [StartJudge("b-api-judge", ("b-api-c1", "b-api-c3"))]
    running = fanout.Snapshot(**{**s.__dict__, "judge": JudgeView("b-api-judge", "Running")})
    assert fanout.decide(running) == []


def test_the_judges_pick_is_checked_against_the_passing_candidates():
    base = (cand(1, gate="Passed"), cand(2, gate="Failed"), cand(3, gate="Passed"))
    ok = snap(*base, judge=JudgeView("b-api-judge", "Succeeded", commit="c3c3c30", branch="longshot/b/b-api-c3",
                                     reasons=("smaller",)))
    assert fanout.decide(ok) == [Finish("b-api-c3", ("smaller",), "the judge picked b-api-c3: smaller")]
    for commit, branch in (("c2c2c20", "longshot/b/b-api-c2"), ("fffffff", None), ("c3c3c30", "longshot/b/other")):
        bad = snap(*base, judge=JudgeView("b-api-judge", "Succeeded", commit=commit, branch=branch))
        (finish,) = fanout.decide(bad)
        assert finish.winner is None and "not a candidate that passed its gate" in finish.message
    failed = snap(*base, judge=JudgeView("b-api-judge", "Failed", failure="the model gave up"))
    (finish,) = fanout.decide(failed)
    assert finish.winner is None and "the judge b-api-judge failed: the model gave up" in finish.message


def test_when_every_candidate_is_out_each_reason_is_given():
    s = snap(cand(1, "Failed", failure="no idea"), cand(2, gate="Failed", gate_reason="1 failed"),
             cand(3, commit=None), cand(4, "Cancelled"))
    (finish,) = fanout.decide(s)
    assert finish.winner is None
    assert finish.reasons == ("b-api-c1: failed: no idea", "b-api-c2: failed its gate: 1 failed",
                              "b-api-c3: it changed nothing", "b-api-c4: cancelled")


def test_a_stopped_round_cancels_what_still_runs():
    s = snap(cand(1, "Running"), cand(2), CandidateView("b-api-c3", "Missing"),
             judge=JudgeView("b-api-judge", "Pending"), running=False)
    assert fanout.decide(s) == [fanout.CancelTasks(("b-api-c1", "b-api-judge"))]
    assert fanout.decide(snap(cand(1), running=False)) == []


def test_status_records_every_candidate_and_the_decision():
    s = fanout.with_gate(snap(cand(1, gate="Passed", model="m-a"), cand(2)), "b-api-c2", "Failed", "conflicts")
    wire = fanout.status(s, fanout.Record("b-api-judge", "b-api-c1", ("simplest",)))
    assert wire == {"candidates": [
        {"name": "b-api-c1", "gate": "Passed", "model": "m-a", "branch": "longshot/b/b-api-c1", "commit": "c1c1c10"},
        {"name": "b-api-c2", "gate": "Failed", "branch": "longshot/b/b-api-c2", "commit": "c2c2c20",
         "reason": "failed its gate: conflicts"}],
        "reasons": ["simplest"], "judgeTask": "b-api-judge", "winner": "b-api-c1"}


def test_candidates_differ_in_backend_in_turn_keeping_the_tasks_own_agent_settings():
    s = fanout.effective(None, {"count": 3, "backends": ["anthropic", "command"], "models": ["m"],
                                "judge": "compare"}, role="worker", planned=True)
    assert s == fanout.Settings(3, ("m",), ("anthropic", "command"), "compare")
    assert [fanout.backend_for(s, i) for i in (1, 2, 3)] == ["anthropic", "command", "anthropic"]
    assert fanout.backend_for(fanout.Settings(2), 1) is None
    task = {"metadata": {"name": "b-api", "namespace": "ns", "uid": "u1"},
            "spec": {"buildRef": {"name": "b"}, "description": "answer()", "role": "worker",
                     "agent": {"promptAddendum": "be brief", "backend": "openai"}}}
    ms = fanout.candidate_manifests(task, "b", 1, s, "default", {})
    # an annotation written by the operator, as the model is: `command` cannot be set in a task's spec.agent
    assert [m["metadata"]["annotations"] for m in ms] == [
        {fanout.MODEL_ANNOTATION: "m", fanout.BACKEND_ANNOTATION: b} for b in ("anthropic", "command", "anthropic")]
    assert all(m["spec"]["agent"] == {"promptAddendum": "be brief", "backend": "openai"} for m in ms)  # the task's
    plain = fanout.candidate_manifests(task, "b", 1, fanout.Settings(2), "default", {})
    assert fanout.BACKEND_ANNOTATION not in plain[0]["metadata"]["annotations"]
    for m in ms:
        AgentTaskSpec.model_validate(m["spec"])


def test_compare_picks_the_least_costly_passing_candidate_without_a_judge_and_records_the_ranking():
    s = snap(cand(1, gate="Passed", cost=0.30, tokens=900, files=2, backend="anthropic", model="m"),
             cand(2, gate="Passed", cost=0.10, tokens=5000, files=9, backend="command", model="m"),
             cand(3, gate="Failed", cost=0.01, tokens=10, files=1),
             cand(4, gate="Passed", cost=0.10, tokens=5000, files=3), judge_mode="compare")
    (done,) = fanout.decide(s)
    assert isinstance(done, Finish) and done.winner == "b-api-c4"  # c2's cost and tokens, fewer files
    assert done.reasons[0] == "compared on cost, then tokens, then files changed (judge: compare)"
    assert done.reasons[1:] == (
        "1. b-api-c4: passed its gate; cost 0.1000, 5000 tokens, 3 file(s) changed",
        "2. b-api-c2 (command, m): passed its gate; cost 0.1000, 5000 tokens, 9 file(s) changed",
        "3. b-api-c1 (anthropic, m): passed its gate; cost 0.3000, 900 tokens, 2 file(s) changed")
    # a tie on everything: candidate order decides, so a replay decides the same
    tie = fanout.decide(snap(cand(2, gate="Passed"), cand(1, gate="Passed"), judge_mode="compare"))
    assert isinstance(tie[0], Finish) and tie[0].winner == "b-api-c2"
    # the reviewer mode still asks a judge
    assert isinstance(fanout.decide(snap(cand(1, gate="Passed"), cand(2, gate="Passed")))[0], StartJudge)


def test_status_records_each_candidates_backend():
    wire = fanout.status(snap(cand(1, gate="Passed", backend="command")), fanout.Record())
    assert wire["candidates"][0]["backend"] == "command"


# --- judge: summarize ------------------------------------------------------------------------------------

def test_summarize_shows_the_judge_every_candidate_that_committed_passing_first():
    s = snap(cand(1, gate="Failed", gate_reason="1 test failed"), cand(2, gate="Passed"), cand(3, commit=None),
             cand(4, "Failed", failure="gave up"), judge_mode="summarize")
    # one passed, but two produced a commit: the judge compares them (a reviewer judge would not run at all)
    assert fanout.decide(s) == [StartJudge("b-api-judge", ("b-api-c2", "b-api-c1"))]
    assert fanout.decide(replace(s, judge_mode="reviewer"))[0].winner == "b-api-c2"  # type: ignore[union-attr]
    alone = snap(cand(1, gate="Passed"), cand(2, commit=None), judge_mode="summarize")
    (finish,) = fanout.decide(alone)
    assert isinstance(finish, Finish) and finish.winner == "b-api-c1" and finish.summary == ""


def test_summarize_records_the_judges_comparison_and_still_checks_its_pick():
    base = (cand(1, gate="Passed"), cand(2, gate="Failed"), cand(3, gate="Passed"))
    text = "b-api-c1 multiplies; b-api-c2 returns 41 and failed; b-api-c3 returns the constant."
    judge = JudgeView("b-api-judge", "Succeeded", commit="c3c3c30", branch="longshot/b/b-api-c3",
                      reasons=("smaller",), summary=text)
    (finish,) = fanout.decide(snap(*base, judge=judge, judge_mode="summarize"))
    assert finish == Finish("b-api-c3", ("smaller",), "the judge picked b-api-c3: smaller", text)
    (plain,) = fanout.decide(snap(*base, judge=judge))  # a reviewer judge's one-line summary is not recorded
    assert isinstance(plain, Finish) and plain.summary == ""
    # the failed candidate was shown, but cannot win
    (bad,) = fanout.decide(snap(*base, judge=replace(judge, commit="c2c2c20", branch="longshot/b/b-api-c2"),
                                judge_mode="summarize"))
    assert isinstance(bad, Finish) and bad.winner is None and bad.summary == ""
    wire = fanout.status(snap(*base), fanout.Record("b-api-judge", "b-api-c3", ("smaller",), text))
    assert wire["summary"] == text
    long = fanout.status(snap(*base), fanout.Record(summary="x" * 100_000))["summary"]
    assert len(long) <= fanout.MAX_SUMMARY and long.endswith("ledger entry has it all]")
    assert "summary" not in fanout.status(snap(*base), fanout.Record())


def test_a_summarize_judge_is_annotated_and_asked_to_compare():
    task = {"metadata": {"name": "b-api", "namespace": "ns", "uid": "u1"},
            "spec": {"buildRef": {"name": "b"}, "description": "answer()", "role": "worker"}}
    m = fanout.judge_manifest(task, "b", 1, ("b-api-c1", "b-api-c2"), {}, "summarize")
    assert m["metadata"]["annotations"] == {"longshot.dev/reduction": "summarize"}
    assert "Compare every candidate in a summary" in m["spec"]["description"]
    plain = fanout.judge_manifest(task, "b", 1, ("b-api-c1", "b-api-c2"), {})
    assert "annotations" not in plain["metadata"] and "Compare" not in plain["spec"]["description"]
