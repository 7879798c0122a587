"""``kubectl longshot`` (the ``kubectl-longshot`` entry point): see docs/operations.md.

kubectl's conventions: ``-n/--namespace`` (else the context's namespace, else ``default``), ``-A`` where a command
lists, ``--context``, ``--kubeconfig`` (else ``$KUBECONFIG``'s files merged as kubectl merges them, see
``cli.kubeconfig``, else ``~/.kube/config``, else the in-cluster account), ``--as``/``--as-group``/``--as-uid``
(impersonation), ``--request-timeout``, ``-o json|yaml`` where the output is structured, and exit codes 0 (done),
1 (an error, one sentence on stderr: ``cli.errors``), 2 (usage) and 130 (Ctrl-C). Every change is one merge patch
of a field a person may set (``spec.suspend``, ``spec.cancel``, ``spec.retryToken``, ``spec.agent``,
``spec.answer``, ``spec.approved``), or an append to ``spec.messages`` fenced on the resourceVersion it read
(``say``); the operator and longshot-gateway do the rest.

A target written ``TASK|BUILD`` is an AgentTask or a BuildRequest: ``at/NAME`` or ``br/NAME`` says which, a bare
name is looked up as a task first, then as a build (both existing: an error that asks for the prefix).

Everything the plugin prints goes through one door, :class:`CleanOutput`, which removes control characters,
ANSI escape sequences and bidi overrides (``api.sanitize.clean``; newlines and tabs stay): a model name, a
question, an exit reason or a Pod log an agent wrote cannot drive the terminal. Only ``logs --raw`` writes the
Pod's log as it is.
"""

from __future__ import annotations

import argparse
import base64
import builtins
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

import kubernetes
import urllib3
import yaml

import longshot
from longshot.api import common, sanitize
from longshot.cli import completion, errors, follow, kubeconfig, view
from longshot.core import ledger, names
from longshot.core import messages as core_messages

PLURALS = {"BuildRequest": "buildrequests", "AgentTask": "agenttasks", "MergeJob": "mergejobs"}
KIND_PREFIXES = {"at": "AgentTask", "agenttask": "AgentTask", "agenttasks": "AgentTask",
                 "br": "BuildRequest", "buildrequest": "BuildRequest", "buildrequests": "BuildRequest",
                 "mj": "MergeJob", "mergejob": "MergeJob", "mergejobs": "MergeJob"}
TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
MAX_TEXT = 32768
"""The longest answer or prompt addendum the CRDs accept."""
TRACE_UI_ENV = "LONGSHOT_TRACE_UI_URL"
"""A trace UI's base URL (``https://jaeger.example/trace/{traceId}``, or a base that ``/trace/<id>`` is added to)."""


REQUEST_TIMEOUT = 30.0
"""Seconds one request may take unless ``--request-timeout`` says otherwise (watches and ``logs -f`` set their own)."""
WATCH_TIMEOUT = 3600
"""``tree -w`` stops after this many seconds unless ``--watch-timeout`` says otherwise."""
OPERATOR_NAMESPACE = "longshot-system"
"""Where ``version`` looks for the operator's Deployment (the chart's documented namespace)."""
MAX_LOG_LINE = 1 << 20
"""A followed log's line longer than this (bytes without a newline) is given in pieces of this size: a log that never
writes a newline costs bounded memory (in the console, which follows for many people, as in the plugin)."""
FOLLOW_READ_TIMEOUT = 86400 + 60
"""``logs -f`` gives up on a log silent this long: the longest attempt (``spec.agent.timeoutSeconds`` at most 86400)
and a minute."""
LOCAL_COMMANDS = frozenset({"completion"})
"""Commands that make no API call."""


class CLIError(Exception):
    """Something the user can fix; the message says what. Exit code 1."""


