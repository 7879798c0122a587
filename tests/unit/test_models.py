import pytest
from pydantic import ValidationError

from longshot.api import agenttask, buildrequest, handoff, mergejob


def build_spec(**over):
    spec = {"request": "Build it", "repository": {"url": "https://git.example.com/o/r.git"}}
    spec.update(over)
    return buildrequest.BuildRequestSpec.model_validate(spec)


def test_defaults_fill_every_section():
    spec = build_spec()
    assert spec.repository.base_branch == "main"
    assert spec.workers.max == 4
    assert spec.merge.strategy == "rebase"
    assert spec.finalization.max_attempts == 3
    assert spec.quality_gate.profile == "standard"
    assert spec.suspend is False


def test_wire_format_is_camel_case_and_round_trips():
    spec = build_spec(workers={"max": 8}, qualityGate={"profile": "strict"})
    wire = spec.to_wire()
    assert wire["workers"] == {"max": 8}
    assert wire["qualityGate"]["profile"] == "strict"
    assert "baseBranch" in wire["repository"]
    assert buildrequest.BuildRequestSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"request": ""}, "request"),
        ({"workers": {"max": 0}}, "workers.max"),
        ({"merge": {"strategy": "squash"}}, "merge.strategy"),
        ({"repository": {"url": "not a url"}}, "repository.url"),
        ({"retry": {"maxAttempts": 11}}, "retry.maxAttempts"),
    ],
)
def test_invalid_build_specs_name_the_field(patch, field):
    with pytest.raises(ValidationError) as err:
        build_spec(**patch)
    locs = {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}
    assert field in locs


@pytest.mark.parametrize("url", [
    "https://git.example.com/o/r.git", "http://127.0.0.1:8080/r.git", "ssh://git@host/r.git",
    "git://host/r.git", "file:///srv/git/r.git", "git@github.com:org/app.git",
])
def test_repository_urls_git_accepts(url):
    assert build_spec(repository={"url": url}).repository.url == url


def test_agent_task_defaults_and_limits():
    spec = agenttask.AgentTaskSpec.model_validate({"buildRef": {"name": "b"}, "description": "do it"})
    assert (spec.role, spec.priority, spec.depends_on) == ("worker", 5, [])
    with pytest.raises(ValidationError):
        agenttask.AgentTaskSpec.model_validate({"buildRef": {"name": "b"}, "description": "x", "priority": 11})


def test_merge_job_requires_branch_and_target():
    with pytest.raises(ValidationError) as err:
        mergejob.MergeJobSpec.model_validate({"buildRef": {"name": "b"}, "taskRef": {"name": "t"}})
    assert {e["loc"][0] for e in err.value.errors()} == {"branch", "target"}


def test_status_models_accept_what_the_operator_writes():
    status = buildrequest.BuildRequestStatus.model_validate(
        {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "Initializing",
                         "lastTransitionTime": "2026-01-01T00:00:00Z"}],
         "tasks": {"total": 3, "succeeded": 1, "progress": "1/3"}})
    assert status.conditions[0].last_transition_time.year == 2026
    assert status.tasks.progress == "1/3"


def test_handoff_inline_round_trip_and_errors():
    h = handoff.Handoff(task="t1", role="worker", outcome="succeeded", commit="abcdef12",
                        files_changed=["a.py"], usage=handoff.Usage(input_tokens=10, output_tokens=5))
    parsed = handoff.parse_termination_message(handoff.encode(h).decode())
    assert parsed == h and parsed.usage.tokens == 15
    for bad, why in [("", "empty"), ("{", "not JSON"), ("[]", "not a JSON object"),
                     ('{"kind": "Other"}', "kind 'Other'"), ('{"kind": "Handoff", "task": "t"}', "role")]:
        with pytest.raises(handoff.HandoffError, match=why):
            handoff.parse_termination_message(bad)


def test_handoff_pointer_checks_the_digest():
    h = handoff.Handoff(task="t1", role="planner", outcome="succeeded",
                        tasks=[handoff.PlannedTask(name=f"t{i}", description="x" * 100) for i in range(200)])
    data = handoff.encode(h)
    assert not handoff.fits_termination_message(data)
    pointer = handoff.HandoffPointer(ref=handoff.handoff_ref("ns", "b", "t1", 1), commit="abcdef1",
                                     sha256=handoff.digest(data), size=len(data))
    assert len(handoff.parse_handoff_bytes(data, pointer).tasks) == 200
    with pytest.raises(handoff.HandoffError, match="digest"):
        handoff.parse_handoff_bytes(data + b" ", pointer)


# --- issue 14: iterations, intake, fan-out, awaits, people in the loop ------------------------------

def test_planner_defaults_for_iterations_and_roadmaps():
    spec = build_spec(planner={"source": "roadmap"})
    assert spec.planner.max_iterations == 3
    assert spec.planner.roadmap_path == "ROADMAP.md"
    assert spec.merge.require_approval is False and spec.fanout is None


