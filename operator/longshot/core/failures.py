"""Classify a finished attempt: what the Pod's status and the agent's handoff say about it.

Input is the Pod's ``status`` as the API server returns it (camelCase dict) and the parsed handoff
(:class:`~longshot.api.handoff.Handoff`), or the :class:`~longshot.api.handoff.HandoffError` raised while
reading it, or ``None`` when there was nothing to read. Output is a :class:`Outcome`: ``failure_class`` is
``None`` for a successful attempt, else one of ``api.agenttask.FailureClass``; ``message`` is for people.

Precedence, first match wins:

1. the handoff's own ``failure.class`` (the agent knows best why it gave up);
2. facts from the kubelet: ``status.reason`` ``DeadlineExceeded`` -> Timeout, ``Evicted`` -> Infrastructure,
   agent container terminated with reason ``OOMKilled`` -> OOMKilled;
3. the agent container's exit code, by the shared table of ``longshot.api.exitcodes`` (0 ok, 1 AgentError,
   2 Configuration, 3 Auth, 4 RateLimited, 5 Infrastructure, 6 Timeout, 7 BudgetExceeded, 137/143
   Infrastructure, anything else AgentError);
4. exit code 0 needs a valid handoff: a HandoffError, no handoff, or a handoff for another task or attempt
   is InvalidHandoff; a handoff with ``outcome: failed`` and no failure is AgentError.

Then one correction (:func:`unreachable_repository`): an ``Infrastructure`` failure whose message says that the
build's own repository host does not resolve, or refuses connections, is a ``Configuration`` failure naming
``spec.repository.url``, at the first attempt. The agent has already retried the connection for about a minute
(``agent.gitops.CLONE_ATTEMPTS``), so this is not a Pod network still being programmed; three more attempts of the
task would fail the same way. Transient failures stay ``Infrastructure`` and are retried: a timeout, a 5xx, "Temporary
failure in name resolution" (the DNS server did not answer), and any failure about another host (the gateway's
own Service name not resolving is the cluster's problem, not the spec's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from longshot.api import exitcodes, timeutil
from longshot.api.exitcodes import FailureClass
from longshot.api.handoff import Handoff, HandoffError

AGENT_CONTAINER: Final = "agent"
"""Name of the agent container in agent Pods."""

EXIT_OK: Final = exitcodes.EXIT_OK
EXIT_CODES: Final = exitcodes.EXIT_CODES
FAILURE_CLASSES: Final = exitcodes.FAILURE_CLASSES

# Waiting reasons that never fix themselves: fail the attempt at once, as a Configuration error.
FATAL_WAITING: Final = frozenset({"InvalidImageName", "ErrImageNeverPull"})
# Waiting reasons that may be transient (a registry hiccup, a ConfigMap created a moment late): fail the
# attempt when they last longer than the grace period.
STUCK_WAITING: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
CONFIGURATION_WAITING: Final = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"})
"""Waiting reasons caused by the spec (an image that cannot be pulled, a missing ConfigMap/Secret key): the
attempt is a ``Configuration`` failure, which stops the task until the spec is edited."""
DEFAULT_STUCK_GRACE_SECONDS: Final = 60.0
MOUNT_GRACE_SECONDS: Final = 30.0
"""How long a Pod may sit in ContainerCreating with ``FailedMount`` Events before that is a Configuration error."""


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. ``failure_class`` is None when it succeeded."""

    failure_class: FailureClass | None
    message: str
    exit_code: int | None = None
    reason: str = ""
    """Short machine-ish reason (``OOMKilled``, ``DeadlineExceeded``, ``exit code 4``, ...)."""

    @property
    def ok(self) -> bool:
        return self.failure_class is None


