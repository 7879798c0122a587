"""AgentTask (short name ``at``): one unit of agent work, owned by its BuildRequest."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import ConfigDict, Field, JsonValue

from longshot.api import conditions as c
from longshot.api.buildrequest import MODEL_NAME, Backend, FanoutSettings, Hooks, RetryPolicy
from longshot.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    DNS_SUBDOMAIN,
    GIT_BRANCH,
    MAX_SCOPE_ENTRIES,
    Condition,
    LocalObjectRef,
    Model,
    ObjectName,
    Resources,
    ScopeEntry,
    Timestamp,
)
from longshot.api.exitcodes import FailureClass

__all__ = ["FailureClass", "Role"]

Role = Literal["planner", "worker", "reviewer", "tester", "fixer"]
DependencyPolicyType = Literal["all", "any", "quorum"]
GateResult = Literal["Pending", "Passed", "Failed"]

DEPENDENCY_POLICY_RULES: list[JsonValue] = [
    {
        # has(self.type): the API server checks the rule against the schema default {} too, before defaulting
        "rule": "has(self.type) && self.type == 'quorum' ? has(self.k) : !has(self.k)",
        "message": "dependsOnPolicy.k is required with type quorum, and only allowed with it",
        "fieldPath": ".k",
    },
]


class DependencyPolicy(Model):
    """When a task with ``dependsOn`` may start."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": DEPENDENCY_POLICY_RULES})

    type: DependencyPolicyType = "all"
    """``all``: every dependency succeeded; ``any``: at least one did; ``quorum``: at least ``k`` did. The
    task fails (DependencyFailed) as soon as the policy can no longer be met."""
    k: int | None = Field(default=None, ge=1, le=256)
    """How many dependencies must succeed (``quorum`` only; at most the number of ``dependsOn``)."""


class HooksOverride(Hooks):
    """Workspace hooks of one task: each one set wins over the build's ``spec.agent.hooks``."""

    timeout_seconds: int | None = Field(default=None, ge=1, le=3600)  # type: ignore[assignment]
    """Longest each hook of this task may run; the build's ``spec.agent.hooks.timeoutSeconds`` when unset."""


class AgentOverride(Model):
    """Per-task agent settings; each one set wins over the build's ``spec.agent`` (and over the task's older
    ``spec.resources`` and ``spec.timeoutSeconds``)."""

    backend: Backend | None = None
    """The backend of this task's attempts. The gateway serves the build's model provider with the build's
    credentials Secret only: a backend that speaks another provider's API is refused by the gateway."""
    model: str | None = Field(default=None, min_length=1, max_length=256)
    """The model of this task's attempts (required when ``backend`` is ``openai`` or ``anthropic``); the first of
    the build's ``spec.agent.fallbackModels`` chain for this task."""
    prompt_addendum: str | None = Field(default=None, min_length=1, max_length=16384)
    """Text added to the task's prompt (worker, fixer and planner roles), after the task and before the work
    starts, as instructions from a person. Never put a credential here."""
    timeout_seconds: int | None = Field(default=None, ge=30, le=86400)
    """Wall-clock limit of one attempt of this task (the Pod's ``activeDeadlineSeconds``)."""
    resources: Resources | None = None
    """Requests and limits of this task's agent Pods."""
    hooks: HooksOverride | None = None
    """Workspace hooks of this task's attempts: each hook set here (and ``timeoutSeconds``) wins over the build's
    ``spec.agent.hooks``; a build hook this task should skip can be set to ``":"``."""


MAX_MESSAGES: Final = 50
"""Most messages a task holds (``spec.messages``): a person talks to a running agent in a few lines, not a chat log."""
MAX_MESSAGE_TEXT: Final = 4096
"""Longest text of one message (4 KiB)."""
MAX_MESSAGE_ID: Final = 1_000_000


