"""The OpenAI-compatible and Anthropic backends against local servers speaking their protocols."""

from __future__ import annotations

import pytest
from agent_servers import Reply, anthropic_tools, openai_tools, task_input

from longshot.testing.controlplane import free_port

pytestmark = pytest.mark.integration

API_KEY = "sk-test-0123456789abcdefghijklmnop"


def openai_backend(model, **extra):
    return {"name": "openai", "model": "gpt-test", "baseUrl": model.base_url + "/v1", **extra}


def anthropic_backend(model, **extra):
    return {"name": "anthropic", "model": "claude-test", "baseUrl": model.base_url, **extra}


def test_openai_worker_uses_the_tools_and_recovers_from_malformed_arguments(daemon, repo, run_agent, model):
    model.script(
        openai_tools(("list_files", {}), ("read_file", {"path": "app.py"}), content="Let me look."),
        openai_tools(("write_file", '{"path": "bye.py", "content": "unterminated')),
        openai_tools(("write_file", {"path": "bye.py", "content": "def bye():\n    return 'bye'\n"}),
                     ("edit_file", {"path": "app.py", "old": "'hi'", "new": "'hello'"})),
        openai_tools(("run_command", {"command": "python3 -c 'import bye; print(bye.bye())'"})),
        openai_tools(("finish", {"summary": "Add bye()"}), usage=(400, 10)),
    )
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY)

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert h.files_changed == ["app.py", "bye.py"]
    assert daemon.ls_remote(repo)["refs/heads/longshot/b1/b1-t1"] == h.commit
    assert (h.usage.input_tokens, h.usage.output_tokens) == (800, 90)
    first = model.requests[0]
    assert first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == f"Bearer {API_KEY}"
    assert first.body["model"] == "gpt-test"
    assert {t["function"]["name"] for t in first.body["tools"]} == {
        "list_files", "read_file", "write_file", "edit_file", "search", "run_command", "ask", "finish"}
    assert first.body["messages"][0]["role"] == "system" and "Add a farewell" in first.body["messages"][1]["content"]
    # the model saw the file it read, and the parse error of its malformed call
    second = model.requests[1].body["messages"]
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1_read_file",
                          "content": "def greet():\n    return 'hi'\n"}
    malformed = model.requests[2].body["messages"][-1]
    assert malformed["role"] == "tool" and malformed["content"].startswith("error: the arguments are not valid JSON")
    assert "bye" in model.requests[4].body["messages"][-1]["content"]
    assert API_KEY not in result.stdout
    assert len(result.events("tokens")) == 5


def test_openai_storm_of_429_is_retried_until_it_passes(daemon, repo, run_agent, model):
    limited = Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"})
    model.script(limited, limited, Reply(503, {"error": {"message": "overloaded"}}), limited,
                 openai_tools(("finish", {"summary": "nothing needed"})))
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY)

    assert result.exit_code == 0, result.stdout
    assert result.handoff.outcome == "empty"
    # Retry-After is honoured; without it, exponential backoff: 1s * 2**2 * jitter 0.75 (rand() is 0.5)
    assert result.sleeps == [7, 7, 3.0, 7]
    assert len(model.requests) == 5
    warnings = [e for e in result.events("log") if e["message"] == "retrying model request"]
    assert [w["status"] for w in warnings] == [429, 429, 503, 429]


def test_openai_gives_up_as_rate_limited(daemon, repo, run_agent, model):
    model.script(*[Reply(429, {"error": {"message": "quota"}}) for _ in range(4)])
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY,
                       env={"LONGSHOT_RETRY_MAX_ATTEMPTS": "4", "LONGSHOT_RETRY_BASE_SECONDS": "2"})

    assert result.exit_code == 4
    assert result.handoff.failure.failure_class == "RateLimited"
    assert "gave up after 4 attempts" in result.handoff.failure.message
    assert result.sleeps == [1.5, 3.0, 6.0]  # 2s * 2**n, jitter 0.75
    assert len(model.requests) == 4


def test_openai_401_is_an_auth_failure_without_retry(daemon, repo, run_agent, model):
    model.script(Reply(401, {"error": {"message": "Incorrect API key provided"}}),
                 openai_tools(("finish", {"summary": "never reached"})))
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY)

    assert result.exit_code == 3
    assert result.handoff.failure.failure_class == "Auth"
    assert "Incorrect API key" in result.handoff.failure.message
    assert len(model.requests) == 1 and result.sleeps == []


def test_an_unreachable_model_api_is_an_infrastructure_failure(daemon, repo, run_agent):
    backend = {"name": "openai", "model": "m", "baseUrl": f"http://127.0.0.1:{free_port()}/v1"}
    result = run_agent(task_input(daemon.url(repo), backend=backend), env={"LONGSHOT_RETRY_MAX_ATTEMPTS": "2"})

    assert result.exit_code == 5
    assert "cannot reach the OpenAI-compatible API" in result.handoff.failure.message


def test_the_model_must_finish_within_max_turns(daemon, repo, run_agent, model):
    model.script(*[openai_tools(("list_files", {})) for _ in range(3)])
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model, maxTurns=3)))

    assert result.exit_code == 1
    assert "did not call finish within 3 turns" in result.handoff.failure.message


def test_anthropic_worker_uses_tool_use_blocks(daemon, repo, run_agent, model):
    model.script(
        anthropic_tools(("read_file", {"path": "app.py"}), text="Reading first."),
        anthropic_tools(("edit_file", {"path": "app.py", "old": "'hi'"}),),
        anthropic_tools(("edit_file", {"path": "app.py", "old": "'hi'", "new": "'hey'"}),),
        anthropic_tools(("finish", {"summary": "Say hey"}), usage=(50, 5)),
    )
    result = run_agent(task_input(daemon.url(repo), backend=anthropic_backend(model)), api_key=API_KEY)

    assert result.exit_code == 0, result.stdout
    assert result.handoff.files_changed == ["app.py"]
    assert (result.handoff.usage.input_tokens, result.handoff.usage.output_tokens) == (350, 65)
    first = model.requests[0]
    assert first.path == "/v1/messages"
    assert first.headers["x-api-key"] == API_KEY and first.headers["anthropic-version"] == "2023-06-01"
    assert first.body["system"].startswith("You are a careful software engineer")
    assert {t["name"] for t in first.body["tools"]} >= {"read_file", "finish"}
    assert "input_schema" in first.body["tools"][0]
    results = model.requests[1].body["messages"][-1]["content"]
    assert results == [{"type": "tool_result", "tool_use_id": "toolu_0",
                        "content": "def greet():\n    return 'hi'\n", "is_error": False}]
    missing = model.requests[2].body["messages"][-1]["content"][0]
    assert missing["is_error"] is True and "missing required argument 'new'" in missing["content"]


def test_anthropic_errors_are_classified_like_openai(daemon, repo, run_agent, model):
    model.script(Reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                       {"retry-after": "0"}),
                 Reply(403, {"type": "error", "error": {"type": "permission_error", "message": "no access"}}))
    result = run_agent(task_input(daemon.url(repo), backend=anthropic_backend(model)), api_key=API_KEY)

    assert result.exit_code == 3
    assert result.handoff.failure.failure_class == "Auth"
    assert result.sleeps == [0.0] and len(model.requests) == 2


def test_a_model_backend_without_a_model_is_a_configuration_error(daemon, repo, run_agent):
    result = run_agent(task_input(daemon.url(repo), backend={"name": "anthropic"}))

    assert result.exit_code == 2
    assert "needs a model" in result.handoff.failure.message