def test_issue_source_fields_and_defaults():
    spec = build_spec(planner={"source": "issues", "issues": {
        "repository": "org/app", "labels": ["longshot"], "credentialsSecret": "gh-token"}})
    issues = spec.planner.issues
    assert (issues.provider, issues.url, issues.comment) == ("github", None, True)
    assert issues.to_wire() == {"provider": "github", "repository": "org/app", "labels": ["longshot"],
                                "credentialsSecret": "gh-token", "comment": True}
    gitlab = build_spec(planner={"source": "issues", "issues": {"provider": "gitlab", "repository": "123",
                                                               "url": "https://gitlab.example.com/api/v4"}})
    assert gitlab.planner.issues.repository == "123"


@pytest.mark.parametrize(("patch", "field"), [
    ({"planner": {"maxIterations": 0}}, "planner.maxIterations"),
    ({"planner": {"maxIterations": 21}}, "planner.maxIterations"),
    ({"planner": {"issues": {"repository": "no spaces/allowed here"}}}, "planner.issues.repository"),
    ({"planner": {"issues": {"repository": "o/r", "provider": "svn"}}}, "planner.issues.provider"),
    ({"planner": {"issues": {"repository": "PROJ", "provider": "jira", "doneState": ""}}}, "planner.issues.doneState"),
    ({"fanout": {"count": 11}}, "fanout.count"),
    ({"fanout": {"count": 0}}, "fanout.count"),
    ({"fanout": {"models": ["a"]}}, "fanout.count"),
    ({"fanout": {"count": 2, "judge": "vote"}}, "fanout.judge"),
])
def test_invalid_issue_14_fields_name_the_field(patch, field):
    with pytest.raises(ValidationError) as err:
        build_spec(**patch)
    locs = {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}
    assert field in locs


def test_agent_task_fanout_dependency_policy_and_answer():
    spec = agenttask.AgentTaskSpec.model_validate({
        "buildRef": {"name": "b"}, "description": "x", "dependsOn": ["a", "b", "c"],
        "dependsOnPolicy": {"type": "quorum", "k": 2}, "fanout": {"count": 3, "models": ["m1", "m2"]},
        "answer": "Use port 8080"})
    assert (spec.depends_on_policy.type, spec.depends_on_policy.k) == ("quorum", 2)
    assert spec.fanout.judge == "reviewer" and spec.answer == "Use port 8080"
    default = agenttask.AgentTaskSpec.model_validate({"buildRef": {"name": "b"}, "description": "x"})
    assert default.depends_on_policy.type == "all" and default.fanout is None and default.answer is None
    assert default.to_wire()["dependsOnPolicy"] == {"type": "all"}


def test_status_fields_the_operator_writes_for_iterations_questions_and_fanout():
    br = buildrequest.BuildRequestStatus.model_validate(
        {"iteration": 2, "iterations": [{"number": 1, "tasks": 3, "merged": 2, "failed": 1},
                                        {"number": 2, "tasks": 1}]})
    assert [(i.number, i.tasks, i.merged, i.failed) for i in br.iterations] == [(1, 3, 2, 1), (2, 1, 0, 0)]
    at = agenttask.AgentTaskStatus.model_validate({
        "question": "Which port?", "answer": "8080",
        "fanout": {"candidates": [{"name": "t-c1", "gate": "Passed", "branch": "longshot/b/t-c1", "commit": "abc1234"},
                                  {"name": "t-c2", "gate": "Failed", "reason": "tests failed"}],
                   "judgeTask": "t-judge", "winner": "t-c1", "reasons": ["smaller diff"]}})
    assert at.fanout.winner == "t-c1" and at.fanout.candidates[1].gate == "Failed" and at.question == "Which port?"
    mj = mergejob.MergeJobSpec.model_validate({"buildRef": {"name": "b"}, "taskRef": {"name": "t"},
                                               "branch": "longshot/b/t", "target": "main"})
    assert mj.approved is False


def test_task_input_carries_the_new_context_and_stays_compatible():
    old = handoff.TaskInput.model_validate({"task": "b-t", "build": "b", "namespace": "n", "role": "worker",
                                            "description": "x", "repository_url": "file:///r", "branch": "x"})
    assert (old.iteration, old.previous, old.candidates, old.dependencies) == (1, [], [], [])
    assert old.question is None and old.answer is None and old.previous_failure is None
    full = handoff.TaskInput.model_validate({
        **old.to_wire(), "iteration": 2, "maxIterations": 3,
        "previous": [{"task": "a", "outcome": "failed", "failure": {"class": "Timeout", "message": "slow"}}],
        "candidates": [{"name": "t-c1", "branch": "longshot/b/t-c1", "commit": "abcdef1"}],
        "previousFailure": {"class": "AgentError", "message": "boom"},
        "dependencies": [{"task": "a", "mergedCommit": "abc"}], "question": "q?", "answer": "a."})
    assert full.previous[0].failure.failure_class == "Timeout" and full.candidates[0].gate == "Passed"
    assert handoff.TaskInput.model_validate_json(full.model_dump_json(by_alias=True)) == full
