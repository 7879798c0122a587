"""The runner's side of ``longshot-gateway``: where it is, the Pod's token, and the progress channel.

Inside an agent Pod the operator sets ``LONGSHOT_GATEWAY_URL`` and mounts a projected ServiceAccount token
(audience ``longshot-gateway``, bound to the Pod) at ``LONGSHOT_GATEWAY_TOKEN_FILE`` (default
:data:`TOKEN_FILE`). The token is the attempt's only key: the gateway maps it to this Pod's AgentTask and
attempt and injects the real credentials upstream. The kubelet rotates the file, so it is read again for
every request and never cached. It is sent as a header (``Authorization: Bearer``; git gets it through
``http.extraHeader`` in its environment), never in a URL, an argument or a log line.

Without ``LONGSHOT_GATEWAY_URL`` (a laptop, the runner's own tests) the runner talks to the repository and
the model directly with the credentials it finds in its credential directories.
"""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longshot import tracing
from longshot.agent import errors
from longshot.api import handoff

TOKEN_FILE = "/var/run/secrets/longshot.dev/gateway/token"
URL_ENV = "LONGSHOT_GATEWAY_URL"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the token goes to the gateway only
TOKEN_FILE_ENV = "LONGSHOT_GATEWAY_TOKEN_FILE"
OPENER = _OPENER
"""The runner's HTTP opener for the gateway (no proxy: the token goes to the gateway only)."""
CLAIM_REQUEST_SECONDS = 60.0
"""Time limit of one ``GET /v1/claim`` (the gateway answers within its ``claim_wait_seconds``)."""
CLAIM_RETRY_SECONDS = 5.0
MAX_CLAIM_BYTES = 256 * 1024
"""Largest task input a claim may answer (Pod annotations are at most 256 KiB together)."""


@dataclass(frozen=True)
class Gateway:
    url: str
    token_file: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Gateway | None:
        url = (env.get(URL_ENV) or "").strip().rstrip("/")
        if not url:
            return None
        if not url.startswith(("http://", "https://")):
            raise errors.ConfigError(f"{URL_ENV}={url!r} is not an http(s) URL")
        return cls(url=url, token_file=Path(env.get(TOKEN_FILE_ENV) or TOKEN_FILE))

    def token(self) -> str:
        """The Pod's current token (read now: the kubelet rotates it)."""
        try:
            token = self.token_file.read_text().strip()
        except OSError as e:
            raise errors.AuthError(f"cannot read the gateway token {self.token_file}: {e.strerror}; the Pod needs "
                                   "its projected ServiceAccount token volume") from None
        if not token:
            raise errors.AuthError(f"the gateway token file {self.token_file} is empty")
        return token

    def git_url(self, task: handoff.TaskInput) -> str:
        """Where the attempt clones and pushes its build's repository."""
        return f"{self.url}/git/{task.namespace}/{task.build}.git"

    def model_url(self, flavour: str) -> str:
        """Base URL of the OpenAI-compatible (``openai``) or Anthropic (``anthropic``) pass-through."""
        return f"{self.url}/model/{flavour}"

    def git_env(self) -> dict[str, str]:
        """Environment that makes one git process send the token (as ``http.extraHeader``)."""
        env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
               "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {self.token()}"}
        parent = tracing.current_traceparent()
        if parent is not None:  # tracing: the gateway's git spans join the attempt's trace
            env.update({"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_1": "http.extraHeader",
                        "GIT_CONFIG_VALUE_1": f"traceparent: {parent}"})
        return env

    def traces_url(self) -> str:
        """Where the agent sends its spans (OTLP/HTTP): the gateway relays them to the collector."""
        return f"{self.url}/traces"

    def claim(self, *, sleep: Callable[[float], None] = time.sleep, timeout: float = CLAIM_REQUEST_SECONDS,
              pre_clone: Callable[[str, str], None] | None = None) -> bytes:
        """A warm sandbox's wait for its claim (docs/warm-pools.md): ``GET /v1/claim`` again and again until the
        gateway answers 200 with the task input of the attempt bound to this Pod (its body, at most
        :data:`MAX_CLAIM_BYTES`). A 204 asks again at once; a connection error or a 429/503 after a pause (up to
        :data:`CLAIM_RETRY_SECONDS`); any other refusal (401, 403: the Pod was never claimed and will not be) is
        a ConfigError: the runner exits and the operator deletes the sandbox.

        With ``pre_clone``, the first answered request does not wait (``wait=0``), and when its 204 names the
        repository the sandbox may read before its claim (``handoff.PRE_CLONE_HEADER``: the build's pool
        pre-clones), ``pre_clone(namespace, build)`` is called once, before the wait goes on."""
        pause = 0.2
        asked = pre_clone is None
        while True:
            request = urllib.request.Request(f"{self.url}/v1/claim{'' if asked else '?wait=0'}", method="GET",
                                             headers={"Authorization": f"Bearer {self.token()}"})
            try:
                with _OPENER.open(request, timeout=timeout) as response:
                    if response.status == 200:
                        body = response.read(MAX_CLAIM_BYTES + 1)
                        if len(body) > MAX_CLAIM_BYTES:
                            raise errors.ConfigError(f"the claim's task input is larger than {MAX_CLAIM_BYTES} bytes")
                        return bytes(body)
                    response.read(MAX_CLAIM_BYTES)
                    pause = 0.2
                    if not asked and pre_clone is not None:
                        asked = True
                        named = pre_clone_target(response.headers.get(handoff.PRE_CLONE_HEADER) or "")
                        if named is not None:
                            pre_clone(*named)
                    continue  # 204: not claimed yet
            except urllib.error.HTTPError as e:
                e.close()
                if e.code not in (429, 503):
                    raise errors.ConfigError(f"the gateway refused this sandbox's claim (HTTP {e.code}): it will "
                                             "never run an attempt") from None
            except (OSError, urllib.error.URLError):
                pass
            sleep(pause)
            pause = min(pause * 2, CLAIM_RETRY_SECONDS)


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def pre_clone_target(value: str) -> tuple[str, str] | None:
    """The namespace and build of a ``Longshot-Pre-Clone`` header (``<namespace>/<build>``, object names), or None
    when there is none or it is not that. Pure."""
    ns, sep, build = value.strip().partition("/")
    if not sep or not _NAME.match(ns) or not _NAME.match(build) or len(ns) > 63:
        return None
    return ns, build


