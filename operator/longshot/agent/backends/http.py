"""One JSON POST to a model API with the failure handling both API backends share.

* 429 and 5xx (and connection errors) are retried with exponential backoff, honouring ``Retry-After``
  (seconds or an HTTP date); when the retries run out a 429 is ``RateLimited`` and the rest is
  ``Infrastructure``.
* 401 and 403 are ``Auth`` and never retried.
* 402 (or an error of type ``budget_exceeded``: longshot-gateway's answer once the build's budget is spent)
  is ``BudgetExceeded`` and never retried.
* A request the server refuses as invalid cannot succeed on a retry: any other 4xx, and a 5xx whose body is
  a request validation error (llama-cpp-python answers a pydantic validation error with 500) fail at once
  as ``Configuration``, with the server's message. The one exception is a conversation that outgrew the
  model's context window: that is the attempt's own doing (``AgentError``), a new attempt may fit.

Sleep and randomness are injected so tests do not wait.
"""

from __future__ import annotations

import ast
import email.utils
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from longshot import tracing
from longshot.agent import errors, events

RETRYABLE_4XX = frozenset({408, 409, 429})
"""Client errors worth retrying: request timeout, conflict, rate limited. Every 5xx is retried too, except
501 (the server does not implement the endpoint) and a 5xx whose body is a request validation error."""


def retryable(status: int) -> bool:
    return status in RETRYABLE_4XX or (status >= 500 and status != 501)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = min(self.base_delay * float(2 ** (attempt - 1)), self.max_delay)
        return backoff * (0.5 + rand() / 2)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


def post_json(
    client: httpx.Client,
    url: str,
    *,
    headers: dict[str, str],
    body: dict[str, Any],
    ev: events.Events,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    rand: Callable[[], float] = random.random,
    api: str = "model API",
) -> dict[str, Any]:
    last = ""
    status: int | None = None
    for attempt in range(1, policy.max_attempts + 1):
        retry_after: float | None = None
        status = None
        try:
            response = _post(client, url, headers, body, api, attempt)
        except httpx.TimeoutException as e:
            last = f"the {api} timed out ({type(e).__name__})"
        except httpx.TransportError as e:
            last = f"cannot reach the {api} at {url}: {type(e).__name__}: {e}"
        else:
            status = response.status_code
            if status < 300:
                try:
                    data = response.json()
                except ValueError:
                    raise errors.InfrastructureError(
                        f"the {api} answered {status} with a body that is not JSON") from None
                if not isinstance(data, dict):
                    raise errors.InfrastructureError(f"the {api} answered with JSON that is not an object")
                return data
            message = _error_message(response)
            if status == 402 or "budget_exceeded" in response.text[:2000]:
                # longshot-gateway: the build's token or cost budget is spent (exit 7, not retried)
                raise errors.BudgetExceededError(f"the {api} refused the call: {message}")
            if status in (401, 403):
                raise errors.AuthError(
                    f"the {api} refused the credentials ({status}: {message}); check the api-key in the "
                    "model credentials Secret"
                )
            if not retryable(status) or (status >= 500 and is_validation_error(response)):
                raise invalid_request(api, url, status, message)
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            last = f"the {api} answered {status}: {message}"
        if attempt == policy.max_attempts:
            break
        delay = policy.delay(attempt, retry_after, rand)
        ev.log("retrying model request", level="warning", attempt=attempt, status=status,
               delay_seconds=round(delay, 3), reason=last)
        sleep(delay)
    if status == 429:
        raise errors.RateLimitedError(f"gave up after {policy.max_attempts} attempts: {last}")
    raise errors.InfrastructureError(f"gave up after {policy.max_attempts} attempts: {last}")


def _post(client: httpx.Client, url: str, headers: dict[str, str], body: dict[str, Any], api: str,
          attempt: int) -> httpx.Response:
    """One try, in a ``model call`` span when tracing (its ``traceparent`` goes along, so the gateway's span of
    the call is its child)."""
    with tracing.span("model call", {"longshot.api": api, "longshot.try": attempt},
                      service=tracing.AGENT) as traced:
        response = client.post(url, headers=tracing.inject(dict(headers)), json=body)
        traced.set("http.response.status_code", response.status_code)
        if response.status_code >= 300:
            traced.error(f"HTTP {response.status_code}")
        return response


MESSAGE_CAP = 600

_CONTEXT_OVERFLOW = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|exceeds? (the )?(model'?s? )?context|too many tokens"
    r"|prompt is too long|input is too long", re.IGNORECASE)
_PYDANTIC = re.compile(r"\b\d+ validation errors?(?: for |:)", re.IGNORECASE)
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9]+$")
_TEMPLATE_ERROR = re.compile(
    r"'[\w ]+ object' has no attribute '\w+'|roles must alternate|jinja2?\.exceptions|TemplateSyntaxError",
    re.IGNORECASE)
