"""The OpenAI-compatible and Anthropic backends against local servers speaking their protocols."""

from __future__ import annotations

import pytest
from agent_servers import Reply, anthropic_tools, llama_cpp_validation_error, openai_message, openai_tools, task_input

from longshot.agent.backends.base import WRAP_UP
from longshot_testing.controlplane import free_port

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
    assert daemon.ls_remote(repo)["refs/heads/longshot/default/b1/b1-t1"] == h.commit
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
    # what real servers accept: the assistant turns echoed with "" content (never null) and string arguments
    assert model.refused == []
    echoed = [m for m in model.requests[4].body["messages"] if m["role"] == "assistant"]
    assert [m["content"] for m in echoed] == ["Let me look.", "", "", ""]
    assert all(isinstance(c["function"]["arguments"], str) for m in echoed for c in m["tool_calls"])
    # the malformed arguments are echoed as an empty object (servers parse the history), the error told
    assert echoed[1]["tool_calls"][0]["function"]["arguments"] == "{}"


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
    # the last two turns required finish; a server that ignores tool_choice still gets its calls run
    assert [r.body["tool_choice"] for r in model.requests] == [
        "auto", {"type": "function", "function": {"name": "finish"}},
        {"type": "function", "function": {"name": "finish"}}]


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_a_model_at_the_end_of_its_turns_is_made_to_finish_and_its_handoff_is_kept(
        daemon, repo, run_agent, model, flavour):
    """A small model that would wander until its turns (or its time) run out: the last turns require the
    finish tool (grammar-constrained servers then produce a valid call), so the attempt ends with a handoff
    instead of nothing."""
    tools, backend = (openai_tools, openai_backend) if flavour == "openai" else (anthropic_tools, anthropic_backend)
    model.script(tools(("list_files", {})), tools(("read_file", {"path": "app.py"})),
                 tools(("list_files", {})), tools(("finish", {"summary": "looked around"})))
    result = run_agent(task_input(daemon.url(repo), backend=backend(model, maxTurns=5)), api_key=API_KEY)

    assert result.exit_code == 0, result.stdout
    assert result.handoff.summary == "looked around"
    assert model.refused == []  # what the strict fakes accept: alternating turns, the tool_choice forms
    choices = [r.body["tool_choice"] for r in model.requests]
    if flavour == "openai":
        forced = {"type": "function", "function": {"name": "finish"}}
        assert choices == ["auto", "auto", "auto", forced]
        assert model.requests[3].body["messages"][-1] == {"role": "user", "content": WRAP_UP}
        assert all(m.get("content") != WRAP_UP for m in model.requests[2].body["messages"])
    else:
        assert choices == [{"type": "auto"}] * 3 + [{"type": "tool", "name": "finish"}]
        last = model.requests[3].body["messages"][-1]
        assert last["role"] == "user" and last["content"][0]["type"] == "tool_result"
        assert last["content"][-1] == {"type": "text", "text": WRAP_UP}