def agent_container_status(pod_status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The agent container's status (named ``agent``, else the first container), or None."""
    statuses = pod_status.get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == AGENT_CONTAINER:
            return dict(cs)
    return dict(statuses[0]) if statuses else None


def _terminated(pod_status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    cs = agent_container_status(pod_status)
    if cs is None:
        return None
    state = cs.get("state") or {}
    term = state.get("terminated")
    if term is None:
        term = (cs.get("lastState") or {}).get("terminated")
    return term


def _when(value: object) -> datetime | None:
    """An API timestamp as ``timeutil.parse`` reads it; None when absent or unreadable (Events are not ours)."""
    if not isinstance(value, (str, datetime)):
        return None
    try:
        return timeutil.parse(value)
    except ValueError:
        return None


def _scheduled(pod_status: Mapping[str, Any]) -> datetime | None:
    """When the Pod was bound to a node (its ``PodScheduled=True`` condition), if it has been."""
    for c in pod_status.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == "PodScheduled" and c.get("status") == "True":
            return _when(c.get("lastTransitionTime"))
    return None


def _waiting(pod_status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in pod_status.get(key) or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason"):
                return dict(waiting)
    return None


_HOST = r"([a-z0-9](?:[a-z0-9.-]{0,252}[a-z0-9])?)"
_NOT_RESOLVED: Final = tuple(re.compile(p, re.IGNORECASE) for p in (
    rf"could not resolve host(?:name)?:? {_HOST}",  # curl (https, http); ssh says "hostname"
    rf"unable to look up {_HOST}",  # git://
    rf"lookup {_HOST}[^:\n]{{0,80}}: no such host",  # Go resolvers
))
_REFUSED: Final = tuple(re.compile(p, re.IGNORECASE) for p in (
    rf"failed to connect to {_HOST} port (\d+)(?: after \d+ ms)?: (?:connection refused|couldn't connect to server)",
    rf"connect to host {_HOST} port (\d+): connection refused",  # ssh
    rf"unable to connect to {_HOST}:\s*[^\n]{{0,300}}errno=connection refused",  # git://
))
_TRANSIENT_DNS: Final = re.compile(r"temporary failure in name resolution|try again", re.IGNORECASE)
_SCANNED: Final = 8192
"""Only the first characters of a failure message are matched (it comes from the agent Pod: bounded input)."""


def repository_host(url: str) -> str | None:
    """The host of a clone address (``https://host/...``, ``ssh://user@host:22/...``, scp-like
    ``user@host:path``), lower case; None for ``file://`` and what has no host."""
    m = re.match(r"^[a-z][a-z0-9+.-]*://(?:[^@/]*@)?(\[[^\]]*\]|[^:/]+)", url, re.IGNORECASE) or \
        re.match(r"^(?:[^@/:]+@)?([^:/]+):(?!//)", url)
    host = m.group(1).strip("[]").lower() if m else ""
    return host or None


def unreachable_repository(message: str, url: str) -> str | None:
    """The ``Configuration`` message when ``message`` (a failed attempt's) says that the host of ``url`` (the
    build's ``spec.repository.url``) does not resolve or refuses connections; None otherwise (see the module
    doc: timeouts, 5xx, a DNS server that did not answer, another host)."""
    host = repository_host(url)
    text = message[:_SCANNED]
    if host is None or not text:
        return None
    for pattern in _NOT_RESOLVED:
        for m in pattern.finditer(text):
            if m.group(1).lower() == host and not _TRANSIENT_DNS.search(text[m.end():m.end() + 80]):
                return (f"spec.repository.url: the repository host {host} does not resolve ({m.group(0)}); fix "
                        "the URL, or the cluster's DNS if the name is right (editing the spec resumes the build)")
    for pattern in _REFUSED:
        for m in pattern.finditer(text):
            if m.group(1).lower() == host:
                return (f"spec.repository.url: the repository host {host} refuses connections "
                        f"({m.group(0)}); fix the URL's host or port (editing the spec resumes the build)")
    return None


def classify(
    pod_status: Mapping[str, Any],
    handoff: Handoff | HandoffError | None,
    *,
    task: str | None = None,
    attempt: int | None = None,
    repository: str = "",
) -> Outcome:
    """Classify a finished attempt (see the module doc for the precedence).

    ``task`` and ``attempt``, when given, must match the handoff's own, else it is InvalidHandoff (a
    handoff of another attempt must never complete this one). ``repository`` is the build's
    ``spec.repository.url``: an Infrastructure failure that says its host does not resolve or refuses
    connections is a Configuration failure (:func:`unreachable_repository`).
    """
    outcome = _classify(pod_status, handoff, task=task, attempt=attempt)
    if outcome.failure_class == "Infrastructure" and repository:
        why = unreachable_repository(outcome.message, repository)
        if why is not None:
            return replace(outcome, failure_class="Configuration", message=why, reason="Configuration")
    return outcome


def _classify(
    pod_status: Mapping[str, Any],
    handoff: Handoff | HandoffError | None,
    *,
    task: str | None,
    attempt: int | None,
) -> Outcome:
    term = _terminated(pod_status)
    exit_code: int | None = term.get("exitCode") if term else None
    term_reason = (term or {}).get("reason") or ""

    # 1. the agent's own word
    if isinstance(handoff, Handoff) and handoff.outcome == "failed" and handoff.failure is not None:
        f = handoff.failure
        return Outcome(f.failure_class, f.message or f"the agent reported {f.failure_class}",
                       exit_code, f.failure_class)

    # 2. the kubelet's word
    pod_reason = pod_status.get("reason") or ""
    if pod_reason == "DeadlineExceeded":
        waiting = _waiting(pod_status)
        if term is None and waiting is not None:
            # it never started: the deadline is not the cause and a longer timeout is not the fix
            fc: FailureClass = "Configuration" if waiting.get("reason") in CONFIGURATION_WAITING else "Infrastructure"
            return Outcome(fc, "the Pod never started before its deadline: " + _waiting_message(waiting),
                           exit_code, str(waiting.get("reason")))
        if term is None and not pod_status.get("startTime"):
            return Outcome("Infrastructure", "the Pod was never scheduled or started before its deadline; "
                           "check the cluster's capacity and the Pod's events", exit_code, "DeadlineExceeded")
        return Outcome("Timeout", "the attempt ran longer than its timeout (activeDeadlineSeconds) and "
                       "was stopped; raise spec.agent.timeoutSeconds or split the task",
                       exit_code, "DeadlineExceeded")
    if pod_reason == "Evicted":
        detail = pod_status.get("message") or "the node evicted the Pod"
        return Outcome("Infrastructure", f"the Pod was evicted: {detail}", exit_code, "Evicted")
    if term_reason == "OOMKilled":
        return Outcome("OOMKilled", "the agent ran out of memory (OOMKilled); raise the memory limit in "
                       "spec.agent.resources or the task's spec.resources", exit_code, "OOMKilled")
    if term is None:
        waiting = _waiting(pod_status)
        if waiting is not None:
            fc = "Configuration" if waiting.get("reason") in CONFIGURATION_WAITING else "Infrastructure"
            return Outcome(fc, _waiting_message(waiting), None, waiting["reason"])
        phase = pod_status.get("phase") or "Unknown"
        return Outcome("Infrastructure", f"the Pod ended in phase {phase} without the agent container "
                       "terminating", None, pod_reason or phase)

    # 3. the exit code
    if exit_code not in (None, EXIT_OK):
        failure_class = exitcodes.failure_class_of(exit_code)
        detail = (term.get("message") or "").strip() if not isinstance(handoff, Handoff) else ""
        message = f"the agent exited with code {exit_code} ({failure_class})"
        if isinstance(handoff, Handoff) and handoff.summary:
            detail = handoff.summary
        if detail and not detail.startswith("{"):
            message += f": {detail[:512]}"
        return Outcome(failure_class, message, exit_code, term_reason or f"exit code {exit_code}")

    # 4. exit 0: the handoff decides
    if isinstance(handoff, HandoffError):
        return Outcome("InvalidHandoff", str(handoff), exit_code, "InvalidHandoff")
    if handoff is None:
        return Outcome("InvalidHandoff", "the agent exited successfully but wrote no handoff", exit_code,
                       "InvalidHandoff")
    if task is not None and handoff.task != task:
        return Outcome("InvalidHandoff", f"the handoff is for task {handoff.task!r}, not {task!r}",
                       exit_code, "InvalidHandoff")
    if attempt is not None and handoff.attempt != attempt:
        return Outcome("InvalidHandoff", f"the handoff is for attempt {handoff.attempt}, not {attempt}",
                       exit_code, "InvalidHandoff")
    if handoff.outcome == "failed":
        return Outcome("AgentError", handoff.summary or "the agent reported failure without a reason",
                       exit_code, "AgentError")
    return Outcome(None, handoff.summary or f"the agent finished ({handoff.outcome})", exit_code,
                   "Completed")


def _waiting_message(waiting: Mapping[str, Any]) -> str:
    reason = waiting.get("reason", "")
    detail = (waiting.get("message") or "").strip()
    hint = {
        "ErrImagePull": "the image cannot be pulled: fix spec.agent.image (or make it pullable by the node)",
        "ImagePullBackOff": "the image cannot be pulled: fix spec.agent.image (or make it pullable by the node)",
        "InvalidImageName": "fix spec.agent.image",
        "ErrImageNeverPull": "the image is not on the node: fix spec.agent.image, or import it on the node",
        "CreateContainerConfigError": "check that the ConfigMaps named in the BuildRequest (spec.agent.script, "
                                      "spec.agent.prompts) exist and have the expected keys",
    }.get(reason, "see the Pod's events")
    text = f"the agent container could not start ({reason}"
    text += f": {detail[:512]})" if detail else ")"
    return f"{text}; {hint}"


def stuck(
    pod_status: Mapping[str, Any],
    *,
    created: datetime,
    now: datetime,
    grace_seconds: float = DEFAULT_STUCK_GRACE_SECONDS,
    events: Sequence[Mapping[str, Any]] = (),
) -> Outcome | None:
    """An outcome when a not-yet-running Pod will not start by itself, else None.

    ``created`` is the Pod's ``metadata.creationTimestamp``. Fatal waiting reasons (``InvalidImageName``,
    ``ErrImageNeverPull``) fail at once; transient-looking ones (image pull errors, a missing ConfigMap key)
    only ``grace_seconds`` after the Pod was scheduled (``created`` if it has no ``PodScheduled`` condition);
    ``events`` are the Pod's Events (reason, message, firstTimestamp): ``FailedMount`` going on for
    ``MOUNT_GRACE_SECONDS`` since the first of them (and since the scheduling) means a ConfigMap or Secret volume
    is missing. Image and mount problems are
    ``Configuration`` failures (the spec must change), the rest ``Infrastructure``. The shell deletes the Pod
    and feeds the outcome to the task decider as a ``PodFinished``.
    """
    if pod_status.get("phase") not in (None, "Pending"):
        return None
    # Both graces count from when the Pod was bound to a node, not from its creation: a Pod that waited for room
    # (Insufficient cpu) has had no chance to pull or mount yet.
    since = _scheduled(pod_status) or created
    age = (now - since).total_seconds()
    waiting = _waiting(pod_status)
    if waiting is None:
        mounts = [e for e in events if e.get("reason") == "FailedMount"]
        # The kubelet retries a mount; one failure is not the spec's fault (a bound token asked for a moment
        # after the binding, before the API server's own cache has it, is refused once). Only failures that go on
        # for the grace, from the first of them, are.
        firsts = [t for t in (_when(e.get("firstTimestamp")) for e in mounts) if t is not None]
        failing = (now - max(since, min(firsts))).total_seconds() if firsts else age
        if mounts and failing >= MOUNT_GRACE_SECONDS:
            detail = str(mounts[-1].get("message") or "")[:512]
            return Outcome("Configuration", f"a volume of the Pod cannot be mounted ({detail}); check that the "
                           "ConfigMaps and Secrets named in the BuildRequest exist", None, "FailedMount")
        return None
    reason = waiting.get("reason")
    if reason in FATAL_WAITING or (reason in STUCK_WAITING and age >= grace_seconds):
        fc: FailureClass = "Configuration" if reason in CONFIGURATION_WAITING else "Infrastructure"
        return Outcome(fc, _waiting_message(waiting), None, str(reason))
    return None
