"""The agent runner: ``python -m longshot agent`` inside an agent Pod.

Reads the task input, clones the repository (through ``longshot-gateway`` in a Pod, see
:mod:`longshot.agent.gateway`; directly with local credentials elsewhere), plays its role with the
configured backend, commits and pushes, and reports a handoff: on stdout (last line) and in the
termination log (inline, or as a pointer to a git ref when it is larger than a termination message).
Exit codes are listed in :mod:`longshot.agent.errors` and docs/agent.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import pydantic

from longshot import tracing
from longshot.agent import errors, events, gitops, messages, redact, roles, settings
from longshot.agent import gateway as agent_gateway
from longshot.agent.backends import base as backends
from longshot.api import common, exitcodes, handoff


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="longshot agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task-input", type=Path, help="the task input JSON (default: $LONGSHOT_TASK_INPUT "
                                                        f"or {handoff.TASK_INPUT_PATH})")
    parser.add_argument("--workspace", type=Path, help="scratch directory (default: $LONGSHOT_WORKSPACE_DIR "
                                                       f"or {handoff.WORKSPACE_DIR})")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.task_input:
        env["LONGSHOT_TASK_INPUT"] = str(args.task_input)
    if args.workspace:
        env["LONGSHOT_WORKSPACE_DIR"] = str(args.workspace)
    return run(env)


def run(env: Mapping[str, str], *, sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random, stdout: TextIO | None = None) -> int:
    """The whole attempt; ``env`` stands for the process environment (tests pass their own, a fake
    ``sleep`` and a ``stdout`` to read the events from)."""
    paths = settings.Paths.from_env(env)
    redactor = redact.Redactor()
    ev = events.Events(redactor, stream=stdout)
    try:
        tuning = settings.Settings.from_env(env)
        gateway = agent_gateway.Gateway.from_env(env)
        warm = PreClone(paths, gateway, ev, env, tuning.git_timeout_seconds) if gateway is not None else None
        task = load_task_input(paths.task_input, gateway, sleep=sleep, pre_clone=warm)
    except errors.AgentFailure as e:
        # Without a valid task there is no valid handoff: the message says why, for the attempt's reason.
        ev.log(str(e), level="error")
        _write_termination_log(paths.termination_log, f"invalid task input: {e}", ev)
        return e.exit_code
    poster = agent_gateway.ProgressPoster(gateway) if gateway is not None else None
    transcript = agent_gateway.LedgerPoster(gateway) if gateway is not None else None
    if poster is not None and transcript is not None:
        progress, ledger = poster.offer, transcript.offer

        def both(record: dict[str, Any]) -> None:
            progress(record)
            ledger(record)

        ev.sink = both
    ev.set_context(build=task.build, task=task.task, attempt=task.attempt, role=task.role)
    ev.log("agent runner started", backend=task.backend.name, repository=gitops.sanitize_url(task.repository_url),
           branch=task.branch, base_branch=task.base_branch, gateway=gateway.url if gateway else None)
    attempt: roles.Attempt | None = None
    access = repository_access(task, paths, ev, gateway)
    # people's messages (spec.messages), asked for in the background when the backend takes them
    inbox = (messages.Inbox.from_gateway(gateway, hold_seconds=tuning.message_hold_seconds).start()
             if gateway is not None and backends.MESSAGES.get(task.backend.name, "none") != "none" else None)
    failure: errors.AgentFailure | None = None
    parent = start_tracing(env, gateway, ev)
    with events.Heartbeat(ev, tuning.heartbeat_seconds), tracing.span(
            "agent", {"longshot.namespace": task.namespace, "longshot.build": task.build, "longshot.task": task.task,
                      "longshot.role": task.role, "longshot.attempt": task.attempt,
                      "longshot.backend": task.backend.name},
            parent=parent, service=tracing.AGENT) as traced:
        try:
            attempt = prepare(task, paths, tuning, ev, env, access, gateway, sleep=sleep, rand=rand,
                              pre_cloned=warm)
            attempt.inbox = inbox
            fields = roles.ROLES[task.role](attempt)
            result = make_handoff(task, attempt, **fields)
        except errors.AgentFailure as e:
            failure = e
        except Exception as e:  # a bug: still report, so the operator does not wait for a timeout
            ev.log("internal error", level="error", error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc(limit=8))
            failure = errors.AgentError(f"internal error in the agent runner: {type(e).__name__}: {e}")
        if failure is not None:
            ev.log(str(failure), level="error", failure_class=failure.failure_class)
            result = failed_handoff(task, attempt, failure)
        if inbox is not None:
            inbox.close()
        delivered = deliver(result, task, paths, tuning, ev, access, sleep=sleep)
        traced.set("longshot.outcome", delivered.outcome)
        if failure is not None:
            traced.error(failure.failure_class)
    if parent is not None:
        tracing.shutdown(tracing.AGENT)  # the batched spans go out before the Pod ends
    if poster is not None:
        ev.sink = None
        poster.close()
    ev.sink = transcript.offer if transcript is not None else None
    ev.emit("handoff", handoff=delivered.to_wire())
    if transcript is not None:  # the transcript, handoff last, reaches the ledger before the Pod ends
        ev.sink = None
        transcript.close()
    if failure is not None and delivered is result:
        return failure.exit_code
    return exit_code(delivered)


def start_tracing(env: Mapping[str, str], gateway: agent_gateway.Gateway | None,
                  ev: events.Events) -> tracing.Parent | None:
    """Tracing, when the Pod has a ``TRACEPARENT`` (the operator traces): the attempt's span, whose children this
    runner's spans are. They go to the gateway's ``/traces`` (with the Pod's token), or without a gateway to
    ``LONGSHOT_TRACING_ENDPOINT``. None: tracing is off (the SDK is not loaded)."""
    parent = tracing.parse_traceparent(env.get(tracing.TRACEPARENT_ENV))
    if parent is None:
        return None
    try:
        if gateway is not None:
            on = tracing.setup(tracing.AGENT, "", url=gateway.traces_url(),
                               headers={"Authorization": f"Bearer {gateway.token()}"})
        else:
            on = tracing.setup_from_env(tracing.AGENT, env)
    except errors.AgentFailure as e:  # no token: the attempt fails on it later, with its own reason
        ev.log("tracing is off", level="warning", error=str(e))
        return None
    return parent if on else None


class PreClone:
    """A warm sandbox's clone of its build's repository, made while it waits for its claim when the build's pool
    pre-clones (docs/warm-pools.md, "Pre-clone"): called with the namespace and build the gateway named, it clones
    ``<gateway>/git/<namespace>/<build>.git`` into the checkout's place. A failure leaves nothing behind: the
    attempt clones as a cold one does. :func:`prepare` keeps the clone only for an attempt of that very
    repository, and brings it up to date with a fetch."""

    def __init__(self, paths: settings.Paths, gateway: agent_gateway.Gateway, ev: events.Events,
                 env: Mapping[str, str], timeout: float) -> None:
        self.paths = paths
        self.gateway = gateway
        self.ev = ev
        self.env = {k: v for k, v in env.items() if not k.startswith("LONGSHOT_GIT_ASKPASS")}
        self.timeout = timeout
        self.url: str | None = None
        """The repository cloned into the checkout's place; None: none (not asked, or the clone failed)."""
        self.seconds = 0.0

    def __call__(self, namespace: str, build: str) -> None:
        url = f"{self.gateway.url}/git/{namespace}/{build}.git"
        start = time.monotonic()
        shutil.rmtree(self.paths.checkout, ignore_errors=True)
        self.paths.workspace.mkdir(parents=True, exist_ok=True)
        git = gitops.Access(url=url, auth_env=_token_env(self.gateway, self.ev)).git(
            self.paths.workspace, redactor=self.ev.redactor, timeout=self.timeout, base_env=self.env)
        try:
            git.clone(url, self.paths.checkout, attempts=1)
        except errors.AgentFailure as e:
            shutil.rmtree(self.paths.checkout, ignore_errors=True)
            self.ev.log("pre-clone failed; the attempt will clone", level="warning", error=str(e))
            return
        self.url, self.seconds = url, time.monotonic() - start
        self.ev.log("pre-cloned the build's repository", repository=gitops.sanitize_url(url),
                    seconds=round(self.seconds, 2))


def load_task_input(path: Path, gateway: agent_gateway.Gateway | None = None, *,
                    sleep: Callable[[float], None] = time.sleep,
                    pre_clone: Callable[[str, str], None] | None = None) -> handoff.TaskInput:
    """The attempt's task input: the file at ``path`` (the Pod's downward-API file of its task-input annotation).
    An empty file in a Pod with a gateway is a warm sandbox's (docs/warm-pools.md): it holds nothing task-specific
    until an attempt claims it, and the input comes from the gateway's ``GET /v1/claim`` then, checked as the file
    would be (``pre_clone``: see :meth:`Gateway.claim`)."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        raise errors.ConfigError(f"no task input at {path} (set LONGSHOT_TASK_INPUT outside a Pod)") from None
    except OSError as e:
        raise errors.ConfigError(f"cannot read the task input {path}: {e.strerror}") from None
    where = str(path)
    if not raw.strip() and gateway is not None:
        claimed = gateway.claim(sleep=sleep, pre_clone=pre_clone)
        try:
            raw = claimed.decode()
        except UnicodeDecodeError:
            raise errors.ConfigError("the claim's task input is not UTF-8") from None
        where = f"{gateway.url}/v1/claim"
    try:
        task = handoff.TaskInput.model_validate_json(raw)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise errors.ConfigError(f"the task input {where} is invalid: {field}: {first['msg']}") from None
    if not re.match(common.DNS_SUBDOMAIN, task.task) or len(task.task) > 253:
        raise errors.ConfigError(f"the task input's task name {task.task!r} is not a valid object name")
    if not re.match(common.GIT_BRANCH, task.branch) or ".." in task.branch or task.branch.endswith((".lock", "/")):
        raise errors.ConfigError(f"the task input's branch {task.branch!r} is not a valid branch name")
    if not re.match(common.GIT_URL, task.repository_url):
        raise errors.ConfigError("the task input's repository URL is not a URL git can clone")
    return task


def repository_access(task: handoff.TaskInput, paths: settings.Paths, ev: events.Events,
                      gateway: agent_gateway.Gateway | None) -> gitops.Access:
    """The gateway's git URL with the Pod's token (in a Pod), else the repository's URL with the
    credentials of the credentials directory (loaded later, in :func:`prepare`)."""
    if gateway is None:
        return gitops.Access(url=task.repository_url)
    return gitops.Access(url=gateway.git_url(task), auth_env=_token_env(gateway, ev))


def _token_env(gateway: agent_gateway.Gateway, ev: events.Events) -> Callable[[], dict[str, str]]:
    """The variables that make one git send the Pod's token (read afresh each time), the token redacted."""
    def token_env() -> dict[str, str]:
        env = gateway.git_env()
        ev.redactor.add(env["GIT_CONFIG_VALUE_0"].removeprefix("Authorization: Bearer "))
        return env

    return token_env


def prepare(task: handoff.TaskInput, paths: settings.Paths, tuning: settings.Settings, ev: events.Events,
            env: Mapping[str, str], access: gitops.Access, gateway: agent_gateway.Gateway | None, *,
            sleep: Callable[[float], None], rand: Callable[[], float],
            pre_cloned: PreClone | None = None) -> roles.Attempt:
    """Fresh workspace, credentials loaded (and registered for redaction), repository cloned (or, in a warm sandbox
    that pre-cloned this attempt's repository, fetched into that clone)."""
    kept = pre_cloned is not None and pre_cloned.url == access.url and paths.checkout.is_dir()
    for stale in (paths.scratch,) if kept else (paths.checkout, paths.scratch):
        if stale.exists():
            shutil.rmtree(stale)
    paths.scratch.mkdir(parents=True, mode=0o700)
    api_key: str | None = None
    key_source: Callable[[], str | None] | None = None
    if gateway is None:
        api_key = _read_secret(paths.llm_credentials / "api-key")
        ev.redactor.add(api_key)
        access.credentials = gitops.load_credentials(paths.git_credentials, paths.scratch)
        for secret in access.credentials.secrets:
            ev.redactor.add(secret)
    else:
        def key_source() -> str | None:
            token = gateway.token()
            ev.redactor.add(token)
            return token

        key_source()
    base_env = {k: v for k, v in env.items() if not k.startswith("LONGSHOT_GIT_ASKPASS")}
    clone = access.git(paths.workspace, redactor=ev.redactor, timeout=tuning.git_timeout_seconds,
                       base_env=base_env)
    extra: dict[str, Any] = {"pre_cloned_seconds": round(pre_cloned.seconds, 2)} if kept and pre_cloned else {}
    ev.log("cloning", repository=gitops.sanitize_url(task.repository_url),
           via="gateway" if gateway else "direct", credentials=access.credentials.kind, **extra)
    if kept:
        kept = _bring_up_to_date(access, paths, tuning, ev, base_env)
    waits: list[float] = []

    def waiting(seconds: float) -> None:
        waits.append(seconds)
        sleep(seconds)

    if not kept:
        with tracing.span("git clone", service=tracing.AGENT):
            clone.clone(access.url, paths.checkout, sleep=waiting)
    if waits:  # the Pod's network (or the gateway) was not reachable at first: how long that cost
        ev.log("cloned after waiting for the network", retries=len(waits), waited_seconds=round(sum(waits), 2))
    git = access.git(paths.checkout, redactor=ev.redactor, timeout=tuning.git_timeout_seconds, base_env=base_env)
    git.trust()  # before the model runs: from now on the checkout's own git config is ignored
    known = [s for s in (api_key, *access.credentials.secrets) if s]
    return roles.Attempt(task=task, paths=paths, settings=tuning, events=ev, git=git, api_key=api_key,
                         known_secrets=known, command_env=roles.command_env(paths.workspace, base_env),
                         sleep=sleep, rand=rand, gateway=gateway, key_source=key_source)


def _bring_up_to_date(access: gitops.Access, paths: settings.Paths, tuning: settings.Settings, ev: events.Events,
                      base_env: Mapping[str, str]) -> bool:
    """A pre-cloned checkout made what a clone now would be: the branches fetched again (pruned, no tags) and the
    default branch reset to its new tip. False (and the checkout removed) when that failed: the caller clones."""
    git = access.git(paths.checkout, redactor=ev.redactor, timeout=tuning.git_timeout_seconds, base_env=base_env)
    try:
        with tracing.span("git fetch", service=tracing.AGENT):
            git.run("fetch", "--quiet", "--prune", "--no-tags", access.url, "+refs/heads/*:refs/remotes/origin/*",
                    what="fetch into the pre-cloned repository")
            git.run("reset", "--quiet", "--hard", "refs/remotes/origin/HEAD",
                    what="reset of the pre-cloned repository")
    except errors.AgentFailure as e:
        ev.log("the pre-cloned repository could not be brought up to date; cloning it afresh", level="warning",
               error=str(e))
        shutil.rmtree(paths.checkout, ignore_errors=True)
        return False
    return True


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


# --- the handoff -------------------------------------------------------------------------------------

def make_handoff(task: handoff.TaskInput, attempt: roles.Attempt | None, **fields: Any) -> handoff.Handoff:
    usage = attempt.usage if attempt is not None else handoff.Usage()
    fields.setdefault("base_commit", attempt.base_commit if attempt is not None else None)
    summary = fields.get("summary") or ""
    fields["summary"] = summary if len(summary) <= 60_000 else summary[:60_000] + " [...]"
    return handoff.Handoff(task=task.task, attempt=task.attempt, role=task.role, usage=usage, **fields)


def failed_handoff(task: handoff.TaskInput, attempt: roles.Attempt | None,
                   failure: errors.AgentFailure) -> handoff.Handoff:
    message = str(failure) if attempt is None else attempt.events.redactor.text(str(failure))
    if len(message) > 4000:
        message = message[:3990] + " [...]"
    return make_handoff(task, attempt, outcome="failed", summary=message,
                        failure=handoff.Failure(failure_class=failure.failure_class, message=message))


def deliver(result: handoff.Handoff, task: handoff.TaskInput, paths: settings.Paths, tuning: settings.Settings,
            ev: events.Events, access: gitops.Access, *,
            sleep: Callable[[float], None] | None = None) -> handoff.Handoff:
    """Write the termination message: the handoff itself, or a pointer to it in the repository."""
    data = handoff.encode(result)
    if handoff.fits_termination_message(data):
        _write_termination_log(paths.termination_log, data.decode(), ev)
        return result
    ref = handoff.handoff_ref(task.namespace, task.build, task.task, task.attempt)
    try:
        git = access.git(paths.scratch / "handoffs", redactor=ev.redactor, timeout=tuning.git_timeout_seconds)
        commit = gitops.push_handoff(git, access.url, ref, data, name=task.author_name,
                                     email=task.author_email,
                                     message=f"Handoff of {task.task}, attempt {task.attempt}", sleep=sleep)
    except errors.AgentFailure as e:
        ev.log("cannot store the handoff in the repository", level="error", ref=ref, error=str(e))
        failure = errors.InfrastructureError(f"the handoff ({len(data)} bytes) is too large for a termination "
                                             f"message and could not be pushed to {ref}: {e}"[:3900])
        fallback = result.model_copy(update={
            "outcome": "failed", "tasks": [], "summary": str(failure), "files_changed": result.files_changed[:50],
            "failure": handoff.Failure(failure_class=failure.failure_class, message=str(failure)),
        })
        _write_termination_log(paths.termination_log, handoff.encode(fallback).decode(), ev)
        return fallback
    pointer = handoff.HandoffPointer(ref=ref, commit=commit, sha256=handoff.digest(data), size=len(data))
    ev.log("handoff stored in the repository", ref=ref, commit=commit, size=len(data))
    _write_termination_log(paths.termination_log,
                           json.dumps(pointer.to_wire(), sort_keys=True, separators=(",", ":")), ev)
    return result


def _write_termination_log(path: Path, text: str, ev: events.Events) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        ev.log("cannot write the termination log", level="error", path=str(path), error=e.strerror)


def exit_code(result: handoff.Handoff) -> int:
    if result.outcome != "failed":
        return errors.EXIT_OK
    cls = result.failure.failure_class if result.failure else "AgentError"
    return exitcodes.EXIT_OF_CLASS.get(cls, exitcodes.EXIT_AGENT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