class ProgressPoster:
    """Posts the latest progress to ``/progress`` from a background thread, best effort.

    :meth:`offer` never blocks and never raises: when a post is still under way the newer message replaces
    the waiting one, and failures are forgotten (the attempt never fails on progress)."""

    def __init__(self, gateway: Gateway, *, timeout: float = 5.0) -> None:
        self.gateway = gateway
        self.timeout = timeout
        self.posted = 0
        self.failed = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="longshot-progress", daemon=True)
        self._thread.start()

    def offer(self, record: Mapping[str, Any]) -> None:
        kind = record.get("type")
        if kind == "heartbeat":
            body: dict[str, Any] = {"heartbeat": True}
        elif kind == "log":
            body = {"message": str(record.get("message", ""))[:4000]}
        elif kind == "tool_call":
            body = {"message": f"tool {record.get('tool')}: {'ok' if record.get('ok') else 'failed'}"}
        else:
            return
        while True:
            try:
                self._queue.put_nowait(body)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def close(self, timeout: float = 2.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            try:
                request = urllib.request.Request(
                    f"{self.gateway.url}/progress", data=json.dumps(body).encode(), method="POST",
                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.gateway.token()}"})
                with _OPENER.open(request, timeout=self.timeout) as response:
                    response.read()
                self.posted += 1
            except (OSError, urllib.error.URLError, errors.AgentFailure, ValueError):
                self.failed += 1


class LedgerPoster:
    """Posts the attempt's transcript events to ``/ledger`` in batches, from a background thread, best effort.

    :meth:`offer` never blocks: events wait in a bounded queue (the oldest go when it is full, and the next batch
    says how many with a ``ledger_dropped`` event); a batch goes every ``interval`` seconds or when ``batch`` events
    wait. :meth:`close` posts what is left (the handoff last) before the Pod ends. The gateway bounds and redacts
    the transcript again; the token names the attempt, so there is nothing to address."""

    def __init__(self, gateway: Gateway, *, interval: float = 2.0, batch: int = 200, capacity: int = 5000,
                 timeout: float = 10.0) -> None:
        self.gateway = gateway
        self.interval = interval
        self.batch = batch
        self.timeout = timeout
        self.posted = 0
        self.failed = 0
        self.dropped = 0
        self._pending: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="longshot-ledger", daemon=True)
        self._thread.start()

    def offer(self, record: Mapping[str, Any]) -> None:
        if record.get("type") == "heartbeat":
            return
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append(dict(record))
            full = len(self._pending) >= self.batch
        if full:
            self._wake.set()

    def close(self, timeout: float = 15.0) -> None:
        """Post everything still waiting, then stop (at most ``timeout`` seconds)."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            out = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
            if self.dropped and out:
                out.insert(0, {"type": "ledger_dropped", "dropped": self.dropped})
                self.dropped = 0
        return out

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            closing = self._closing.is_set()
            while True:
                events = self._take()
                if not events:
                    break
                self._post(events, retries=5 if closing else 3)
            if closing:
                return

    def _post(self, events: list[dict[str, Any]], *, retries: int) -> None:
        body = json.dumps({"events": events}, default=str).encode()
        for attempt in range(retries):
            try:
                request = urllib.request.Request(
                    f"{self.gateway.url}/ledger", data=body, method="POST",
                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.gateway.token()}"})
                with _OPENER.open(request, timeout=self.timeout) as response:
                    response.read()
                self.posted += len(events)
                return
            except urllib.error.HTTPError as e:
                if e.code not in (429, 503) or attempt + 1 >= retries:
                    self.failed += len(events)
                    return
                time.sleep(min(float(e.headers.get("Retry-After") or 1), 5.0))
            except (OSError, urllib.error.URLError, errors.AgentFailure, ValueError):
                self.failed += len(events)
                return
