"""The model backends' wire handling: what they accept from the dialects of real servers, what they send
back, and which error answers are worth a retry."""

from __future__ import annotations

import httpx
import pytest

from longshot.agent import errors
from longshot.agent.backends import anthropic, command, http, openai

pytestmark = pytest.mark.unit


def completion(message, finish_reason="tool_calls"):
    return {"choices": [{"index": 0, "finish_reason": finish_reason, "message": message}]}


def test_tool_calls_without_ids_get_stable_ids_and_the_legacy_function_call_is_a_call():
    turn = openai.parse_turn(completion({"role": "assistant", "content": None, "tool_calls": [
        {"function": {"name": "read_file", "arguments": {"path": "a"}}},
        {"id": "", "type": "function", "function": {"name": "list_files"}},
        {"id": "keep-me", "type": "function", "function": {"name": "search", "arguments": '{"pattern": "x"}'}},
    ]}), 4)
    assert [c.id for c in turn.calls] == ["call_4_0", "call_4_1", "keep-me"]
    assert turn.wire() == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_4_0", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}},
        {"id": "call_4_1", "type": "function", "function": {"name": "list_files", "arguments": "{}"}},
        {"id": "keep-me", "type": "function", "function": {"name": "search", "arguments": '{"pattern": "x"}'}},
    ]}
    legacy = openai.parse_turn(completion({"function_call": {"name": "finish", "arguments": "{}"}},
                                          "function_call"), 2)
    assert [(c.id, c.name) for c in legacy.calls] == [("call_2_0", "finish")]
    # llama-cpp-python sends both: the tool_calls win, the call is not run twice
    both = openai.parse_turn(completion({"function_call": {"name": "finish", "arguments": "{}"}, "tool_calls": [
        {"id": "call__0_finish", "type": "function", "function": {"name": "finish", "arguments": "{}"}}]}), 1)
    assert [c.id for c in both.calls] == ["call__0_finish"]


def test_a_turn_without_calls_is_echoed_without_a_tool_calls_key_and_never_with_null_content():
    turn = openai.parse_turn(completion({"role": "assistant", "content": None, "tool_calls": []}, "stop"), 1)
    assert turn.wire() == {"role": "assistant", "content": ""}
    assert openai.parse_turn(completion({"content": [{"type": "text", "text": "a"}, "b"]}, None), 1).content == "ab"


@pytest.mark.parametrize(("arguments", "echoed"), [
    ('{"a": 1}', '{"a": 1}'),          # as it came, byte for byte
    ({"a": 1}, '{"a": 1}'),
    ('"{\\"a\\": 1}"', '{"a": 1}'),    # double-encoded
    ('{"a": ', "{}"),                  # malformed: servers parse the history's arguments
    ("[1]", "{}"),
    (None, "{}"),
    ("", "{}"),
])
def test_arguments_are_echoed_as_a_json_object_string(arguments, echoed):
    assert openai.echo_arguments(arguments) == echoed


@pytest.mark.parametrize(("usage", "tokens"), [
    (None, (0, 0)),
    ({}, (0, 0)),
    ({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}, (10, 2)),
    ({"prompt_tokens": 10, "total_tokens": 12}, (10, 2)),
    ({"completion_tokens": 2, "total_tokens": 12}, (10, 2)),
    ({"total_tokens": 12}, (12, 0)),
    ({"input_tokens": 3, "output_tokens": 4}, (3, 4)),
    ({"prompt_tokens": "5", "completion_tokens": None, "total_tokens": 8.0}, (5, 3)),
    ({"prompt_tokens": -1, "completion_tokens": True}, (0, 0)),
])
def test_usage_missing_or_partial(usage, tokens):
    assert openai.usage_tokens(usage) == tokens


def test_an_answer_without_choices_names_the_servers_error():
    with pytest.raises(errors.InfrastructureError, match="answered with an error: overloaded"):
        openai.parse_turn({"error": {"message": "overloaded"}}, 1)
    with pytest.raises(errors.InfrastructureError, match="without choices"):
        openai.parse_turn({"choices": []}, 1)


def test_anthropic_blocks_are_echoed_in_the_form_the_api_accepts():
    blocks, inputs = anthropic.echo_blocks([
        {"type": "text", "text": ""},
        {"type": "text", "text": "Let me see"},
        {"type": "tool_use", "name": "read_file", "input": '{"path": "a"}'},
        {"type": "tool_use", "id": "toolu_a", "name": "x", "input": "not json"},
        {"type": "tool_use", "id": "toolu_a", "name": "y", "input": {}},
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        "garbage",
    ], 3)
    assert blocks == [
        {"type": "text", "text": "Let me see"},
        {"type": "tool_use", "id": "toolu_3_2", "name": "read_file", "input": {"path": "a"}},
        {"type": "tool_use", "id": "toolu_a", "name": "x", "input": {}},
        {"type": "tool_use", "id": "toolu_3_4", "name": "y", "input": {}},  # a repeated id is made unique
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
    ]
    # the toolbox gets the input as the server sent it, and tells the model when it is not valid
    assert inputs == {"toolu_3_2": '{"path": "a"}', "toolu_a": "not json", "toolu_3_4": {}}
    assert anthropic.usage_tokens({"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": None}) == (7, 0)
    assert anthropic.usage_tokens(None) == (0, 0)