class CleanOutput:
    """The plugin's only way to print: every ``write`` is :func:`longshot.api.sanitize.clean`'d (control characters
    but newline and tab, ANSI escapes, bidi overrides removed), so no command and no field can skip it. ``raw`` is
    the stream underneath, for ``logs --raw`` only."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        return self.raw.write(sanitize.clean(text))

    def flush(self) -> None:
        self.raw.flush()

    def clear_screen(self) -> bool:
        """Clear a terminal (a fixed escape sequence of ours, never text that was read) before ``tree -w`` redraws;
        False when the stream is not a terminal."""
        isatty = getattr(self.raw, "isatty", None)
        if isatty is None or not isatty():
            return False
        self.raw.write("\x1b[H\x1b[2J")
        return True


@dataclass
class Kube:
    """The API calls the commands make (one class, so tests can point it at any API server)."""

    api: kubernetes.client.ApiClient
    namespace: str

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
                common.GROUP, common.VERSION, self.namespace, PLURALS[kind], name)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    def must(self, kind: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, name)
        if obj is None:
            raise CLIError(f"{kind} {name!r} not found in namespace {self.namespace!r}")
        return obj

    def list(self, kind: str) -> list[dict[str, Any]]:
        out: dict[str, Any] = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
            common.GROUP, common.VERSION, self.namespace, PLURALS[kind])
        items: list[dict[str, Any]] = out.get("items") or []
        return items

    def patch(self, kind: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.patch_namespaced_custom_object(  # type: ignore[assignment]
            common.GROUP, common.VERSION, self.namespace, PLURALS[kind], name, dict(body))
        return obj

    def configmap(self, name: str) -> dict[str, Any] | None:
        """A ConfigMap as plain JSON (``binaryData`` still base64); None when it does not exist."""
        try:
            obj = self.core.read_namespaced_config_map(name, self.namespace)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise
        data: dict[str, Any] = self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return data

    @property
    def server(self) -> str:
        host: str = getattr(getattr(self.api, "configuration", None), "host", None) or "the cluster"
        return host

    def list_all(self, kind: str) -> builtins.list[dict[str, Any]]:
        """Every object of ``kind`` in every namespace (``-A``)."""
        out: dict[str, Any] = self.custom.list_cluster_custom_object(  # type: ignore[assignment]
            common.GROUP, common.VERSION, PLURALS[kind])
        items: builtins.list[dict[str, Any]] = out.get("items") or []
        return items

    def list_versioned(self, kind: str, *, field_selector: str | None = None
                       ) -> tuple[builtins.list[dict[str, Any]], str]:
        """The namespace's objects of ``kind`` and the list's resourceVersion (where a watch starts)."""
        kwargs: dict[str, Any] = {"field_selector": field_selector} if field_selector else {}
        out: dict[str, Any] = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
            common.GROUP, common.VERSION, self.namespace, PLURALS[kind], **kwargs)
        return list(out.get("items") or []), str((out.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, kind: str, resource_version: str, streams: follow.Streams, *, field_selector: str | None = None,
              timeout_seconds: int = follow.WATCH_SECONDS) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch request of the namespace's ``kind`` from ``resource_version``: ``(type, object)`` until the
        API server ends it (``timeout_seconds``) or ``streams.stop()``; an ``ERROR`` event raises (410: expired)."""
        kwargs: dict[str, Any] = {"field_selector": field_selector} if field_selector else {}
        resp = self.custom.list_namespaced_custom_object(
            common.GROUP, common.VERSION, self.namespace, PLURALS[kind], watch=True, allow_watch_bookmarks=True,
            resource_version=resource_version or None, timeout_seconds=timeout_seconds, _preload_content=False,
            _request_timeout=(10, timeout_seconds + 15), **kwargs)
        yield from (_watch_event(line) for line in _lines(resp, streams))

    def follow_log(self, pod: str, container: str, streams: follow.Streams) -> Iterator[str]:
        """The Pod's log from its start, line by line (newline included) while it grows, until the container ends."""
        resp = self.core.read_namespaced_pod_log(pod, self.namespace, container=container, follow=True,
                                                 _preload_content=False, _request_timeout=(10, FOLLOW_READ_TIMEOUT))
        yield from (line + "\n" for line in _lines(resp, streams, text=True))

    def pod_log(self, name: str, container: str, tail: int | None) -> str:
        kwargs: dict[str, Any] = {"container": container}
        if tail is not None:
            kwargs["tail_lines"] = tail
        text: str = self.core.read_namespaced_pod_log(name, self.namespace, **kwargs)
        return text


MAX_KUBECONFIG = 4 << 20
"""The largest kubeconfig file read (kubectl's are kilobytes; a bound all the same)."""


def _lines(resp: Any, streams: follow.Streams, *, text: bool = False) -> Iterator[str]:
    """The lines of a streamed answer (a watch's events, a followed log), raising the API server's refusal first."""
    status = getattr(resp, "status", 200)
    if not 200 <= status <= 299:
        try:
            raise kubernetes.client.ApiException(http_resp=resp)
        finally:
            resp.release_conn()
    streams.hold(resp)
    buffer = b""
    try:
        for chunk in resp.stream(amt=None, decode_content=False):
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            for line in done:
                if line or text:
                    yield line.decode("utf-8", errors="replace")
            while text and len(buffer) > MAX_LOG_LINE:
                piece, buffer = buffer[:MAX_LOG_LINE], buffer[MAX_LOG_LINE:]
                yield piece.decode("utf-8", errors="replace")
            if streams.stopped.is_set():
                return
        if buffer:
            yield buffer.decode("utf-8", errors="replace")
    except (urllib3.exceptions.ProtocolError, OSError, ValueError):
        if not streams.stopped.is_set():  # a stop() shuts the socket under the read: not an error
            raise
    finally:
        streams.release(resp)


def _watch_event(line: str) -> tuple[str, dict[str, Any]]:
    event = json.loads(line)
    kind, obj = event.get("type"), event.get("object") or {}
    if kind == "ERROR":
        raise kubernetes.client.ApiException(status=obj.get("code"), reason=obj.get("reason"),
                                             body=json.dumps(obj))
    return str(kind), obj


