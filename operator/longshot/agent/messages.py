"""People's messages to the running attempt (docs/agent.md, "Talking to a running agent"): the runner's inbox.

Before each model call the loop asks longshot-gateway once for the messages after the last one it got (``GET
/v1/messages?after=ID&wait=0``, with the Pod's token: the gateway answers this attempt's messages only, from the
AgentTask its identity check read, so the ask costs the API server nothing). While a command runs or the loop is held
(:meth:`Inbox.watching`), a background thread long-polls the same route (``wait=S``), so that an interrupt reaches a
long command within about two seconds (the gateway reads the task every 2 s while it waits). At rest no one polls: a
thousand agents thinking cost the API server no reads. Messages are kept until the loop takes them
(:meth:`Inbox.take`). A message with ``interrupt`` sets
:attr:`Inbox.interrupted` at once: the sandbox kills the tool call it is running (its process group), and the loop
holds the agent until a later message arrives (:meth:`Inbox.hold`, at most ``hold_seconds``; the Pod's deadline
still applies). The inbox never fails the attempt: when the gateway cannot be reached it asks again later, and when
the gateway says the attempt is over (403) it stops.

The loop's decision after it took messages::

    taken                                  held?                       then
    nothing                                no                          the model call
    messages, none an interrupt            no                          each as a user turn, then the model call
    an interrupt, and a later message      no                          both as user turns
    an interrupt, nothing after it         until a later message, at   what came (or a note that nothing came)
                                           most hold_seconds
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from longshot.agent import errors
from longshot.agent import gateway as agent_gateway
from longshot.api import boundedjson

MAX_ANSWER_BYTES: Final = 256 * 1024
"""Largest answer of ``GET /v1/messages`` the inbox reads (the gateway sends at most 64 KiB of text)."""
ANSWER_BUDGET: Final = boundedjson.Budget(max_bytes=MAX_ANSWER_BYTES, max_values=2000, max_depth=8)
"""What parsing one answer may cost (``api.boundedjson``)."""
MAX_HELD: Final = 200
"""Messages the inbox keeps until the loop takes them."""
MAX_TEXT: Final = 4096
POLL_WAIT: Final = 20.0
"""Seconds one long poll waits at the gateway (its bound is 25)."""


@dataclass(frozen=True)
class Message:
    id: int
    text: str
    interrupt: bool = False

    def turn(self) -> str:
        """The message as the model reads it (a user turn)."""
        what = "interrupted your last tool call and says" if self.interrupt else "says"
        return f"[Message #{self.id} from a person watching this task] The person {what}:\n{self.text}"


def parse(data: Any) -> list[Message]:
    """The messages of a ``GET /v1/messages`` answer (``{"messages": [{id, text, interrupt}]}``); anything else is
    skipped."""
    items = data.get("messages") if isinstance(data, dict) else None
    out: list[Message] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        mid, text = item.get("id"), item.get("text")
        if isinstance(mid, int) and not isinstance(mid, bool) and mid > 0 and isinstance(text, str) and text:
            out.append(Message(mid, text[:MAX_TEXT], bool(item.get("interrupt"))))
    return out


def held_until(taken: list[Message]) -> int | None:
    """The id of the interrupt that holds the loop after it took ``taken``: the last interrupt with no message after
    it; None when the loop goes on."""
    interrupts = [m.id for m in taken if m.interrupt]
    if not interrupts:
        return None
    last = max(interrupts)
    return None if any(m.id > last for m in taken) else last


class Inbox:
    """The attempt's messages, fetched by a background thread (:meth:`start`), taken by the backend's loop."""

    def __init__(self, fetch: Callable[[int, float], list[Message] | None], *, hold_seconds: float = 900.0,
                 wait: float = POLL_WAIT, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch = fetch
        """``fetch(after, wait)``: the messages after ``after``, waiting up to ``wait`` seconds; None when the
        attempt is over (stop asking). Raises OSError when the gateway cannot be reached."""
        self.hold_seconds = hold_seconds
        self.wait = wait
        self.clock = clock
        self.interrupted = threading.Event()
        """Set when an interrupt arrives, cleared when the loop takes it: the sandbox kills its command on it."""
        self.last = 0
        self.received = 0
        self._held: list[Message] = []
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._watching = 0
        """Commands running (and holds) that want the background long poll."""

    @classmethod
    def from_gateway(cls, gw: agent_gateway.Gateway, *, hold_seconds: float) -> Inbox:
        return cls(lambda after, wait: fetch(gw, after, wait), hold_seconds=hold_seconds)

    def start(self) -> Inbox:
        self._thread = threading.Thread(target=self._run, name="longshot-messages", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 1.0) -> None:
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def add(self, messages: list[Message]) -> None:
        """Keep ``messages`` (the ones after the last kept) for the loop; an interrupt among them sets
        :attr:`interrupted`."""
        with self._cond:
            for m in messages:
                if m.id <= self.last:
                    continue
                self.last = m.id
                self.received += 1
                self._held.append(m)
                if m.interrupt:
                    self.interrupted.set()
            del self._held[:-MAX_HELD]
            self._cond.notify_all()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """While inside (a command runs, the loop is held), the background thread long-polls the gateway."""
        with self._cond:
            self._watching += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._watching -= 1

    def check(self) -> None:
        """Ask the gateway once, without waiting (before a model call); a failure is left to the next ask."""
        if self._closing.is_set():
            return
        try:
            got = self.fetch(self.last, 0.0)
        except (OSError, ValueError, errors.AgentFailure):
            return
        if got is None:
            self._closing.set()
            return
        self.add(got)

    def take(self) -> list[Message]:
        """Everything that came since the last take (and the interrupt flag cleared with it)."""
        with self._cond:
            out, self._held = self._held, []
            self.interrupted.clear()
            return out

    def hold(self, interrupt_id: int) -> list[Message]:
        """Wait until a message after ``interrupt_id`` came, at most ``hold_seconds``; what came (taken)."""
        end = self.clock() + self.hold_seconds
        with self.watching(), self._cond:
            while not any(m.id > interrupt_id for m in self._held) and not self._closing.is_set():
                left = end - self.clock()
                if left <= 0:
                    break
                self._cond.wait(min(left, 1.0))
        return self.take()

    def await_message(self, seconds: float) -> list[Message]:
        """Wait until a message that is not an interrupt came, at most ``seconds`` (long-polling meanwhile); what
        came (taken). The scripted backend's ``await_message`` step: an interrupt alone does not end the wait."""
        end = self.clock() + seconds
        with self.watching(), self._cond:
            while all(m.interrupt for m in self._held) and not self._closing.is_set():
                left = end - self.clock()
                if left <= 0:
                    break
                self._cond.wait(min(left, 1.0))
        return self.take()

    def _run(self) -> None:
        delay = 1.0
        while not self._closing.is_set():
            with self._cond:  # at rest (no command running, not held) nothing is asked
                while self._watching == 0 and not self._closing.is_set():
                    self._cond.wait()
            if self._closing.is_set():
                return
            try:
                got = self.fetch(self.last, self.wait)
            except (OSError, ValueError, errors.AgentFailure):
                self._closing.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            if got is None:
                return
            delay = 1.0
            self.add(got)


def fetch(gw: agent_gateway.Gateway, after: int, wait: float) -> list[Message] | None:
    """One long poll of ``GET /v1/messages``; None when the gateway says this attempt may not ask (it ended)."""
    request = urllib.request.Request(f"{gw.url}/v1/messages?after={after}&wait={wait:g}", method="GET",
                                     headers={"Authorization": f"Bearer {gw.token()}"})
    try:
        with agent_gateway.OPENER.open(request, timeout=wait + 30.0) as response:
            raw = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403, 404):
            return None
        raise
    try:
        return parse(boundedjson.loads(raw, ANSWER_BUDGET))
    except boundedjson.Refused as e:
        raise ValueError(f"the gateway's answer is not what it sends: {e}") from None
