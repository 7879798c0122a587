"""The task input fields the operator derives from other objects (core.taskinput)."""

from __future__ import annotations

import json

import pytest

from longshot.api import handoff as ho
from longshot.core import taskinput
from longshot.core.taskinput import TaskResult

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("result,outcome", [
    (TaskResult("a", "Succeeded", commit="c1", delivered=True), "merged"),
    (TaskResult("a", "Succeeded", commit="c1", delivered=False), "unmerged"),
    (TaskResult("a", "Succeeded", commit=None), "empty"),
    (TaskResult("a", "Failed", failure_class="AgentError", failure="boom"), "failed"),
    (TaskResult("a", "Cancelled"), "cancelled"),
    (TaskResult("a", "Succeeded", merging=False), "merged"),
])
def test_outcomes(result, outcome):
    assert taskinput.outcome_of(result) == outcome


def test_previous_lists_the_iterations_tasks_with_their_failures():
    prev = taskinput.previous([
        TaskResult("models", "Succeeded", description="Add models", commit="c1", delivered=True, summary="User",
                   files=("calc/models.py",)),
        TaskResult("api", "Failed", description="Add api", failure_class="Timeout", failure="too slow"),
    ])
    assert [p["task"] for p in prev] == ["api", "models"]
    assert prev[0]["failure"] == {"class": "Timeout", "message": "too slow"} and prev[0]["outcome"] == "failed"
    assert prev[1] == {"task": "models", "description": "Add models", "outcome": "merged", "summary": "User",
                       "filesChanged": ["calc/models.py"]}
    ho.TaskInput.model_validate({"task": "t", "build": "b", "namespace": "n", "role": "planner", "description": "d",
                                 "repositoryUrl": "u", "branch": "x", "previous": prev})


def test_dependencies_are_the_succeeded_ones():
    deps = taskinput.dependencies([TaskResult("a", "Succeeded", summary="did a", merged_commit="m1", files=("a",)),
                                   TaskResult("b", "Failed")])
    assert deps == [{"task": "a", "summary": "did a", "filesChanged": ["a"], "mergedCommit": "m1"}]


def test_previous_failure():
    assert taskinput.previous_failure(None, "x") is None
    assert taskinput.previous_failure("AgentError", "pytest: 2 failed") == {"class": "AgentError",
                                                                           "message": "pytest: 2 failed"}


def test_everything_is_cut_to_fit_an_annotation():
    huge = [TaskResult(f"t{i:04d}", "Succeeded", description="d" * 5000, summary="s" * 50_000, commit="c",
                       delivered=True, files=tuple(f"f{j}" for j in range(500))) for i in range(300)]
    extra = taskinput.fit({"previous": taskinput.previous(huge), "question": "Q"})
    assert len(json.dumps(extra, separators=(",", ":")).encode()) <= taskinput.MAX_EXTRA_BYTES
    assert extra["question"] == "Q" and 0 < len(extra["previous"]) < 300
    assert extra["previous"][0]["task"] == "t0000" and len(extra["previous"][0]["summary"]) <= 300
    small = {"dependencies": taskinput.dependencies([TaskResult("a", "Succeeded")])}
    assert taskinput.fit(small) is small
