"""The Anthropic backend: the Messages API (``POST {base_url}/v1/messages``) with tool_use blocks.

Lenient in what it accepts from Messages-API servers and proxies (LiteLLM, ...): ``tool_use`` blocks
without an id get a stable made-up one (echoed in the history and the ``tool_result``), ``input`` as an
object or a JSON string, any ``stop_reason``, ``usage`` missing or partial. Strict in what it sends: the
assistant turn is echoed without empty text blocks, and a turn with nothing left is not echoed at all (the
API refuses empty content; consecutive user turns are allowed).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Sequence
from typing import Any

import httpx

from longshot.agent import errors, tools
from longshot.agent.backends import base, http

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
NUDGE = "Use the tools to do the task, and call the `finish` tool when you are done."


def tool_definitions(role: str, *, max_tasks: int | None = None, judging: bool | None = None,
                     delegate: bool = False, ask: bool = True, allow: Collection[str] | None = None,
                     models: Sequence[str] = (), personas: Sequence[str] = (),
                     mcp: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [{"name": name, "description": spec["description"], "input_schema": spec["parameters"]}
            for name, spec in tools.specs(role, max_tasks=max_tasks, judging=judging,
                                               delegate=delegate, ask=ask, allow=allow, models=models,
                                               personas=personas, mcp=mcp).items()]


class AnthropicBackend(base.Backend):
    name = "anthropic"

    def __init__(self, *, model: str, base_url: str | None = None, policy: http.RetryPolicy | None = None,
                 timeout: float = 300.0, max_tokens: int = 8192,
                 rand: Callable[[], float] = random.random) -> None:
        self.model = model
        self.url = (base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        self.policy = policy or http.RetryPolicy()
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.rand = rand

    def run(self, session: base.Session) -> tools.Finish:
        messages: list[dict[str, Any]] = [{"role": "user", "content": session.prompt}]
        definitions = tool_definitions(session.role, max_tasks=session.task.max_tasks,
                                       judging=bool(session.task.candidates),
                                       delegate=session.toolbox.delegation is not None,
                                       ask=session.toolbox.ask, allow=session.toolbox.allow,
                                       models=[m.name for m in session.task.models],
                                       personas=[p.name for p in session.task.personas],
                                       mcp=session.toolbox.mcp_specs())
        with httpx.Client(timeout=self.timeout) as client:
            for turn in range(1, session.max_turns + 1):
                for text in session.inbound():  # people's messages, before the model call (budgeted like any input)
                    _user_text(messages, text)
                headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
                key = session.key()  # per request: a gateway token rotates
                if key:
                    headers["x-api-key"] = key
                # tool_choice "auto" is the API's default, but proxies forward only what is sent, and
                # llama-cpp-python behind them ignores the tools when it gets no tool_choice
                choice: dict[str, Any] = {"type": "auto"}
                if session.finishing(turn):
                    choice = {"type": "tool", "name": "finish"}  # the last turns require finish
                    _wrap_up(messages)
                data = http.post_json(
                    client, self.url, headers=headers, ev=session.events, policy=self.policy,
                    sleep=session.sleep, rand=self.rand, api="Anthropic API",
                    body={"model": self.model, "max_tokens": self.max_tokens, "system": session.system_prompt,
                          "messages": messages, "tools": definitions, "tool_choice": choice},
                )
                session.add_usage(*usage_tokens(data.get("usage")))
                content = data.get("content")
                if not isinstance(content, list):
                    raise errors.InfrastructureError("the Anthropic API answered without a content list")
                blocks, inputs = echo_blocks(content, turn)
                if blocks:
                    messages.append({"role": "assistant", "content": blocks})
                results: list[dict[str, Any]] = []
                for block in blocks:
                    if block["type"] == "text":
                        session.events.log("model says", turn=turn, text=str(block["text"])[:2000])
                    if block["type"] != "tool_use":
                        continue
                    if session.interrupted():  # a person stopped the turn: its other calls are not run
                        results.append({"type": "tool_result", "tool_use_id": block["id"], "content": base.NOT_RUN,
                                        "is_error": True})
                        continue
                    result = session.toolbox.call(str(block.get("name", "")), inputs[block["id"]])
                    results.append({"type": "tool_result", "tool_use_id": block["id"],
                                    "content": result.content, "is_error": result.is_error})
                    if session.toolbox.finished is not None:
                        return session.toolbox.finished
                if not results:
                    if data.get("stop_reason") == "max_tokens":
                        raise errors.AgentError("the model ran out of output tokens without calling a tool")
                    messages.append({"role": "user", "content": NUDGE})
                    continue
                messages.append({"role": "user", "content": results})
        raise session.toolbox.unfinished(session.max_turns)


def _user_text(messages: list[dict[str, Any]], text: str) -> None:
    """Add ``text`` to the user turn the request ends with, or as a new user turn after the assistant's (the API
    wants user and assistant turns to alternate)."""
    last = messages[-1]
    block = {"type": "text", "text": text}
    if last["role"] != "user":
        messages.append({"role": "user", "content": [block]})
    elif isinstance(last["content"], str):
        last["content"] = [{"type": "text", "text": last["content"]}, block]
    else:
        last["content"] = [*last["content"], block]


def _wrap_up(messages: list[dict[str, Any]]) -> None:
    """Tell the model its turns are running out, once, in the user turn the request ends with (the API wants
    user and assistant turns to alternate: after tool results the text joins their turn)."""
    last = messages[-1]
    text = {"type": "text", "text": base.WRAP_UP}
    if last["role"] != "user":
        messages.append({"role": "user", "content": [text]})
    elif isinstance(last["content"], str):
        if last["content"] != base.WRAP_UP:
            last["content"] = [{"type": "text", "text": last["content"]}, text]
    elif text not in last["content"]:
        last["content"] = [*last["content"], text]


def echo_blocks(content: list[Any], turn: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The assistant's content blocks as sent back, and each tool_use id's ``input`` as the server sent it
    (for the toolbox, which answers the model when it is not valid). Empty text blocks are dropped;
    ``tool_use`` blocks get an id (``toolu_<turn>_<index>`` when the server gave none) and ``input`` as an
    object (decoded when it came as a JSON string, ``{}`` when it cannot be)."""
    blocks: list[dict[str, Any]] = []
    inputs: dict[str, Any] = {}
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            if block.get("text"):
                blocks.append(block)
        elif kind == "tool_use":
            block = dict(block)
            if not isinstance(block.get("id"), str) or not block["id"] or block["id"] in inputs:
                block["id"] = f"toolu_{turn}_{index}"
            raw = block.get("input")
            inputs[block["id"]] = raw
            if not isinstance(raw, dict):
                block["input"] = _input_object(raw)
            blocks.append(block)
        elif kind:
            blocks.append(block)  # thinking and other blocks: echoed as they came, the API wants them back
    return blocks, inputs


def _input_object(value: Any) -> dict[str, Any]:
    """A tool_use ``input`` that is not an object, as an object: a JSON string of one decoded, else ``{}``."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return {}
        if isinstance(decoded, dict):
            return decoded
    return {}


def usage_tokens(usage: Any) -> tuple[int, int]:
    """``(input, output)`` tokens: input counts the cache reads and writes too; missing fields are 0."""
    if not isinstance(usage, dict):
        return 0, 0
    count = http.token_count
    return (count(usage.get("input_tokens")) + count(usage.get("cache_read_input_tokens"))
            + count(usage.get("cache_creation_input_tokens")), count(usage.get("output_tokens")))
