"""People's messages to a running agent, end to end: ``kubectl longshot say`` writes ``spec.messages`` on the real
API server, the real gateway hands each to its attempt's runner (``GET /v1/messages``, on the Pod's token) and
records it (``status.messages.delivered``, a ``message`` event in the attempt's ledger), and the runner's built-in
loop (the OpenAI-compatible backend) puts it before its next model call, so the fake model sees it and the gateway
meters it. An interrupt kills the tool call that runs (``sleep 600``) and the loop waits for the next message.

The runner runs as a process with what its Pod would give it (test_gateway_agent's ``start_agent``)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Any

import httpx
import pytest
from gateway_attempts import make_attempt, secret
from gateway_fakes import Reply, fake_model, openai_json
from gateway_server import GatewayThread
from k8s_builders import get
from test_gateway_agent import API_KEY, PASSWORD, finish, start_agent
from test_gateway_agent import forge as forge  # the fixture

from longshot.cli import main as cli
from longshot.core import ledger
from longshot_testing import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def model():
    with fake_model() as m:
        yield m


@pytest.fixture
def build_spec(core_v1, namespace, forge, model):
    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    secret(core_v1, namespace, "llm-key", {"api-key": API_KEY})
    return {"repository": {"url": forge.url("app"), "credentialsSecret": "git-token"},
            "agent": {"backend": "openai", "model": "gpt-test", "baseUrl": f"{model.url}/v1",
                      "credentialsSecret": "llm-key"}}


def say(control_plane, namespace: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, "say", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def metered(tool: tuple[str, Any]) -> Reply:
    """A reply whose prompt tokens are what the request weighs (a character in four): what the model reads, the
    gateway meters."""
    return Reply(body=lambda request: openai_json("gpt-test", (len(json.dumps(request)) // 4, 10), tool=tool))


def delivered(custom, namespace: str, task: str) -> list[int]:
    status = get(custom, namespace, "agenttasks", task).get("status") or {}
    return [d["id"] for d in (status.get("messages") or {}).get("delivered") or []]


def user_texts(request_body: Any) -> str:
    return "\n".join(str(m.get("content")) for m in request_body["messages"] if m.get("role") in ("user", "tool"))


def ledger_events(core_v1, namespace: str, pod: str) -> list[dict[str, Any]]:
    cm = core_v1.read_namespaced_config_map(ledger.entry_name(pod), namespace)
    raw = ledger.decompress(base64.b64decode(cm.binary_data[ledger.TRANSCRIPT_KEY]))
    return [json.loads(line) for line in raw.decode().splitlines() if line]


def test_a_message_reaches_the_models_next_request_is_metered_and_recorded_and_never_goes_to_another_task(
        build_spec, gateway, model, control_plane, core_v1, custom, namespace, tmp_path):
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=build_spec)
    other = make_attempt(core_v1, custom, namespace, gateway.url, task="b1-t2", build_spec=build_spec)
    first_out = Reply(body=openai_json("gpt-test", (10, 10), tool=("write_file", {"path": "a.txt", "content": "a\n"})))
    held = first_out.hold = threading.Event()
    model.script(first_out, metered(("finish", {"summary": "done"})))
    proc, root = start_agent(a, core_v1, tmp_path)
    try:
        wait_for(lambda: len(model.seen) == 1, 60, "the runner's first model call")
        # a message to another task's running attempt, and one to this task
        assert say(control_plane, namespace, "b1-t2", "secret plan for t2 only")[0] == 0
        code, out, err = say(control_plane, namespace, "b1-t1", "Use port 8080, not 80.")
        assert code == 0, err
        assert out == ("agenttask/b1-t1: message #1 sent to attempt 1; the agent reads it before its next model "
                       "call\n")
        # the runner asks before its next model call (wait=0: the gateway answers from the AgentTask its identity
        # check read, cached 1 s here); once the gateway shows the message to this attempt, let the model answer
        wait_for(lambda: [m["id"] for m in httpx.get(f"{gateway.url}/v1/messages?after=0", headers=a.headers,
                                                     timeout=30).json()["messages"]] == [1],
                 60, "the gateway to see message #1 for this attempt")
    finally:
        held.set()
    code, log, result = finish(proc, root)
    assert code == 0 and result.outcome == "succeeded", log

    second = model.seen[1].body
    assert "Use port 8080, not 80." in user_texts(second) and "#1 from a person" in user_texts(second)
    assert "secret plan for t2 only" not in json.dumps([s.body for s in model.seen])
    # what the model read, the gateway metered: the second call's prompt carried the message
    p = a.progress(custom)
    assert p["inputTokens"] == 10 + len(json.dumps(second)) // 4
    # the message is on the task with its author, recorded as delivered to attempt 1, and in the attempt's ledger
    sent = get(custom, namespace, "agenttasks", "b1-t1")["spec"]["messages"]
    assert [(m["id"], m["attempt"], m["text"]) for m in sent] == [(1, 1, "Use port 8080, not 80.")]
    assert sent[0]["author"]  # the API server's name for the test's admin user
    events = [e for e in ledger_events(core_v1, namespace, a.pod["metadata"]["name"])
              if e["type"] == "message" and e.get("source") == "gateway"]
    # (twice: the test's own ask on the attempt's token above is a delivery too)
    assert [(e["id"], e["text"], e["from"]) for e in events] == [(1, "Use port 8080, not 80.", "person")] * 2
    # the other task's message went nowhere: its attempt's runner never asked
    assert delivered(custom, namespace, "b1-t2") == []
    # and this attempt's token never reads the other task's messages, even when it asks for all of them
    r = httpx.get(f"{gateway.url}/v1/messages?after=0", headers=other.headers, timeout=30)
    assert r.status_code == 200 and [m["text"] for m in r.json()["messages"]] == ["secret plan for t2 only"]


def test_an_interrupt_kills_a_long_tool_call_and_the_attempt_goes_on_with_the_next_message(
        build_spec, gateway, model, control_plane, core_v1, custom, namespace, tmp_path):
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=build_spec)
    model.script(metered(("run_command", {"command": "touch started && sleep 600"})),
                 metered(("finish", {"summary": "done as told"})))
    proc, root = start_agent(a, core_v1, tmp_path)
    try:
        started = root / "workspace" / "repo" / "started"
        wait_for(started.exists, 60, "the long tool call to start")
        code, _, err = say(control_plane, namespace, "b1-t1", "--interrupt", "Stop, that takes too long.")
        assert code == 0, err
        sent = time.monotonic()
        log = root / "agent.log"
        wait_for(lambda: "interrupted by a person" in log.read_text(), 30, "the tool call to be interrupted")
        took = time.monotonic() - sent
        print(f"interrupt: the tool call was killed {took:.2f} s after say returned")
        assert took < 10, took  # the gateway's poll (1 s), the runner's check (0.2 s), the kill
        # held: no model call until the next message
        wait_for(lambda: "waiting for their next message" in log.read_text(), 30, "the loop to hold")
        assert len(model.seen) == 1 and proc.poll() is None
        assert say(control_plane, namespace, "b1-t1", "Run the quick tests instead.")[0] == 0
        code, log_text, result = finish(proc, root)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and result.outcome == "succeeded" and result.summary == "done as told", log_text
    second = user_texts(model.seen[1].body)
    assert "interrupted by a person" in second  # the killed call's result
    assert "Stop, that takes too long." in second and "Run the quick tests instead." in second
    assert second.index("Stop, that takes too long.") < second.index("Run the quick tests instead.")
    assert delivered(custom, namespace, "b1-t1") == [1, 2]


def test_messages_live_on_the_task_and_survive_a_gateway_restart_and_go_to_their_attempt_only(
        build_spec, gateway_settings, control_plane, core_v1, custom, namespace):
    with GatewayThread(control_plane.kubeconfig, gateway_settings) as first:
        a = make_attempt(core_v1, custom, namespace, first.url, build_spec=build_spec)
        assert say(control_plane, namespace, "b1-t1", "one")[0] == 0
        r = httpx.get(f"{first.url}/v1/messages?after=0&wait=0", headers=a.headers, timeout=30)
        assert [m["id"] for m in r.json()["messages"]] == [1]
        assert say(control_plane, namespace, "b1-t1", "two")[0] == 0
    # the first gateway is gone (and with it anything it held in memory); a new one serves what is on the task
    with GatewayThread(control_plane.kubeconfig, gateway_settings) as second:
        r = httpx.get(f"{second.url}/v1/messages?after=1&wait=5", headers=a.headers, timeout=30)
        assert r.status_code == 200 and [(m["id"], m["text"]) for m in r.json()["messages"]] == [(2, "two")]
        assert delivered(custom, namespace, "b1-t1") == [1, 2]
        # a long poll returns as soon as a message comes
        start = time.monotonic()
        with httpx.Client(timeout=60) as client:
            answers: list[httpx.Response] = []
            poll = threading.Thread(target=lambda: answers.append(client.get(
                f"{second.url}/v1/messages?after=2&wait=20", headers=a.headers)))
            poll.start()
            assert say(control_plane, namespace, "b1-t1", "three", "--interrupt")[0] == 0
            poll.join(30)
        assert [(m["id"], m["interrupt"]) for m in answers[0].json()["messages"]] == [(3, True)]
        assert time.monotonic() - start < 15
        # a new attempt does not get the old attempt's messages; a message sent now is its own
        task = get(custom, namespace, "agenttasks", "b1-t1")
        custom.patch_namespaced_custom_object_status(
            "longshot.dev", "v1alpha1", namespace, "agenttasks", "b1-t1",
            {"status": {"attempts": [{**task["status"]["attempts"][0], "endTime": "2026-01-01T00:00:00Z"}]}})
        r = httpx.get(f"{second.url}/v1/messages?after=0", headers=a.headers, timeout=30)
        assert r.status_code == 403  # the attempt ended: its token no longer reads messages
        code, _, err = say(control_plane, namespace, "b1-t1", "four")
        assert code == 1 and "no running attempt" in err and err.count("\n") == 1


def test_the_api_server_refuses_what_a_message_may_not_be(control_plane, core_v1, custom, namespace, gateway,
                                                           build_spec):
    import kubernetes

    make_attempt(core_v1, custom, namespace, gateway.url, build_spec=build_spec)

    def patch(messages: list[dict[str, Any]]) -> str:
        try:
            custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", "b1-t1",
                                                  {"spec": {"messages": messages}})
        except kubernetes.client.ApiException as e:
            return str(json.loads(e.body)["message"])
        return ""

    assert "spec.messages[0].text" in patch([{"id": 1, "attempt": 1, "text": "x" * 5000}])
    assert "spec.messages[1]" in patch([{"id": 1, "attempt": 1, "text": "a"}, {"id": 1, "attempt": 1, "text": "b"}])
    assert "spec.messages" in patch([{"id": i, "attempt": 1, "text": "a"} for i in range(1, 52)])
    assert patch([{"id": 1, "attempt": 1, "text": "a"}, {"id": 2, "attempt": 1, "text": "b"}]) == ""
    assert "append-only" in patch([{"id": 1, "attempt": 1, "text": "a"}])


def test_two_senders_at_once_never_lose_a_message(control_plane, api_client, core_v1, custom, namespace, gateway,
                                                   build_spec):
    make_attempt(core_v1, custom, namespace, gateway.url, build_spec=build_spec)

    class Racing(cli.Kube):
        """A second sender appends between this sender's read and its write (once)."""

        raced = False

        def patch(self, kind: str, name: str, body: Any) -> dict[str, Any]:
            if not Racing.raced:
                Racing.raced = True
                assert say(control_plane, namespace, "b1-t1", "from bob")[0] == 0
            return super().patch(kind, name, body)

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["say", "b1-t1", "from alice"], out=out, err=err, kube=Racing(api_client, namespace))
    assert code == 0, err.getvalue()
    assert "message #2" in out.getvalue()  # the first try met a conflict (409), the second took the next id
    sent = get(custom, namespace, "agenttasks", "b1-t1")["spec"]["messages"]
    assert [(m["id"], m["text"]) for m in sent] == [(1, "from bob"), (2, "from alice")]
