"""The agent runner's openai backend against a real model server: ``hack/model_server.py`` (an OpenAI-compatible
server on llama.cpp, prebuilt in the cyllama wheel) with Gemma 3 270M (from PyPI), grammar-constrained tool calls,
as a local process.

What is asserted is the protocol, never the model's prose or the quality of its work: every request the
runner sends is accepted (no validation error, no retry), the model's tool calls are executed, the loop ends
in a pushed branch, an empty change, or a clear agent failure, and the tokens come from the server's usage.

These tests run with ``make test-llm`` (``LONGSHOT_REAL_MODEL=1``), not in ``make test``: a small model on 2
shared cores takes from one to many minutes per test, which does not fit the default tiers' time. The server's
virtualenv and model are prepared by ``bash hack/model-server.sh model`` into ~/.cache/longshot (wheels from PyPI,
seconds; nothing is compiled). Skipped, with the command, when they are not prepared (``LONGSHOT_PREPARE_MODEL=1``
lets the test prepare them) or PyPI does not serve the model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_servers import (
    LITELLM_KEY,
    ModelUnavailable,
    RealModel,
    aider_command,
    litellm_proxy,
    model_server,
    model_server_ready,
    prepare_model_server,
    task_input,
    tool_bin,
)

from longshot_testing.controlplane import free_port

# the model answers in seconds per turn; a whole agent conversation takes one to a few minutes
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealModel]:
    if os.environ.get("LONGSHOT_REAL_MODEL") != "1":
        pytest.skip("the real-model tests run with `make test-llm` (LONGSHOT_REAL_MODEL=1)")
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    if not model_server_ready() and os.environ.get("LONGSHOT_PREPARE_MODEL") != "1":
        # preparing downloads the wheels and the model (about 300 MB): only when asked
        pytest.skip("the model server is not prepared here: run `bash hack/model-server.sh model` once "
                    "(or set LONGSHOT_PREPARE_MODEL=1 to let this test prepare it)")
    try:
        prepare_model_server(log)
    except ModelUnavailable as e:
        pytest.skip(str(e))
    with model_server(log, port=free_port()) as server:
        yield server


def test_a_worker_with_a_real_model_server_runs_its_tools_and_pushes_or_says_why(daemon, repo, run_agent,
                                                                                  real_model):
    task = task_input(
        daemon.url(repo), description="Create a file named hello.txt whose content is the word hello. "
                                      "Use the write_file tool, then call finish.",
        backend={"name": "openai", "model": real_model.model, "baseUrl": real_model.base_url, "maxTurns": 8})
    start = time.monotonic()
    result = run_agent(task)
    elapsed = time.monotonic() - start
    h = result.handoff
    calls = result.tool_calls()
    print(f"\nreal model: {elapsed:.1f}s, {len(calls)} tool call(s) {[c['tool'] for c in calls]}, "
          f"outcome {h.outcome}, tokens {h.usage.input_tokens}+{h.usage.output_tokens}")

    # every request was accepted: no validation error, no retry, no infrastructure failure
    retries = [e for e in result.events("log") if e["message"] == "retrying model request"]
    assert retries == [], (retries, real_model.log_tail())
    assert h.failure is None or h.failure.failure_class == "AgentError", (h.failure, real_model.log_tail())
    # the model's tool calls reached the tools (grammar-constrained: their arguments parse)
    assert calls, result.stdout[-3000:]
    assert not any("arguments are not valid JSON" in str(c.get("result")) for c in calls), calls
    # the loop ended as the protocol says: a pushed branch, an empty change, a question, or a named agent failure
    if h.outcome == "succeeded":
        assert daemon.ls_remote(repo)[f"refs/heads/{task['branch']}"] == h.commit
        assert h.files_changed
    elif h.outcome == "failed":
        assert "did not call finish" in h.failure.message or "invalid" in h.failure.message, h.failure
    elif h.outcome == "needs-input":  # workers may ask a person (issue 14); the question reaches the handoff
        assert h.question and any(c["tool"] == "ask" for c in calls), calls
    else:
        assert h.outcome == "empty" and any(c["tool"] == "finish" for c in calls)
    # tokens: the server's usage of every turn, summed into the handoff
    turns = result.events("tokens")
    assert turns and all(t["input_tokens"] > 0 and t["output_tokens"] > 0 for t in turns), turns
    assert h.usage.input_tokens == sum(t["input_tokens"] for t in turns)
    assert h.usage.output_tokens == sum(t["output_tokens"] for t in turns)


def test_the_real_server_accepts_the_conversation_shapes_the_backend_sends(real_model, tmp_path: Path):
    """The requests the backend builds after a tool call (assistant turn with "" content and the call's id,
    the tool result) are accepted by the real server, and so is the OpenAI shape with null content; a request
    the server refuses is a 400 naming the field, which the backend classifies as Configuration (not
    retried)."""
    import httpx

    from longshot.agent.backends import http, openai

    tools = openai.tool_definitions("worker")
    system = {"role": "system", "content": "You edit files with tools."}
    user = {"role": "user", "content": "Read the file app.py."}
    with httpx.Client(timeout=300) as client:
        first = client.post(f"{real_model.base_url}/chat/completions", json={
            "model": real_model.model, "messages": [system, user], "tools": tools, "tool_choice": "auto"})
        assert first.status_code == 200, first.text
        turn = openai.parse_turn(first.json(), 1)
        # the grammar makes every answer to a request with tools one call of one of them, unless the model ran
        # into max_tokens first (a small model repeats a path until it does): then it is text, said so
        if first.json()["choices"][0]["finish_reason"] == "length":
            assert not turn.calls, first.text
            turn = openai.Turn("", [openai.ToolCall("call_1_0", "read_file", {"path": "app.py"})], None)
        else:
            assert len(turn.calls) == 1 and turn.calls[0].name in {t["function"]["name"] for t in tools}, first.text
            assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
        echoed = turn.wire()
        results = [{"role": "tool", "tool_call_id": c["id"], "content": "def greet():\n    return 'hi'\n"}
                   for c in echoed["tool_calls"]]
        second = client.post(f"{real_model.base_url}/chat/completions", json={
            "model": real_model.model, "messages": [system, user, echoed, *results], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "finish"}}})
        assert second.status_code == 200, second.text
        assert all(n > 0 for n in openai.usage_tokens(second.json().get("usage"))), second.text
        forced = openai.parse_turn(second.json(), 2)
        if second.json()["choices"][0]["finish_reason"] != "length":
            assert [c.name for c in forced.calls] == ["finish"], second.text  # tool_choice names the one tool

        null_content = client.post(f"{real_model.base_url}/chat/completions", json={
            "model": real_model.model, "messages": [system, user, {**echoed, "content": None}, *results],
            "tools": tools})
        assert null_content.status_code == 200, null_content.text

        refused = client.post(f"{real_model.base_url}/chat/completions", json={
            "model": real_model.model, "messages": [system, {"role": "narrator", "content": "x"}], "tools": tools})
    print(f"\nrefused: {refused.status_code} {refused.text[:300]}")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "messages.1.role", refused.text
    failure = http.invalid_request("OpenAI-compatible API", "u", refused.status_code,
                                   http._error_message(refused))
    assert failure.failure_class == "Configuration"
    assert "messages.1.role" in str(failure)


HOSTILE_SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"},
                                      "tag": {"type": "string", "pattern": r"^[\^\-a-z\]\[]{1,8}$"}},
     "required": ["name", "tag"]},
    {"type": "object", "properties": {"mode": {"enum": ["a\"b", "back\\slash", 3, None]},
                                      "deep": {"type": "array", "items": {"type": "array", "items": {
                                          "type": "object", "properties": {"v": {}}}}, "maxItems": 2}},
     "required": ["mode", "deep"]},
    {"type": "object", "properties": {"odd": {"type": "string", "pattern": r"(?=x)y|[^\x00-\x7f]{2}"},
                                      "any": {"type": ["string", "integer", "null"]}},
     "required": ["odd", "any"]},
]


def test_every_roles_tools_and_odd_schemas_get_a_call_that_satisfies_them(real_model):
    """The grammar the server builds is one llama.cpp parses, for every role's tools and for schemas with
    escapes, quotes, nesting and patterns it cannot translate: a grammar llama.cpp refused would crash the
    server (seen: a class with an escaped dash, exit 139), so each answer is checked and the server must live."""
    import re

    import httpx

    from longshot.agent.backends import openai

    with httpx.Client(timeout=600) as client:
        for role in ("planner", "worker", "reviewer", "fixer", "subplanner"):
            tools = openai.tool_definitions(role)
            reply = client.post(f"{real_model.base_url}/chat/completions", json={
                "model": real_model.model, "messages": [{"role": "user", "content": "Plan one task: add hello.txt."}],
                "tools": tools, "tool_choice": {"type": "function", "function": {"name": "finish"}},
                "max_tokens": 400})
            assert reply.status_code == 200, (role, reply.text, real_model.log_tail())
            message = reply.json()["choices"][0]["message"]
            if reply.json()["choices"][0]["finish_reason"] == "length":
                continue  # cut at max_tokens: text, said so
            (call,) = message["tool_calls"]
            args = json.loads(call["function"]["arguments"])
            assert call["function"]["name"] == "finish" and "summary" in args, (role, args)
            for task in args.get("tasks") or []:
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", task["name"]), task
        for i, schema in enumerate(HOSTILE_SCHEMAS):
            reply = client.post(f"{real_model.base_url}/chat/completions", json={
                "model": real_model.model, "messages": [{"role": "user", "content": "Call the tool."}],
                "tools": [{"type": "function", "function": {"name": f"t{i}", "parameters": schema}}],
                "max_tokens": 300})
            assert reply.status_code == 200, (i, reply.text, real_model.log_tail())
            choice = reply.json()["choices"][0]
            print(f"\nschema {i}: {choice['finish_reason']} {json.dumps(choice['message'])[:300]}")
            if choice["finish_reason"] == "length":
                continue
            args = json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])
            assert set(schema["required"]) <= set(args), args
            if i == 0:
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", args["name"]), args
                assert re.fullmatch(r"[\^\-a-z\]\[]{1,8}", args["tag"]), args
            if i == 1:
                assert args["mode"] in ["a\"b", "back\\slash", 3, None] and len(args["deep"]) <= 2, args
        assert client.get(f"{real_model.base_url.removesuffix('/v1')}/health").status_code == 200


def needs_tool(name: str) -> Path:
    bin_dir = tool_bin(name)
    if bin_dir is None:
        pytest.skip(f"{name} is not prepared here: run `bash hack/model-server.sh tools` (PyPI, a few minutes)")
    return bin_dir


def test_the_anthropic_backend_through_litellms_messages_api(daemon, repo, run_agent, real_model, tmp_path):
    """LiteLLM's proxy translates the Messages API to the real server's chat completions. The tool calls come
    back as tool_use blocks and are executed; LiteLLM 1.106.2 sends an assistant turn that has only tool
    calls without ``content``, which this server renders (llama-cpp-python's chat template could not: a 500
    that the backend fails fast as Configuration). The conversation goes on to the end: a pushed branch, an
    empty change or an agent failure, never a broken conversation."""
    bin_dir = needs_tool("litellm")
    with litellm_proxy(bin_dir, real_model, tmp_path, port=free_port()) as base_url:
        task = task_input(daemon.url(repo), description="Create a file named hello.txt whose content is the word "
                          "hello. Use the write_file tool, then call finish.",
                          backend={"name": "anthropic", "model": "claude-local", "baseUrl": base_url,
                                   "maxTurns": 6})
        result = run_agent(task, api_key=LITELLM_KEY)
    h = result.handoff
    calls = result.tool_calls()
    print(f"\nanthropic via LiteLLM: outcome {h.outcome}, {len(calls)} tool call(s), failure {h.failure}")
    assert calls, result.stdout[-3000:]
    assert [e for e in result.events("log") if e["message"] == "retrying model request"] == []
    assert result.events("tokens") and h.usage.input_tokens > 0
    if h.outcome == "failed":
        assert h.failure.failure_class == "AgentError", h.failure
    elif h.outcome == "needs-input":
        assert h.question and calls[-1]["tool"] == "ask", calls
    # past the turn llama-cpp-python refused (unless the first call ended the session: finish, or ask)
    assert len(result.events("tokens")) >= 2 or calls[0]["tool"] in ("finish", "ask"), result.stdout[-3000:]
    assert LITELLM_KEY not in result.stdout


def test_the_command_backend_with_aider_against_the_real_server(daemon, repo, run_agent, real_model):
    """Aider (the real CLI) edits the checkout through the real server; the runner commits what it left
    and pushes, and takes the tokens from Aider's output."""
    bin_dir = needs_tool("aider")
    task = task_input(daemon.url(repo), description="Create a file named hello.txt whose content is the word hello.",
                      backend={"name": "command", "model": real_model.model,
                               "command": aider_command(bin_dir, real_model)})
    result = run_agent(task, env={"LONGSHOT_AGENT_TIMEOUT_SECONDS": "900"})
    h = result.handoff
    print(f"\naider: outcome {h.outcome}, files {h.files_changed}, tokens {h.usage}")
    assert result.exit_code == 0, h.failure
    command = result.tool_calls("command")
    assert command and command[0]["ok"] and "Aider v0.86.2" in command[0]["result"]
    assert h.outcome == "succeeded" and "hello.txt" in h.files_changed  # Aider creates the file it is given
    assert daemon.ls_remote(repo)[f"refs/heads/{task['branch']}"] == h.commit
    assert not any(f.startswith(".aider") for f in h.files_changed), h.files_changed
    assert h.usage.input_tokens > 0 and h.usage.output_tokens > 0