def test_openai_dialects_of_other_servers_are_understood_and_answered_in_the_strict_form(
        daemon, repo, run_agent, model):
    model.script(
        # no ids, arguments as an object, finish_reason "stop" (Ollama), no usage at all
        openai_message({"content": None, "tool_calls": [
            {"type": "function", "function": {"name": "read_file", "arguments": {"path": "app.py"}}},
            {"function": {"name": "list_files", "arguments": ""}}]}, finish_reason="stop"),
        # the legacy function_call, finish_reason "function_call", only total_tokens and prompt_tokens
        openai_message({"content": None, "function_call": {
            "name": "write_file", "arguments": '{"path": "bye.py", "content": "def bye():\\n    return 1\\n"}'}},
            finish_reason="function_call", usage={"prompt_tokens": 30, "total_tokens": 42}),
        # arguments double-encoded, content as a list of parts, finish_reason "eos" (llama.cpp), partial usage
        openai_message({"content": [{"type": "text", "text": "Done"}, {"type": "text", "text": " soon."}],
                        "tool_calls": [{"id": "abc", "type": "function", "function": {
                            "name": "run_command", "arguments": '"{\\"command\\": \\"ls\\"}"'}}]},
                       finish_reason="eos", usage={"completion_tokens": 7}),
        # no tool call and finish_reason "length": the model is told it was cut off
        openai_message({"content": "I will now write a very long"}, finish_reason="length",
                       usage={"input_tokens": 5, "output_tokens": 6}),
        openai_message({"tool_calls": [{"id": "fin", "type": "function", "function": {
            "name": "finish", "arguments": '{"summary": "Add bye"}'}}]}, finish_reason=None,
            usage={"prompt_tokens": "11", "completion_tokens": None, "total_tokens": 13}),
    )
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY)

    assert result.exit_code == 0, result.stdout
    assert model.refused == [], model.refused
    assert result.handoff.files_changed == ["bye.py"]
    assert [c["tool"] for c in result.tool_calls()] == ["read_file", "list_files", "write_file", "run_command",
                                                        "finish"]
    assert all(c["ok"] for c in result.tool_calls()), result.tool_calls()
    # usage: missing counts 0, partial ones completed from total_tokens, other field names understood
    assert (result.handoff.usage.input_tokens, result.handoff.usage.output_tokens) == (0 + 30 + 0 + 5 + 11,
                                                                                        0 + 12 + 7 + 6 + 2)
    last = model.requests[-1].body["messages"]
    first_turn, legacy = last[2], last[5]
    assert first_turn == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1_0", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "app.py"}'}},
        {"id": "call_1_1", "type": "function", "function": {"name": "list_files", "arguments": "{}"}}]}
    assert [m.get("tool_call_id") for m in last[3:5]] == ["call_1_0", "call_1_1"]
    assert legacy["tool_calls"][0]["id"] == "call_2_0" and last[6]["tool_call_id"] == "call_2_0"
    assert last[7]["content"] == "Done soon." and last[7]["tool_calls"][0]["id"] == "abc"
    assert last[8] == {"role": "tool", "tool_call_id": "abc", "content": last[8]["content"]}
    assert last[9] == {"role": "assistant", "content": "I will now write a very long"}
    assert last[10]["role"] == "user" and "cut off" in last[10]["content"]


def test_a_request_validation_error_in_a_500_fails_fast_as_configuration(daemon, repo, run_agent, model):
    """llama-cpp-python answers a request its models refuse with a 500: retrying the same request cannot
    help, so the attempt stops at once as Configuration, with the server's message."""
    model.script(llama_cpp_validation_error(1, value=7), openai_tools(("finish", {"summary": "never reached"})))
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY)

    assert result.exit_code == 2
    failure = result.handoff.failure
    assert failure.failure_class == "Configuration"
    # the one telling entry of the union's errors, without the traceback
    assert ("rejected the request as invalid (500: 5 validation errors: messages.1.content: Input should be a "
            "valid string (input: 7))") in failure.message
    assert "Traceback" not in failure.message and "app.py" not in failure.message
    assert "spec.agent.model" in failure.message
    assert len(model.requests) == 1 and result.sleeps == []


@pytest.mark.parametrize(("reply", "expected"), [
    (Reply(400, {"error": {"message": "Unrecognized request argument supplied: tools",
                           "type": "invalid_request_error"}}), "400: Unrecognized request argument"),
    (Reply(404, {"error": {"message": "model 'qwen' not found, try pulling it first"}}),
     "404: model 'qwen' not found"),
    (Reply(422, {"detail": [{"loc": ["body", "messages", 2, "content"], "msg": "field required",
                             "type": "value_error.missing"}]}), "422: body.messages.2.content: field required"),
    (Reply(500, {"object": "error", "message": '"auto" tool choice requires --enable-auto-tool-choice',
                 "type": "BadRequestError", "code": 400}), '500: "auto" tool choice requires'),
], ids=["openai-400", "ollama-404", "fastapi-422", "vllm-500-bad-request"])
def test_requests_servers_refuse_as_invalid_are_not_retried(daemon, repo, run_agent, model, reply, expected):
    model.script(reply, openai_tools(("finish", {"summary": "never reached"})))
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY)

    assert result.exit_code == 2, result.stdout
    assert result.handoff.failure.failure_class == "Configuration"
    assert expected in result.handoff.failure.message
    assert len(model.requests) == 1 and result.sleeps == []
    if reply.status == 404:
        assert f"the request went to {model.base_url}/v1/chat/completions" in result.handoff.failure.message


