"""Kernel isolation one setting away (issue 56): a build's ``spec.agent.runtimeClassName``, else the operator's
``agent.runtimeClassName``, reaches its agent Pods; a RuntimeClass that does not exist stops the build before any
Pod with the field named; a bad name is refused by the CRD schema and the settings."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from fake_kube import FakeKube
from longshot.api import objects
from longshot.config import Settings
from longshot.runtime import kube as kubemod
from longshot.runtime import pods, preflight

pytestmark = pytest.mark.unit

TASK = {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "app-t1", "namespace": "ns", "uid": "u"},
        "spec": {"buildRef": {"name": "app"}, "description": "d"}}


def build(**agent: Any) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": "app", "namespace": "ns", "uid": "b"},
            "spec": {"request": "r", "repository": {"url": "https://git.example.com/o/r.git", "baseBranch": "main"},
                     "agent": {"backend": "scripted", **agent}}}


def runtime_class(b: dict[str, Any], default: str = "") -> str | None:
    settings = Settings(identity="test", agent_runtime_class=default)
    return pods.build_agent_pod(TASK, b, settings, 1)["spec"].get("runtimeClassName")


def test_the_builds_runtime_class_then_the_operators_reaches_the_pod():
    assert runtime_class(build()) is None
    assert runtime_class(build(), default="gvisor") == "gvisor"
    assert runtime_class(build(runtimeClassName="kata"), default="gvisor") == "kata"


@pytest.mark.parametrize("bad", ["Gvisor", "-x", "a_b", "x" * 254])
def test_a_bad_runtime_class_name_is_refused(bad):
    with pytest.raises(pydantic.ValidationError, match=r"runtimeClassName|runtime_class"):
        objects.parse(build(runtimeClassName=bad), objects.BuildRequest)
    with pytest.raises(pydantic.ValidationError):
        Settings(identity="test", agent_runtime_class=bad)


class Forbidding(FakeKube):
    def runtime_class_exists(self, name: str) -> bool:
        raise kubemod.Forbidden(f"RuntimeClass {name}")


def _check(k: FakeKube, b: dict[str, Any], default: str = "") -> str | None:
    return preflight.check(k, objects.parse(b, objects.BuildRequest), runtime_class=default)


def test_a_runtime_class_that_does_not_exist_stops_the_build_naming_the_field(monkeypatch):
    # the repository check (git ls-remote, a process) comes last: here it answers that all is well
    monkeypatch.setattr(preflight, "repository", lambda *a, **kw: None)
    k = FakeKube()
    said = _check(k, build(runtimeClassName="gvisor"))
    assert said is not None and said.startswith("spec.agent.runtimeClassName: RuntimeClass 'gvisor' does not exist")
    said = _check(k, build(), default="kata")
    assert said is not None and said.startswith("the operator's agent.runtimeClassName: RuntimeClass 'kata'")
    k.runtime_classes.add("gvisor")
    assert _check(k, build(runtimeClassName="gvisor")) is None
    # RBAC hiding RuntimeClasses is not a stop: the API server judges the Pod
    assert _check(Forbidding(), build(runtimeClassName="gvisor")) is None
