"""Models chosen per task, and personas (issue 54) on the real API server: the planner's choice of a model and a
persona is honoured inside the build's set and refused outside it, a person's override still wins, a spawned child
may choose a model of the set and no other (the gateway's route with a real Pod-bound token, and the operator's own
check), and the gateway prices each call as the model chosen for its attempt.

The plan and the Pods' ends are played as a kubelet and an agent would write them (``kubelet_double``): what is under
test is what the operator makes of a plan, and what each attempt's Pod is told (its task input annotation, which the
runner reads)."""

from __future__ import annotations

import json

import httpx
import kubernetes
import pytest
import sample_repo
from gateway_attempts import make_attempt, secret
from gateway_fakes import Reply, fake_model, openai_json
from k8s_builders import create, get, list_of
from kubelet_double import finish_pod, plan_handoff, run_pod
from test_delivery import delivery_build, script_configmap
from test_orchestration import PLANNER, demo_build, wait_pod, wait_task

from longshot_testing import wait_for

pytestmark = pytest.mark.integration

MODELS = [
    {"name": "fast", "model": "small-model", "description": "cheap and quick: docs, renames"},
    {"name": "strong", "model": "big-model", "description": "hard changes across modules"},
]
PERSONAS = [
    {"name": "writer", "model": "fast", "prompt": "You write documentation for {{ task.build }}.",
     "tools": ["read_file", "write_file", "docs.*"]},
    {"name": "careful", "model": "strong"},
]
AGENT = {"model": "base-model", "models": MODELS, "personas": PERSONAS, "rolePersonas": {"worker": "careful"}}


def chosen_build(**spec):
    b = demo_build(**spec)
    b["spec"]["agent"] = {"backend": "scripted", **AGENT}
    return b


def task_input(core, namespace, pod):
    return json.loads(core.read_namespaced_pod(pod, namespace).metadata.annotations["longshot.dev/task-input"])


def attempts_model(custom, namespace, name):
    t = wait_task(custom, namespace, name, lambda o: (o.get("status") or {}).get("attempts"), "an attempt")
    return t["status"]["attempts"][0].get("model")


def test_the_plan_chooses_models_and_personas_of_the_set_and_each_attempt_runs_its_choice(
        operator, core_v1, custom, namespace):
    create(custom, namespace, chosen_build())
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    planner = task_input(core_v1, namespace, f"{PLANNER}-a1")
    # the planner is told the set, with the descriptions, and the personas
    assert planner["models"] == [{"name": "fast", "description": "cheap and quick: docs, renames"},
                                 {"name": "strong", "description": "hard changes across modules"}]
    assert [p["name"] for p in planner["personas"]] == ["writer", "careful"]
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "docs", "description": "Document the API", "persona": "writer"},   # the persona's model
        {"name": "core", "description": "Refactor the core", "model": "fast"},      # the task's choice
        {"name": "api", "description": "Add the handlers"},                         # the role's persona
    ]))

    for name in ("demo-docs", "demo-core", "demo-api"):
        wait_pod(core_v1, namespace, f"{name}-a1")
    tasks = {t["metadata"]["name"]: t for t in list_of(custom, namespace, "agenttasks")}
    assert (tasks["demo-docs"]["spec"].get("persona"), tasks["demo-docs"]["spec"].get("model")) == ("writer", None)
    assert tasks["demo-core"]["spec"]["model"] == "fast"

    docs = task_input(core_v1, namespace, "demo-docs-a1")
    assert docs["backend"]["model"] == "small-model"
    assert docs["persona"] == {"name": "writer", "prompt": "You write documentation for {{ task.build }}.",
                               "tools": ["read_file", "write_file", "docs.*"], "skills": []}
    assert task_input(core_v1, namespace, "demo-core-a1")["backend"]["model"] == "small-model"
    api = task_input(core_v1, namespace, "demo-api-a1")
    assert api["backend"]["model"] == "big-model" and api["persona"]["name"] == "careful"
    # the model each attempt ran with is recorded where the ledger and the fallback chain read it
    assert attempts_model(custom, namespace, "demo-docs") == "small-model"
    assert attempts_model(custom, namespace, "demo-core") == "small-model"
    assert attempts_model(custom, namespace, "demo-api") == "big-model"


def test_a_plan_naming_a_model_outside_the_set_is_refused_with_the_set_in_the_reason(operator, core_v1, custom,
                                                                                     namespace):
    create(custom, namespace, chosen_build())
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "docs", "description": "Document the API", "model": "gpt-huge"}]))

    def rejected():
        b = get(custom, namespace, "buildrequests", "demo")
        c = next((c for c in b["status"].get("conditions", []) if c["type"] == "Planned"), None)
        return c if c and c["reason"] == "PlanRejected" else None

    c = wait_for(rejected, timeout=30, what="Planned reason PlanRejected")
    assert "'gpt-huge'" in c["message"] and "fast, strong" in c["message"]
    # no task was made from it; the re-plan's planner is told why, with the names it may use
    replanner = wait_task(custom, namespace, "demo-planner-1", lambda t: True, "exists")
    assert "'gpt-huge'" in replanner["spec"]["description"] and "fast, strong" in replanner["spec"]["description"]
    assert {t["metadata"]["name"] for t in list_of(custom, namespace, "agenttasks")} == {PLANNER, "demo-planner-1"}


