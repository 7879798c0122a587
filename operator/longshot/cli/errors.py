"""Every failure ``kubectl longshot`` can meet on its way to the API server, as one sentence a person can act on.

``sentence(exc, server)`` is the only place an exception becomes text: the API server's answers (401, 403 with the
server's reason, 404, 409/422 with the field, 5xx, a watch's ERROR event), urllib3's (connection refused, a name
that does not resolve, TLS, a connect or read timeout, a connection cut), the kubeconfig's, and anything else
(its class and first line). The sentence is one line, at most ``MAX`` characters, with no control character.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import kubernetes
import urllib3

from longshot.api import sanitize
from longshot.cli import kubeconfig

MAX = 400
"""The longest sentence (an API server's message can be long: a webhook's, a list of fields)."""


def reason(e: kubernetes.client.ApiException) -> str:
    """The API server's own message (its Status ``message``), else the HTTP reason, else the code."""
    try:
        body = json.loads(e.body or "{}")
    except (ValueError, TypeError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or e.reason or e.status)


def _short(text: Any) -> str:
    return " ".join(sanitize.one_line(" ".join(str(text).split())).split()).rstrip(".")


def _api(e: kubernetes.client.ApiException, server: str) -> str:
    status = int(e.status or 0)
    why = _short(reason(e))
    if status == 401:
        return (f"the API server at {server} did not accept your credentials (401 Unauthorized): the kubeconfig's "
                "user has a wrong or expired token or certificate; log in again")
    if status == 403:
        return f"the API server refused (403 Forbidden): {why}"
    if status == 404:
        hint = ("; are Longshot's CRDs installed (kubectl get crd buildrequests.longshot.dev)?"
                if "could not find the requested resource" in why else "")
        return f"not found (404): {why}{hint}"
    if status == 410:
        return f"the API server no longer has that version (410 Gone): {why}; run the command again"
    if status in (409, 422, 400):
        return f"the API server refused ({status}): {why}"
    if status == 429:
        return f"the API server is throttling requests (429): {why}; try again shortly"
    if status >= 500:
        return f"the API server failed ({status}): {why}"
    return f"the API server answered {status}: {why}"


def _tls(err: BaseException | None) -> str:
    """The innermost ssl error's own words (``certificate verify failed: self-signed certificate``)."""
    seen: list[BaseException] = []
    todo = [err]
    while todo and len(seen) < 8:
        e = todo.pop(0)
        if e is None or e in seen:
            continue
        seen.append(e)
        if isinstance(e, ssl.SSLCertVerificationError):
            why = getattr(e, "verify_message", None) or getattr(e, "reason", None)
            return f"certificate verify failed: {_short(why)}" if why else _short(e)
        if isinstance(e, ssl.SSLError):
            return _short(getattr(e, "reason", None) or e)
        todo += [a for a in e.args if isinstance(a, BaseException)] + [e.__cause__, e.__context__]
    return _short(err) if err is not None else "handshake failed"


def _transport(err: BaseException, server: str) -> str:
    if isinstance(err, urllib3.exceptions.SSLError):
        return (f"the TLS handshake with the API server at {server} failed ({_tls(err)}): check the kubeconfig's "
                "certificate-authority for this cluster")
    # NameResolutionError < NewConnectionError < ConnectTimeoutError: the narrowest first
    if isinstance(err, urllib3.exceptions.NameResolutionError):
        return f"the API server's host in {server} does not resolve: check the kubeconfig's server"
    if isinstance(err, urllib3.exceptions.NewConnectionError):
        if isinstance(err.__cause__ or err.__context__, ConnectionRefusedError) or "refused" in str(err).lower():
            return (f"cannot connect to the API server at {server}: connection refused (is the cluster running, "
                    "and is the kubeconfig's server right?)")
        return f"cannot connect to the API server at {server}: {_short(err).split('new connection: ', 1)[-1]}"
    if isinstance(err, urllib3.exceptions.ConnectTimeoutError):
        return f"the API server at {server} did not accept a connection in time (connect timeout)"
    if isinstance(err, urllib3.exceptions.ReadTimeoutError):
        return f"the API server at {server} did not answer in time (read timeout); try --request-timeout"
    if isinstance(err, urllib3.exceptions.ProtocolError):
        return f"the connection to the API server at {server} was cut ({_short(err.args[0] if err.args else err)})"
    if isinstance(err, urllib3.exceptions.ProxyError):
        return f"the proxy to the API server at {server} failed ({_short(err)})"
    return f"cannot reach the API server at {server} ({type(err).__name__}: {_short(err)})"


def sentence(exc: BaseException, server: str = "the cluster") -> str:
    """One line that says what failed and, where there is one, what to do."""
    if isinstance(exc, kubernetes.client.ApiException):
        text = _api(exc, server)
    elif isinstance(exc, urllib3.exceptions.MaxRetryError):
        text = _transport(exc.reason or exc, server)
    elif isinstance(exc, urllib3.exceptions.HTTPError):
        text = _transport(exc, server)
    elif isinstance(exc, ssl.SSLError):
        text = _transport(urllib3.exceptions.SSLError(exc), server)
    elif isinstance(exc, kubeconfig.KubeconfigError):
        text = str(exc)
    elif isinstance(exc, kubernetes.config.ConfigException):
        text = f"the kubeconfig cannot be used: {_short(exc)}"
    elif isinstance(exc, ConnectionRefusedError):
        text = f"cannot connect to the API server at {server}: connection refused"
    elif isinstance(exc, TimeoutError):
        text = f"the API server at {server} did not answer in time"
    else:
        text = f"{type(exc).__name__}: {_short(exc) or 'no message'}"
    text = sanitize.one_line(text)
    return text if len(text) <= MAX else text[:MAX - 1] + "…"
