"""Everything the console does as a person: each call is made with that person's own bearer token, on a Kubernetes
client built for the call that carries no other credential (not the console's ServiceAccount token, not a client
certificate), so the API server's authentication and RBAC decide every read and every write.

Synchronous (the official client); the server runs these in threads. The writes are ``kubectl longshot``'s own
commands (``longshot.cli.main``: ``cmd_answer``, ``cmd_approve``, ``cmd_suspend``, ``cmd_retry``, ``cmd_cancel``),
called with the person's client: one implementation of each action, for the terminal and for the browser.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import kubernetes
import urllib3

from longshot.api import boundedjson, common
from longshot.cli import errors as cli_errors
from longshot.cli import follow as cli_follow
from longshot.cli import main as cli
from longshot.core import console as core
from longshot.core import names

log = logging.getLogger(__name__)

TRANSCRIPT_TAIL = 2000
"""Most lines (Pod log) or events (ledger entry) of a transcript sent to a browser."""
TRANSCRIPT_BUDGET = boundedjson.Budget(max_bytes=16 << 20, max_values=2_000_000, max_depth=64)
"""What reading a ledger entry back (an agent wrote its events) may cost."""


class Refused(Exception):
    """The API server (or the request's form) refused: ``status`` and a sentence for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how its certificate is checked; no credential."""

    host: str
    ssl_ca_cert: str | None
    verify_ssl: bool = True

    @classmethod
    def of(cls, configuration: kubernetes.client.Configuration) -> Endpoint:
        return cls(host=str(configuration.host), ssl_ca_cert=configuration.ssl_ca_cert,
                   verify_ssl=bool(configuration.verify_ssl))

    def client(self, token: str, timeout: tuple[float, float] = (5.0, 30.0)) -> kubernetes.client.ApiClient:
        """A client that speaks as the holder of ``token`` and as nobody else."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.host
        configuration.ssl_ca_cert = self.ssl_ca_cert
        configuration.verify_ssl = self.verify_ssl
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.retries = False
        client = _Timed(configuration)
        client.request_timeout = timeout
        return client


class _Timed(kubernetes.client.ApiClient):
    request_timeout: tuple[float, float] = (5.0, 30.0)

    def call_api(self, method: str, url: str, header_params: Any = None, body: Any = None,
                 post_params: Any = None, _request_timeout: Any = None) -> Any:
        return super().call_api(method, url, header_params, body, post_params,
                                _request_timeout=self.request_timeout if _request_timeout is None else _request_timeout)


def _serialize(client: kubernetes.client.ApiClient, obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], client.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]


def _refusal(e: Exception, server: str) -> Refused:
    if isinstance(e, kubernetes.client.ApiException):
        status = e.status if e.status in (400, 401, 403, 404, 409, 422) else 502
        return Refused(status, cli_errors.sentence(e, server))
    if isinstance(e, cli.CLIError):
        return Refused(409, str(e))
    return Refused(502, f"the API server could not be reached: {type(e).__name__}")


CALL_ERRORS = (kubernetes.client.ApiException, cli.CLIError, urllib3.exceptions.HTTPError, OSError)


def who(endpoint: Endpoint, token: str) -> str:
    """The user the API server says ``token`` is (a SelfSubjectReview); Refused 401 when it is no valid token."""
    client = endpoint.client(token)
    try:
        body: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(body)
        info = (_serialize(client, review).get("status") or {}).get("userInfo") or {}
        return str(info.get("username") or "")
    except CALL_ERRORS as e:
        refused = _refusal(e, endpoint.host)
        if refused.status in (401, 403):
            raise Refused(401, "the API server does not accept this token: paste a valid one") from None
        raise refused from None
    finally:
        client.close()  # type: ignore[no-untyped-call]


def may_list(endpoint: Endpoint, token: str, namespace: str) -> bool:
    """Whether the token's holder may list BuildRequests in ``namespace`` ("": in every namespace), as the API server
    says (a SelfSubjectAccessReview made with the token). Any failure is a no: the console fails closed."""
    client = endpoint.client(token)
    body: Any = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"group": common.GROUP, "resource": core.PLURALS["BuildRequest"],
                                            "verb": "list", **({"namespace": namespace} if namespace else {})}}}
    try:
        review = kubernetes.client.AuthorizationV1Api(client).create_self_subject_access_review(body)
        return bool((_serialize(client, review).get("status") or {}).get("allowed"))
    except CALL_ERRORS as e:
        log.warning("console: an access review for namespace %r failed (%s); showing nothing of it", namespace,
                    _refusal(e, endpoint.host).message)
        return False
    finally:
        client.close()  # type: ignore[no-untyped-call]


def act(endpoint: Endpoint, token: str, namespace: str, kind: str, name: str, action: str,
        body: dict[str, Any]) -> str:
    """Carry out ``action`` on the object as the token's holder, with ``kubectl longshot``'s own command; the
    sentence it printed. Refused with the API server's answer (403 when RBAC says no)."""
    problem = core.action_problem(action, kind, body)
    if problem is not None:
        raise Refused(400, problem)
    client = endpoint.client(token)
    out = io.StringIO()
    k = cli.Kube(client, namespace)
    prefix = {"AgentTask": "at", "BuildRequest": "br", "MergeJob": "mj"}[kind]
    a = argparse.Namespace(command=action, target=f"{prefix}/{name}", task=name, mergejob=name,
                           text=body.get("text", ""), model=body.get("model"), prompt=body.get("prompt"),
                           interrupt=body.get("interrupt") is True, timeout=None, err=cli.CleanOutput(io.StringIO()))
    command = {"answer": cli.cmd_answer, "approve": cli.cmd_approve, "suspend": cli.cmd_suspend,
               "resume": cli.cmd_suspend, "cancel": cli.cmd_cancel, "relaunch": cli.cmd_retry,
               "message": cli.cmd_say}[action]
    try:
        command(k, a, cli.CleanOutput(out))
    except CALL_ERRORS as e:
        raise _refusal(e, endpoint.host) from None
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return out.getvalue().strip()


def transcript(endpoint: Endpoint, token: str, namespace: str, task: str, attempt: int | None,
               source: str) -> dict[str, Any]:
    """An attempt's transcript as ``kubectl longshot logs`` reads it, with the person's rights: ``ledger`` (the
    attempt's ledger entry: its events and result) or ``pod`` (the running Pod's log, its last lines)."""
    client = endpoint.client(token)
    out = io.StringIO()
    ledger = source == "ledger"
    a = argparse.Namespace(task=task, attempt=attempt, ledger=ledger, output="json" if ledger else None,
                           follow=False, raw=False, tail=TRANSCRIPT_TAIL, err=cli.CleanOutput(io.StringIO()))
    try:
        cli.cmd_logs(cli.Kube(client, namespace), a, cli.CleanOutput(out))
    except CALL_ERRORS as e:
        raise _refusal(e, endpoint.host) from None
    finally:
        client.close()  # type: ignore[no-untyped-call]
    if ledger:
        try:
            data = boundedjson.loads(out.getvalue() or "{}", TRANSCRIPT_BUDGET)
        except boundedjson.Refused as e:
            raise Refused(502, f"the ledger entry of attempt {attempt} is larger than the console shows: {e}") from None
        return {"source": "ledger", **(data if isinstance(data, dict) else {})}
    return {"source": "pod", "text": out.getvalue()}


class _Lines:
    """A text stream that hands each complete line (newline removed) to ``push``: what ``CleanOutput`` writes to."""

    def __init__(self, push: Callable[[str], object]) -> None:
        self.push = push
        self.partial = ""

    def write(self, text: str) -> int:
        *done, self.partial = (self.partial + text).split("\n")
        for line in done:
            self.push(line)
        return len(text)

    def flush(self) -> None:
        pass


def follow(endpoint: Endpoint, token: str, namespace: str, task: str, attempt: int | None,
           push: Callable[[str], object], streams: cli_follow.Streams) -> dict[str, Any]:
    """Follow a running attempt as ``kubectl longshot logs -f`` does (``follow.follow_attempt``), with the person's
    rights: each line of its Pod's log, cleaned as the plugin prints it (``CleanOutput``), to ``push`` as it comes;
    then how it ended (``cli.attempt_end``): ``{"attempt", "result", "said"}`` (``result`` None: none recorded, and
    ``said`` why). A finished attempt ends at once. ``streams.stop()`` from another thread ends the follow promptly
    (for a viewer that left: what it then returns is for nobody). Refused with the API server's answer (403
    without ``pods/log``)."""
    client = endpoint.client(token)
    k = cli.Kube(client, namespace)
    out = cli.CleanOutput(cast(Any, _Lines(push)))
    try:
        attempts = (k.must("AgentTask", task).get("status") or {}).get("attempts") or []
        if not attempts:
            raise Refused(409, f"AgentTask {task!r} has not started an attempt yet")
        number = attempt if attempt is not None else max(int(x.get("number", 0)) for x in attempts)
        record: dict[str, Any] | None = next((x for x in attempts if x.get("number") == number), None)
        if record is None:
            raise Refused(404, f"AgentTask {task!r} has no attempt {number} in its status")
        pod = str(record.get("pod") or names.pod_name(task, number))
        if not record.get("endTime"):
            record = cli_follow.follow_attempt(k, task, number, pod, out, raw=False, clock=time.monotonic,
                                               pause=streams.stopped.wait, streams=streams)
        result, said = cli.attempt_end(k, task, number, pod, record)
    except CALL_ERRORS as e:
        raise _refusal(e, endpoint.host) from None
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return {"attempt": number, "result": result, "said": said}
