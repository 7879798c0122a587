"""One JSON POST to a model API with the failure handling both API backends share.

* 429 and 5xx (and connection errors) are retried with exponential backoff, honouring ``Retry-After``
  (seconds or an HTTP date); when the retries run out a 429 is ``RateLimited`` and the rest is
  ``Infrastructure``.
* 401 and 403 are ``Auth`` and never retried.
* 402 (or an error of type ``budget_exceeded``: longshot-gateway's answer once the build's budget is spent)
  is ``BudgetExceeded`` and never retried.
* Any other 4xx is an ``AgentError`` carrying the API's message (a request the model made too large, ...).

Sleep and randomness are injected so tests do not wait.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from longshot.agent import errors, events

RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
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
            response = client.post(url, headers=headers, json=body)
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
            if status not in RETRYABLE:
                raise errors.AgentError(f"the {api} rejected the request ({status}: {message})")
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


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(data.get("message"), str):
            return data["message"][:300]
    return str(data)[:300]