class Message(Model):
    """A message from a person to the task's running attempt (``kubectl longshot say``), delivered by
    longshot-gateway to that attempt's runner, which puts it in the conversation before its next model call."""

    id: int = Field(ge=1, le=MAX_MESSAGE_ID)
    """The message's number: one more than the highest on the task (unique; the runner asks for the ones after the
    last it got)."""
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_TEXT)
    """What the person says. It goes to the model as a user turn, and counts in the attempt's budget like any
    input. Never put a credential here."""
    interrupt: bool = False
    """Stop the tool call the agent is running now (its process group is killed) and hold the agent until the next
    message (bounded; the attempt's deadline still applies)."""
    attempt: int = Field(ge=1, le=1000)
    """The attempt the message is for: the one running when it was sent. It is delivered to that attempt only."""
    author: str | None = Field(default=None, max_length=253)
    """Who sent it, as the sender's client knew them (``kubectl longshot say`` asks the API server with a
    SelfSubjectReview). Informative: the API server's audit log is the authority on who wrote the task."""
    sent_at: Timestamp | None = None
    """When it was sent."""


MESSAGES_RULES: list[JsonValue] = [
    {
        "rule": "self.size() >= oldSelf.size()",
        "message": "spec.messages is append-only: a message once sent cannot be taken back",
    },
]


class AgentTaskSpec(Model):
    """What the agent should do."""

    build_ref: LocalObjectRef
    """The BuildRequest this task belongs to (immutable)."""
    description: str = Field(min_length=1, max_length=100_000)
    """What the agent should do, in natural language."""
    role: Role = "worker"
    """``planner`` (splits work into tasks; a planner with a ``parentTask`` is a subplanner),
    ``worker``, ``reviewer``, ``tester`` or ``fixer``."""
    priority: int = Field(default=5, ge=1, le=10)
    """1 (lowest) to 10 (highest); ready tasks start by priority, then by age."""
    depends_on: list[str] = Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "items": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        },
    )
    """Names of AgentTasks of the same build that must succeed before this one starts."""
    parent_task: ObjectName | None = None
    """The task this one was decomposed from, for subplanning."""
    depth: int = Field(default=0, ge=0, le=10)
    """Decomposition depth: 0 for the top-level plan."""
    scope: list[ScopeEntry] = Field(default_factory=list, max_length=MAX_SCOPE_ENTRIES)
    """Files or glob patterns the task may change; tasks with overlapping scopes never run at once. At most 128
    entries of at most 1024 characters and 32 ``/``-separated segments each."""
    branch: str | None = Field(default=None, min_length=1, max_length=255, pattern=GIT_BRANCH)
    """Branch to work on; ``longshot/<namespace>/<build>/<task>`` when unset (a fixer gets the branch to fix)."""
    commit: str | None = Field(default=None, min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    """Reviewer and tester: the exact commit of ``branch`` to read (the MergeJob's commit). The agent checks it
    out detached and refuses to run when the branch does not hold it; its handoff must name it."""
    retry_policy: RetryPolicy | None = None
    """Retries of this task; the build's ``spec.retry`` when unset."""
    resources: Resources | None = None
    """Overrides the build's agent resources for this task."""
    timeout_seconds: int | None = Field(default=None, ge=30, le=86400)
    """Overrides the build's agent timeout for this task."""
    cancel: bool = False
    """Set to true to cancel the task: its Pod is deleted and it is not retried."""
    retry_token: str | None = Field(default=None, max_length=64)
    """Change this value to relaunch the task from a new attempt, in any state: a Failed or Cancelled task is
    retried; a Running one has its Pod deleted and starts again; a Succeeded one runs again, and its new handoff
    gets a new MergeJob (``<task>-a<attempt>``). The relaunched attempt starts from the task's branch with its
    retry count reset. ``kubectl longshot relaunch`` sets it."""
    suspend: bool = False
    """Set to true to pause this task: a running attempt's Pod is deleted (not a failure, and not counted against
    the retry policy), the task goes back to Pending with condition ``Suspended``, and no attempt starts until it is
    false again; the next attempt then starts from the task's branch."""
    agent: AgentOverride | None = None
    """Per-task backend, model, prompt addendum, timeout, resources and hooks, over the build's ``spec.agent``."""
    model: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The task's choice among the build's named models (the ``name`` of an entry of ``spec.agent.models``),
    made by the planner or the agent that spawned it. A person's ``agent.model`` wins over it; it wins over the
    persona's model and the build's ``spec.agent.model``. Plans and spawns naming a model the build does not list
    are refused; on a task written by hand such a name is ignored (the persona's or the build's model runs)."""
    persona: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The task's persona (the ``name`` of an entry of the build's ``spec.agent.personas``); the build's
    ``spec.agent.rolePersonas`` entry of the task's role when unset."""
    depends_on_policy: DependencyPolicy = Field(default_factory=DependencyPolicy)
    """How many of ``dependsOn`` must succeed before this task starts: all (the default), any, or a quorum."""
    fanout: FanoutSettings | None = None
    """Best-of-N for this task (worker and fixer tasks): ``count`` candidates, each on its own branch, and a judge
    that picks the one that is merged; overrides the build's ``spec.fanout``."""
    answer: str | None = Field(default=None, min_length=1, max_length=32768)
    """The answer to the question the agent asked (``status.question``, condition ``AwaitingInput``); setting
    it starts a new attempt with the question and this answer in its prompt. Never put a credential here."""
    messages: list[Message] = Field(
        default_factory=list, max_length=MAX_MESSAGES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"],
                           "x-kubernetes-validations": MESSAGES_RULES})
    """Messages from people to the running attempt, appended by ``kubectl longshot say`` (at most 50, each at most
    4 KiB; append-only). Changing them never restarts an attempt; ``status.messages`` says which were delivered."""


