"""The OpenAI-compatible backend: ``POST {base_url}/chat/completions`` with function tools, via httpx.

``base_url`` follows the OpenAI SDK convention and includes the version (default
``https://api.openai.com/v1``), so any compatible server (vLLM, Ollama, LiteLLM, ...) works.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx

from longshot.agent import errors, tools
from longshot.agent.backends import base, http

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NUDGE = "Use the tools to do the task, and call `finish` when you are done."


def tool_definitions(role: str) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": name, **spec}} for name, spec in tools.specs(role).items()]


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
        definitions = tool_definitions(session.role)
        with httpx.Client(timeout=self.timeout) as client:
            for turn in range(1, session.max_turns + 1):
                headers = {"content-type": "application/json"}
                key = session.key()  # per request: a gateway token rotates
                if key:
                    headers["authorization"] = f"Bearer {key}"
                data = http.post_json(
                    client, self.url, headers=headers, ev=session.events, policy=self.policy,
                    sleep=session.sleep, rand=self.rand, api="OpenAI-compatible API",
                    body={"model": self.model, "messages": messages, "tools": definitions, "tool_choice": "auto"},
                )
                usage = data.get("usage") or {}
                session.add_usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
                message = _first_message(data)
                calls = message.get("tool_calls") or []
                messages.append({k: v for k, v in message.items() if k in ("role", "content", "tool_calls")}
                                | {"role": "assistant"})
                if message.get("content"):
                    session.events.log("model says", turn=turn, text=str(message["content"])[:2000])
                if not calls:
                    messages.append({"role": "user", "content": NUDGE})
                    continue
                for call in calls:
                    function = call.get("function") or {}
                    result = session.toolbox.call(str(function.get("name", "")), function.get("arguments"))
                    messages.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": result.content})
                    if session.toolbox.finished is not None:
                        return session.toolbox.finished
        raise errors.AgentError(f"the model did not call finish within {session.max_turns} turns")


def _first_message(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise errors.InfrastructureError("the OpenAI-compatible API answered without choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise errors.InfrastructureError("the OpenAI-compatible API answered a choice without a message")
    return message