def response(status, body):
    if isinstance(body, bytes):
        return httpx.Response(status, content=body)
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(("status", "body", "invalid"), [
    (500, {"error": {"message": "1 validation error for ChatCompletionRequestAssistantMessage\ncontent\n  Input "
                                "should be a valid string", "type": "internal_server_error"}}, True),
    (500, {"error": {"message": "7 validation errors:\n  {'type': 'string_type', 'loc': ('body', 'messages', 2, "
                                "'ChatCompletionRequestAssistantMessage', 'content'), 'msg': 'Input should be a "
                                "valid string', 'input': None}", "type": "internal_server_error"}}, True),
    (500, {"detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}]}, True),
    (500, {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}, True),
    (500, {"error": {"code": 400, "message": "Failed to parse messages", "type": "invalid_request_error"}}, True),
    (500, b"2 validation errors for Request", True),
    # chat templates that cannot render the conversation (LiteLLM -> llama-cpp-python, seen for real)
    (500, {"type": "error", "error": {"type": "api_error", "message": "litellm.InternalServerError: "
           "InternalServerError: OpenAIException - 'dict object' has no attribute 'content'"}}, True),
    (500, {"error": {"message": "Conversation roles must alternate user/assistant/user/assistant/..."}}, True),
    (500, {"error": {"message": "CUDA out of memory", "type": "server_error", "code": 500}}, False),
    (503, {"error": {"code": 429, "message": "busy"}}, False),
    (502, b"<html>Bad Gateway</html>", False),
    (500, ["x"], False),
])
def test_validation_errors_hidden_in_5xx_are_recognised(status, body, invalid):
    assert http.is_validation_error(response(status, body)) is invalid


@pytest.mark.parametrize(("status", "retry"), [
    (400, False), (404, False), (413, False), (422, False), (501, False),
    (408, True), (409, True), (429, True), (500, True), (502, True), (503, True), (504, True), (520, True),
    (529, True),
])
def test_which_statuses_are_retried(status, retry):
    assert http.retryable(status) is retry


def test_invalid_request_failures_name_the_field_to_check_and_spot_context_overflow():
    config = http.invalid_request("OpenAI-compatible API", "http://m/v1/chat/completions", 404, "no such model")
    assert isinstance(config, errors.ConfigError)
    assert "spec.agent.baseUrl (the request went to http://m/v1/chat/completions)" in str(config)
    overflow = http.invalid_request("OpenAI-compatible API", "u", 400,
                                    "This model's maximum context length is 8192 tokens")
    assert type(overflow) is errors.AgentError and "context window" in str(overflow)
    template = http.invalid_request("Anthropic API", "u", 500, "'dict object' has no attribute 'content'")
    assert isinstance(template, errors.ConfigError) and "chat template" in str(template)


def test_error_messages_are_one_capped_line():
    long = {"error": {"message": "a\n  b " + "x" * 2000}}
    message = http._error_message(response(400, long))
    assert message.startswith("a b xxx") and len(message) <= http.MESSAGE_CAP and message.endswith("[...]")
    detail = http._error_message(response(422, {"detail": [{"loc": ["body", "model"], "msg": "required"}]}))
    assert detail == "body.model: required"


def test_llama_cpp_pythons_validation_message_is_summarised_to_what_is_wrong():
    """The message as llama-cpp-python 0.3.36 sent it for an assistant turn with null content."""
    message = (
        "7 validation errors:\n"
        "  {'type': 'literal_error', 'loc': ('body', 'messages', 2, 'ChatCompletionRequestSystemMessage', 'role'), "
        "'msg': \"Input should be 'system'\", 'input': 'assistant', 'ctx': {'expected': \"'system'\"}}\n"
        "  {'type': 'string_type', 'loc': ('body', 'messages', 2, 'ChatCompletionRequestAssistantMessage', "
        "'content'), 'msg': 'Input should be a valid string', 'input': None}\n"
        "  {'type': 'missing', 'loc': ('body', 'messages', 2, 'ChatCompletionRequestToolMessage', 'tool_call_id'), "
        "'msg': 'Field required', 'input': {'role': 'assistant', 'content': None}}\n"
        "\n  File \"/venv/lib/python3.11/site-packages/llama_cpp/server/app.py\", line 376, in "
        "create_chat_completion\n    POST /v1/chat/completions")
    assert http.summarise_validation(message) == (
        "7 validation errors: messages.2.content: Input should be a valid string (input: None)")
    assert http.summarise_validation("model not found") == "model not found"
    assert http.summarise_validation("2 validation errors:\n  not a dict") == "2 validation errors:\n  not a dict"


def test_aiders_token_lines_are_the_command_backends_usage():
    output = ("Aider v0.86.2\nTokens: 862 sent, 17 received.\nApplied edit to hello.txt\n"
              "Tokens: 1.6k sent, 7 received. Cost: $0.00 message, $0.00 session.\n")
    assert command.usage_from_output(output) == (2462, 24)
    assert command.usage_from_output("no usage here\nTokens: many") == (0, 0)


def test_the_planners_task_names_carry_the_plans_pattern_for_grammar_constrained_servers():
    """llama.cpp builds the tool-call grammar from the schema: with the pattern the model can only write
    names the plan check accepts (seen for real: without it Gemma 270M wrote `hello.txt` and was refused)."""
    import re

    from longshot.agent import tools
    from longshot.api import handoff

    name = tools.specs("planner")["finish"]["parameters"]["properties"]["tasks"]["items"]["properties"]["name"]
    assert name["pattern"] == handoff.PLAN_TASK_NAME
    assert re.fullmatch(name["pattern"], "create-hello-txt") and not re.fullmatch(name["pattern"], "hello.txt")