def test_a_person_override_wins_over_the_task_choice_and_its_persona(operator, core_v1, custom, namespace):
    create(custom, namespace, chosen_build(workers={"max": 10}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    # a person's `kubectl longshot retry --model` writes spec.agent.model on the task
    for name, override in (("demo-hand", {"model": "human-pick"}), ("demo-named", {"model": "strong"})):
        create(custom, namespace, {
            "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "labels": {"longshot.dev/build": "demo", "longshot.dev/role": "worker"}},
            "spec": {"buildRef": {"name": "demo"}, "description": "by hand", "role": "worker", "model": "fast",
                     "persona": "writer", "agent": override}})
    wait_pod(core_v1, namespace, "demo-hand-a1")
    wait_pod(core_v1, namespace, "demo-named-a1")
    hand = task_input(core_v1, namespace, "demo-hand-a1")
    assert hand["backend"]["model"] == "human-pick" and hand["persona"]["name"] == "writer"
    assert task_input(core_v1, namespace, "demo-named-a1")["backend"]["model"] == "big-model"  # a name of the set
    assert attempts_model(custom, namespace, "demo-hand") == "human-pick"


def test_a_child_may_choose_a_model_of_the_set_and_no_other(operator, core_v1, custom, namespace):
    """The operator's side: a parent's recorded requests (as the gateway writes them) become a child that runs the
    chosen model, or a refusal naming the set."""
    start = chosen_build(delegation={"enabled": True, "maxChildren": 3})
    create(custom, namespace, start)
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "parent", "description": "Delegate"}]))
    wait_pod(core_v1, namespace, "demo-parent-a1")
    run_pod(core_v1, namespace, "demo-parent-a1")
    wait_task(custom, namespace, "demo-parent", lambda t: (t.get("status") or {}).get("phase") == "Running", "Running")
    custom.patch_namespaced_custom_object_status("longshot.dev", "v1alpha1", namespace, "agenttasks", "demo-parent", {
        "status": {"delegation": {"requests": [
            {"name": "quick", "prompt": "do the quick part", "model": "fast", "attempt": 1},
            {"name": "rogue", "prompt": "do it on another model", "model": "gpt-huge", "attempt": 1}]}}})

    def kids():
        t = get(custom, namespace, "agenttasks", "demo-parent")
        children = {c["name"]: c for c in (t.get("status") or {}).get("children") or []}
        return children if set(children) == {"quick", "rogue"} else None

    children = wait_for(kids, timeout=30, what="status.children of both requests")
    assert children["rogue"]["phase"] == "Refused"
    assert "'gpt-huge'" in children["rogue"]["reason"] and "fast, strong" in children["rogue"]["reason"]
    child = wait_task(custom, namespace, "demo-parent-quick", lambda t: True, "exists")
    assert child["spec"]["model"] == "fast"
    wait_pod(core_v1, namespace, "demo-parent-quick-a1")
    assert task_input(core_v1, namespace, "demo-parent-quick-a1")["backend"]["model"] == "small-model"
    assert "demo-parent-rogue" not in {t["metadata"]["name"] for t in list_of(custom, namespace, "agenttasks")}


# --- the gateway, with real Pod-bound tokens ----------------------------------------------------------------------

API_KEY = "sk-upstream-0123456789abcdefghij"
PRICES = """currency: USD
models:
  base-model: {input: 1, output: 1}
  small-model: {input: 2, output: 4}
  big-model: {input: 10, output: 30}
"""


@pytest.fixture
def model():
    with fake_model() as m:
        yield m


def test_the_gateway_records_a_spawned_childs_model_of_the_set_and_refuses_another(gateway, core_v1, custom,
                                                                                   namespace):
    a = make_attempt(core_v1, custom, namespace, gateway.url,
                     build_spec={"delegation": {"enabled": True}, "agent": {"backend": "scripted", **AGENT}})
    assert [m["name"] for m in task_input_of(a)["models"]] == ["fast", "strong"]  # the worker is told the set

    def spawn(task):
        return httpx.post(f"{gateway.url}/delegation/spawn", json={"tasks": [task]}, headers=a.headers, timeout=30)

    r = spawn({"name": "api", "prompt": "Add the API", "model": "gpt-huge"})
    assert r.status_code == 403 and "'gpt-huge'" in r.json()["error"] and "fast, strong" in r.json()["error"]
    assert spawn({"name": "api", "prompt": "Add the API", "model": "Not A Name"}).status_code == 400
    assert spawn({"name": "api", "prompt": "Add the API", "model": "strong"}).status_code == 202
    requests = get(custom, namespace, "agenttasks", a.name)["status"]["delegation"]["requests"]
    assert requests == [{"name": "api", "prompt": "Add the API", "model": "strong", "attempt": 1}]
    r = spawn({"name": "api", "prompt": "Add the API", "model": "fast"})  # the same child on another model
    assert r.status_code == 409