"""A chat template that cannot render the conversation (llama-cpp-python's Jinja templates raise these as
500s): the same request fails the same way every time."""
_INVALID_TYPES = frozenset({"invalid_request_error", "badrequesterror", "bad_request", "validation_error",
                            "invalid_request", "request_validation_error", "unprocessable_entity"})


def invalid_request(api: str, url: str, status: int, message: str) -> errors.AgentFailure:
    """The failure for a request the server refused as invalid: not retried, with the server's words and
    what to check."""
    if _CONTEXT_OVERFLOW.search(message):
        return errors.AgentError(
            f"the conversation outgrew the model's context window: the {api} answered {status}: {message}. "
            "Use a model (or a server setting such as llama.cpp's n_ctx) with a larger context, or split the task")
    if _TEMPLATE_ERROR.search(message):
        return errors.ConfigError(
            f"the {api} could not render the conversation with its chat template ({status}: {message}); "
            "retrying cannot help: the server (or a proxy in front of it) does not accept this conversation's "
            "shape; see docs/agent.md (servers tested) for servers and settings known to work")
    hint = {
        404: f"check spec.agent.baseUrl (the request went to {url}) and spec.agent.model",
        405: f"check spec.agent.baseUrl (the request went to {url})",
    }.get(status, "check spec.agent.model and spec.agent.baseUrl, and that the server at spec.agent.baseUrl "
                  "speaks this API with tool calls; see docs/agent.md (servers tested)")
    return errors.ConfigError(
        f"the {api} rejected the request as invalid ({status}: {message}); retrying cannot help: {hint}")


def is_validation_error(response: httpx.Response) -> bool:
    """True when a (5xx) response's body says the request itself is invalid: FastAPI's validation body
    (``{"detail": [{"loc", "msg", "type"}]}``), a pydantic ``N validation error(s) for`` message, or an
    OpenAI-style error whose type is a request error or whose code is a 4xx."""
    try:
        data = response.json()
    except ValueError:
        return bool(_PYDANTIC.search(response.text[:4000]) or _TEMPLATE_ERROR.search(response.text[:4000]))
    if not isinstance(data, dict):
        return False
    if _TEMPLATE_ERROR.search(json.dumps(data)[:4000]):
        return True
    detail = data.get("detail")
    if isinstance(detail, list) and detail and all(isinstance(d, dict) and "msg" in d and "loc" in d
                                                   for d in detail):
        return True
    nested = data.get("error")
    err: dict[str, Any] = nested if isinstance(nested, dict) else data
    kind = str(err.get("type") or "").lower()
    code = err.get("code")
    if kind in _INVALID_TYPES:
        return True
    if isinstance(code, int | str) and str(code).isdigit() and 400 <= int(code) < 500 and int(code) not in (
            401, 403, 408, 409, 429):
        return True
    return bool(_PYDANTIC.search(json.dumps(data)[:4000]))


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return _clean(response.text) or response.reason_phrase
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return _clean(summarise_validation(err["message"]))
        if isinstance(err, str):
            return _clean(err)
        if isinstance(data.get("message"), str):
            return _clean(data["message"])
        detail = data.get("detail")
        if isinstance(detail, str):
            return _clean(detail)
        if isinstance(detail, list):
            return _clean("; ".join(_validation_item(d) for d in detail[:5]))
    return _clean(str(data))


def summarise_validation(message: str) -> str:
    """A pydantic validation message as llama-cpp-python sends it (``N validation errors:`` then one dict
    repr per line, for every member of a union, then a traceback) shortened to what is wrong: the entries
    that are not mere union mismatches, as ``messages.1.content: Input should be a valid string (input:
    None)``. Any other message is returned as it is."""
    head = _PYDANTIC.search(message)
    if not head:
        return message
    items: list[dict[str, Any]] = []
    for line in message.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict) and "msg" in value:
            items.append(value)
    if not items:
        return message
    telling = ([i for i in items if i.get("type") not in ("literal_error", "missing")]
               or [i for i in items if i.get("type") != "literal_error"] or items)
    parts = []
    for item in telling[:3]:
        loc = [str(p) for p in item.get("loc") or () if p != "body" and not _CLASS_NAME.match(str(p))]
        text = f"{'.'.join(loc)}: {item['msg']}".strip(": ")
        if "input" in item and not isinstance(item["input"], dict | list):
            text += f" (input: {item['input']!r})"
        parts.append(text)
    return f"{head.group(0).rstrip(':').rstrip()}: " + "; ".join(parts)


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(p) for p in item.get("loc") or [])
    return f"{where}: {item.get('msg', '')}".strip(": ")


def _clean(text: str) -> str:
    """One line, at most MESSAGE_CAP characters."""
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CAP else text[:MESSAGE_CAP - 6] + " [...]"


def token_count(value: Any) -> int:
    """A token count from a usage object: ints, floats and digit strings; anything else (null, missing) is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return max(int(value), 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0
