"""The real agent runner through the real gateway: tokens and cost on the AgentTask while the attempt runs,
``maxCost`` stopping it mid-attempt, and the hostile-agent cases that are the gateway's and the runner's
(nothing to read, no push to main or another branch, the checkout's git config ignored).

The runner runs as a process with what its Pod would give it: the task input, the gateway URL and a token
bound to its Pod; no credential anywhere."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import git_servers
import httpx
import pytest
import yaml
from gateway_attempts import AgentAttempt, make_attempt, secret
from gateway_fakes import Reply, fake_model, openai_json
from kubelet_double import run_pod

from longshot.api import handoff
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

PASSWORD = "forge-passw0rd-9f8e7d6c"
API_KEY = "sk-upstream-abcdefghijklmnopqrstuv"
IDENTITY = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
            "GIT_TERMINAL_PROMPT": "0"}
admin = git_servers.Git(IDENTITY, isolated=True, strip=True)


@pytest.fixture
def forge(tmp_path):
    root = tmp_path / "forge"
    root.mkdir()
    for name in ("app", "decoy"):
        admin("init", "--quiet", "--bare", "-b", "main", str(root / f"{name}.git"))
    seed = tmp_path / "seed"
    admin("init", "--quiet", "-b", "main", str(seed))
    (seed / "README.md").write_text("# app\n")
    admin("add", "-A", cwd=seed)
    admin("commit", "--quiet", "-m", "initial", cwd=seed)
    admin("push", "--quiet", str(root / "app.git"), "main", cwd=seed)
    with git_servers.git_http(root, git=admin, accounts=[("alice", PASSWORD)]) as server:
        yield server


def refs(forge, name: str = "app") -> dict[str, str]:
    out = admin("for-each-ref", "--format=%(refname) %(objectname)", cwd=forge.root / f"{name}.git")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


@pytest.fixture
def model():
    with fake_model() as m:
        yield m


@pytest.fixture
def build_spec(core_v1, namespace, forge, model):
    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    secret(core_v1, namespace, "llm-key", {"api-key": API_KEY})
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "longshot-prices"}, "data": {
        "prices.yaml": "models:\n  gpt-test: {input: 2, output: 8}\n"}})
    return {"repository": {"url": forge.url("app"), "credentialsSecret": "git-token"},
            "agent": {"backend": "openai", "model": "gpt-test", "baseUrl": f"{model.url}/v1",
                      "credentialsSecret": "llm-key"}}


def start_agent(a: AgentAttempt, core_v1, tmp_path: Path, *, script: Any = None
                ) -> tuple[subprocess.Popen[bytes], Path]:
    """The runner as its Pod would run it: its container env, the task input and the token as files."""
    root = tmp_path / a.name
    (root / "script").mkdir(parents=True)
    (root / "workspace").mkdir()
    (root / "task.json").write_text(a.pod["metadata"]["annotations"][handoff.TASK_INPUT_ANNOTATION])
    (root / "token").write_text(a.token)
    if script is not None:
        (root / "script" / "script.yaml").write_text(yaml.safe_dump(script))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LONGSHOT_", "GIT_"))}
    env.update({e["name"]: e["value"] for e in a.pod["spec"]["containers"][0]["env"]})
    env.update(HOME=str(root), LONGSHOT_TASK_INPUT=str(root / "task.json"),
               LONGSHOT_GATEWAY_TOKEN_FILE=str(root / "token"),
               LONGSHOT_WORKSPACE_DIR=str(root / "workspace"), LONGSHOT_SCRIPT_DIR=str(root / "script"),
               LONGSHOT_TERMINATION_LOG=str(root / "termination-log"), LONGSHOT_HEARTBEAT_SECONDS="0",
               LONGSHOT_RETRY_BASE_SECONDS="0.01", LONGSHOT_RETRY_MAX_ATTEMPTS="2")
    run_pod(core_v1, a.namespace, a.pod["metadata"]["name"])
    with (root / "agent.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "longshot", "agent"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    return proc, root


def finish(proc: subprocess.Popen[bytes], root: Path) -> tuple[int, str, handoff.Handoff]:
    code = proc.wait(timeout=240)
    out = (root / "agent.log").read_text()
    parsed = handoff.parse_termination_message((root / "termination-log").read_text())
    assert isinstance(parsed, handoff.Handoff), parsed
    return code, out, parsed


def test_tokens_and_cost_appear_on_the_task_while_the_attempt_runs(build_spec, gateway, model, forge, core_v1,
                                                                   custom, namespace, tmp_path):
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=build_spec)
    release = threading.Event()
    model.script(Reply(body=openai_json("gpt-test", (1000, 100), tool=("write_file", {
                     "path": "hello.txt", "content": "hello\n"}))),
                 Reply(body=openai_json("gpt-test", (1200, 50), tool=("finish", {"summary": "hello"})), hold=release))
    proc, root = start_agent(a, core_v1, tmp_path)
    try:
        wait_for(lambda: len(model.seen) == 2, 60, "the runner's second model call")
        # mid-attempt: the first call is on the task, priced, while the runner waits for the second
        p = a.progress(custom)
        assert proc.poll() is None
        assert (p["tokens"], p["calls"], p["attempt"]) == (1100, 1, 1)
        assert p["cost"] == pytest.approx((1000 * 2 + 100 * 8) / 1e6) and p["cost"] > 0
    finally:
        release.set()
    code, out, result = finish(proc, root)
    assert code == 0, out
    assert refs(forge)[f"refs/heads/longshot/{namespace}/b1/b1-t1"] == result.commit
    p = a.progress(custom)
    assert (p["tokens"], p["calls"]) == (2350, 2)
    # the runner's progress lines reached the task too (best effort, through POST /progress)
    assert p["message"] and p["lastHeartbeat"]
    # the model saw the build's key, never the token; the runner never saw the key
    assert {s.headers["authorization"] for s in model.seen} == {f"Bearer {API_KEY}"}
    assert API_KEY not in out and PASSWORD not in out


def test_max_cost_stops_the_attempt_mid_way_with_budget_exceeded(build_spec, gateway, model, core_v1, custom,
                                                                 namespace, tmp_path):
    # the first call's reservation (its prompt of about 1,000 tokens, 0.002) fits; the call itself costs 0.0028
    spec = {**build_spec, "budget": {"maxCost": 0.0025}}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec)
    model.script(Reply(body=openai_json("gpt-test", (1000, 100), tool=("write_file", {  # costs 0.0028
                     "path": "hello.txt", "content": "hello\n"}))),
                 Reply(body=openai_json("gpt-test", (1, 1), tool=("finish", {"summary": "never"}))))
    proc, root = start_agent(a, core_v1, tmp_path)
    code, out, result = finish(proc, root)

    assert code == 7, out
    assert result.outcome == "failed" and result.failure.failure_class == "BudgetExceeded"
    assert "spec.budget.maxCost" in result.failure.message
    assert len(model.seen) == 1


# --- the hostile agent ---------------------------------------------------------------------------------

def scripted(a: AgentAttempt, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tasks": {a.name: steps}}


def test_there_are_no_credentials_to_read_and_the_token_opens_nothing_but_the_gateway(
        build_spec, gateway, forge, core_v1, custom, namespace, tmp_path, control_plane):
    spec = {**build_spec, "agent": {"backend": "scripted", "credentialsSecret": "llm-key"}}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec)
    assert not [v for v in a.pod["spec"]["volumes"] if "secret" in v]
    # the attacker collects everything it can read into its branch, the one channel out it surely has, base64ed
    # so that no scanner recognises a token in it (its own Pod token is a JWT the push scan would refuse)
    # (collected outside the searched directories first: a file that grows while it is read never ends)
    steps = [{"run": {"command": '(env; for f in $(find "$HOME" /etc/longshot /var/run/secrets -type f 2>/dev/null); '
                                 'do echo "== $f"; cat "$f"; done) > /tmp/loot.raw 2>&1; '
                                 'base64 -w0 /tmp/loot.raw > loot.txt; rm -f /tmp/loot.raw'}},
             {"finish": {"summary": "looked around"}}]
    proc, root = start_agent(a, core_v1, tmp_path, script=scripted(a, steps))
    code, out, result = finish(proc, root)

    assert code == 0, out
    encoded = subprocess.run(["git", "show", f"{result.commit}:loot.txt"], cwd=forge.root / "app.git",
                             capture_output=True, check=True).stdout
    loot = base64.b64decode(encoded).decode(errors="replace")
    assert "LONGSHOT_GATEWAY_URL=" in loot and "== " in loot  # it really looked
    for value in (PASSWORD, API_KEY):
        assert value not in loot and value not in out
        assert not any(value in p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())
    # what it can read, its token, opens nothing but the gateway: not the forge, not the API server
    assert httpx.get(f"{forge.url('app')}/info/refs?service=git-upload-pack",
                     headers={"Authorization": f"Bearer {a.token}"}).status_code == 401
    r = httpx.get(f"{control_plane.server}/api/v1/namespaces/{namespace}/secrets",
                  headers={"Authorization": f"Bearer {a.token}"}, verify=False)
    assert r.status_code == 401


def test_a_push_to_main_or_another_tasks_branch_is_refused_and_the_own_branch_still_lands(
        build_spec, gateway, forge, core_v1, custom, namespace, tmp_path):
    spec = {**build_spec, "agent": {"backend": "scripted"}}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec)
    main = refs(forge)["refs/heads/main"]
    push = ('git -c "http.extraHeader=Authorization: Bearer $(cat $LONGSHOT_GATEWAY_TOKEN_FILE)" push '
            f'"$LONGSHOT_GATEWAY_URL/git/{namespace}/b1.git" HEAD:{{ref}} >> pushes.log 2>&1; '
            'echo "exit=$?" >> pushes.log')
    steps = [{"write": {"path": "evil.txt", "content": "pwned\n"}},
             {"run": {"command": "git add -A && git -c user.name=x -c user.email=x@x commit -qm evil"}},
             {"run": {"command": push.format(ref="refs/heads/main")}},
             {"run": {"command": push.format(ref="refs/heads/longshot/b1/b1-other")}},
             {"run": {"command": push.format(ref=":refs/heads/main").replace("HEAD:", "")}},
             {"finish": {"summary": "tried"}}]
    proc, root = start_agent(a, core_v1, tmp_path, script=scripted(a, steps))
    code, out, result = finish(proc, root)

    assert code == 0, out
    # what the attacker saw (its log is in the commit the runner pushed): three refusals with the reason
    seen = subprocess.run(["git", "show", f"{result.commit}:pushes.log"], cwd=forge.root / "app.git",
                          capture_output=True, text=True, check=True).stdout
    assert seen.count("exit=1") == 3 and "exit=0" not in seen, seen
    assert seen.count("[remote rejected]") == 3, seen
    assert f"HEAD -> main (agents may only update refs/heads/longshot/{namespace}/b1/b1-t1 or" in seen
    assert "HEAD -> longshot/b1/b1-other (agents may only update" in seen
    assert "(deleting refs is not allowed for agents)" in seen
    after = refs(forge)
    assert after["refs/heads/main"] == main and "refs/heads/longshot/b1/b1-other" not in after
    assert after[f"refs/heads/longshot/{namespace}/b1/b1-t1"] == result.commit


def test_the_checkouts_git_config_cannot_take_over_the_runners_git(
        build_spec, gateway, forge, core_v1, custom, namespace, tmp_path):
    spec = {**build_spec, "agent": {"backend": "scripted"}}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec)
    marks = tmp_path / "marks"
    marks.mkdir()
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marks}/\"$(basename \"$0\")-$1\"\ncat\n")
    evil.chmod(0o755)
    hooks = ".git/evil-hooks"
    decoy = forge.url("decoy")
    attack = " && ".join([
        f"git config core.fsmonitor {evil}",
        f"mkdir -p {hooks}",
        *[f"cp {evil} {hooks}/{h}" for h in ("pre-commit", "post-commit", "pre-push", "reference-transaction",
                                              "post-checkout")],
        f"git config core.hooksPath {hooks}",
        f"git config remote.origin.pushurl {decoy}",
        f'git config "url.{decoy}.insteadOf" "$LONGSHOT_GATEWAY_URL"',
        f"git config alias.push '!{evil} alias'",
        f"git config alias.commit '!{evil} alias'",
        f"git config filter.evil.clean '{evil} filter'",
        f"git config diff.evil.textconv '{evil} textconv'",
        "printf '* filter=evil diff=evil\\n' > .gitattributes",
        f"git config core.sshCommand '{evil} ssh'",
        "git config http.proxy http://127.0.0.1:9",
        f"printf '[core]\\n\\tfsmonitor = {evil}\\n' > {tmp_path}/inc",
        f"git config include.path {tmp_path}/inc",
    ])
    steps = [{"run": {"command": attack, "check": True}}, {"write": {"path": "feature.txt", "content": "ok\n"}},
             {"finish": {"summary": "feature"}}]
    proc, root = start_agent(a, core_v1, tmp_path, script=scripted(a, steps))
    code, out, result = finish(proc, root)

    assert code == 0, out
    assert sorted(p.name for p in marks.iterdir()) == []  # no hook, fsmonitor, filter, alias or textconv ran
    # pushed where it belongs, via the gateway
    assert refs(forge)[f"refs/heads/longshot/{namespace}/b1/b1-t1"] == result.commit
    assert refs(forge, "decoy") == {}
    assert set(result.files_changed) == {".gitattributes", "feature.txt"}


def test_a_large_handoff_goes_to_its_handoff_ref_through_the_gateway(build_spec, gateway, forge, core_v1, custom,
                                                                      namespace, tmp_path):
    spec = {**build_spec, "agent": {"backend": "scripted"}}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec, task="b1-planner", role="planner")
    tasks = [{"name": f"t{i}", "description": "x" * 300} for i in range(30)]
    proc, root = start_agent(a, core_v1, tmp_path, script={"roles": {"planner": [
        {"finish": {"summary": "big plan", "tasks": tasks}}]}})
    code = proc.wait(timeout=240)
    out = (root / "agent.log").read_text()
    assert code == 0, out
    pointer = handoff.parse_termination_message((root / "termination-log").read_text())
    assert isinstance(pointer, handoff.HandoffPointer)
    assert refs(forge)[f"refs/longshot/handoffs/{namespace}/b1/b1-planner/1"] == pointer.commit