class Attempt(Model):
    """One run of the task in one Pod."""

    number: int = Field(ge=1)
    """Attempt number, from 1."""
    pod: str
    """Name of the attempt's Pod."""
    pod_uid: str | None = Field(default=None, max_length=64, alias="podUID")
    """UID of the attempt's Pod, recorded by the operator when it created (or adopted) it. The gateway serves a Pod
    only when it is the current attempt's and its UID is this one."""
    start_time: Timestamp | None = None
    """When the Pod was created."""
    end_time: Timestamp | None = None
    """When the Pod finished."""
    exit_code: int | None = None
    """Exit code of the agent container."""
    exit_reason: str | None = Field(default=None, max_length=1024)
    """Why the attempt ended, in words."""
    failure_class: FailureClass | None = None
    """Class of the failure, which picks the retry behaviour."""
    tokens: int = Field(default=0, ge=0)
    """Model tokens the attempt used (from its handoff)."""
    cost: float = Field(default=0.0, ge=0)
    """Cost of the attempt (from its handoff)."""
    model: str | None = Field(default=None, max_length=256)
    """The model the attempt ran with (the task's ``spec.agent.model``, else the build's, or the next of the
    build's ``spec.agent.fallbackModels`` after an attempt the model API failed or rate-limited)."""
    ledger: str | None = Field(default=None, max_length=253)
    """The attempt's ledger entry, a ConfigMap in the task's namespace (``<pod>-ledger``: its transcript and result,
    kept after the Pod is gone; ``kubectl longshot logs``, docs/ledger.md). Set when the attempt ends."""


class HandoffSummary(Model):
    """What the agent reported at the end of its successful attempt."""

    branch: str | None = None
    """Branch the agent pushed."""
    commit: str | None = Field(default=None, max_length=64)
    """Head commit of that branch."""
    files_changed: list[str] = Field(default_factory=list, max_length=10_000)
    """Files the commit changed."""
    summary: str = Field(default="", max_length=32768)
    """The agent's summary of its work."""
    tokens: int = Field(default=0, ge=0)
    """Model tokens used by the attempt."""
    cost: float = Field(default=0.0, ge=0)
    """Cost of the attempt."""
    verdict: Literal["approved", "changes-requested", "passed", "failed"] | None = None
    """Reviewer and tester verdict."""
    reasons: list[str] = Field(default_factory=list, max_length=50)
    """Reasons for the verdict (a reviewer's requested changes, a tester's failing output tail)."""
    base_commit: str | None = Field(default=None, max_length=64)
    """The commit the work started from."""
    stacked_on: list[str] = Field(default_factory=list, max_length=256)
    """The dependencies' commits a stacked branch was built on (``spec.dependencies: stacked``); the MergeJob's
    ``spec.stackedOn``."""


