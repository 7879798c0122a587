"""``kubectl longshot`` (the ``kubectl-longshot`` entry point): see docs/operations.md.

kubectl's conventions: ``-n/--namespace`` (else the context's namespace, else ``default``), ``--context``,
``--kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``, else the in-cluster account), ``-o json|yaml``
where the output is structured, and exit codes 0 (done), 1 (an error: not found, refused, nothing to show) and
2 (usage). Every change is one merge patch of a field a person may set (``spec.suspend``, ``spec.cancel``,
``spec.retryToken``, ``spec.agent``, ``spec.answer``, ``spec.approved``); the operator does the rest.

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
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

import kubernetes
import yaml

from longshot.api import common, sanitize
from longshot.cli import view
from longshot.core import ledger, names

PLURALS = {"BuildRequest": "buildrequests", "AgentTask": "agenttasks", "MergeJob": "mergejobs"}
KIND_PREFIXES = {"at": "AgentTask", "agenttask": "AgentTask", "agenttasks": "AgentTask",
                 "br": "BuildRequest", "buildrequest": "BuildRequest", "buildrequests": "BuildRequest",
                 "mj": "MergeJob", "mergejob": "MergeJob", "mergejobs": "MergeJob"}
TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
MAX_TEXT = 32768
"""The longest answer or prompt addendum the CRDs accept."""
TRACE_UI_ENV = "LONGSHOT_TRACE_UI_URL"
"""A trace UI's base URL (``https://jaeger.example/trace/{traceId}``, or a base that ``/trace/<id>`` is added to)."""


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

    def pod_log(self, name: str, container: str, tail: int | None) -> str:
        kwargs: dict[str, Any] = {"container": container}
        if tail is not None:
            kwargs["tail_lines"] = tail
        text: str = self.core.read_namespaced_pod_log(name, self.namespace, **kwargs)
        return text


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Kube:
    """The API client and namespace kubectl would use with these flags."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    if kubeconfig or os.path.exists(path):
        try:
            api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context)
            contexts, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=path)
            if context:
                active = next((x for x in contexts if x.get("name") == context), active)
        except (kubernetes.config.ConfigException, OSError) as e:
            raise CLIError(f"cannot use the kubeconfig {path}: {e}") from None
        ns = namespace or ((active or {}).get("context") or {}).get("namespace") or "default"
        return Kube(api, ns)
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        raise CLIError(f"no kubeconfig at {path} and not in a cluster; pass --kubeconfig") from None
    ns = namespace
    if ns is None:
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                ns = f.read().strip()
        except OSError:
            ns = "default"
    return Kube(kubernetes.client.ApiClient(), ns)


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
    build = k.must("BuildRequest", a.build)
    v = view.tree(build, tasks_of(k, a.build), k.list("MergeJob"))
    emit(out, v, a.output, view.tree_text(v))
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
            raise CLIError(f"the Pod {pod} of attempt {number} has no log yet: {_reason(e)}") from None
        raise
    return 0


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
    raw_result = (cm.get("data") or {}).get(ledger.RESULT_KEY)
    try:
        result = json.loads(raw_result) if raw_result else None
    except ValueError:
        result = None
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


def cmd_answer(k: Kube, a: argparse.Namespace, out: CleanOutput) -> int:
    task = k.must("AgentTask", a.task)
    status = task.get("status") or {}
    if status.get("phase") != "AwaitingInput":
        raise CLIError(f"AgentTask {a.task!r} is {status.get('phase') or 'Pending'}, not AwaitingInput: there is "
                       "no question to answer")
    k.patch("AgentTask", a.task, {"spec": {"answer": _bounded("the answer", a.text)}})
    out.write(f"agenttask/{a.task} answered; its next attempt starts with the question and the answer\n")
    return 0


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


def _reason(e: kubernetes.client.ApiException) -> str:
    try:
        body = json.loads(e.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or e.reason or e.status)


# --- the parser --------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    # SUPPRESS: the flags may come before or after the command (a subcommand's default would hide the first)
    common_flags = argparse.ArgumentParser(add_help=False)
    common_flags.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                              help="namespace (default: the context's, else default)")
    common_flags.add_argument("--context", default=argparse.SUPPRESS, help="the kubeconfig context to use")
    common_flags.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="path to the kubeconfig file")
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

    add("tree", cmd_tree, "show a build with its tasks, attempts and merge jobs", structured).add_argument("build")
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
    sp = add("answer", cmd_answer, "answer the question a task's agent asked (spec.answer)")
    sp.add_argument("task")
    sp.add_argument("text")
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
    return p


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
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
    namespace = getattr(a, "namespace", None)
    try:
        for attr, kind in (("task", "AgentTask"), ("build", "BuildRequest"), ("mergejob", "MergeJob")):
            if hasattr(a, attr):
                setattr(a, attr, name_of(getattr(a, attr), kind))
        k = kube or connect(getattr(a, "kubeconfig", None), getattr(a, "context", None), namespace)
        if kube is not None and namespace:
            k = Kube(kube.api, namespace)
        code: int = a.fn(k, a, clean_out)
        return code
    except CLIError as e:
        return _fail(str(e), clean_err)
    except kubernetes.client.ApiException as e:
        return _fail(f"the API server refused: {_reason(e)}", clean_err)
    except Exception as e:  # no traceback for a person; the class and message say what failed
        return _fail(f"{type(e).__name__}: {e}", clean_err)


def run() -> NoReturn:
    """The console script."""
    sys.exit(main())