def impersonating(api: kubernetes.client.ApiClient, extra: Sequence[tuple[str, str]],
                  timeout: float | None) -> kubernetes.client.ApiClient:
    """Every request of ``api`` carries the ``Impersonate-*`` headers (a repeated one, ``Impersonate-Group``, as
    separate headers, which the client's own default headers cannot do) and, unless it sets its own, the timeout."""
    rest = api.rest_client
    send = rest.request

    def request(method: str, url: str, headers: Any = None, body: Any = None, post_params: Any = None,
                _request_timeout: Any = None) -> Any:
        h = urllib3.HTTPHeaderDict(headers or {})
        for key, value in extra:
            h.add(key, value)
        return send(method, url, headers=h, body=body, post_params=post_params,  # type: ignore[no-untyped-call]
                    _request_timeout=_request_timeout or timeout)

    rest.request = request  # type: ignore[method-assign]
    return api


def _read_kubeconfigs(paths: Sequence[str], explicit: bool) -> list[tuple[str, Any]]:
    docs: list[tuple[str, Any]] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_KUBECONFIG + 1)
        except FileNotFoundError:
            if explicit:
                raise CLIError(f"the kubeconfig {path} does not exist") from None
            docs.append((path, None))  # as kubectl: a missing file in $KUBECONFIG is skipped
            continue
        except OSError as e:
            raise CLIError(f"cannot read the kubeconfig {path}: {e.strerror or e}") from None
        if len(data) > MAX_KUBECONFIG:
            raise CLIError(f"the kubeconfig {path} is larger than {MAX_KUBECONFIG >> 20} MiB")
        try:
            docs.append((path, yaml.safe_load(data)))
        except yaml.YAMLError as e:
            raise CLIError(f"the kubeconfig {path} is not YAML: {sanitize.one_line(str(e))[:200]}") from None
    return docs


def connect(a: argparse.Namespace) -> Kube:
    """The API client and namespace kubectl would use with these flags (see ``cli.kubeconfig``)."""
    explicit = getattr(a, "kubeconfig", None)
    paths = kubeconfig.files(explicit, os.environ.get("KUBECONFIG"), os.path.expanduser("~"))
    docs = _read_kubeconfigs(paths, bool(explicit))
    timeout = getattr(a, "request_timeout", None) or None
    as_user, as_groups, as_uid = getattr(a, "as_user", None), getattr(a, "as_group", None) or [], getattr(
        a, "as_uid", None)
    namespace = getattr(a, "namespace", None)
    if explicit and not docs[0][1]:
        raise CLIError(f"the kubeconfig {explicit} is empty")
    if not any(doc for _, doc in docs):
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            raise CLIError(f"no kubeconfig at {', '.join(paths)} and not in a cluster; pass --kubeconfig") from None
        ns = namespace
        if ns is None:
            try:
                with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                    ns = f.read().strip()
            except OSError:
                ns = "default"
        who = kubeconfig.Identity(context="in-cluster", namespace=ns, user=as_user, groups=tuple(as_groups),
                                  uid=as_uid)
        return Kube(impersonating(kubernetes.client.ApiClient(), who.headers(), timeout), ns)
    config = kubeconfig.merge(docs)
    who = kubeconfig.identity(config, getattr(a, "context", None), as_user=as_user, as_groups=as_groups,
                              as_uid=as_uid)
    api = kubernetes.config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
        config, context=who.context, persist_config=False)
    return Kube(impersonating(api, who.headers(), timeout), namespace or who.namespace or "default")


# --- helpers -----------------------------------------------------------------------------------------


def token() -> str:
    """A fresh ``spec.retryToken`` (the operator acts on each value once): the time, and randomness for two people
    in the same second."""
    return f"cli-{int(time.time()):x}-{secrets.token_hex(4)}"


def name_of(arg: str, kind: str) -> str:
    """The name in ``arg``, which may carry its kind as kubectl writes it (``at/NAME``, ``mj/NAME``)."""
    if "/" not in arg:
        return arg
    prefix, name = arg.split("/", 1)
    if KIND_PREFIXES.get(prefix.lower()) != kind:
        raise CLIError(f"{arg!r}: expected a {kind} (a bare name, or {_short(kind)}/NAME)")
    return name


def _short(kind: str) -> str:
    return {"AgentTask": "at", "BuildRequest": "br", "MergeJob": "mj"}[kind]


