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
    pointer = handoff.HandoffPointer(ref=handoff.handoff_ref("t1", 1), commit="abcdef1",
                                     sha256=handoff.digest(data), size=len(data))
    assert len(handoff.parse_handoff_bytes(data, pointer).tasks) == 200
    with pytest.raises(handoff.HandoffError, match="digest"):
        handoff.parse_handoff_bytes(data + b" ", pointer)
