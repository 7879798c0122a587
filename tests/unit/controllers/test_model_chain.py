"""The task's model chain as the task reconciler builds it (``controllers.tasks.model_chain``): the chosen model
(``core.personas``) heads it and the build's fallbacks follow; a best-of-N candidate's own model stands alone."""

from __future__ import annotations

from typing import Any

import pytest

from longshot.api import objects
from longshot.controllers import tasks as taskc

pytestmark = pytest.mark.unit

AGENT = {"backend": "openai", "model": "base", "fallbackModels": ["spare"],
         "models": [{"name": "fast", "model": "small"}, {"name": "strong", "model": "big"}],
         "personas": [{"name": "careful", "model": "strong"}], "rolePersonas": {"reviewer": "careful"}}


def build(agent: dict[str, Any]) -> objects.BuildRequest:
    return objects.parse({"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
                          "metadata": {"name": "b", "namespace": "ns"},
                          "spec": {"request": "r", "repository": {"url": "https://git.example/r.git"},
                                   "agent": agent}}, objects.BuildRequest)


def task(annotations: dict[str, str] | None = None, **spec: Any) -> objects.AgentTask:
    return objects.parse({"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                          "metadata": {"name": "t", "namespace": "ns", "annotations": annotations or {}},
                          "spec": {"buildRef": {"name": "b"}, "description": "d", **spec}}, objects.AgentTask)


@pytest.mark.parametrize(("spec", "chain"), [
    ({}, ("base", "spare")),
    ({"model": "fast"}, ("small", "spare")),
    ({"role": "reviewer"}, ("big", "spare")),
    ({"role": "reviewer", "model": "fast"}, ("small", "spare")),
    ({"model": "fast", "agent": {"model": "human"}}, ("human", "spare")),
    ({"model": "ghost"}, ("base", "spare")),
])
def test_the_chosen_model_heads_the_chain(spec: dict[str, Any], chain: tuple[str, ...]):
    assert taskc.model_chain(task(**spec), build(AGENT)) == chain


def test_a_build_without_models_keeps_the_old_chain_and_a_candidate_its_own_model():
    plain = build({"backend": "openai", "model": "base", "fallbackModels": ["spare"]})
    assert taskc.model_chain(task(agent={"model": "human"}), plain) == ("human", "spare")
    assert taskc.model_chain(task({"longshot.dev/model": "cand"}, model="fast"), build(AGENT)) == ("cand",)
