"""The handoff protocol: what an agent Pod reports to the operator at the end of an attempt.

Transport (see docs/handoff.md):

* The agent prints progress as one JSON object per line on stdout and ends with the handoff line
  ``{"type": "handoff", "handoff": {...}}``, for people and log collectors.
* The operator reads the handoff from the agent container's **termination message**
  (``/dev/termination-log``), which the kubelet copies into the Pod's status. A termination message is
  capped at 4096 bytes, so when the encoded handoff is larger the agent stores it in the build's git
  repository instead, as ``handoff.json`` in a commit on
  ``refs/longshot/handoffs/<namespace>/<build>/<task>/<attempt>``, and
  the termination message carries a :class:`HandoffPointer` (ref, commit, sha256 and size). The operator
  fetches that ref with its own git credentials and checks the digest. There is no size cliff: a planner
  returning hundreds of tasks works the same way as a worker returning one commit.

Both the inline handoff and the pointer are JSON objects; ``parse_termination_message`` tells them apart
by their ``kind`` field.

What an agent writes is untrusted (the agent is the adversary), so parsing never takes the operator down:
sizes are checked before anything is parsed (:data:`MAX_INLINE_BYTES`, :data:`MAX_HANDOFF_BYTES`), the
nesting depth and the number of values are checked by a scan of the raw text before ``json.loads``
(:data:`MAX_JSON_DEPTH`, :data:`HANDOFF_BUDGET`, ``api.boundedjson``), and
every exception while parsing or validating becomes a :class:`HandoffError` (the task's ``InvalidHandoff``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import Field, ValidationError, model_validator

from longshot.api import boundedjson, keys, sanitize
from longshot.api.agenttask import FailureClass, GateResult, Role
from longshot.api.buildrequest import MAX_GATE_STEPS, MAX_SKILLS, MODEL_NAME, SKILL_NAME, SKILL_PATH, GateStep, Hooks
from longshot.api.common import DNS_SUBDOMAIN, GIT_BRANCH, MAX_SCOPE_ENTRIES, Model, ScopeEntry

PROTOCOL_VERSION: Final = "longshot.dev/handoff-v1"
TERMINATION_MESSAGE_LIMIT = 4096
HANDOFF_REF_PREFIX = "refs/longshot/handoffs"
HANDOFF_FILE = "handoff.json"

MAX_INLINE_BYTES: Final = 64 * 1024
"""Largest termination message parsed. A kubelet writes at most 4096 bytes (:data:`TERMINATION_MESSAGE_LIMIT`);
anything bigger was not written by a kubelet and is refused unread."""
MAX_HANDOFF_BYTES: Final = 8 * 1024 * 1024
"""Largest ``handoff.json`` fetched through a pointer (8 MiB: a plan of 1,000 tasks with long descriptions
fits several times). A pointer announcing more is refused before anything is fetched, and the real blob's
size is checked (``git cat-file -s``) before it is read, so a lying pointer cannot make the operator read more."""
MAX_PLAN_TASKS: Final = 1000
"""Most tasks in a handoff (the largest ``planner.maxTasks``); counted before the tasks are validated."""
MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects accepted (a handoff needs 4); checked before ``json.loads``, whose
recursion a message of 4,000 ``[`` would otherwise exhaust."""

