"""The Anthropic backend: the Messages API (``POST {base_url}/v1/messages``) with tool_use blocks."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx

from longshot.agent import errors, tools
from longshot.agent.backends import base, http

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
NUDGE = "Use the tools to do the task, and call the `finish` tool when you are done."


def tool_definitions(role: str) -> list[dict[str, Any]]:
    return [{"name": name, "description": spec["description"], "input_schema": spec["parameters"]}
            for name, spec in tools.specs(role).items()]


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
        definitions = tool_definitions(session.role)
        with httpx.Client(timeout=self.timeout) as client:
            for turn in range(1, session.max_turns + 1):
                headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
                key = session.key()  # per request: a gateway token rotates
                if key:
                    headers["x-api-key"] = key
                data = http.post_json(
                    client, self.url, headers=headers, ev=session.events, policy=self.policy,
                    sleep=session.sleep, rand=self.rand, api="Anthropic API",
                    body={"model": self.model, "max_tokens": self.max_tokens, "system": session.system_prompt,
                          "messages": messages, "tools": definitions},
                )
                usage = data.get("usage") or {}
                session.add_usage(
                    (usage.get("input_tokens") or 0) + (usage.get("cache_read_input_tokens") or 0)
                    + (usage.get("cache_creation_input_tokens") or 0),
                    usage.get("output_tokens", 0),
                )
                content = data.get("content")
                if not isinstance(content, list):
                    raise errors.InfrastructureError("the Anthropic API answered without a content list")
                messages.append({"role": "assistant", "content": content})
                results: list[dict[str, Any]] = []
                for block in content:
                    if not isinstance(block, dict):
                        continue
                    if block.get("type") == "text" and block.get("text"):
                        session.events.log("model says", turn=turn, text=str(block["text"])[:2000])
                    if block.get("type") != "tool_use":
                        continue
                    result = session.toolbox.call(str(block.get("name", "")), block.get("input"))
                    results.append({"type": "tool_result", "tool_use_id": block.get("id", ""),
                                    "content": result.content, "is_error": result.is_error})
                    if session.toolbox.finished is not None:
                        return session.toolbox.finished
                if not results:
                    if data.get("stop_reason") == "max_tokens":
                        raise errors.AgentError("the model ran out of output tokens without calling a tool")
                    messages.append({"role": "user", "content": NUDGE})
                    continue
                messages.append({"role": "user", "content": results})
        raise errors.AgentError(f"the model did not call finish within {session.max_turns} turns")
