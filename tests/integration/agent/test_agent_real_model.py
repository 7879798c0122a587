"""The agent runner's openai backend against a real model server: llama-cpp-python's OpenAI-compatible
server with Gemma 3 270M (from PyPI), grammar-constrained tool calls, as a local process.

What is asserted is the protocol, never the model's prose or the quality of its work: every request the
runner sends is accepted (no validation error, no retry), the model's tool calls are executed, the loop ends
in a pushed branch, an empty change, or a clear agent failure, and the tokens come from the server's usage.

These tests run with ``make test-llm`` (``LONGSHOT_REAL_MODEL=1``), not in ``make test``: a small model on 2
shared cores takes from one to many minutes per test, which does not fit the default tiers' time. The server's
virtualenv and model are prepared by ``bash hack/model-server.sh model`` into ~/.cache/longshot (the first time
compiles llama.cpp: about an hour on 2 busy cores). Skipped, with the command, when they are not prepared
(``LONGSHOT_PREPARE_MODEL=1`` lets the test prepare them) or PyPI does not serve the model.
"""

from __future__ import annotations

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
    llama_cpp_server,
    model_server_ready,
    prepare_model_server,
    task_input,
    tool_bin,
)

from longshot.testing.controlplane import free_port

# the first run prepares the server (compiling llama.cpp); the model then answers in seconds per turn
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealModel]:
    if os.environ.get("LONGSHOT_REAL_MODEL") != "1":
        pytest.skip("the real-model tests run with `make test-llm` (LONGSHOT_REAL_MODEL=1)")
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    if not model_server_ready() and os.environ.get("LONGSHOT_PREPARE_MODEL") != "1":
        # preparing compiles llama.cpp (about an hour on 2 busy cores): too long for a test run to start by itself
        pytest.skip("the model server is not prepared here: run `bash hack/model-server.sh model` once "
                    "(or set LONGSHOT_PREPARE_MODEL=1 to let this test prepare it)")
    try:
        prepare_model_server(log)
    except ModelUnavailable as e:
        pytest.skip(str(e))
    with llama_cpp_server(log, port=free_port()) as server:
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
    the tool result) are accepted by the real server; null content is refused with a validation error
    in a 500, which the backend classifies as Configuration (not retried)."""
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
        echoed = turn.wire()
        if not turn.calls:  # the model answered in prose: echo a call as if it had made one
            echoed = openai.Turn("", [openai.ToolCall("call_1_0", "read_file", {"path": "app.py"})], None).wire()
        results = [{"role": "tool", "tool_call_id": c["id"], "content": "def greet():\n    return 'hi'\n"}
                   for c in echoed["tool_calls"]]
        second = client.post(f"{real_model.base_url}/chat/completions", json={
            "model": real_model.model, "messages": [system, user, echoed, *results], "tools": tools,
            "tool_choice": "auto"})
        assert second.status_code == 200, second.text
        assert all(n > 0 for n in openai.usage_tokens(second.json().get("usage"))), second.text

        refused = client.post(f"{real_model.base_url}/chat/completions", json={
            "model": real_model.model, "messages": [system, user, {**echoed, "content": None}, *results],
            "tools": tools})
    print(f"\nnull content: {refused.status_code} {refused.text[:300]}")
    assert refused.status_code >= 400
    failure = http.invalid_request("OpenAI-compatible API", "u", refused.status_code,
                                   http._error_message(refused))
    assert refused.status_code < 500 or http.is_validation_error(refused), refused.text
    assert failure.failure_class == "Configuration"


def needs_tool(name: str) -> Path:
    bin_dir = tool_bin(name)
    if bin_dir is None:
        pytest.skip(f"{name} is not prepared here: run `bash hack/model-server.sh tools` (PyPI, a few minutes)")
    return bin_dir


def test_the_anthropic_backend_through_litellms_messages_api(daemon, repo, run_agent, real_model, tmp_path):
    """LiteLLM's proxy translates the Messages API to the real server's chat completions. The first turn's
    tool call comes back as a tool_use block and is executed. LiteLLM 1.106.2 then sends the assistant
    turn without ``content`` (the model wrote no text), which llama-cpp-python's chat template cannot
    render (500 "'dict object' has no attribute 'content'"): that must fail fast as Configuration, not
    be retried; a model that writes text next to its call gets further."""
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
        assert h.failure.failure_class in ("Configuration", "AgentError"), h.failure
        if h.failure.failure_class == "Configuration":
            assert "chat template" in h.failure.message and "has no attribute 'content'" in h.failure.message
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
