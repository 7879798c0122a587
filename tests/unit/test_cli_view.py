"""``kubectl longshot`` without a cluster: the pure tree view, usage errors (exit 2), the retry token."""

from __future__ import annotations

import io

import pytest

from longshot.cli import main as cli
from longshot.cli import view

pytestmark = pytest.mark.unit


def obj(kind: str, name: str, spec=None, status=None, created="2025-01-01T00:00:00Z"):
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": spec or {}, "status": status or {}}


def test_the_tree_has_the_builds_tasks_attempts_and_every_merge_job_with_the_current_one_marked():
    build = obj("BuildRequest", "demo", status={"phase": "Working", "conditions": [
        {"type": "Ready", "status": "False", "reason": "Working", "message": ""}]})
    t1 = obj("AgentTask", "demo-add", {"buildRef": {"name": "demo"}, "role": "worker", "suspend": True},
             {"phase": "Succeeded", "mergeJob": "demo-add-a2", "attempts": [
                 {"number": 1, "pod": "demo-add-a1", "model": "m1", "exitReason": "Completed", "endTime": "x"},
                 {"number": 2, "pod": "demo-add-a2", "model": "m2", "exitReason": "Completed", "endTime": "y"}]},
             created="2025-01-01T00:00:02Z")
    t0 = obj("AgentTask", "demo-planner", {"buildRef": {"name": "demo"}, "role": "planner"},
             {"phase": "AwaitingInput", "question": "Which\x1b[31m port?\n", "attempts": [
                 {"number": 1, "pod": "demo-planner-a1"}]}, created="2025-01-01T00:00:01Z")
    other = obj("AgentTask", "x-add", {"buildRef": {"name": "x"}})
    jobs = [obj("MergeJob", "demo-add", {"buildRef": {"name": "demo"}, "taskRef": {"name": "demo-add"}},
                {"phase": "Merged", "mergedCommit": "a" * 40}),
            obj("MergeJob", "demo-add-a2", {"buildRef": {"name": "demo"}, "taskRef": {"name": "demo-add"}},
                {"phase": "Queued"}, created="2025-01-01T00:00:09Z")]
    v = view.tree(build, [t1, other, t0], jobs)
    assert [t["name"] for t in v["tasks"]] == ["demo-planner", "demo-add"]
    add = v["tasks"][1]
    assert add["suspended"] and [a["model"] for a in add["attempts"]] == ["m1", "m2"]
    assert [(j["name"], j["current"]) for j in add["mergeJobs"]] == [("demo-add", False), ("demo-add-a2", True)]
    text = view.tree_text(v)
    assert text.splitlines()[0] == "BuildRequest/demo  Working  Ready=False/Working"
    assert "MergeJob/demo-add  Merged  aaaaaaaaaaaa  (replaced by a relaunch)" in text
    assert "attempt 2  demo-add-a2  model=m2  Completed" in text
    assert "question: Which port?" in text and "\x1b" not in text  # agent text cannot drive the terminal
    assert "[suspended]" in text


@pytest.mark.parametrize("argv", [[], ["tree"], ["bogus"], ["relaunch", "t", "--timeout", "5"],
                                  ["logs", "t", "--attempt", "0"], ["tree", "b", "-o", "xml"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv, out=io.StringIO(), err=io.StringIO())
    assert e.value.code == 2


def test_flags_may_come_before_or_after_the_command():
    a = cli.parser().parse_args(["-n", "first", "tree", "b"])
    assert a.namespace == "first"
    a = cli.parser().parse_args(["tree", "b", "-n", "second", "--context", "c"])
    assert (a.namespace, a.context) == ("second", "c")


def test_retry_tokens_differ_and_fit_the_field():
    a, b = cli.token(), cli.token()
    assert a != b and len(a) <= 64


def test_names_may_carry_their_kind_as_kubectl_writes_it():
    assert cli.name_of("at/t1", "AgentTask") == cli.name_of("t1", "AgentTask") == "t1"
    assert cli.name_of("mergejob/m1", "MergeJob") == "m1"
    with pytest.raises(cli.CLIError, match="expected a AgentTask"):
        cli.name_of("br/b1", "AgentTask")


def test_the_tree_says_why_a_pending_task_waits_for_capacity():
    build = obj("BuildRequest", "demo", status={"phase": "Working"})
    waiting = obj("AgentTask", "demo-a", {"buildRef": {"name": "demo"}}, {"phase": "Pending", "conditions": [
        {"type": "Admitted", "status": "False", "reason": "WaitingForCapacity",
         "message": "waiting for capacity: place 3 in line; namespace ns runs 7 agent(s), its share 7.00\n"}]})
    running = obj("AgentTask", "demo-b", {"buildRef": {"name": "demo"}}, {"phase": "Running", "conditions": [
        {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "attempt 1 admitted"}]},
        created="2025-01-01T00:00:05Z")
    v = view.tree(build, [waiting, running], [])
    assert v["tasks"][0]["waiting"].startswith("WaitingForCapacity: waiting for capacity: place 3 in line")
    assert v["tasks"][1]["waiting"] is None
    text = view.tree_text(v)
    assert "└── WaitingForCapacity: waiting for capacity: place 3 in line" in text.replace("│   ", "").replace(
        "    └──", "└──")