class EarlierUsage(Model):
    """What the gateway metered in all for an earlier attempt, with a call charged after the progress moved on."""

    attempt: int = Field(ge=1)
    """The attempt."""
    tokens: int = Field(default=0, ge=0)
    """Its tokens in all (its record's, or what was metered while it ran, the larger, plus the late calls)."""
    cost: float = Field(default=0.0, ge=0)
    """Its cost in all, counted the same way."""


class Progress(Model):
    """Live progress of the running attempt."""

    message: str | None = Field(default=None, max_length=4096)
    """Last progress line."""
    last_heartbeat: Timestamp | None = None
    """When the agent last reported."""
    tokens: int = Field(default=0, ge=0)
    """Tokens used so far in this attempt (input plus output)."""
    attempt: int | None = Field(default=None, ge=1)
    """The attempt these figures belong to (the gateway starts from zero for a new attempt)."""
    input_tokens: int = Field(default=0, ge=0)
    """Prompt tokens so far in this attempt, cached ones included (metered by the gateway)."""
    output_tokens: int = Field(default=0, ge=0)
    """Completion tokens so far in this attempt (metered by the gateway)."""
    cost: float = Field(default=0.0, ge=0)
    """Cost so far in this attempt, priced by the gateway from the ``longshot-prices`` table."""
    calls: int = Field(default=0, ge=0)
    """Model calls so far in this attempt."""
    mcp_calls: int = Field(default=0, ge=0)
    """MCP tool calls the gateway forwarded so far in this attempt (``spec.agent.mcpServers``; refused ones are in
    the attempt's ledger only)."""
    backoff_until: Timestamp | None = None
    """Until when the gateway holds this build's calls to ``backoffApi`` after the upstream answered 429."""
    backoff_api: Literal["openai", "anthropic"] | None = None
    """The model API ``backoffUntil`` is about."""
    earlier: list[EarlierUsage] = Field(default_factory=list, max_length=8)
    """Earlier attempts' usage charged by the gateway after this progress moved past them (a model call answered
    after its attempt's Pod stopped, once the next attempt had started); the operator raises each attempt's
    record in ``attempts`` to it (docs/orchestration.md)."""


class Candidate(Model):
    """One candidate attempt of a fanned-out task."""

    name: str = Field(min_length=1, max_length=253)
    """Candidate name (``<task>-c<N>``); its Pod is ``<task>-c<N>-a<attempt>``."""
    model: str | None = Field(default=None, max_length=256)
    """Model the candidate ran with."""
    backend: Backend | None = None
    """Backend the candidate ran with, when the fan-out names them (``fanout.backends``)."""
    branch: str | None = Field(default=None, max_length=255)
    """Branch the candidate pushed."""
    commit: str | None = Field(default=None, max_length=64)
    """Head commit of that branch."""
    gate: GateResult = "Pending"
    """The candidate's quality gate: Pending, Passed or Failed (a failed candidate is out before judging)."""
    reason: str | None = Field(default=None, max_length=4096)
    """Why the candidate failed, or its gate's summary."""


class FanoutStatus(Model):
    """Best-of-N progress and the judge's decision."""

    candidates: list[Candidate] = Field(default_factory=list, max_length=10)
    """Every candidate, in order."""
    judge_task: str | None = Field(default=None, max_length=253)
    """Name of the judge's reviewer AgentTask."""
    winner: str | None = Field(default=None, max_length=253)
    """The candidate the judge picked; only its branch gets a MergeJob."""
    reasons: list[str] = Field(
        default_factory=list,
        max_length=50,
        json_schema_extra={"items": {"type": "string", "maxLength": 4096}},
    )
    """The judge's reasons, or why every candidate failed."""
    summary: str | None = Field(default=None, max_length=16384)
    """``judge: summarize``: the judge's comparison of every candidate that produced a commit (what each did, how
    they differ, what their gates said), for the people who read the build; cut to 16 KiB."""


MAX_CHILDREN: Final = 20
"""Most delegated children one task can ask for (the CRD's bound; ``spec.delegation.maxChildren`` is lower)."""
MAX_CHILD_PROMPT: Final = 16384
"""Longest prompt of a delegated child (16 KiB)."""
CHILD_NAME: Final = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
"""A child's local name: a DNS-1123 label of at most 40 characters."""


