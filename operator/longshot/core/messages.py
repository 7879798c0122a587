"""Messages from people to a running attempt (``spec.messages``; docs/agent.md, "Talking to a running agent"). Pure.

A person writes a message on the AgentTask (``kubectl longshot say``, the console): it is audited by the API
server, survives any restart, and is addressed to the attempt running when it was sent (``attempt``).
longshot-gateway hands it to that attempt's runner (``GET /v1/messages``) and records the delivery
(``status.messages.delivered``); the runner puts it in the conversation before its next model call. A message's
life, one row per transition (:func:`accept`, :func:`pending`, :func:`deliver`, :func:`state`)::

    state       event                                               next        written by
    (none)      a person sends it while an attempt runs             Sent        the sender (spec.messages)
    (none)      no attempt runs, the task holds MAX_MESSAGES, or    refused     nobody: the sender says why
                the text is empty or too long
    Sent        its attempt's runner asks for messages after a      Delivered   longshot-gateway
                lower id
    Sent        its attempt ended first                             Expired     nobody (never given to another
                                                                                attempt)
    Delivered   anything                                            Delivered   (final)

An interrupt (``interrupt: true``) stops the tool call the agent is running; the runner then holds the agent until
a later message arrives, at most its hold bound (``longshot.agent.messages``, which the layering keeps off ``core``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from longshot.api import agenttask, conditions

MAX_MESSAGES: Final = agenttask.MAX_MESSAGES
MAX_TEXT: Final = agenttask.MAX_MESSAGE_TEXT
MAX_BATCH_BYTES: Final = 64 * 1024
"""Most text one answer of ``GET /v1/messages`` carries (the rest comes with the runner's next request)."""
MAX_AUTHOR: Final = 253
State = Literal["Sent", "Delivered", "Expired"]


@dataclass(frozen=True)
class Refused:
    """A message that cannot be sent; ``reason`` is one sentence for the sender."""

    reason: str


def running_attempt(task: Mapping[str, Any]) -> int | None:
    """The number of the task's running attempt (phase Running, its last attempt not ended), else None."""
    status = task.get("status") or {}
    if status.get("phase") != "Running":
        return None
    attempts = [a for a in status.get("attempts") or [] if isinstance(a, Mapping)]
    if not attempts:
        return None
    last = max(attempts, key=lambda a: int(a.get("number") or 0))
    if last.get("endTime") or not last.get("number"):
        return None
    return int(last["number"])


def next_id(messages: Iterable[Mapping[str, Any]]) -> int:
    """One more than the highest id (1 for the first message)."""
    return max((int(m.get("id") or 0) for m in messages), default=0) + 1


def accept(task: Mapping[str, Any], text: str, *, interrupt: bool, author: str | None,
           now: datetime) -> dict[str, Any] | Refused:
    """The ``spec.messages`` entry a person's ``text`` becomes on ``task`` (an AgentTask dict), or why it cannot be
    sent. The sender appends it with the resourceVersion it read, so two senders never take the same id."""
    meta = task.get("metadata") or {}
    name = meta.get("name", "?")
    if not isinstance(text, str) or not text.strip():
        return Refused("the message is empty")
    if len(text) > MAX_TEXT:
        return Refused(f"the message is {len(text)} characters; at most {MAX_TEXT}")
    attempt = running_attempt(task)
    if attempt is None:
        phase = (task.get("status") or {}).get("phase") or "Pending"
        return Refused(f"AgentTask {name!r} has no running attempt (phase {phase}): a message can only go to a "
                       "running agent (answer a question with 'answer', or relaunch it with 'relaunch --prompt')")
    messages = [m for m in (task.get("spec") or {}).get("messages") or [] if isinstance(m, Mapping)]
    if len(messages) >= MAX_MESSAGES:
        return Refused(f"AgentTask {name!r} already holds {len(messages)} messages, the most it may; relaunch it "
                       "with 'relaunch --prompt' to say more")
    message: dict[str, Any] = {"id": next_id(messages), "text": text, "attempt": attempt,
                               "sentAt": conditions.rfc3339(now)}
    if interrupt:
        message["interrupt"] = True
    if author:
        message["author"] = author[:MAX_AUTHOR]
    return message


def pending(messages: Sequence[Mapping[str, Any]], *, attempt: int, after: int,
            max_bytes: int = MAX_BATCH_BYTES) -> list[dict[str, Any]]:
    """What the runner of ``attempt`` gets when it asks for the messages after id ``after``: its own attempt's, in
    id order, as ``{id, text, interrupt}``, at most ``max_bytes`` of text (always at least one)."""
    mine = sorted((m for m in messages if isinstance(m, Mapping) and _int(m.get("attempt")) == attempt
                   and _int(m.get("id")) > after and isinstance(m.get("text"), str)), key=lambda m: _int(m["id"]))
    out: list[dict[str, Any]] = []
    size = 0
    for m in mine:
        text = str(m["text"])[:MAX_TEXT]
        if out and size + len(text) > max_bytes:
            break
        size += len(text)
        out.append({"id": _int(m["id"]), "text": text, "interrupt": bool(m.get("interrupt"))})
    return out


def deliver(delivered: Sequence[Mapping[str, Any]], ids: Iterable[int], *, attempt: int,
            now: datetime) -> list[dict[str, Any]] | None:
    """``status.messages.delivered`` once messages ``ids`` were handed to ``attempt``'s runner; None when they all
    were already (nothing to write). Bounded to :data:`MAX_MESSAGES` entries (a message is delivered once)."""
    known = {_int(d.get("id")) for d in delivered if isinstance(d, Mapping)}
    new = [{"id": i, "attempt": attempt, "time": conditions.rfc3339(now)} for i in sorted(set(ids)) if i not in known]
    if not new:
        return None
    return [*(dict(d) for d in delivered if isinstance(d, Mapping)), *new][-MAX_MESSAGES:]


def state(message: Mapping[str, Any], delivered: Sequence[Mapping[str, Any]], running: int | None) -> State:
    """Where ``message`` is: Delivered (recorded), Sent (its attempt still runs) or Expired (it ended first)."""
    if any(_int(d.get("id")) == _int(message.get("id")) for d in delivered if isinstance(d, Mapping)):
        return "Delivered"
    return "Sent" if running is not None and running == _int(message.get("attempt")) else "Expired"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