CommitSha = Annotated[str, Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")]
"""A git commit id (abbreviated or full, lowercase hex)."""

# A plan-local task name: a DNS label short enough to be suffixed to the build's name.
PLAN_TASK_NAME = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"


class PlannedTask(Model):
    """One task of a planner's task list."""

    name: str = Field(pattern=PLAN_TASK_NAME)
    """Plan-local name, unique in the plan (a DNS label of at most 40 characters)."""
    description: str = Field(min_length=1, max_length=100_000)
    """What the worker should do."""
    scope: list[ScopeEntry] = Field(default_factory=list, max_length=MAX_SCOPE_ENTRIES)
    """Files or globs the task may change: at most 128 entries of at most 1024 characters and 32 segments each
    (a plan with a longer scope is refused, naming the task and the entry)."""
    depends_on: list[str] = Field(default_factory=list, max_length=256)
    """Plan-local names of tasks that must succeed first."""
    priority: int = Field(default=5, ge=1, le=10)
    """1 (lowest) to 10 (highest)."""
    decompose: bool = False
    """Ask for a subplanner to split this task further (bounded by planner.maxDepth)."""
    model: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The ``name`` of one of the build's models (``spec.agent.models``) to run this task; a plan naming another
    is refused and re-planned (the refusal lists the names)."""
    persona: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The ``name`` of one of the build's personas (``spec.agent.personas``) for this task."""


class Usage(Model):
    """Model usage of the attempt."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost: float = Field(default=0.0, ge=0)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Failure(Model):
    """Why the agent gave up, when it did."""

    failure_class: FailureClass = Field(alias="class")
    """AgentError, Timeout, RateLimited, Auth, Infrastructure, ..."""
    message: str = Field(default="", max_length=4096)
    """Details (never a credential)."""


class Handoff(Model):
    """The agent's report for one attempt."""

    kind: Literal["Handoff"] = "Handoff"
    protocol: Literal["longshot.dev/handoff-v1"] = PROTOCOL_VERSION
    task: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """The AgentTask's name."""
    attempt: int = Field(default=1, ge=1)
    """The attempt number."""
    role: Role
    """The role the agent played."""
    outcome: Literal["succeeded", "failed", "empty", "needs-input"]
    """``succeeded``; ``failed`` (see ``failure``); ``empty``: the agent ran but changed nothing;
    ``needs-input``: the agent asked a person ``question`` (tool ``ask``) and stopped (exit code 0)."""
    branch: str | None = Field(default=None, max_length=255, pattern=GIT_BRANCH)
    """Branch pushed (worker, fixer)."""
    commit: str | None = Field(default=None, min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    """Head commit of the pushed branch."""
    base_commit: str | None = Field(default=None, max_length=64)
    """Commit the work started from (the target's commit; for a stacked start, the target's commit at the
    start, while ``stacked_on`` names the dependencies' commits the branch was built on)."""
    stacked_on: list[CommitSha] = Field(default_factory=list, max_length=256)
    """Worker/fixer of a ``stacked`` build: the dependencies' commits (``TaskInput.stack``) the branch starts
    from, before they merged. The merge queue replays only the commits not reachable from them."""
    files_changed: list[str] = Field(default_factory=list)
    """Files changed by the commit(s): the task's own changes (for a stacked start, against the stacked
    start, not the dependencies' changes)."""
    summary: str = Field(default="", max_length=65536)
    """What the agent did, in words."""
    usage: Usage = Field(default_factory=Usage)
    """Tokens and cost."""
    tasks: list[PlannedTask] = Field(default_factory=list)
    """The task list (planner role)."""
    verdict: Literal["approved", "changes-requested", "passed", "failed"] | None = None
    """Reviewer: approved or changes-requested; tester: passed or failed."""
    reasons: list[str] = Field(default_factory=list)
    """Reasons for the verdict."""
    failure: Failure | None = None
    """Set when ``outcome`` is ``failed``."""
    question: str | None = Field(default=None, min_length=1, max_length=4000)
    """The agent's question to a person (outcome ``needs-input``)."""
    done: bool = False
    """Planner: the build request is met; no more iterations (``tasks`` is empty)."""
    winner: str | None = Field(default=None, min_length=1, max_length=253)
    """Judge (a reviewer given ``candidates``): the name of the candidate to merge; ``reasons`` say why."""

    @model_validator(mode="after")
    def _consistent(self) -> Handoff:
        if self.outcome == "needs-input" and not self.question:
            raise ValueError("outcome needs-input needs a question")
        if self.done and self.tasks:
            raise ValueError("a planner that is done returns no tasks")
        if self.winner is not None and self.role != "reviewer":
            raise ValueError("only a reviewer (the judge) names a winner")
        return self


class HandoffPointer(Model):
    """Termination message used when the handoff is too large to inline."""

    kind: Literal["HandoffPointer"] = "HandoffPointer"
    protocol: Literal["longshot.dev/handoff-v1"] = PROTOCOL_VERSION
    ref: str = Field(pattern=r"^refs/longshot/handoffs/[A-Za-z0-9._/-]+$")
    """Git ref holding a commit whose tree has ``handoff.json``."""
    commit: str = Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    """The commit the ref pointed to when the agent pushed it."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Digest of ``handoff.json``'s bytes."""
    size: int = Field(ge=0)
    """Size of ``handoff.json`` in bytes."""


class HandoffError(ValueError):
    """The agent's report could not be read; the message says why, for the attempt's exit reason."""


def clean(handoff: Handoff) -> Handoff:
    """``handoff`` with its free text (summary, reasons, question, failure message, file names, planned tasks'
    descriptions and scopes) stripped of control characters, escape sequences and bidi overrides
    (``api.sanitize``): that text reaches conditions, Events, logs and the next prompts."""
    update: dict[str, Any] = {
        "summary": sanitize.clean(handoff.summary),
        "reasons": [sanitize.clean(r) for r in handoff.reasons],
        "files_changed": [sanitize.one_line(f) for f in handoff.files_changed],
    }
    if handoff.question is not None:
        update["question"] = sanitize.clean(handoff.question) or "(an empty question)"
    if handoff.failure is not None:
        update["failure"] = handoff.failure.model_copy(update={"message": sanitize.clean(handoff.failure.message)})
    if handoff.tasks:
        update["tasks"] = [t.model_copy(update={"description": sanitize.clean(t.description) or "(empty)",
                                                "scope": [sanitize.one_line(x) for x in t.scope]})
                           for t in handoff.tasks]
    return handoff.model_copy(update=update)


def handoff_ref(namespace: str, build: str, task: str, attempt: int) -> str:
    """Where attempt ``attempt`` of ``task`` stores a large handoff:
    ``refs/longshot/handoffs/<namespace>/<build>/<task>/<attempt>`` (the namespace and the build keep two
    tenants' builds of one name apart; ``core.names`` lists every ref Longshot writes)."""
    if not namespace or not build or not task or attempt < 1:
        raise ValueError(f"a handoff ref needs a namespace, a build, a task and an attempt from 1, not "
                         f"{namespace!r}/{build!r}/{task!r}/{attempt!r}")
    return f"{HANDOFF_REF_PREFIX}/{namespace}/{build}/{task}/{attempt}"


def encode(handoff: Handoff) -> bytes:
    """The canonical bytes of a handoff (what ``handoff.json`` holds and ``sha256`` covers)."""
    return json.dumps(handoff.to_wire(), sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fits_termination_message(data: bytes) -> bool:
    return len(data) <= TERMINATION_MESSAGE_LIMIT


def parse_termination_message(text: str | None) -> Handoff | HandoffPointer:
    """Read a termination message: an inline :class:`Handoff` or a :class:`HandoffPointer`.

    Raises only :class:`HandoffError`, whatever the text (too large, too deep, not JSON, invalid, ...).
    """
    if not text or not text.strip():
        raise HandoffError("the agent wrote no handoff (empty termination message)")
    if len(text) > MAX_INLINE_BYTES:
        raise HandoffError(f"the termination message has {len(text)} characters, more than the {MAX_INLINE_BYTES} "
                           "accepted; a large handoff must be stored in git behind a HandoffPointer")
    try:
        data = _loads(text)
        if not isinstance(data, dict):
            raise HandoffError("the handoff is not a JSON object")
        kind = data.get("kind")
        model: type[Handoff] | type[HandoffPointer]
        if kind == "Handoff":
            model = Handoff
        elif kind == "HandoffPointer":
            model = HandoffPointer
        else:
            raise HandoffError(f"the handoff has kind {_short(kind)}; expected Handoff or HandoffPointer")
        parsed: Handoff | HandoffPointer = _validate(model, data)
        if isinstance(parsed, Handoff):
            parsed = clean(parsed)
    except HandoffError:
        raise
    except Exception as e:  # whatever an agent writes must not escape as another error
        raise HandoffError(f"the handoff could not be read: {type(e).__name__}") from None
    if isinstance(parsed, HandoffPointer):
        check_pointer(parsed)
    return parsed


def check_pointer(pointer: HandoffPointer) -> None:
    """Refuse a pointer whose announced size is over :data:`MAX_HANDOFF_BYTES` (before anything is fetched)."""
    if pointer.size > MAX_HANDOFF_BYTES:
        raise HandoffError(f"the handoff at {pointer.ref} has {pointer.size} bytes, more than the "
                           f"{MAX_HANDOFF_BYTES} accepted; return a smaller handoff (fewer or shorter tasks)")


def parse_handoff_bytes(data: bytes, pointer: HandoffPointer | None = None) -> Handoff:
    """Read ``handoff.json`` fetched through a pointer, checking size and digest.

    Raises only :class:`HandoffError`.
    """
    if len(data) > MAX_HANDOFF_BYTES:
        raise HandoffError(f"the handoff has {len(data)} bytes, more than the {MAX_HANDOFF_BYTES} accepted")
    if pointer is not None and (len(data) != pointer.size or digest(data) != pointer.sha256):
        raise HandoffError(f"handoff at {pointer.ref} does not match its digest (corrupted or replaced)")
    try:
        raw = _loads(data)
        tasks = raw.get("tasks") if isinstance(raw, dict) else None
        if isinstance(tasks, list) and len(tasks) > MAX_PLAN_TASKS:
            raise HandoffError(f"the plan has {len(tasks)} tasks, more than the {MAX_PLAN_TASKS} any build accepts "
                               "(planner.maxTasks); return fewer, larger tasks")
        handoff: Handoff = clean(_validate(Handoff, raw))
    except HandoffError:
        raise
    except Exception as e:  # whatever an agent writes must not escape as another error
        raise HandoffError(f"the handoff could not be read: {type(e).__name__}") from None
    return handoff


HANDOFF_BUDGET: Final = boundedjson.Budget(max_bytes=MAX_HANDOFF_BYTES, max_values=MAX_PLAN_TASKS * 512,
                                            max_depth=MAX_JSON_DEPTH)
"""What parsing a handoff may cost (``api.boundedjson``): 8 MiB, 512,000 values (a plan of the most tasks, each
with the most scope entries and dependencies the model accepts, has fewer) and 32 levels."""


def nesting_exceeds(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in ``text`` nest more than ``limit`` levels deep (``boundedjson.cost``: a linear
    scan with no recursion, brackets inside strings not counted). It does not validate the JSON."""
    return boundedjson.cost(text, limit).depth > limit


def _loads(text: str | bytes) -> Any:
    try:
        return boundedjson.loads(text, HANDOFF_BUDGET)
    except boundedjson.Refused as e:
        raise HandoffError(f"the handoff was refused: {e}") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


_M = TypeVar("_M", bound=Model)


def _validate(model: type[_M], data: Any) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])[:200] or "(root)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise HandoffError(f"invalid handoff: {where}: {first['msg'][:300]}{more}") from None


# --- the other direction: what the operator gives the agent ------------------------------------------

TASK_INPUT_PATH = "/etc/longshot/task/task.json"
"""Where the agent reads its :class:`TaskInput`: a downward-API file of the Pod's
``longshot.dev/task-input`` annotation."""
TASK_INPUT_ANNOTATION = keys.TASK_INPUT
PRE_CLONE_HEADER = "Longshot-Pre-Clone"
"""The header of longshot-gateway's ``204`` to ``GET /v1/claim?wait=S`` when the waiting warm sandbox's pool
pre-clones (``spec.agent.warmPool.preClone``): ``<namespace>/<build>``, whose repository it may clone before its
claim."""
GIT_CREDENTIALS_DIR = "/etc/longshot/git"
"""Mounted git Secret: files ``username`` + ``password`` or ``token``, or ``ssh-privatekey``."""
LLM_CREDENTIALS_DIR = "/etc/longshot/llm"
"""Mounted model Secret: file ``api-key``."""
SCRIPT_DIR = "/etc/longshot/script"
"""Mounted ConfigMap of the scripted backend: file ``script.yaml``."""
PROMPTS_DIR = "/etc/longshot/prompts"
"""Mounted ConfigMap whose files override the packaged prompt templates."""
SKILLS_DIR = "/etc/longshot/skills"
"""Mounted ConfigMaps of the build's skills: one folder per skill, ``<name>/``, a file per key."""
INSTRUCTIONS_DIR = "/etc/longshot/instructions"
"""Mounted ConfigMap key of the build's instructions: file ``AGENTS.md``."""
INSTRUCTIONS_FILE = "AGENTS.md"
WORKSPACE_DIR = "/workspace"
"""The Pod's writable scratch volume (the root filesystem is read-only)."""
TERMINATION_LOG = "/dev/termination-log"


class PreviousTask(Model):
    """A task of the previous planning iteration, as the next planner sees it."""

    task: str
    """Plan-local name (or AgentTask name) of the task."""
    description: str = ""
    """What the task was asked to do (may be shortened)."""
    outcome: Literal["merged", "failed", "cancelled", "empty", "unmerged"] = "merged"
    """How it ended: ``merged`` into the target, ``failed`` for good, ``cancelled``, ``empty`` (no change),
    ``unmerged`` (its branch did not land)."""
    summary: str = ""
    """The agent's summary."""
    files_changed: list[str] = Field(default_factory=list)
    """Files its commit changed."""
    failure: Failure | None = None
    """Why it failed, when it did."""


class DependencyResult(Model):
    """The result of a task this task depends on, for the worker's prompt."""

    task: str
    """Plan-local name (or AgentTask name) of the dependency."""
    summary: str = ""
    """Its agent's summary."""
    files_changed: list[str] = Field(default_factory=list)
    """Files it changed."""
    merged_commit: str | None = None
    """Commit on the target branch that contains its work (the attempt starts from a target that has it)."""


class StackEntry(Model):
    """A dependency whose branch a ``stacked`` dependent starts from, before it merged."""

    task: str
    """Plan-local name (or AgentTask name) of the dependency."""
    branch: str = Field(min_length=1, max_length=255, pattern=GIT_BRANCH)
    """The dependency's branch (fetched when ``commit`` is not in the clone)."""
    commit: str = Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    """The head commit of the dependency's successful attempt: what the dependent starts from."""


class CandidateInput(Model):
    """One candidate of a fanned-out task, as the judge sees it."""

    name: str = Field(min_length=1, max_length=253)
    """Candidate name; the judge's ``winner`` is one of these."""
    branch: str = Field(min_length=1, max_length=255, pattern=GIT_BRANCH)
    """Branch the candidate pushed."""
    commit: str = Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    """The candidate's head commit (what the judge reads and what would be merged)."""
    gate: GateResult = "Passed"
    """The candidate's quality-gate result; only ``Passed`` candidates may win."""
    gate_summary: str = ""
    """The gate's details (tests, lint, review)."""
    model: str | None = None
    """Model the candidate ran with."""
    summary: str = ""
    """The candidate agent's own summary."""


class SkillInput(Model):
    """A skill of the build (``spec.agent.skills``): the runner copies ``SKILLS_DIR/<name>`` into the checkout."""

    name: str = Field(min_length=1, max_length=63, pattern=SKILL_NAME)
    path: str | None = Field(default=None, min_length=1, max_length=512, pattern=SKILL_PATH)
    """Folder of the checkout instead of the default ones (the runner refuses ``.``, ``..`` and ``.git``)."""


class BackendInput(Model):
    """Backend settings of the attempt (never credentials: those are mounted files)."""

    name: Literal["openai", "anthropic", "command", "scripted"] = "scripted"
    model: str | None = None
    base_url: str | None = None
    command: str | None = None
    max_turns: int = Field(default=50, ge=1, le=1000)


class ModelOption(Model):
    """One of the build's named models, as a planner or a spawning agent chooses it."""

    name: str = Field(max_length=63)
    description: str | None = Field(default=None, max_length=1024)


class PersonaOption(Model):
    """One of the build's personas, as a planner gives it to a task."""

    name: str = Field(max_length=63)
    model: str | None = Field(default=None, max_length=63)


class PersonaInput(Model):
    """The persona in effect for this task (``core.personas``): its prompt template and tool allowlist."""

    name: str = Field(max_length=63)
    prompt: str | None = Field(default=None, max_length=16384)
    """A Jinja2 template rendered with the role's prompt context, put at the head of the system prompt."""
    tools: list[str] | None = Field(default=None, max_length=128)
    """The tools offered to the model (``api.toolnames``); None: every tool of the role."""
    skills: list[str] = Field(default_factory=list, max_length=32)
    """The persona's skills (names of ``spec.agent.skills``)."""


class TaskInput(Model):
    """Everything an agent Pod needs to know about its task."""

    task: str
    """AgentTask name."""
    build: str
    """BuildRequest name."""
    namespace: str
    attempt: int = Field(default=1, ge=1)
    role: Role
    description: str
    """The task's description (for the planner: the build request)."""
    request: str = ""
    """The build's whole request, for context."""
    scope: list[str] = Field(default_factory=list)
    scope_enforced: bool = False
    """The build enforces ``scope`` (``spec.scope.enforce``): a push that changes another file is refused."""
    repository_url: str
    base_branch: str = "main"
    """Branch to start from and (for reviewer/tester) to compare against."""
    branch: str
    """Branch to work on and push (``longshot/<namespace>/<build>/<task>``; for a fixer the branch to fix; for a
    reviewer or tester the branch to read)."""
    commit: str | None = None
    """Reviewer and tester: the exact commit of ``branch`` to read (``spec.commit``); the attempt checks it out
    detached and refuses to run when the branch does not hold it."""
    backend: BackendInput = Field(default_factory=BackendInput)
    test_command: str | None = None
    """The tester's command (and a hint for workers)."""
    gate_steps: list[GateStep] = Field(default_factory=list, max_length=MAX_GATE_STEPS + 3)
    """Tester of a quality gate: its named steps, run in order instead of ``test_command`` (which is the same gate
    as one command); empty for any other tester, which runs ``test_command``."""
    max_tasks: int = 50
    """Planner: largest task list accepted."""
    depth: int = 0
    max_depth: int = 2
    delegate: bool = False
    """Worker of a build with ``spec.delegation.enabled`` that may still delegate (its depth is under
    ``maxDepth``): it gets the ``spawn_task`` and ``await_tasks`` tools."""
    ask: bool = True
    """Planner, worker or fixer that may ask a person (``spec.agent.allowQuestions``): it gets the ``ask`` tool."""
    skills: list[SkillInput] = Field(default_factory=list, max_length=MAX_SKILLS)
    """The build's skills, mounted under ``SKILLS_DIR``: written into the checkout before the model runs."""
    agents_md: bool = False
    """Whether the build's instructions (``spec.agent.instructions``) are mounted at ``INSTRUCTIONS_DIR``: the
    runner makes them the checkout's ``AGENTS.md`` (appended to the repository's own)."""
    mcp_servers: list[str] = Field(default_factory=list, max_length=16)
    """The build's MCP servers this attempt's role gets (``spec.agent.mcpServers[].name``): the runner offers their
    tools to the model, reaching each through the gateway (``/mcp/<name>``)."""
    models: list[ModelOption] = Field(default_factory=list, max_length=16)
    """Planner, and a worker that may delegate: the build's named models to choose from (``model`` of a planned
    task or of ``spawn_task``)."""
    personas: list[PersonaOption] = Field(default_factory=list, max_length=32)
    """Planner: the build's personas to give tasks (``persona`` of a planned task)."""
    persona: PersonaInput | None = None
    """The persona in effect for this task (its own, else its role's)."""
    author_name: str = "Longshot Agent"
    author_email: str = "agent@longshot.local"
    iteration: int = Field(default=1, ge=1)
    """Planner: the planning iteration (1 for the first plan)."""
    max_iterations: int = Field(default=1, ge=1)
    """Planner: the last iteration (``spec.planner.maxIterations``); at it, plan everything that is left."""
    previous: list[PreviousTask] = Field(default_factory=list)
    """Planner: the previous iteration's tasks and how they ended."""
    candidates: list[CandidateInput] = Field(default_factory=list)
    """Reviewer as judge of a fanned-out task: the candidates to choose from (a plain review when empty)."""
    reduction: Literal["pick", "summarize"] = "pick"
    """Judge: ``pick`` the winner among ``candidates`` (all passed their gate), or ``summarize``: ``candidates``
    also holds those that failed their gate, and the judge's ``summary`` compares every one of them by name."""
    previous_failure: Failure | None = None
    """Why the previous attempt of this task failed (class and message), so this one can avoid it."""
    dependencies: list[DependencyResult] = Field(default_factory=list)
    """Worker/fixer: results of the tasks in ``dependsOn`` that succeeded."""
    stack: list[StackEntry] = Field(default_factory=list)
    """Worker/fixer of a build with ``spec.dependencies: stacked``: the dependencies that succeeded with a commit
    but are not merged yet, in ``dependsOn`` order. A fresh branch starts from the first commit and merges the
    others in. Empty in ``merged`` mode (the target already has the dependencies' work)."""
    question: str | None = None
    """The question a previous attempt asked (tool ``ask``), when it has been answered."""
    answer: str | None = None
    """A person's answer to ``question`` (the AgentTask's ``spec.answer``)."""
    instructions: str | None = None
    """A person's addendum to the prompt (the AgentTask's ``spec.agent.promptAddendum``)."""
    hooks: Hooks = Field(default_factory=Hooks)
    """Workspace hooks of the attempt: the task's ``spec.agent.hooks`` over the build's (each hook and the timeout
    on its own); the runner runs those of its role (docs/agent.md)."""
