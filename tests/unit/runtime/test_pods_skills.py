"""Skills and instructions reach the agent Pod (issue 54): each skill's ConfigMap mounted read-only at
SKILLS_DIR/<name>, the instructions' key at INSTRUCTIONS_DIR/AGENTS.md, the task input listing them, the Pod's
security context unchanged; preflight names a missing ConfigMap or key; the schema refuses bad entries."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from fake_kube import FakeKube
from longshot.api import handoff, objects
from longshot.config import Settings
from longshot.runtime import pods, preflight

pytestmark = pytest.mark.unit

TASK = {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "app-t1", "namespace": "ns", "uid": "u"},
        "spec": {"buildRef": {"name": "app"}, "description": "d", "role": "worker"}}
SKILLS = [{"name": "style", "configMap": {"name": "skill-style"}},
          {"name": "release", "configMap": {"name": "skill-release"}, "path": ".github/skills/release"}]


def build(**agent: Any) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": "app", "namespace": "ns", "uid": "b"},
            "spec": {"request": "r", "repository": {"url": "https://git.example.com/o/r.git", "baseBranch": "main"},
                     "agent": {"backend": "scripted", **agent}}}


def pod(b: dict[str, Any]) -> dict[str, Any]:
    return pods.build_agent_pod(TASK, b, Settings(identity="test"), 1)


def test_each_skill_and_the_instructions_are_mounted_read_only_and_listed_in_the_task_input() -> None:
    p = pod(build(skills=SKILLS, instructions={"configMap": {"name": "rules"}, "key": "rules.md"}))
    volumes = {v["name"]: v for v in p["spec"]["volumes"]}
    mounts = {m["name"]: m for m in p["spec"]["containers"][0]["volumeMounts"]}
    assert volumes["skill-0"]["configMap"] == {"name": "skill-style", "defaultMode": pods.SECRET_MODE}
    assert volumes["skill-1"]["configMap"]["name"] == "skill-release"
    assert mounts["skill-0"] == {"name": "skill-0", "mountPath": f"{handoff.SKILLS_DIR}/style", "readOnly": True}
    assert mounts["skill-1"]["mountPath"] == f"{handoff.SKILLS_DIR}/release" and mounts["skill-1"]["readOnly"]
    assert volumes["instructions"]["configMap"]["items"] == [{"key": "rules.md", "path": "AGENTS.md"}]
    assert mounts["instructions"] == {"name": "instructions", "mountPath": handoff.INSTRUCTIONS_DIR, "readOnly": True}
    ti = handoff.TaskInput.model_validate_json(p["metadata"]["annotations"][handoff.TASK_INPUT_ANNOTATION])
    assert [(s.name, s.path) for s in ti.skills] == [("style", None), ("release", ".github/skills/release")]
    assert ti.agents_md is True


def test_without_skills_the_pod_is_as_before_and_the_security_context_never_changes() -> None:
    plain, with_skills = pod(build()), pod(build(skills=SKILLS, instructions={"configMap": {"name": "rules"}}))
    assert not [v for v in plain["spec"]["volumes"] if v["name"].startswith(("skill-", "instructions"))]
    ti = handoff.TaskInput.model_validate_json(plain["metadata"]["annotations"][handoff.TASK_INPUT_ANNOTATION])
    assert ti.skills == [] and ti.agents_md is False
    assert plain["spec"]["securityContext"] == with_skills["spec"]["securityContext"]
    assert (plain["spec"]["containers"][0]["securityContext"]
            == with_skills["spec"]["containers"][0]["securityContext"])
    assert with_skills["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    key = next(v for v in with_skills["spec"]["volumes"] if v["name"] == "instructions")["configMap"]["items"][0]
    assert key == {"key": "AGENTS.md", "path": "AGENTS.md"}  # the default key


def _check(k: FakeKube, b: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str | None:
    monkeypatch.setattr(preflight, "repository", lambda *a, **kw: None)  # git ls-remote is a process
    return preflight.check(k, objects.parse(b, objects.BuildRequest))


def test_preflight_names_a_missing_skill_configmap_a_missing_skill_md_and_a_missing_instructions_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    k = FakeKube()
    b = build(skills=SKILLS, instructions={"configMap": {"name": "rules"}, "key": "rules.md"})
    said = _check(k, b, monkeypatch)
    assert said == ("spec.agent.skills[0].configMap (skill style): ConfigMap 'skill-style' does not exist in "
                    "namespace ns; create it or fix the name")
    k.configmaps[("ns", "skill-style")] = {"SKILL.md": "x"}
    k.configmaps[("ns", "skill-release")] = {"README.md": "x"}
    said = _check(k, b, monkeypatch)
    assert said == ("spec.agent.skills[1].configMap (skill release): ConfigMap 'skill-release' has no key SKILL.md; "
                    "add it")
    k.configmaps[("ns", "skill-release")] = {"SKILL.md": "x"}
    said = _check(k, b, monkeypatch)
    assert said is not None and said.startswith("spec.agent.instructions.configMap: ConfigMap 'rules' does not exist")
    k.configmaps[("ns", "rules")] = {"AGENTS.md": "x"}
    assert _check(k, b, monkeypatch) == ("spec.agent.instructions.configMap: ConfigMap 'rules' has no key rules.md; "
                                         "add it")
    k.configmaps[("ns", "rules")] = {"rules.md": "x"}
    assert _check(k, b, monkeypatch) is None


@pytest.mark.parametrize("agent", [
    {"skills": [{"name": "Bad_Name", "configMap": {"name": "c"}}]},
    {"skills": [{"name": "s", "configMap": {"name": "c"}, "path": "/abs"}]},
    {"skills": [{"name": f"s{i}", "configMap": {"name": "c"}} for i in range(17)]},
    {"instructions": {"configMap": {"name": "c"}, "key": "a/b"}},
], ids=["name", "absolute-path", "too-many", "key-with-slash"])
def test_the_schema_refuses_bad_skills_and_instructions(agent: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        objects.parse(build(**agent), objects.BuildRequest)