def test_a_conversation_longer_than_the_context_window_is_an_agent_error(daemon, repo, run_agent, model):
    model.script(openai_tools(("list_files", {})),
                 Reply(400, {"error": {"message": "Requested tokens (9001) exceed context window of 8192",
                                       "type": "invalid_request_error"}}))
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY)

    assert result.exit_code == 1
    assert result.handoff.failure.failure_class == "AgentError"
    assert "outgrew the model's context window" in result.handoff.failure.message
    assert "exceed context window of 8192" in result.handoff.failure.message
    assert len(model.requests) == 2 and result.sleeps == []


def test_a_plain_500_is_still_retried(daemon, repo, run_agent, model):
    model.script(Reply(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}}),
                 Reply(502, b"<html>bad gateway</html>"),
                 openai_tools(("finish", {"summary": "nothing to do"})))
    result = run_agent(task_input(daemon.url(repo), backend=openai_backend(model)), api_key=API_KEY)

    assert result.exit_code == 0, result.stdout
    assert len(model.requests) == 3 and len(result.sleeps) == 2


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


def test_anthropic_dialects_of_proxies_are_understood_and_answered_in_the_strict_form(
        daemon, repo, run_agent, model):
    model.script(
        # no id, input as a JSON string, an empty text block, no usage
        Reply(body={"type": "message", "role": "assistant", "stop_reason": "tool_use", "content": [
            {"type": "text", "text": ""},
            {"type": "tool_use", "name": "write_file", "input": '{"path": "x.txt", "content": "x"}'}]}),
        # only empty text: nothing to echo, the model is nudged; partial usage
        Reply(body={"type": "message", "role": "assistant", "stop_reason": "end_turn",
                    "content": [{"type": "text", "text": ""}], "usage": {"output_tokens": 3}}),
        Reply(body={"type": "message", "role": "assistant", "stop_reason": None, "content": [
            {"type": "tool_use", "id": "toolu_x", "name": "finish", "input": {"summary": "Add x"}}],
            "usage": {"input_tokens": 9, "output_tokens": 2, "cache_read_input_tokens": None}}),
    )
    result = run_agent(task_input(daemon.url(repo), backend=anthropic_backend(model)), api_key=API_KEY)

    assert result.exit_code == 0, result.stdout
    assert model.refused == [], model.refused
    assert result.handoff.files_changed == ["x.txt"]
    assert (result.handoff.usage.input_tokens, result.handoff.usage.output_tokens) == (9, 5)
    last = model.requests[-1].body["messages"]
    assert last[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1_1", "name": "write_file", "input": {"path": "x.txt", "content": "x"}}]}
    assert last[2]["content"][0]["tool_use_id"] == "toolu_1_1"
    assert last[3]["role"] == "user" and "finish" in last[3]["content"]


def test_anthropic_invalid_request_is_configuration(daemon, repo, run_agent, model):
    model.script(Reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "model: claude-nope is not supported"}}))
    result = run_agent(task_input(daemon.url(repo), backend=anthropic_backend(model)), api_key=API_KEY)

    assert result.exit_code == 2
    assert result.handoff.failure.failure_class == "Configuration"
    assert "claude-nope is not supported" in result.handoff.failure.message
    assert len(model.requests) == 1 and result.sleeps == []


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
