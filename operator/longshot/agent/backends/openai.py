"""The OpenAI-compatible backend: ``POST {base_url}/chat/completions`` with function tools, via httpx.

``base_url`` follows the OpenAI SDK convention and includes the version (default
``https://api.openai.com/v1``), so any compatible server (vLLM, Ollama, llama.cpp, LiteLLM, ...) works.

Servers speak slightly different dialects (see docs/agent.md, "Servers tested"), so the backend is strict
in what it sends and lenient in what it accepts:

* sent: the assistant turn is echoed as ``{"role": "assistant", "content": <string, "" when none>,
  "tool_calls": [...]}`` (``tool_calls`` only when there are some); each call with its id exactly as the
  server gave it, ``"type": "function"`` and ``arguments`` as a JSON string; tool results as ``{"role":
  "tool", "tool_call_id": <that id>, "content": <string>}``. Never ``null`` content (llama-cpp-python
  refuses it with a validation error), never an empty ``tool_calls`` list (OpenAI refuses it).
* accepted: tool calls with or without ids (missing ids are made up, stable within the conversation),
  arguments as a JSON string, an object, or a JSON string of a JSON string; the legacy ``function_call``;
  content as a string, null or a list of text parts; any ``finish_reason`` (the presence of tool calls
  decides, not the reason); ``usage`` missing, partial or with the other API's field names.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from longshot.agent import errors, tools
from longshot.agent.backends import base, http

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NUDGE = "Use the tools to do the task, and call `finish` when you are done."
TRUNCATED = ("Your answer was cut off at the output token limit. Make smaller tool calls (for example write a "
             "file in parts with edit_file), and call `finish` when you are done.")


def tool_definitions(role: str, *, max_tasks: int | None = None, judging: bool | None = None,
                     delegate: bool = False, ask: bool = True, allow: Collection[str] | None = None,
                     models: Sequence[str] = (), personas: Sequence[str] = (),
                     mcp: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": name, **spec}}
            for name, spec in tools.specs(role, max_tasks=max_tasks, judging=judging,
                                               delegate=delegate, ask=ask, allow=allow, models=models,
                                               personas=personas, mcp=mcp).items()]


@dataclass(frozen=True)
class ToolCall:
    """One tool call of an assistant turn, normalised."""

    id: str
    name: str
    arguments: str | dict[str, Any] | None
    """As the server sent it (the toolbox parses it, and answers the model when it is not valid)."""

    def wire(self) -> dict[str, Any]:
        """The call as echoed back: the same id, arguments as a JSON object string."""
        return {"id": self.id, "type": "function", "function": {"name": self.name,
                                                                "arguments": echo_arguments(self.arguments)}}


@dataclass(frozen=True)
class Turn:
    """One assistant turn of a chat completion, normalised."""

    content: str
    calls: list[ToolCall]
    finish_reason: str | None

    def wire(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.calls:
            message["tool_calls"] = [call.wire() for call in self.calls]
        return message


class OpenAIBackend(base.Backend):
    name = "openai"

    def __init__(self, *, model: str, base_url: str | None = None, policy: http.RetryPolicy | None = None,
                 timeout: float = 300.0, rand: Callable[[], float] = random.random) -> None:
        self.model = model
        self.url = (base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self.policy = policy or http.RetryPolicy()
        self.timeout = timeout
        self.rand = rand

    def run(self, session: base.Session) -> tools.Finish:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": session.system_prompt},
            {"role": "user", "content": session.prompt},
        ]
        definitions = tool_definitions(session.role, max_tasks=session.task.max_tasks,
                                       judging=bool(session.task.candidates),
                                       delegate=session.toolbox.delegation is not None,
                                       ask=session.toolbox.ask, allow=session.toolbox.allow,
                                       models=[m.name for m in session.task.models],
                                       personas=[p.name for p in session.task.personas],
                                       mcp=session.toolbox.mcp_specs())
        with httpx.Client(timeout=self.timeout) as client:
            for turn_no in range(1, session.max_turns + 1):
                for text in session.inbound():  # people's messages, before the model call (budgeted like any input)
                    messages.append({"role": "user", "content": text})
                headers = {"content-type": "application/json"}
                key = session.key()  # per request: a gateway token rotates
                if key:
                    headers["authorization"] = f"Bearer {key}"
                choice: str | dict[str, Any] = "auto"
                if session.finishing(turn_no):
                    # the last turns require finish (grammar-constrained servers then produce a valid call)
                    choice = {"type": "function", "function": {"name": "finish"}}
                    if messages[-1].get("content") != base.WRAP_UP:
                        messages.append({"role": "user", "content": base.WRAP_UP})
                data = http.post_json(
                    client, self.url, headers=headers, ev=session.events, policy=self.policy,
                    sleep=session.sleep, rand=self.rand, api="OpenAI-compatible API",
                    body={"model": self.model, "messages": messages, "tools": definitions, "tool_choice": choice},
                )
                session.add_usage(*usage_tokens(data.get("usage")))
                turn = parse_turn(data, turn_no)
                messages.append(turn.wire())
                if turn.content:
                    session.events.log("model says", turn=turn_no, text=turn.content[:2000])
                if not turn.calls:
                    messages.append({"role": "user", "content": TRUNCATED if turn.finish_reason == "length"
                                     else NUDGE})
                    continue
                for call in turn.calls:
                    if session.interrupted():  # a person stopped the turn: its other calls are not run
                        messages.append({"role": "tool", "tool_call_id": call.id, "content": base.NOT_RUN})
                        continue
                    result = session.toolbox.call(call.name, call.arguments)
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
                    if session.toolbox.finished is not None:
                        return session.toolbox.finished
        raise session.toolbox.unfinished(session.max_turns)


def parse_turn(data: dict[str, Any], turn_no: int) -> Turn:
    """The first choice of a chat completion as a :class:`Turn`; ``turn_no`` makes up missing call ids."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        err = data.get("error")
        if err:
            detail = err.get("message") if isinstance(err, dict) else err
            raise errors.InfrastructureError(f"the OpenAI-compatible API answered with an error: {str(detail)[:600]}")
        raise errors.InfrastructureError("the OpenAI-compatible API answered without choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise errors.InfrastructureError("the OpenAI-compatible API answered a choice without a message")
    reason = choice.get("finish_reason")
    return Turn(content=message_text(message.get("content")), calls=tool_calls(message, turn_no),
                finish_reason=str(reason) if reason is not None else None)


def message_text(content: Any) -> str:
    """The text of a message's content: a string, null, or a list of parts (``{"type": "text", "text"}``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def tool_calls(message: dict[str, Any], turn_no: int) -> list[ToolCall]:
    """The message's tool calls; the legacy ``function_call`` when there are none. A call without an id
    gets ``call_<turn>_<index>``."""
    raw = message.get("tool_calls")
    if not raw and isinstance(message.get("function_call"), dict):
        raw = [{"function": message["function_call"]}]
    if not isinstance(raw, list):
        return []
    calls: list[ToolCall] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            continue
        nested = item.get("function")
        function: dict[str, Any] = nested if isinstance(nested, dict) else item
        call_id = item.get("id")
        calls.append(ToolCall(
            id=call_id if isinstance(call_id, str) and call_id else f"call_{turn_no}_{index}",
            name=str(function.get("name") or ""),
            arguments=function.get("arguments", function.get("parameters")),
        ))
    return calls


def echo_arguments(arguments: Any) -> str:
    """Arguments as a JSON object string, as servers expect them back. A string that is a JSON object is
    echoed as it came; an object is encoded; anything unparsable becomes ``{}`` (llama.cpp's server and
    others parse the history's arguments, and refuse the whole request on invalid JSON; the model is told
    about its mistake by the tool result)."""
    if isinstance(arguments, dict):
        return json.dumps(arguments)
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except json.JSONDecodeError:
            return "{}"
        if isinstance(value, dict):
            return arguments
        if isinstance(value, str):
            return echo_arguments(value)
    return "{}"


def usage_tokens(usage: Any) -> tuple[int, int]:
    """``(input, output)`` tokens of a ``usage`` object that may be missing, partial (only
    ``total_tokens`` and one side) or use the Responses API's ``input_tokens``/``output_tokens``."""
    if not isinstance(usage, dict):
        return 0, 0
    count = http.token_count
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    total = count(usage.get("total_tokens"))
    if prompt is None and completion is not None:
        return max(total - count(completion), 0), count(completion)
    if completion is None and prompt is not None:
        return count(prompt), max(total - count(prompt), 0)
    if prompt is None and completion is None:
        return total, 0
    return count(prompt), count(completion)
