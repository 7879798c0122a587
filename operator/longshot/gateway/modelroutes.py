"""What the model proxy forwards (pure): the build's one provider, an allowlist of methods and paths, the
request target checked on its raw bytes, and the few request fields the gateway needs read from the body.

**Provider.** A build's calls go to one model API: ``spec.agent.backend`` ``openai`` or ``anthropic``.
For the ``command`` backend (a CLI agent) it is ``anthropic`` when ``spec.agent.model`` starts with
``claude`` or ``anthropic/``, when the command's program is ``claude``, or when ``spec.agent.baseUrl``'s
host contains ``anthropic``; ``openai`` otherwise. The other provider's route answers 403, so the build's
key never goes to another provider's URL.

**Routes** (relative to ``/model/<provider>/``; exact matches)::

    openai      POST chat/completions   POST completions   POST responses   GET models
    anthropic   POST v1/messages        POST v1/messages/count_tokens

``chat/completions`` is what the openai backend sends, ``v1/messages`` the anthropic backend; the rest
is what CLI agents (Codex, Claude Code, Aider) send. Anything else is 404 (a listed path with another
method 405), before the call is authenticated.

**Request target.** Checked as received, before any decoding: a ``%`` (so ``%2e``, ``%2F``, ``%3F``,
``%23``), a backslash, a ``#``, an empty segment (``//``), a ``.`` or ``..`` segment, a control or
non-ASCII character: 400. The query string is not forwarded (no listed route needs one; Claude Code's
``?beta=true`` is harmless to drop: betas travel in the ``anthropic-beta`` header).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from longshot.api import boundedjson

Flavour = Literal["openai", "anthropic"]
FLAVOURS: tuple[Flavour, ...] = ("openai", "anthropic")
PREFIX = "/model/"

ROUTES: Mapping[Flavour, Mapping[str, str]] = {
    "openai": {"chat/completions": "POST", "completions": "POST", "responses": "POST", "models": "GET"},
    "anthropic": {"v1/messages": "POST", "v1/messages/count_tokens": "POST"},
}
"""Path (after ``/model/<provider>/``) -> the one method served."""
METERED: frozenset[tuple[Flavour, str]] = frozenset({
    ("openai", "chat/completions"), ("openai", "completions"), ("openai", "responses"), ("anthropic", "v1/messages")})
"""Routes that cost tokens: reserved before, metered and settled after."""
STREAM_OPTIONS: frozenset[tuple[Flavour, str]] = frozenset({("openai", "chat/completions"), ("openai", "completions")})
"""Routes where the gateway asks for usage in a stream with ``stream_options.include_usage``."""

_SAFE = re.compile(r"^[A-Za-z0-9_\-./]*$")


class RouteError(Exception):
    def __init__(self, status: int, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow


@dataclass(frozen=True)
class Route:
    flavour: Flavour
    path: str
    metered: bool


def listing() -> str:
    return "; ".join(f"{f}: " + ", ".join(f"{m} /model/{f}/{p}" for p, m in ROUTES[f].items()) for f in FLAVOURS)


def parse_target(method: str, raw_target: str) -> Route:
    """The route of a request target (``raw_path`` as received, query included), or :class:`RouteError`."""
    path, _, _query = raw_target.partition("?")  # the query is dropped, never forwarded
    if not _SAFE.match(path):
        raise RouteError(400, "the model path may only contain letters, digits and - _ . / (no percent-encoding, "
                              "backslash, '#' or control characters)")
    if not path.startswith(PREFIX):
        raise RouteError(404, "model routes are /model/openai/... and /model/anthropic/...")
    segments = path[len(PREFIX):].split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise RouteError(400, "the model path may not contain empty, '.' or '..' segments")
    flavour, rest = segments[0], "/".join(segments[1:])
    if flavour not in FLAVOURS:
        raise RouteError(404, "model routes are /model/openai/... and /model/anthropic/...")
    routes = ROUTES[flavour]
    allowed = routes.get(rest)
    if allowed is None:
        raise RouteError(404, f"{method} /model/{flavour}/{rest} is not a model route longshot-gateway forwards; "
                              f"it forwards {listing()}")
    if method != allowed:
        raise RouteError(405, f"/model/{flavour}/{rest} takes {allowed} only, not {method}", allow=allowed)
    return Route(flavour, rest, (flavour, rest) in METERED)


def provider(agent: Mapping[str, Any]) -> Flavour | None:
    """The one model API a build's agent calls (see the module's docstring); None for ``scripted``."""
    backend = agent.get("backend")
    if backend in FLAVOURS:
        return backend  # type: ignore[no-any-return]
    if backend != "command":
        return None
    model = str(agent.get("model") or "").lower()
    if model.startswith(("claude", "anthropic/")):
        return "anthropic"
    try:
        words = shlex.split(str(agent.get("command") or ""))
    except ValueError:
        words = []
    if words and words[0].rsplit("/", 1)[-1] == "claude":
        return "anthropic"
    try:
        host = urlsplit(str(agent.get("baseUrl") or "")).hostname or ""
    except ValueError:
        host = ""
    return "anthropic" if "anthropic" in host else "openai"


# --- the request body -------------------------------------------------------------------------------------

LIMIT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
"""The request fields that bound a call's output, per choice."""
WANTED = frozenset({"model", "stream", *LIMIT_KEYS, "n", "best_of", "stream_options", "include_usage"})
MAXIMUM_KEY: Mapping[tuple[Flavour, str], str] = {
    ("openai", "chat/completions"): "max_completion_tokens", ("openai", "completions"): "max_tokens",
    ("openai", "responses"): "max_output_tokens", ("anthropic", "v1/messages"): "max_tokens"}
