"""Skills and instructions in the workspace (issue 54), on the real API server with real git and the process kubelet
(agent Pods run the real runner with the scripted backend): the files reach every agent's checkout from their
ConfigMaps and never the merged commits; a missing ConfigMap stops the build naming it; the schema refuses bad
entries naming the field."""

from __future__ import annotations

import subprocess

import kubernetes
import pytest
import sample_repo
from k8s_builders import build, condition, create, dump, get
from test_configuration import patch_spec, stalled
from test_delivery import delivery_build, finalized, script_configmap
from test_orchestration import PLANNER, agent_pods, wait_pod

from longshot_testing import wait_for

pytestmark = pytest.mark.integration

SKILL_MD = "---\nname: calc-style\ndescription: How calc functions are written.\n---\nOne function a module.\n"
RULES = "Every function has a test.\n"

SCRIPT = {
    "roles": {
        # the planner, too, works in a checkout with the skill and the instructions
        "planner": [{"run": {"command": "test -f .agents/skills/calc-style/SKILL.md && "
                                        "test -f .claude/skills/calc-style/SKILL.md && grep -q 'has a test' AGENTS.md",
                             "check": True}},
                    {"finish": {"summary": "one function", "tasks": [
                        {"name": "sub", "description": "Add sub()", "scope": ["calc/sub.py", "seen.txt"]}]}}],
    },
    "tasks": {
        "sub": [{"run": {"command": "cat .agents/skills/calc-style/SKILL.md AGENTS.md > seen.txt", "check": True}},
                {"write": {"path": "calc/sub.py", "content": "def sub(a, b):\n    return a - b\n"}},
                {"finish": "Add sub()"}],
    },
}


def configmaps(core_v1, namespace: str) -> None:
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "skill-calc-style"},
                                                     "data": {"SKILL.md": SKILL_MD, "example.py": "x = 1\n"}})
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "build-rules"}, "data": {"rules.md": RULES}})


AGENT = {"backend": "scripted", "script": {"name": "script"},
         "skills": [{"name": "calc-style", "configMap": {"name": "skill-calc-style"}}],
         "instructions": {"configMap": {"name": "build-rules"}, "key": "rules.md"}}


def test_skills_and_instructions_reach_every_agents_checkout_and_never_the_merged_commits(
        operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, SCRIPT)
    configmaps(core_v1, namespace)
    create(custom, namespace, delivery_build(url, agent=AGENT, planner={"maxIterations": 1}))

    b = finalized(custom, namespace, timeout=180)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    # the planner's checkout (a planner does not commit) still has them, as the runner wrote them
    repo = kubelet.workdir / f"{PLANNER}-a1" / "workspace" / "repo"
    assert (repo / ".agents/skills/calc-style/SKILL.md").read_text() == SKILL_MD
    assert (repo / ".claude/skills/calc-style/example.py").read_text() == "x = 1\n"
    assert RULES in (repo / "AGENTS.md").read_text()
    assert "/.agents/skills/calc-style/" in (repo / ".git/info/exclude").read_text()
    # the worker read them (its seen.txt is merged)...
    seen = sample_repo.show(url, "seen.txt")
    assert seen is not None and seen.startswith(SKILL_MD) and RULES in seen
    assert sample_repo.show(url, "calc/sub.py") == "def sub(a, b):\n    return a - b\n"
    # ...and no commit of any branch carries a skill folder or the instructions
    touched = subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "log", "--all", "--format=",
                              "--name-only"], check=True, capture_output=True, text=True).stdout.split()
    assert "seen.txt" in touched
    assert [p for p in touched if p.startswith((".agents/", ".claude/")) or p == "AGENTS.md"] == []


def test_a_missing_skill_configmap_stops_the_build_naming_it_and_an_edit_resumes(operator, core_v1, custom,
                                                                                namespace):
    create(custom, namespace, build("demo", agent={"skills": [{"name": "style", "configMap": {"name": "nowhere"}}]}))
    b = stalled(custom, namespace, "Configuration")
    message = condition(b, "Ready")["message"]
    assert message.startswith("spec.agent.skills[0].configMap (skill style): ConfigMap 'nowhere' does not exist in "
                              f"namespace {namespace}; create it or fix the name"), message
    assert agent_pods(core_v1, namespace) == {}
    # a ConfigMap without SKILL.md is named too
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "notes"}, "data": {"README.md": "x"}})
    patch_spec(custom, namespace, {"agent": {"skills": [{"name": "style", "configMap": {"name": "notes"}}]}})
    wait_for(lambda: "ConfigMap 'notes' has no key SKILL.md; add it" in (
        condition(get(custom, namespace, "buildrequests", "demo"), "Ready") or {}).get("message", ""),
        timeout=30, what="the stop naming the missing SKILL.md")
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "style"}, "data": {"SKILL.md": "x"}})
    patch_spec(custom, namespace, {"agent": {"skills": [{"name": "style", "configMap": {"name": "style"}}]}})
    pod = wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    assert any(v.config_map is not None and v.config_map.name == "style" for v in pod.spec.volumes)


def test_a_missing_instructions_configmap_stops_the_build_naming_it(operator, core_v1, custom, namespace):
    create(custom, namespace, build("demo", agent={"instructions": {"configMap": {"name": "absent"}}}))
    b = stalled(custom, namespace, "Configuration")
    assert condition(b, "Ready")["message"].startswith(
        "spec.agent.instructions.configMap: ConfigMap 'absent' does not exist")


@pytest.mark.parametrize(("agent", "words"), [
    ({"skills": [{"name": "a", "configMap": {"name": "c"}}, {"name": "a", "configMap": {"name": "d"}}]},
     "spec.agent.skills names must be unique"),
    ({"skills": [{"name": "a", "configMap": {"name": "c"}, "path": "x/../../etc"}]}, "no '.', '..' or '.git'"),
    ({"skills": [{"name": "a", "configMap": {"name": "c"}, "path": ".git/hooks"}]}, "no '.', '..' or '.git'"),
    ({"skills": [{"name": "a", "configMap": {"name": "c"}, "path": "p"}, {"name": "b", "configMap": {"name": "c"},
                                                                          "path": "p"}]},
     "spec.agent.skills paths must be unique"),
    ({"skills": [{"name": "Not_A_Label", "configMap": {"name": "c"}}]}, "spec.agent.skills[0].name"),
    ({"instructions": {"configMap": {"name": "c"}, "key": "a/b"}}, "spec.agent.instructions.key"),
], ids=["duplicate", "dotdot", "git", "same-path", "name", "key"])
def test_the_api_server_refuses_bad_skills_naming_the_field(custom, namespace, agent, words):
    with pytest.raises(kubernetes.client.ApiException) as e:
        create(custom, namespace, build("bad", agent=agent))
    assert e.value.status == 422 and words in str(e.value.body), e.value.body