def resolve(k: Kube, target: str) -> tuple[str, dict[str, Any]]:
    """``(kind, object)`` of a ``TASK|BUILD`` target."""
    if "/" in target:
        prefix, name = target.split("/", 1)
        kind = KIND_PREFIXES.get(prefix.lower())
        if kind not in ("AgentTask", "BuildRequest"):
            raise CLIError(f"{target!r}: the prefix must be at/ (an AgentTask) or br/ (a BuildRequest)")
        return kind, k.must(kind, name)
    task, build = k.get("AgentTask", target), k.get("BuildRequest", target)
    if task is not None and build is not None:
        raise CLIError(f"{target!r} is both an AgentTask and a BuildRequest: say at/{target} or br/{target}")
    if task is not None:
        return "AgentTask", task
    if build is not None:
        return "BuildRequest", build
    raise CLIError(f"no AgentTask or BuildRequest {target!r} in namespace {k.namespace!r}")


def tasks_of(k: Kube, build: str) -> list[dict[str, Any]]:
    return [t for t in k.list("AgentTask") if ((t.get("spec") or {}).get("buildRef") or {}).get("name") == build]


def emit(out: CleanOutput, data: Any, fmt: str | None, text: str) -> None:
    if fmt == "json":
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    elif fmt == "yaml":
        out.write(yaml.safe_dump(data, sort_keys=False))
    else:
        out.write(text)


def _bounded(what: str, text: str) -> str:
    if not text.strip():
        raise CLIError(f"{what} is empty")
    if len(text) > MAX_TEXT:
        raise CLIError(f"{what} is {len(text)} characters; at most {MAX_TEXT}")
    return text


# --- commands ----------------------------------------------------------------------------------------


