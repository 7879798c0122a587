"""The worker's prompt tells a stacked dependent that its dependencies are not merged yet."""

from __future__ import annotations

import pytest

from longshot.agent import prompts
from longshot.api import handoff as ho

pytestmark = pytest.mark.unit

BASE = {"task": "b-mul", "build": "b", "namespace": "n", "role": "worker", "description": "Add mul",
        "repositoryUrl": "u", "branch": "longshot/b/b-mul",
        "dependencies": [{"task": "add", "summary": "Add add()", "filesChanged": ["calc/add.py"]}]}


def prompt(**extra: object) -> str:
    task = ho.TaskInput.model_validate({**BASE, **extra})
    return prompts.role_prompts("worker", None, task=task)[1]


def test_a_stacked_dependency_is_shown_as_not_merged_yet():
    text = prompt(stack=[{"task": "add", "branch": "longshot/b/b-add", "commit": "a" * 40}])
    assert "add is not merged into main yet" in text and "already merged" not in text
    assert "- add: Add add()" in text and "calc/add.py" in text


def test_merged_dependencies_are_shown_as_merged():
    text = prompt()
    assert "already merged into main" in text and "not merged" not in text