"""The field the gateway writes into a metered call's body that names no maximum (each API's own)."""
PARSE_BUDGET = boundedjson.Budget(max_bytes=1 << 30, max_values=250_000, max_depth=64)
"""What parsing a model request body may cost (``api.boundedjson``): its size is capped by the route before it is
read; 250,000 values (a long conversation with tool calls holds a few tens of thousands; each value parsed costs
about 60 bytes, so a body at the cap costs at most about 15 MiB on top of itself, where 4 MiB of ``"ab",`` under a
million values took 50 MiB each) and 64 levels (tool schemas nest)."""


class BodyError(ValueError):
    pass


@dataclass(frozen=True)
class Fields:
    model: str | None = None
    stream: bool = False
    max_output_tokens: int | None = None
    stream_options: Mapping[str, Any] | None = None
    has_stream_options: bool = False
    choices: int = 1
    """Completions the upstream generates: the larger of ``n`` and ``best_of`` (at least 1)."""
    limit_keys: tuple[str, ...] = ()
    """Which of ``LIMIT_KEYS`` the body has at its top level (whatever their values)."""


def _keep_wanted(pairs: list[tuple[str, Any]]) -> dict[str, Any] | None:
    # every object, nested ones too, is reduced to its wanted keys as soon as it is parsed
    kept = {k: v for k, v in pairs if k in WANTED}
    return kept or None


def read_fields(body: bytes | bytearray) -> Fields:
    """The top-level fields the gateway needs from a JSON request body (an empty body has none).

    The body is parsed once, each object reduced to the wanted keys as it is built, so the parse holds
    little more than the body; a body over :data:`PARSE_BUDGET` is refused before it is parsed."""
    if not body or body.isspace():
        return Fields()
    try:
        data = boundedjson.loads(body, PARSE_BUDGET, object_pairs_hook=_keep_wanted)
    except boundedjson.Refused as e:
        if e.reason == "not_json":
            raise BodyError("the request body is not valid JSON") from None
        raise BodyError(f"the request body has too many JSON values to be a model request: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BodyError("the request body must be a JSON object")
    model = data.get("model")
    limits = [data.get(k) for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")]
    numbers = [v for v in limits if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
    options = data.get("stream_options")
    counts = [v for v in (data.get("n"), data.get("best_of"))
              if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    return Fields(model=model[:256] if isinstance(model, str) and model else None,
                  stream=data.get("stream") is True,
                  max_output_tokens=max(numbers) if numbers else None,
                  stream_options=options if isinstance(options, dict) else None,
                  has_stream_options="stream_options" in data,
                  choices=max([1, *(math.ceil(v) for v in counts)]),
                  limit_keys=tuple(k for k in LIMIT_KEYS if k in data))


def with_maximum(body: bytes | bytearray, route: tuple[Flavour, str], fields: Fields,
                 maximum: int) -> bytes | bytearray:
    """``body`` whose output maximum per choice is ``maximum``: where it names none, the route's own field
    (``MAXIMUM_KEY``) is appended as the object's last key (one copy of the body); where it names one (a
    larger one, clamped to the budget), the body is parsed and written again with every limit field set to
    ``maximum``, so that no duplicate key is left for the upstream to choose from."""
    if not fields.limit_keys:
        end = body.rfind(b"}")
        if end < 0:
            return body
        view = memoryview(body)
        last = end - 1
        while last >= 0 and body[last] in b" \t\r\n":
            last -= 1
        sep = b"" if body[last:last + 1] == b"{" else b","
        return b"".join([view[:end], sep, json.dumps(MAXIMUM_KEY[route]).encode(), b":", str(maximum).encode(),
                         view[end:]])
    data = boundedjson.loads(body, PARSE_BUDGET)  # read_fields parsed it already, under the same budget
    for key in fields.limit_keys:
        data[key] = maximum
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def with_usage_requested(body: bytes | bytearray, fields: Fields) -> bytes | bytearray:
    """``body`` with ``stream_options.include_usage: true`` (the agent's other stream options kept), appended
    as the object's last key (JSON parsers keep the last of duplicate keys); one copy of the body."""
    end = body.rfind(b"}")
    if end < 0:
        return body
    options = json.dumps({**(fields.stream_options or {}), "include_usage": True}, separators=(",", ":"))
    view = memoryview(body)
    last = end - 1
    while last >= 0 and body[last] in b" \t\r\n":
        last -= 1
    sep = b"" if body[last:last + 1] == b"{" else b","
    return b"".join([view[:end], sep, b'"stream_options":', options.encode(), view[end:]])
