"""What every backend gets (a :class:`Session`) and must do (:class:`Backend`): drive the tools to a finish."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from longshot.agent import events, messages, tools
from longshot.api import handoff

FINISH_TURNS: Final = 2
"""The last turns of a session in which the backend requires the ``finish`` tool (forced tool choice): a
model that would run out of turns ends with a handoff (its plan, summary or verdict so far) instead of
nothing; two, so that a finish the role's validation refuses can be corrected once."""
MessageSupport = Literal["turns", "steps", "none"]
MESSAGES: Final[dict[str, MessageSupport]] = {
    "openai": "turns",
    "anthropic": "turns",
    "command": "none",
    "scripted": "steps",
}
"""What each backend does with people's messages (``spec.messages``; docs/agent.md, "Talking to a running agent"):
``turns``: each message is a user turn before the next model call, and an interrupt kills the running tool call and
holds the loop until the next message; ``steps``: the script's ``await_message`` step takes the next message (and
may write it into the checkout), and an interrupt kills the running ``run`` step; ``none``: the runner does not ask
for messages (a CLI agent runs its own loop, which the runner cannot talk into), so they stay undelivered."""
HELD_NOTE: Final = ("[No message came from the person within {seconds:g} seconds after the interrupt. Carry on with "
                    "the task as you see fit.]")
NOT_RUN: Final = "not run: a person interrupted this turn"
WRAP_UP: Final = ("You are at the end of your turn budget. Call `finish` now with what you have done so far "
                  "(your plan, your summary or your verdict).")


@dataclass
class Session:
    """One attempt's conversation: prompts, tools, limits and the usage meter."""

    task: handoff.TaskInput
    system_prompt: str
    prompt: str
    toolbox: tools.Toolbox
    events: events.Events
    workdir: Path
    """The checkout (the sandbox's root)."""
    scratch: Path
    """A private directory outside the checkout (result files of the command backend)."""
    api_key: str | None = None
    api_key_source: Callable[[], str | None] | None = None
    """Where the key comes from when it changes during the attempt (the gateway token); read per request."""
    max_turns: int = 50
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    usage: handoff.Usage = field(default_factory=handoff.Usage)
    inbox: messages.Inbox | None = None
    """People's messages to this attempt, when the backend takes them (:data:`MESSAGES`)."""

    @property
    def role(self) -> str:
        return self.task.role

    def finishing(self, turn: int) -> bool:
        """Whether ``turn`` (1-based) is one of the last :data:`FINISH_TURNS` (never the first turn)."""
        return turn > 1 and turn > self.max_turns - FINISH_TURNS

    def key(self) -> str | None:
        """The API key to send with the next request."""
        return self.api_key_source() if self.api_key_source is not None else self.api_key

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        self.usage = handoff.Usage(
            input_tokens=self.usage.input_tokens + max(int(input_tokens or 0), 0),
            output_tokens=self.usage.output_tokens + max(int(output_tokens or 0), 0),
        )
        self.events.emit("tokens", input_tokens=int(input_tokens or 0), output_tokens=int(output_tokens or 0),
                         total_tokens=self.usage.tokens)


    def interrupted(self) -> bool:
        """Whether a person interrupted the current tool call (the loop skips the turn's remaining calls)."""
        return self.inbox is not None and self.inbox.interrupted.is_set()

    def inbound(self) -> list[str]:
        """People's messages that came since the last model call, as user turns (``agent.messages``): after an
        interrupt, wait for the next message first (bounded by the inbox's ``hold_seconds``)."""
        if self.inbox is None:
            return []
        self.inbox.check()
        taken = self.inbox.take()
        held = messages.held_until(taken)
        if held is not None:
            self.events.log("a person interrupted: waiting for their next message", interrupt=held,
                            hold_seconds=self.inbox.hold_seconds)
            taken += self.inbox.hold(held)
        turns = [m.turn() for m in taken]
        for m in taken:
            self.events.emit("message", role="user", source="person", id=m.id, interrupt=m.interrupt,
                             content=m.text[:3500])
        if messages.held_until(taken) is not None:
            turns.append(HELD_NOTE.format(seconds=self.inbox.hold_seconds))
        return turns


class Backend(abc.ABC):
    """A way to run an agent. ``run`` returns once ``session.toolbox.finished`` is set, or raises an
    :class:`~longshot.agent.errors.AgentFailure`."""

    name: str = "?"

    @abc.abstractmethod
    def run(self, session: Session) -> tools.Finish: ...
