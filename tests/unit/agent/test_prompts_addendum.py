"""A person's prompt addendum (``AgentTask.spec.agent.promptAddendum``, issue 31) reaches the worker's, the fixer's
and the planner's prompt, and nothing else's."""

from __future__ import annotations

import pytest

from longshot.agent import prompts
from longshot.api import handoff

pytestmark = pytest.mark.unit


def task_input(**fields):
    return handoff.TaskInput.model_validate({
        "task": "b1-t", "build": "b1", "namespace": "ns", "role": "worker", "description": "Add login",
        "repository_url": "https://git.example.com/app.git", "branch": "longshot/b1/t", **fields})


@pytest.mark.parametrize("role", ["worker", "fixer", "planner"])
def test_the_addendum_is_in_the_prompt(role):
    extra = {"conflicts": ["a.py"]} if role == "fixer" else {}
    _, prompt = prompts.role_prompts(role, None, task=task_input(role=role, instructions="Use httpx, not requests."),
                                     **extra)
    assert "A person added these instructions for this task:\nUse httpx, not requests." in prompt
    _, plain = prompts.role_prompts(role, None, task=task_input(role=role), **extra)
    assert "A person added these instructions" not in plain