def cmd_tree(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    if a.all_namespaces:
        k = Kube(k.api, _namespace_of(k, a.build))
    if a.watch:
        if a.output:
            raise CLIError("tree -w draws the tree as text; -o json|yaml is for one look (drop -w or -o)")
        return follow.watch_tree(k, a.build, out, a.err, limit=a.watch_timeout, clock=time.monotonic, frame=_frame)
    build = k.must("BuildRequest", a.build)
    v = view.tree(build, tasks_of(k, a.build), k.list("MergeJob"))
    emit(out, v, a.output, view.tree_text(v))
    return 0


def _namespace_of(k: Kube, build: str) -> str:
    """``tree -A``: the namespace of the one BuildRequest named ``build`` (an error when none or several are)."""
    found: dict[str, Any] = k.custom.list_cluster_custom_object(  # type: ignore[assignment]
        common.GROUP, common.VERSION, PLURALS["BuildRequest"], field_selector=f"metadata.name={build}")
    spaces = sorted(str(b["metadata"]["namespace"]) for b in found.get("items") or [])
    if not spaces:
        raise CLIError(f"no BuildRequest {build!r} in any namespace")
    if len(spaces) > 1:
        raise CLIError(f"BuildRequest {build!r} is in several namespaces ({', '.join(spaces)}): pass -n instead of -A")
    return spaces[0]


def _frame(out: CleanOutput, text: str, first: bool) -> None:
    """One drawing of ``tree -w``: a terminal is cleared first; a pipe or file gets the frames one after the
    other, each after an empty line and the time."""
    if not out.clear_screen() and not first:
        out.write("\n")
    out.write(f"{datetime.now(UTC).strftime('%H:%M:%S')}  {text}")
    out.flush()


def cmd_list(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    builds = k.list_all("BuildRequest") if a.all_namespaces else k.list("BuildRequest")
    rows = view.build_rows(builds, datetime.now(UTC))
    if not rows and not a.output:
        where = "any namespace" if a.all_namespaces else f"namespace {k.namespace!r}"
        a.err.write(f"no BuildRequests in {where}\n")
        return 0
    emit(out, {"items": rows}, a.output, view.list_text(rows, all_namespaces=a.all_namespaces))
    return 0


def cmd_version(k: Kube | None, a: argparse.Namespace, out: CleanOutput) -> int:
    """The plugin's version; and the operator's, from its Deployment (labels ``app.kubernetes.io/part-of=longshot,
    app.kubernetes.io/component=operator``) in ``--operator-namespace``: its ``app.kubernetes.io/version`` label and
    its image."""
    plugin = {"version": longshot.__version__}
    data: dict[str, Any] = {"plugin": plugin}
    lines = [f"plugin: {longshot.__version__}"]
    code = 0
    if k is not None:
        try:
            operator = _operator_version(k, a.operator_namespace)
        except (CLIError, kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            why = str(e) if isinstance(e, CLIError) else errors.sentence(e, k.server)
            operator = {"version": None, "error": why}
            code = 1
        data["operator"] = operator
        lines.append(f"operator: {operator['version']} (deployment {operator['deployment']}, image "
                     f"{operator['image']})" if operator.get("version") else f"operator: unknown ({operator['error']})")
    emit(out, data, a.output, "\n".join(lines) + "\n")
    return code


def _operator_version(k: Kube, namespace: str) -> dict[str, Any]:
    apps = kubernetes.client.AppsV1Api(k.api)
    found = apps.list_namespaced_deployment(
        namespace, label_selector="app.kubernetes.io/part-of=longshot,app.kubernetes.io/component=operator").items
    if not found:
        raise CLIError(f"no Longshot operator Deployment in namespace {namespace!r}; pass --operator-namespace")
    d = k.api.sanitize_for_serialization(found[0])  # type: ignore[no-untyped-call]
    meta, containers = d.get("metadata") or {}, ((d.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers") or []
    image = str(next((c.get("image") for c in containers if c.get("name") == "operator"),
                     containers[0].get("image") if containers else "") or "")
    version = (meta.get("labels") or {}).get("app.kubernetes.io/version") or view.image_version(image)
    return {"version": version, "deployment": f"{namespace}/{meta.get('name')}", "image": image}


def cmd_completion(k: Kube | None, a: argparse.Namespace, out: CleanOutput) -> int:
    out.write(completion.script(a.shell, parser()))
    return 0


def cmd_logs(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    task = k.must("AgentTask", a.task)
    attempts = (task.get("status") or {}).get("attempts") or []
    if not attempts:
        raise CLIError(f"AgentTask {a.task!r} has not started an attempt yet")
    number = a.attempt if a.attempt is not None else max(int(x.get("number", 0)) for x in attempts)
    record = next((x for x in attempts if x.get("number") == number), None)
    if record is None:
        # status keeps the last 20 attempts; an older one may still have its ledger entry
        older = ledger.entry_name(names.pod_name(a.task, number))
        if number < max(int(x.get("number", 0)) for x in attempts) and k.configmap(older) is not None:
            return _print_ledger(k, older, number, a, out)
        raise CLIError(f"AgentTask {a.task!r} has no attempt {number} "
                       f"(attempts: {', '.join(str(x.get('number')) for x in attempts)})")
    pod = record.get("pod") or names.pod_name(a.task, number)
    entry = record.get("ledger") or ledger.entry_name(pod)
    if a.ledger or a.output:
        return _print_ledger(k, entry, number, a, out)
    if a.follow and not record.get("endTime"):
        return _follow(k, a, number, pod, out)
    try:
        log_text = k.pod_log(pod, "agent", a.tail)
        if a.raw:  # asked for: the log byte for byte, escapes included
            out.raw.write(log_text)
        else:
            out.write(log_text)
    except kubernetes.client.ApiException as e:
        if e.status == 404:  # the Pod is gone (finished Pods are deleted past spec.retention.finishedPods)
            return _print_ledger(k, entry, number, a, out, gone=pod)
        if e.status == 400:
            raise CLIError(f"the Pod {pod} of attempt {number} has no log yet: {errors.reason(e)}") from None
        raise
    return 0


def _follow(k: Kube, a: argparse.Namespace, number: int, pod: str, out: CleanOutput,
            streams: follow.Streams | None = None) -> int:
    """``logs -f`` of a running attempt: its Pod's log as it grows; when it ends, the ``result`` line of its ledger
    entry, and on stderr where the entry is (or why there is none). ``streams``: a caller's (its ``stop()`` ends the
    follow from another thread, as the console does when a viewer leaves)."""
    stop = streams.stopped if streams is not None else threading.Event()
    record = follow.follow_attempt(k, a.task, number, pod, out, raw=a.raw, clock=time.monotonic, pause=stop.wait,
                                   streams=streams)
    result, said = attempt_end(k, a.task, number, pod, record)
    if result is not None:
        out.write(json.dumps({"type": "result", **result}, ensure_ascii=True) + "\n")
    a.err.write(said + "\n")
    return 0


def attempt_end(k: Kube, task: str, number: int, pod: str,
                record: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """How a followed attempt ended: the ``result`` of its ledger entry (None: none yet, or no entry) and a sentence
    saying where the entry is or why there is none. ``record``: its status record once its end was recorded
    (None: it was not)."""
    if record is None:
        return None, (f"the log of attempt {number} ended; its end is not recorded yet: run `kubectl longshot logs "
                      f"{task} --attempt {number} --ledger` later for its ledger entry")
    entry = record.get("ledger") or ledger.entry_name(record.get("pod") or pod)
    cm = k.configmap(entry)
    how = sanitize.one_line(str(record.get("exitReason") or record.get("failureClass") or "ended"))[:200]
    if cm is None:
        return None, f"attempt {number} ended ({how}); it has no ledger entry (ConfigMap {entry!r} not found)"
    return _result(cm), (f"attempt {number} ended ({how}); its transcript is kept in the ledger entry ConfigMap "
                         f"{k.namespace}/{entry} (kubectl longshot logs {task} --attempt {number} --ledger)")


def _print_ledger(k: Kube, entry: str, number: int, a: argparse.Namespace, out: CleanOutput, *,
                  gone: str | None = None) -> int:
    """The attempt's transcript from its ledger entry (docs/ledger.md): JSONL like the Pod's log, or with ``-o`` the
    entry (its result and events) as JSON or YAML. ``gone``: the attempt's Pod, which no longer exists."""
    cm = k.configmap(entry)
    if cm is None:
        pod = (f"the Pod {gone} of attempt {number} is gone (finished Pods are deleted past "
               "spec.retention.finishedPods) and it" if gone else f"attempt {number}")
        raise CLIError(f"{pod} has no ledger entry (ConfigMap {entry!r} not found: never written, or deleted past "
                       "spec.retention.ledger)")
    blob = ((cm.get("binaryData") or {}).get(ledger.TRANSCRIPT_KEY)) or ""
    try:
        events = ledger.events(base64.b64decode(blob)) if blob else []
    except ValueError:
        events = []
    result = _result(cm)
    if a.tail is not None:
        events = events[-a.tail:]
    if a.output:
        emit(out, {"entry": entry, "attempt": number, "result": result, "events": events}, a.output, "")
        return 0
    # one JSON object a line, as the agent printed them; ASCII only: nothing an agent wrote can drive the terminal
    out.write("".join(json.dumps(e, ensure_ascii=True, sort_keys=False) + "\n" for e in events))
    if result is not None:
        out.write(json.dumps({"type": "result", **result}, ensure_ascii=True) + "\n")
    return 0


def _result(cm: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``result`` of a ledger entry (how the attempt ended), or None."""
    raw_result = (cm.get("data") or {}).get(ledger.RESULT_KEY)
    try:
        result = json.loads(raw_result) if raw_result else None
    except ValueError:
        return None
    return result if isinstance(result, dict) else None


def cmd_answer(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    task = k.must("AgentTask", a.task)
    status = task.get("status") or {}
    if status.get("phase") != "AwaitingInput":
        raise CLIError(f"AgentTask {a.task!r} is {status.get('phase') or 'Pending'}, not AwaitingInput: there is "
                       "no question to answer")
    k.patch("AgentTask", a.task, {"spec": {"answer": _bounded("the answer", a.text)}})
    out.write(f"agenttask/{a.task} answered; its next attempt starts with the question and the answer\n")
    return 0


SAY_TRIES = 5
"""Appends of ``say`` retried when another sender wrote the task in between (HTTP 409)."""


def cmd_say(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    author = whoami(k)
    for _ in range(SAY_TRIES):
        task = k.must("AgentTask", a.task)
        made = core_messages.accept(task, a.text, interrupt=a.interrupt, author=author, now=datetime.now(UTC))
        if isinstance(made, core_messages.Refused):
            raise CLIError(made.reason)
        sent = [*((task.get("spec") or {}).get("messages") or []), made]
        body = {"metadata": {"resourceVersion": task["metadata"]["resourceVersion"]}, "spec": {"messages": sent}}
        try:
            k.patch("AgentTask", a.task, body)
        except kubernetes.client.ApiException as e:
            if e.status == 409:  # another sender (or the operator) wrote the task: read it again, take the next id
                continue
            raise
        what = "interrupt" if a.interrupt else "message"
        then = ("its running tool call stops and it waits for your next message" if a.interrupt
                else "the agent reads it before its next model call")
        out.write(f"agenttask/{a.task}: {what} #{made['id']} sent to attempt {made['attempt']}; {then}\n")
        return 0
    raise CLIError(f"AgentTask {a.task!r} kept changing while the message was sent; try again")


def whoami(k: Kube) -> str | None:
    """The user name the API server knows the plugin's requests by (a SelfSubjectReview), for a message's
    ``author``; None when it will not say (the API server's audit log still knows)."""
    body: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        review: Any = kubernetes.client.AuthenticationV1Api(k.api).create_self_subject_review(body)
    except (kubernetes.client.ApiException, ValueError):
        return None
    user = getattr(getattr(review, "status", None), "user_info", None)
    name = getattr(user, "username", None)
    return str(name) if name else None


def cmd_approve(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    job = k.must("MergeJob", a.mergejob)
    k.patch("MergeJob", a.mergejob, {"spec": {"approved": True}})
    phase = (job.get("status") or {}).get("phase") or "Queued"
    note = "" if phase == "AwaitingApproval" else f" (it is {phase}: the approval counts when it waits for one)"
    out.write(f"mergejob/{a.mergejob} approved{note}\n")
    return 0


def _relaunch_patch(a: argparse.Namespace) -> dict[str, Any]:
    agent: dict[str, Any] = {}
    if getattr(a, "model", None):
        agent["model"] = a.model
    if getattr(a, "prompt", None):
        agent["promptAddendum"] = _bounded("the prompt addendum", a.prompt)
    if getattr(a, "timeout", None) is not None:
        agent["timeoutSeconds"] = a.timeout
    spec: dict[str, Any] = {"retryToken": token()}
    if agent:
        spec["agent"] = agent
    return {"spec": spec}


def cmd_retry(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    k.must("AgentTask", a.task)
    body = _relaunch_patch(a)
    k.patch("AgentTask", a.task, body)
    what = "relaunched" if a.command == "relaunch" else "retried"
    extra = "".join(f", {key}={value}" for key, value in (body["spec"].get("agent") or {}).items()
                    if key != "promptAddendum")
    out.write(f"agenttask/{a.task} {what} (retryToken {body['spec']['retryToken']}{extra})\n")
    return 0


def cmd_suspend(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    kind, obj = resolve(k, a.target)
    on = a.command == "suspend"
    name = obj["metadata"]["name"]
    k.patch(kind, name, {"spec": {"suspend": on}})
    what = "suspended" if on else "resumed"
    if kind == "AgentTask":
        more = " (a running attempt is stopped; it resumes from the task's branch)" if on else ""
    else:
        more = " (no new agent Pod starts; running ones finish)" if on else ""
    out.write(f"{kind.lower()}/{name} {what}{more}\n")
    return 0


def cmd_cancel(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    kind, obj = resolve(k, a.target)
    name = obj["metadata"]["name"]
    if kind == "AgentTask":
        k.patch("AgentTask", name, {"spec": {"cancel": True}})
        out.write(f"agenttask/{name} cancelled\n")
        return 0
    # a build has no cancel of its own: suspend it (nothing new starts, no new task is planned into work) and
    # cancel every task that has not finished
    k.patch("BuildRequest", name, {"spec": {"suspend": True}})
    cancelled = []
    for t in tasks_of(k, name):
        if ((t.get("status") or {}).get("phase") or "Pending") in TERMINAL or (t.get("spec") or {}).get("cancel"):
            continue
        k.patch("AgentTask", t["metadata"]["name"], {"spec": {"cancel": True}})
        cancelled.append(t["metadata"]["name"])
    out.write(f"buildrequest/{name} suspended; {len(cancelled)} unfinished tasks cancelled"
              + (f": {', '.join(sorted(cancelled))}" if cancelled else "") + "\n")
    return 0


def cmd_trace(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    build = k.must("BuildRequest", a.build)
    trace_id = (build.get("status") or {}).get("traceId")
    if not trace_id:
        raise CLIError(f"BuildRequest {a.build!r} has no status.traceId: tracing is off (or not recorded yet)")
    base = a.ui or os.environ.get(TRACE_UI_ENV)
    link = None
    if base:
        link = base.replace("{traceId}", trace_id) if "{traceId}" in base else f"{base.rstrip('/')}/trace/{trace_id}"
    emit(out, {"traceId": trace_id, **({"url": link} if link else {})}, a.output, (link or trace_id) + "\n")
    return 0


# --- the parser --------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    # SUPPRESS: the flags may come before or after the command (a subcommand's default would hide the first)
    common_flags = argparse.ArgumentParser(add_help=False)
    common_flags.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                              help="namespace (default: the context's, else default)")
    common_flags.add_argument("--context", default=argparse.SUPPRESS, help="the kubeconfig context to use")
    common_flags.add_argument("--kubeconfig", default=argparse.SUPPRESS,
                              help="path to the kubeconfig file (default: $KUBECONFIG's files merged, else "
                                   "~/.kube/config)")
    common_flags.add_argument("--as", dest="as_user", metavar="USER", default=argparse.SUPPRESS,
                              help="impersonate this user (Impersonate-User)")
    common_flags.add_argument("--as-group", metavar="GROUP", action="append", default=argparse.SUPPRESS,
                              help="impersonate this group, repeatable (Impersonate-Group; needs --as)")
    common_flags.add_argument("--as-uid", metavar="UID", default=argparse.SUPPRESS,
                              help="impersonate this UID (Impersonate-Uid; needs --as)")
    common_flags.add_argument("--request-timeout", type=_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                              help=f"how long one request may take, 0 for no limit (default: {REQUEST_TIMEOUT})")
    structured = argparse.ArgumentParser(add_help=False)
    structured.add_argument("-o", "--output", choices=("json", "yaml"), help="structured output")

    p = argparse.ArgumentParser(prog="kubectl longshot", parents=[common_flags],
                                description="Operate Longshot builds, tasks and merge jobs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[..., int], help_: str, *parents: argparse.ArgumentParser
            ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, parents=[common_flags, *parents])
        sp.set_defaults(fn=fn)
        return sp

    sp = add("list", cmd_list, "list builds: phase, tasks done/total, age", structured)
    sp.add_argument("-A", "--all-namespaces", action="store_true", help="the builds of every namespace")
    sp = add("tree", cmd_tree, "show a build with its tasks, attempts and merge jobs", structured)
    sp.add_argument("build")
    sp.add_argument("-A", "--all-namespaces", action="store_true",
                    help="find the build in any namespace (an error when the name is in several)")
    sp.add_argument("-w", "--watch", action="store_true",
                    help="redraw on every change, until the build is terminal (Ctrl-C stops)")
    sp.add_argument("--watch-timeout", type=_positive, default=WATCH_TIMEOUT, metavar="SECONDS",
                    help=f"stop watching after this long (default: {WATCH_TIMEOUT})")
    sp = add("logs", cmd_logs, "show an attempt's transcript: the Pod's log, or its ledger entry once the Pod is gone",
             structured)
    sp.add_argument("task")
    sp.add_argument("--attempt", type=_positive, help="attempt number (default: the latest)")
    sp.add_argument("--tail", type=_positive, help="only the last lines")
    sp.add_argument("--ledger", action="store_true",
                    help="read the ledger entry even while the Pod exists (-o json|yaml implies it)")
    sp.add_argument("--raw", action="store_true",
                    help="print the Pod's log as it is, terminal escapes and control characters included (by "
                         "default they are removed)")
    sp.add_argument("-f", "--follow", action="store_true",
                    help="follow a running attempt's log, then say where its ledger entry is")
    sp = add("answer", cmd_answer, "answer the question a task's agent asked (spec.answer)")
    sp.add_argument("task")
    sp.add_argument("text")
    sp = add("say", cmd_say, "send a message to a task's running agent (spec.messages): it reads it before its next "
             "model call")
    sp.add_argument("task")
    sp.add_argument("text")
    sp.add_argument("--interrupt", action="store_true",
                    help="stop the tool call the agent is running now and hold it until your next message")
    add("approve", cmd_approve, "approve a merge job (spec.approved)").add_argument("mergejob")
    add("retry", cmd_retry, "start a new attempt of a task, in any state (a new spec.retryToken)").add_argument("task")
    sp = add("relaunch", cmd_retry, "relaunch a task with overrides (spec.agent and a new spec.retryToken)")
    sp.add_argument("task")
    sp.add_argument("--model", help="the model of this task's attempts (spec.agent.model): a name of the build's "
                    "spec.agent.models, or a model as the provider names it; it wins over the task's own choice")
    sp.add_argument("--prompt", help="text added to the task's prompt (spec.agent.promptAddendum)")
    sp.add_argument("--timeout", type=_timeout,
                    help="seconds one attempt may run, 30-86400 (spec.agent.timeoutSeconds)")
    add("suspend", cmd_suspend, "suspend a task (its running attempt stops) or a build").add_argument("target")
    add("resume", cmd_suspend, "resume a suspended task or build").add_argument("target")
    add("cancel", cmd_cancel,
        "cancel a task, or suspend a build and cancel its unfinished tasks").add_argument("target")
    sp = add("trace", cmd_trace, "print a build's trace ID (or its link in a trace UI)", structured)
    sp.add_argument("build")
    sp.add_argument("--ui", help=f"the trace UI's base URL (default: ${TRACE_UI_ENV})")
    sp = add("version", cmd_version, "print the plugin's version and the operator's", structured)
    sp.add_argument("--client", action="store_true", help="the plugin's version only (no API call)")
    sp.add_argument("--operator-namespace", default=OPERATOR_NAMESPACE, metavar="NAMESPACE",
                    help=f"where the operator's Deployment is (default: {OPERATOR_NAMESPACE})")
    sp = add("completion", cmd_completion, "print a shell completion script (bash, zsh or fish)")
    sp.add_argument("shell", choices=completion.SHELLS)
    return p


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _seconds(value: str) -> float:
    n = float(value.removesuffix("s"))
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return n


def _timeout(value: str) -> int:
    n = int(value)
    if not 30 <= n <= 86400:
        raise argparse.ArgumentTypeError("must be between 30 and 86400 seconds")
    return n


def _fail(message: str, err: CleanOutput) -> int:
    err.write(f"error: {message}\n")
    return 1


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         kube: Kube | None = None) -> int:
    """Run one command; the exit code (argparse's usage errors exit 2 through ``SystemExit``)."""
    clean_out = CleanOutput(out or sys.stdout)
    clean_err = CleanOutput(err or sys.stderr)
    a = parser().parse_args(argv)
    a.err = clean_err
    if not hasattr(a, "request_timeout"):
        a.request_timeout = REQUEST_TIMEOUT
    namespace = getattr(a, "namespace", None)
    server = "the cluster"
    try:
        for attr, kind in (("task", "AgentTask"), ("build", "BuildRequest"), ("mergejob", "MergeJob")):
            if hasattr(a, attr):
                setattr(a, attr, name_of(getattr(a, attr), kind))
        k: Kube | None = None
        if a.command not in LOCAL_COMMANDS and not getattr(a, "client", False):
            k = kube or connect(a)
            if kube is not None and namespace:
                k = Kube(kube.api, namespace)
            server = k.server
        code: int = a.fn(k, a, clean_out)
        return code
    except KeyboardInterrupt:
        clean_out.flush()
        return 130
    except CLIError as e:
        return _fail(str(e), clean_err)
    except Exception as e:  # every other failure: one sentence (cli.errors), no traceback for a person
        return _fail(errors.sentence(e, server), clean_err)


def run() -> NoReturn:
    """The console script. urllib3's own warnings (a retried connection) stay off stderr: the error sentence says
    what failed."""
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    sys.exit(main())