class ChildRequest(Model):
    """A child task an agent asked for through longshot-gateway (``spawn_task``), recorded on its parent."""

    name: str = Field(min_length=1, max_length=40, pattern=CHILD_NAME)
    """The child's local name; its AgentTask is ``<parent>-<name>``."""
    prompt: str = Field(min_length=1, max_length=MAX_CHILD_PROMPT)
    """What the child should do (its description)."""
    scope: list[ScopeEntry] = Field(default_factory=list, max_length=MAX_SCOPE_ENTRIES)
    """The child's file scope."""
    model: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The child's model: the ``name`` of one of the build's ``spec.agent.models`` (none: the build's choice)."""
    attempt: int = Field(default=1, ge=1)
    """The parent's attempt that asked."""


class DelegationStatus(Model):
    """What the task's agents asked to delegate; written by longshot-gateway only."""

    requests: list[ChildRequest] = Field(default_factory=list, max_length=MAX_CHILDREN)
    """Every child asked for, in order (a name asked again is the same child)."""


ChildPhase = Literal["Pending", "Backoff", "Running", "AwaitingInput", "Succeeded", "Failed", "Cancelled", "Refused"]


class ChildStatus(Model):
    """One delegated child, as the operator last saw it."""

    name: str = Field(min_length=1, max_length=40)
    """The child's local name (as asked)."""
    task: str | None = Field(default=None, max_length=253)
    """The child's AgentTask; unset when it was refused."""
    phase: ChildPhase = "Pending"
    """The child AgentTask's phase, or ``Refused``."""
    done: bool = False
    """Whether the child reached its end: refused, failed or cancelled, or succeeded with its branch merged (or
    nothing to merge). ``await_tasks`` returns when every child it waits for is done."""
    merged: bool = False
    """The child's branch is on the target."""
    reason: str | None = Field(default=None, max_length=1024)
    """Why it was refused (naming the limit) or failed."""
    summary: str | None = Field(default=None, max_length=2048)
    """The child's handoff summary."""


PENDING_MESSAGE: Final = "waiting for dependencies or a worker slot"
INITIAL_CONDITIONS: Final[tuple[tuple[str, Literal["True", "False", "Unknown"], str, str], ...]] = (
    (c.SUCCEEDED, c.UNKNOWN, "Pending", "not run yet"),
    (c.RUNNING, c.FALSE, "Pending", "not run yet"),
    (c.AWAITING_INPUT, c.FALSE, "NotRequired", "no question is open"),
    (c.READY, c.FALSE, "Pending", PENDING_MESSAGE),
    (c.STALLED, c.FALSE, "NotStalled", "nothing needs a person"),
    (c.RECONCILING, c.TRUE, "Pending", PENDING_MESSAGE),
)
"""The conditions of a task nobody has acted on yet: (type, status, reason, message)."""


def initial_status() -> dict[str, Any]:
    """The status every AgentTask has from its creation: the CRD's default for ``status``, which the API server
    fills in whenever it reads the object from storage (the answer to the create, every get, list and watch).

    A new task is therefore Pending, with its conditions, in the one write that creates it: taking in a
    10,000-task plan costs 10,000 writes, not 20,000. The operator's first status write (when it dispatches the
    task, or anything else happens to it) replaces it, and gives every condition that kept its status since the
    creation the creation time as ``lastTransitionTime`` (a default cannot carry a time, nor the generation)."""
    return {"phase": "Pending",
            "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in INITIAL_CONDITIONS],
            "retryBase": 0}


class Delivery(Model):
    """One message handed to the attempt's runner."""

    id: int = Field(ge=1, le=MAX_MESSAGE_ID)
    """The message (``spec.messages[].id``)."""
    attempt: int = Field(ge=1)
    """The attempt that got it."""
    time: Timestamp | None = None
    """When longshot-gateway handed it over."""


class MessagesStatus(Model):
    """Which of ``spec.messages`` reached a runner; written by longshot-gateway only."""

    delivered: list[Delivery] = Field(default_factory=list, max_length=MAX_MESSAGES)
    """Every message handed to its attempt's runner, oldest first. A message missing here was not delivered (yet):
    its attempt ended before its runner asked."""


class AgentTaskStatus(Model):
    """Observed state of the task, written by the operator."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)
    """Ready, Succeeded, Running and friends."""
    phase: str | None = Field(default=None, max_length=64)
    """Summary for display: Pending, Running, Succeeded, Failed, Cancelled."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` the operator last acted on."""
    attempts: list[Attempt] = Field(default_factory=list, max_length=20)
    """Every attempt so far, oldest first."""
    next_attempt_time: Timestamp | None = None
    """Earliest start of the next attempt (backoff)."""
    handoff: HandoffSummary | None = None
    """The handoff of the successful attempt."""
    progress: Progress | None = None
    """Progress of the running attempt."""
    retry_token: str | None = Field(default=None, max_length=64)
    """The ``spec.retryToken`` already acted on."""
    retry_base: int = Field(default=0, ge=0)
    """Attempts that no longer count against the retry limit (after a manual retry or a killswitch stop)."""
    stop_generation: int | None = Field(default=None, ge=0)
    """The BuildRequest's generation when the task stopped for a person (Auth, Configuration,
    BudgetExceeded); an edit of the BuildRequest's spec resumes it."""
    question: str | None = Field(default=None, max_length=4096)
    """The question the agent asked (condition ``AwaitingInput``); answer it in ``spec.answer``."""
    answer: str | None = Field(default=None, max_length=32768)
    """The ``spec.answer`` already given to an attempt; a different ``spec.answer`` starts a new one."""
    fanout: FanoutStatus | None = None
    """Candidates, winner and the judge's reasons of a fanned-out task."""
    merge_job: str | None = Field(default=None, max_length=253)
    """The MergeJob of the task's latest successful handoff: named like the task for the first one, and
    ``<task>-a<attempt>`` for one made after a relaunch."""
    delegation: DelegationStatus | None = None
    """Children the task's agents asked for (``spawn_task``), written by longshot-gateway."""
    children: list[ChildStatus] = Field(default_factory=list, max_length=MAX_CHILDREN)
    """The task's delegated children and how each is doing (or why it was refused), written by the operator."""
    messages: MessagesStatus | None = None
    """Which of ``spec.messages`` were delivered to which attempt, written by longshot-gateway."""


AGENT_TASK_RULES = [
    {
        "rule": "!has(self.spec.dependsOn) || !(self.metadata.name in self.spec.dependsOn)",
        "message": "spec.dependsOn: a task cannot depend on itself",
        "fieldPath": ".spec.dependsOn",
    },
]

AGENT_TASK_SPEC_RULES = [
    {
        "rule": "self.buildRef == oldSelf.buildRef",
        "message": "buildRef is immutable",
        "fieldPath": ".buildRef",
    },
    {
        "rule": "self.role != 'fixer' || has(self.branch)",
        "message": "branch is required for a fixer task (the branch to fix)",
        "fieldPath": ".branch",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "!has(self.dependsOnPolicy) || !has(self.dependsOnPolicy.k) "
                "|| (has(self.dependsOn) && self.dependsOnPolicy.k <= size(self.dependsOn))",
        "message": "dependsOnPolicy.k must not exceed the number of dependsOn tasks",
        "fieldPath": ".dependsOnPolicy.k",
    },
    {
        "rule": "!has(self.fanout) || self.role in ['worker', 'fixer']",
        "message": "fanout is only for worker and fixer tasks",
        "fieldPath": ".fanout",
    },
    {
        "rule": "!has(self.agent) || !has(self.agent.backend) || !(self.agent.backend in ['openai', 'anthropic']) "
                "|| has(self.agent.model)",
        "message": "agent.model is required when agent.backend is openai or anthropic",
        "fieldPath": ".agent.model",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "!has(self.agent) || !has(self.agent.backend) || self.agent.backend != 'command'",
        "message": "agent.backend: command cannot be set per task (the command template is the build's "
                   "spec.agent.command); set it on the BuildRequest",
        "fieldPath": ".agent.backend",
        "reason": "FieldValueForbidden",
    },
    {
        "rule": "!has(self.parentTask) || self.depth > 0",
        "message": "depth must be at least 1 for a task with a parentTask",
        "fieldPath": ".depth",
    },
]