def task_input_of(a):
    return json.loads(a.pod["metadata"]["annotations"]["longshot.dev/task-input"])


def test_calls_are_priced_as_the_model_chosen_for_the_attempt(gateway, model, core_v1, custom, namespace):
    secret(core_v1, namespace, "llm-key", {"api-key": API_KEY})
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "longshot-prices"},
                                                     "data": {"prices.yaml": PRICES}})
    agent = {"backend": "openai", "baseUrl": f"{model.url}/v1", "credentialsSecret": "llm-key", **AGENT}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec={"agent": agent}, model="strong")
    chosen = task_input_of(a)["backend"]["model"]
    assert chosen == "big-model"

    # what the runner sends: the chosen model, priced at its price (not the build's base-model)
    model.script(Reply(body=openai_json(chosen, (1000, 100))))
    body = {"model": chosen, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gateway.url}/model/openai/chat/completions", json=body, headers=a.headers,
                      timeout=60).status_code == 200
    assert a.progress(custom)["cost"] == pytest.approx((1000 * 10 + 100 * 30) / 1e6)

    # a call (and an answer) that names no model is priced as the attempt's chosen model too
    anonymous = openai_json(chosen, (1000, 100))
    del anonymous["model"]
    model.script(Reply(body=anonymous))
    assert httpx.post(f"{gateway.url}/model/openai/chat/completions",
                      json={"messages": [{"role": "user", "content": "hi"}]}, headers=a.headers,
                      timeout=60).status_code == 200
    assert a.progress(custom)["cost"] == pytest.approx(2 * (1000 * 10 + 100 * 30) / 1e6)


# --- the real runner (process kubelet, scripted backend): the persona's allowlist and prompt reach the agent ---------

def test_the_persona_allowlist_and_prompt_reach_the_runner(operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "two tasks", "tasks": [
            {"name": "reads", "description": "Read the README", "persona": "reader"},
            {"name": "writes", "description": "Write a file", "persona": "reader"}]}}]},
        "tasks": {
            "reads": [{"read": {"path": "README.md"}, "check": True}, {"finish": "read it"}],
            "writes": [{"write": {"path": "NOTES.md", "content": "x\n"}, "check": True}, {"finish": "wrote it"}]}})
    b = delivery_build(url, retry={"maxAttempts": 1})
    b["spec"]["agent"].update({"models": MODELS, "personas": [
        {"name": "reader", "prompt": "You only read, for build {{ task.build }}.", "tools": ["read_file"]}]})
    create(custom, namespace, b)

    failed = wait_task(custom, namespace, "demo-writes",
                       lambda t: (t.get("status") or {}).get("phase") == "Failed", "Failed", timeout=180)
    message = failed["status"]["attempts"][-1]["exitReason"]
    assert "'write_file' is not offered to this task's persona" in message and "read_file" in message
    wait_task(custom, namespace, "demo-reads", lambda t: (t.get("status") or {}).get("phase") == "Succeeded",
              "Succeeded", timeout=180)
    # the runner put the persona's prompt, rendered, at the head of the system prompt it started with (its log)
    log = (kubelet.workdir / "demo-reads-a1" / "agent.log").read_text()
    assert "You only read, for build demo." in log


# --- the API server refuses what cannot work, naming the field -----------------------------------------------------

@pytest.mark.parametrize(("agent", "field", "text"), [
    ({"models": MODELS, "personas": [{"name": "p", "model": "ghost"}]}, "spec.agent.personas",
     "must name an entry of spec.agent.models"),
    ({"models": MODELS, "personas": PERSONAS, "rolePersonas": {"reviewer": "ghost"}},
     "spec.agent.rolePersonas.reviewer", "must name an entry of spec.agent.personas"),
    ({"models": [*MODELS, {"name": "fast", "model": "other"}]}, "spec.agent.models[2]", "Duplicate value"),
    ({"models": [{"name": "Fast", "model": "m"}]}, "spec.agent.models[0].name", "should match"),
    ({"personas": [{"name": "p", "tools": ["rm -rf"]}]}, "spec.agent.personas[0].tools[0]", "should match"),
    ({"rolePersonas": {"judge": "p"}}, "spec.agent.rolePersonas", "unknown field"),
    ({"personas": [{"name": "p", "skills": ["style-guide"]}]}, "spec.agent.personas",
     "must name entries of spec.agent.skills"),
])
def test_a_spec_naming_what_the_build_does_not_declare_is_refused_naming_the_field(custom, namespace, agent, field,
                                                                                   text):
    b = demo_build()
    b["spec"]["agent"] = {"backend": "scripted", **agent}
    with pytest.raises(kubernetes.client.ApiException) as err:
        custom.create_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", b,
                                               field_validation="Strict")
    assert err.value.status == 422 or "unknown field" in err.value.body, err.value.body
    assert field in err.value.body and text in err.value.body, err.value.body

