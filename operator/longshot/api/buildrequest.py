"""BuildRequest (short name ``br``): one build of a repository from a natural-language request."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import ConfigDict, Field, JsonValue

from longshot.api import conditions as c
from longshot.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    GIT_BRANCH,
    GIT_URL,
    Condition,
    EnvVar,
    LocalObjectRef,
    Model,
    ObjectName,
    Resources,
    SecretName,
    Timestamp,
    names,
)

Backend = Literal["openai", "anthropic", "command", "scripted"]
MergeStrategy = Literal["fast-forward", "rebase", "merge-commit"]
PlannerSource = Literal["llm", "roadmap", "issues"]
GateProfile = Literal["minimal", "standard", "strict", "custom"]
CoverageFormat = Literal["cobertura", "lcov"]
DependencyMode = Literal["merged", "stacked"]


USERINFO = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"
"""A URL with user information (``user@`` or ``user:token@``) in its authority."""
PASSWORD = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*:[^/?#@]*@"
"""A URL with a password or token in its authority (``user:token@``)."""
_NO_CREDENTIALS = ("must not carry credentials (user:token@{also}): the URL is copied into Pod annotations, logs and "
                   "status; put them in the Secret named by {secret}")
REPOSITORY_RULES: list[JsonValue] = [
    {
        "rule": f"!self.url.matches('{PASSWORD}') && (self.url.matches('^ssh://') || !self.url.matches('{USERINFO}'))",
        "message": "spec.repository.url " + _NO_CREDENTIALS.format(
            also=", or user@ outside ssh", secret="spec.repository.credentialsSecret"),
        "fieldPath": ".url",
        "reason": "FieldValueInvalid",
    },
]
AGENT_RULES: list[JsonValue] = [
    {
        "rule": f"!has(self.baseUrl) || !self.baseUrl.matches('{USERINFO}')",
        "message": "spec.agent.baseUrl " + _NO_CREDENTIALS.format(also=" or user@",
                                                                  secret="spec.agent.credentialsSecret"),
        "fieldPath": ".baseUrl",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.skills) || self.skills.all(s, self.skills.exists_one(t, t.name == s.name))",
        "message": "spec.agent.skills names must be unique",
        "fieldPath": ".skills",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.skills) || self.skills.all(s, !has(s.path) || "
                "self.skills.exists_one(t, has(t.path) && t.path == s.path))",
        "message": "spec.agent.skills paths must be unique",
        "fieldPath": ".skills",
        "reason": "FieldValueInvalid",
    },
]


class Repository(Model):
    """The git repository the build works on."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": REPOSITORY_RULES})

    url: str = Field(min_length=1, max_length=2048, pattern=GIT_URL)
    """Clone address: https://, http://, ssh://, git://, file:// or scp-like user@host:path."""
    base_branch: str = Field(default="main", min_length=1, max_length=255, pattern=GIT_BRANCH)
    """Branch the build starts from and merges into."""
    credentials_secret: SecretName | None = None
    """Secret with git credentials (keys ``username`` and ``password``/``token``, or ``ssh-privatekey``)."""


IssueProvider = Literal["github", "gitlab", "jira", "linear"]
FanoutJudge = Literal["reviewer", "compare", "summarize"]
# "owner/name" on GitHub; a numeric project id or a "group/subgroup/project" path on GitLab; a project key on Jira
# ("PROJ"); a team key on Linear ("ENG").
ISSUE_REPOSITORY = r"^([0-9]+|[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+|[A-Z][A-Z0-9_]{0,31})$"
DEFAULT_ROADMAP_PATH = "ROADMAP.md"


ISSUE_SOURCE_RULES: list[JsonValue] = [
    {
        "rule": "self.provider != 'github' || self.repository.matches('^[^/]+/[^/]+$')",
        "message": "planner.issues.repository must be owner/name for the github provider",
        "fieldPath": ".repository",
    },
    {
        "rule": "!(self.provider in ['jira', 'linear']) || self.repository.matches('^[A-Z][A-Z0-9_]*$')",
        "message": "planner.issues.repository must be the project key (jira, e.g. PROJ) or the team key (linear, "
                   "e.g. ENG): capital letters, digits and _",
        "fieldPath": ".repository",
    },
    {
        "rule": "self.provider != 'gitlab' || self.repository.matches('^([0-9]+|[^/]+(/[^/]+)+)$')",
        "message": "planner.issues.repository must be a project id or a group/project path for the gitlab provider",
        "fieldPath": ".repository",
    },
    {
        "rule": "self.provider != 'jira' || has(self.url)",
        "message": "planner.issues.url is required for the jira provider: the site, e.g. https://example.atlassian.net",
        "fieldPath": ".url",
    },
    {
        "rule": "!has(self.doneState) || self.provider in ['jira', 'linear']",
        "message": "planner.issues.doneState is for the jira and linear providers (github and gitlab close an issue)",
        "fieldPath": ".doneState",
    },
    {
        "rule": f"!has(self.url) || !self.url.matches('{USERINFO}')",
        "message": "spec.planner.issues.url " + _NO_CREDENTIALS.format(also=" or user@",
                                                                       secret="spec.planner.issues.credentialsSecret"),
        "fieldPath": ".url",
        "reason": "FieldValueInvalid",
    },
]


class IssueSource(Model):
    """Where the planner reads issues from when ``planner.source`` is ``issues``."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": ISSUE_SOURCE_RULES})

    provider: IssueProvider = "github"
    """``github`` or ``gitlab`` (REST APIs; GitHub Enterprise and self-managed GitLab through ``url``), ``jira``
    (Jira's REST API v2: Jira Cloud, or Data Center) or ``linear`` (Linear's GraphQL API)."""
    url: str | None = Field(default=None, min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
    """API base address, for example ``https://github.example.com/api/v3`` or
    ``https://gitlab.example.com/api/v4``; the public ``https://api.github.com``, ``https://gitlab.com/api/v4`` or
    ``https://api.linear.app`` when unset. Jira: the site (``https://example.atlassian.net``), required."""
    repository: str = Field(min_length=1, max_length=512, pattern=ISSUE_REPOSITORY)
    """The tracker's project: ``owner/name`` on GitHub; a numeric project id or the
    ``group/subgroup/project`` path on GitLab; the project key on Jira (``PROJ``); the team key on Linear
    (``ENG``)."""
    done_state: str | None = Field(default=None, min_length=1, max_length=255)
    """Jira and Linear: how an issue is closed. Jira: the name of the transition, or of the status it leads to
    (default: the first transition into the Done status category); Linear: the name of the team's workflow state
    (default: the team's first state of type ``completed``)."""
    labels: list[str] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^,\n]+$"}},
    )
    """Only open issues with all of these labels are planned (every open issue when empty)."""
    credentials_secret: SecretName | None = None
    """Secret with the tracker's token (key ``token``); read by the operator only, never given to agents. Jira
    Cloud: the API token in ``token`` and the account's address in ``email`` (basic auth); Jira Data Center: a
    personal access token in ``token`` alone (bearer). Linear: a personal API key in ``token``."""
    comment: bool = True
    """Post a comment with the result on each planned issue when its task is merged or fails for good."""


IntakePolicy = Literal["perIssue", "batch"]


INTAKE_AUTHORS_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.writers) || self.writers || (has(self.users) && size(self.users) > 0)",
        "message": "intake.authors allows no one: set writers: true or list users",
        "fieldPath": ".users",
    },
]


class IntakeAuthors(Model):
    """Whose issues a standing intake takes (``spec.intake.authors``): an issue is eligible only when its author
    is listed in ``users``, or, with ``writers``, may write to the project."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": INTAKE_AUTHORS_RULES})

    writers: bool = True
    """Issues of accounts with write access count: GitHub ``author_association`` ``OWNER``, ``MEMBER`` or
    ``COLLABORATOR``; GitLab members with Developer access or higher (the members API; at most 20 authors looked up
    a poll)."""
    users: list[str] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 255,
                                     "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"}},
    )
    """Accounts (login / username, compared case-insensitively; Jira: the account id, or the user name on Data
    Center; Linear: the display name) whose issues count whatever their access."""


class IntakeSettings(Model):
    """A standing intake: this BuildRequest watches a tracker and starts a child BuildRequest per eligible issue
    (or per batch). It never plans, works or finalizes itself; its other spec fields are the template copied into
    each child (docs/planning.md, "Standing intake")."""

    tracker: IssueSource
    """The tracker and project to watch (the same settings as ``planner.issues``: provider, url, repository,
    credentialsSecret with key ``token``; its ``labels`` are required too, and ``comment: false`` posts no
    comments)."""
    labels: list[str] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^,\n]+$"}},
    )
    """An open issue is eligible only with all of these labels (and all of ``tracker.labels``)."""
    assignee: str | None = Field(default=None, min_length=1, max_length=255)
    """When set, an issue is eligible only while assigned to this user (login / username)."""
    milestone: str | None = Field(default=None, min_length=1, max_length=255)
    """When set, an issue is eligible only in the milestone with this title."""
    poll_seconds: int = Field(default=60, ge=10, le=86_400)
    """Seconds between two polls of the tracker (a webhook delivery polls at once)."""
    policy: IntakePolicy = "perIssue"
    """``perIssue``: one child build per issue (``<name>-i<number>``); ``batch``: up to ``batchSize`` issues per
    child build (``<name>-b<first number>``)."""
    batch_size: int = Field(default=5, ge=1, le=50)
    """Most issues in one child build with ``policy: batch``."""
    max_active_builds: int = Field(default=3, ge=1, le=100)
    """Most child builds not finished at once; more eligible issues wait for a free slot."""
    authors: IntakeAuthors = Field(default_factory=lambda: IntakeAuthors())
    """Whose issues start builds. By default only accounts with write access to the project: on a public project
    anyone may open an issue, and a stranger's issue starts nothing."""
    budget: Budget | None = None
    """What all the child builds together may spend (``maxTokens``, ``maxCost``). Each child is given, when it is
    created, the smaller of this BuildRequest's ``spec.budget`` and what is left (running children hold the larger
    of what they used and what they were given); once nothing is left, eligible issues wait. Unset: no total."""
    max_builds_per_day: int = Field(default=10, ge=1, le=1000)
    """Most child builds created in any 24 hours; more eligible issues wait."""
    webhook: LocalObjectRef | None = Field(default=None, json_schema_extra=names("Secret"))
    """Secret (key ``token``) that authenticates deliveries to the operator's ``POST /intake/<namespace>/<name>``:
    GitHub's ``X-Hub-Signature-256`` HMAC, or GitLab's ``X-Gitlab-Token``; Jira's ``X-Hub-Signature`` HMAC; Linear's
    ``Linear-Signature`` HMAC, with the signed ``webhookTimestamp`` at most 60 seconds from the operator's clock. A
    delivery only triggers a poll; its body is never read for content. Without it, webhook deliveries are
    refused."""


FANOUT_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.models) || size(self.models) <= self.count",
        "message": "fanout.models lists more models than fanout.count candidates; remove models or raise count",
        "fieldPath": ".models",
    },
    {
        "rule": "!has(self.backends) || size(self.backends) <= self.count",
        "message": "fanout.backends lists more backends than fanout.count candidates; remove backends or raise count",
        "fieldPath": ".backends",
    },
]


class FanoutSettings(Model):
    """Best-of-N: run ``count`` candidate attempts of a task in parallel, each on its own branch, and let a
    judge pick the one that is merged."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": FANOUT_RULES})

    # not "n": kubectl's YAML reader turns an unquoted key `n` into `false` (YAML 1.1 booleans)
    count: int = Field(ge=1, le=10)
    """Number of candidates (1 turns fan-out off)."""
    models: list[str] = Field(
        default_factory=list,
        max_length=10,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 256}},
    )
    """Models of the candidates, in turn: candidate ``i`` uses ``models[i % len(models)]``; the build's
    ``agent.model`` for every candidate when empty."""
    backends: list[Backend] = Field(default_factory=list, max_length=10)
    """Backends of the candidates, in turn, as ``models`` (for example ``[anthropic, command]``: the native agent
    against a CLI agent on the same model API); the task's or the build's backend for every candidate when empty.
    Each candidate's backend needs what it needs on the build (``agent.command`` for ``command``, ``agent.script``
    for ``scripted``); the gateway serves the build's one model provider, so candidates differ in the agent, not
    in the provider."""
    judge: FanoutJudge = "reviewer"
    """Who picks the winner among the candidates that passed their gate: ``reviewer``, a reviewer agent that
    sees every candidate's diff and gate result and records its reasons in the task's ``status.fanout``;
    ``compare``, no agent: the operator compares the passing candidates on what was measured (cost, then tokens,
    as the gateway metered them, then files changed, then candidate order) and the least costly wins, with the
    comparison recorded as the reasons; ``summarize``, a reviewer agent that is shown every candidate that
    produced a commit (those that failed their gate too), writes a comparison of them all (what each did, how they
    differ), recorded in the task's ``status.fanout.summary``, and picks the winner among the passing ones (it runs
    whenever two or more candidates produced a commit, even when only one passed)."""




class PlannerSettings(Model):
    """How the build is split into tasks."""

    source: PlannerSource = "llm"
    """``llm``: a planner agent reads the repository; ``roadmap``: tasks come from a file in the
    repository; ``issues``: tasks come from an issue tracker."""
    max_tasks: int = Field(default=50, ge=1, le=1000)
    """Largest plan accepted; a bigger plan is refused and re-planned."""
    max_depth: int = Field(default=2, ge=0, le=5)
    """How many times a large task may be decomposed again by a subplanner."""
    max_replans: int = Field(default=2, ge=0, le=10)
    """How many times an invalid plan is sent back to the planner before the build fails."""
    max_total_tasks: int = Field(default=500, ge=1, le=10000)
    """Most AgentTasks the whole build may have, counting every plan and subplan (and the planner, gate,
    sweep and fixer tasks): a plan that would go beyond it is refused, which bounds recursive plans."""
    roadmap_path: str = Field(default=DEFAULT_ROADMAP_PATH, min_length=1, max_length=1024)
    """Path of the roadmap file in the repository, relative to its root (used when ``source`` is
    ``roadmap``): a Markdown checklist whose unchecked items become tasks."""
    issues: IssueSource | None = None
    """Issue tracker settings (required when ``source`` is ``issues``)."""
    max_iterations: int = Field(default=3, ge=1, le=20)
    """Planning rounds: after an iteration's tasks are merged or failed the planner runs again with their
    results, until it answers ``done`` or this many iterations have run."""


HOOK_COMMAND_MAX = 4096
"""Longest hook command, like every other command of a BuildRequest."""
HOOK_NAMES: Final = ("afterClone", "beforeRun", "afterRun", "beforeGate")
"""The hooks, in the order an attempt may run them (wire names: ``spec.agent.hooks.<name>``)."""


class Hooks(Model):
    """Workspace hooks: shell commands the agent Pod runs in the checkout (``/bin/sh -c``, the repository root as
    working directory), in the same sandbox and with the same limits as the agent. Each output is kept bounded (head
    and tail) and redacted. A hook that exits non-zero fails the attempt with a message naming it: ``Configuration``
    (the task stops until the spec is edited or the task relaunched), except ``afterRun``, which runs on the agent's
    changes and is the agent's error (``AgentError``, retried with the hook's output); a hook that runs out of time
    is a ``Timeout`` (retried). See docs/agent.md."""

    after_clone: str | None = Field(default=None, min_length=1, max_length=HOOK_COMMAND_MAX)
    """Runs in every role right after the runner checked out what the role works on (before the agent, the tests
    or the review), for example ``npm ci``."""
    before_run: str | None = Field(default=None, min_length=1, max_length=HOOK_COMMAND_MAX)
    """Worker and fixer: runs after ``afterClone``, just before the agent starts (for example a service the agent's
    commands need, started detached with ``setsid -f``)."""
    after_run: str | None = Field(default=None, min_length=1, max_length=HOOK_COMMAND_MAX)
    """Worker and fixer: runs after the agent finished and before the runner commits and pushes; what it changes is
    committed with the agent's work (for example a formatter)."""
    before_gate: str | None = Field(default=None, min_length=1, max_length=HOOK_COMMAND_MAX)
    """Tester (quality gates and sweeps): runs after ``afterClone``, just before the test command."""
    timeout_seconds: int = Field(default=300, ge=1, le=3600)
    """Longest each hook may run; the hook's whole process group is killed when it is up, and the attempt fails
    with ``Timeout``. The attempt's own limit (``timeoutSeconds``) still applies."""


SKILL_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A skill's name: a DNS label (its folder's name in the workspace)."""
MAX_SKILLS = 16
"""Most skills a build may list (each is one read-only ConfigMap volume of its agent Pods)."""
SKILL_PATH = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+){0,7}$"
"""A folder of the checkout, relative to its root: at most 8 segments, no leading ``/`` (``.``, ``..`` and ``.git``
segments are refused by a rule of :class:`Skill`)."""
CONFIGMAP_KEY = r"^[-._a-zA-Z0-9]+$"
"""A ConfigMap key as the API server accepts it."""
SKILL_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.path) || !self.path.matches('(?i)(^|/)([.]|[.][.]|[.]git)(/|$)')",
        "message": "spec.agent.skills[].path is a folder inside the checkout: no '.', '..' or '.git' segment",
        "fieldPath": ".path",
        "reason": "FieldValueInvalid",
    },
]
MCP_SERVER_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""An MCP server's name in ``spec.agent.mcpServers``: a DNS label (its tools reach the model as ``NAME.TOOL``)."""
MCP_TOOL_NAME = r"^[A-Za-z0-9_.-]{1,128}$"
"""An MCP tool's name, as the MCP specification allows it (letters, digits, ``_``, ``-``, ``.``; 1 to 128)."""
MAX_MCP_SERVERS = 16
"""Most MCP servers one build may name."""
MAX_MCP_TOOLS = 128
"""Most tool names one MCP server's allowlist may list."""
AgentRole = Literal["planner", "worker", "reviewer", "tester", "fixer"]
"""The roles of agent attempts (``api.agenttask.Role``, which a unit test holds equal)."""
MCP_SERVER_RULES: list[JsonValue] = [
    {
        "rule": f"!self.url.matches('{USERINFO}')",
        "message": "spec.agent.mcpServers[].url " + _NO_CREDENTIALS.format(
            also=" or user@", secret="spec.agent.mcpServers[].headersSecretRef"),
        "fieldPath": ".url",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!self.url.contains('?') && !self.url.contains('#')",
        "message": "spec.agent.mcpServers[].url must have no query or fragment: credentials go in the headers of "
                   "spec.agent.mcpServers[].headersSecretRef",
        "fieldPath": ".url",
        "reason": "FieldValueInvalid",
    },
]


class Skill(Model):
    """A skill: a folder of files agents read (a ``SKILL.md`` with its instructions, and any files it names), from
    one ConfigMap whose every key becomes a file of the folder. The runner writes it into the checkout after the
    clone, at ``.agents/skills/<name>/`` and ``.claude/skills/<name>/`` (or ``path``), and never commits it
    (docs/agent.md, "Skills and instructions")."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SKILL_RULES})

    name: str = Field(min_length=1, max_length=63, pattern=SKILL_NAME)
    """Name of the skill (a DNS label, unique in the list): its folder's name."""
    config_map: LocalObjectRef = Field(json_schema_extra=names("ConfigMap"))
    """ConfigMap in the build's namespace holding the skill's files, one per key; key ``SKILL.md`` is required (at
    most 256 KiB a file, 1 MiB a skill)."""
    path: str | None = Field(default=None, min_length=1, max_length=512, pattern=SKILL_PATH)
    """Folder of the checkout the skill is written to instead of ``.agents/skills/<name>`` and
    ``.claude/skills/<name>`` (for an agent that reads skills elsewhere), relative to the repository root."""


class Instructions(Model):
    """The build's instructions to every agent: the text of one ConfigMap key, which becomes the checkout's
    ``AGENTS.md`` (appended to the repository's own, between markers); never committed."""

    config_map: LocalObjectRef = Field(json_schema_extra=names("ConfigMap"))
    """ConfigMap in the build's namespace holding the instructions."""
    key: str = Field(default="AGENTS.md", min_length=1, max_length=253, pattern=CONFIGMAP_KEY)
    """Key of the ConfigMap whose text is the instructions (at most 256 KiB)."""
class McpServer(Model):
    """A remote MCP server (streamable HTTP) whose tools the build's agents get, reached only through longshot-gateway
    (docs/agent.md, "Your team's tools (MCP servers)")."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": MCP_SERVER_RULES})

    name: str = Field(min_length=1, max_length=63, pattern=MCP_SERVER_NAME)
    """Name of the server (a DNS label, unique in the list): its tools reach the model as ``NAME.TOOL``."""
    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
    """The server's streamable-HTTP endpoint, for example ``https://mcp.example.com/mcp``; held to the operator's
    egress allowlist for the purpose ``mcp``."""
    headers_secret_ref: LocalObjectRef | None = Field(default=None, json_schema_extra=names("Secret"))
    """Secret whose every key is an HTTP header name and its value the header's value (``Authorization: Bearer ...``):
    read by longshot-gateway only, which adds the headers to each call upstream; never in an agent Pod."""
    tools: list[str] | None = Field(
        default=None, max_length=MAX_MCP_TOOLS,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": MCP_TOOL_NAME}})
    """The server's tools the agents may list and call (their names as the server gives them); every tool when
    unset. The gateway refuses a call to any other tool, whatever the agent sends."""
    roles: list[AgentRole] | None = Field(default=None, max_length=8)
    """The roles whose agents get the server (``planner``, ``worker``, ``reviewer``, ``tester``, ``fixer``); every
    role when unset. The gateway refuses a call from an attempt of another role."""


MCP_SERVERS_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.mcpServers) || self.mcpServers.all(s, self.mcpServers.exists_one(t, t.name == s.name))",
        "message": "spec.agent.mcpServers names must be unique",
        "fieldPath": ".mcpServers",
        "reason": "FieldValueInvalid",
    },
]


MODEL_NAME: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
"""The name of an entry of ``spec.agent.models`` or ``spec.agent.personas`` (a DNS-1123 label)."""
TOOL_NAME: Final = r"^[A-Za-z0-9_-]{1,64}([.]([A-Za-z0-9_-]{1,64}|[*]))?$"
"""An entry of a persona's tool allowlist: a built-in tool (``read_file``), an MCP tool ``SERVER.TOOL``, or every
tool of an MCP server ``SERVER.*``."""
MAX_MODELS: Final = 16
MAX_PERSONAS: Final = 32
MAX_PERSONA_PROMPT: Final = 16384
ROLE_NAMES: Final = ("planner", "worker", "reviewer", "tester", "fixer")
"""The roles a persona can be given to (``spec.agent.rolePersonas``): the roles of agent/roles.py."""


class NamedModel(Model):
    """One of the build's named models: the planner and spawning agents choose among them per task by ``name``."""

    name: str = Field(min_length=1, max_length=63, pattern=MODEL_NAME)
    """How plans, children and personas name it (``fast``, ``strong``): a DNS label, unique in the list."""
    model: str = Field(min_length=1, max_length=256)
    """The model passed to the backend (the provider's name, for example ``gpt-4o-mini``); priced by that name."""
    backend: Backend | None = None
    """The backend of a task that runs this model; the build's ``spec.agent.backend`` when unset. The gateway
    serves the build's one model provider, so a backend that speaks another provider's API is refused there."""
    description: str | None = Field(default=None, min_length=1, max_length=1024)
    """When to choose it, for the planner and spawning agents (their prompts list every model with this text)."""


class Persona(Model):
    """A named prompt template with its own model, tools and skills, that a role (``spec.agent.rolePersonas``) or a
    planned task (``persona``) names."""

    name: str = Field(min_length=1, max_length=63, pattern=MODEL_NAME)
    """How roles and plans name it: a DNS label, unique in the list."""
    prompt: str | None = Field(default=None, min_length=1, max_length=MAX_PERSONA_PROMPT)
    """A Jinja2 template rendered with the role's prompt context (``task``, ``role``, ...) and put at the head of
    the system prompt of the tasks that have this persona."""
    model: str | None = Field(default=None, min_length=1, max_length=63, pattern=MODEL_NAME)
    """The ``name`` of an entry of ``spec.agent.models`` that the persona's tasks run, unless a person's override
    or the task's own choice says otherwise."""
    tools: list[str] | None = Field(
        default=None, max_length=128,
        json_schema_extra={"items": {"type": "string", "maxLength": 129, "pattern": TOOL_NAME}},
    )
    """Allowlist of the tools offered to the model (unset: every tool of the role): built-in names (``read_file``,
    ``run_command``, ...), MCP tools as ``SERVER.TOOL`` and every tool of a server as ``SERVER.*``. ``finish`` (and
    ``ask`` where the role has it) are always offered: without them no attempt could end."""
    skills: list[str] = Field(
        default_factory=list, max_length=32,
        json_schema_extra={"items": {"type": "string", "maxLength": 63, "pattern": MODEL_NAME}},
    )
    """Names of entries of ``spec.agent.skills`` given to the persona's tasks."""


class RolePersonas(Model):
    """The persona of each role's tasks (the name of an entry of ``spec.agent.personas``); a planned task's own
    ``persona`` wins."""

    planner: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The persona of planner tasks."""
    worker: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The persona of worker tasks."""
    reviewer: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The persona of reviewer tasks."""
    tester: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The persona of tester tasks."""
    fixer: str | None = Field(default=None, max_length=63, pattern=MODEL_NAME)
    """The persona of fixer tasks."""


def _names_known(items: str, listed: str) -> str:
    """CEL: ``items`` is the name of an entry of ``self.<listed>``."""
    return f"(has(self.{listed}) && self.{listed}.exists(m, m.name == {items}))"


def _role_rule(role: str) -> JsonValue:
    return {
        "rule": f"!has(self.rolePersonas) || !has(self.rolePersonas.{role}) || "
                + _names_known(f"self.rolePersonas.{role}", "personas"),
        "message": f"spec.agent.rolePersonas.{role} must name an entry of spec.agent.personas",
        "fieldPath": f".rolePersonas.{role}",
        "reason": "FieldValueInvalid",
    }


AGENT_RULES += [
    {
        "rule": "!has(self.personas) || self.personas.all(p, !has(p.model) || "
                + _names_known("p.model", "models") + ")",
        "message": "a persona's model must name an entry of spec.agent.models (by its name)",
        "fieldPath": ".personas",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.personas) || self.personas.all(p, !has(p.skills) || p.skills.all(k, "
                + _names_known("k", "skills") + "))",
        "message": "a persona's skills must name entries of spec.agent.skills (by their names)",
        "fieldPath": ".personas",
        "reason": "FieldValueInvalid",
    },
    *[_role_rule(role) for role in ROLE_NAMES],
]


MAX_WARM_POOL = 32
"""Largest ``spec.agent.warmPool.size``: sandboxes a build keeps started ahead of its tasks."""


class WarmPool(Model):
    """Agent sandboxes started ahead of the build's tasks (docs/warm-pools.md): Pods of the build's worker template
    with the runner up and the image pulled, holding no task, input or credential until an attempt claims one."""

    size: int = Field(default=0, ge=0, le=MAX_WARM_POOL)
    """Most warm sandboxes kept for this build (0: off, every attempt starts cold). The builds of one repository in a
    namespace whose workers run the same template share one pool, of the largest of their sizes. It holds no more
    than their pending tasks need and the operator's and the tenant's room allow, and empties when none is
    pending."""
    idle_seconds: int = Field(default=300, ge=30, le=3600)
    """A warm sandbox unclaimed for this long is deleted (and made again when demand comes back)."""
    pre_clone: bool = False
    """A warm sandbox clones the build's repository through longshot-gateway while it waits (before its claim it
    may read that repository and nothing else); the attempt that claims it fetches what changed since instead of
    cloning."""


class AgentSettings(Model):
    """How agent Pods run."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": AGENT_RULES + MCP_SERVERS_RULES})

    backend: Backend = "scripted"
    """``openai`` (any OpenAI-compatible endpoint), ``anthropic``, ``command`` (a CLI agent) or
    ``scripted`` (deterministic, for tests and demos)."""
    model: str | None = Field(default=None, min_length=1, max_length=256)
    """Model name passed to the backend (required for ``openai`` and ``anthropic``)."""
    base_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")
    """API base address for the ``openai`` and ``anthropic`` backends."""
    command: str | None = Field(default=None, min_length=1, max_length=4096)
    """Command template for the ``command`` backend, for example ``claude -p {prompt}``."""
    script: LocalObjectRef | None = Field(default=None, json_schema_extra=names("ConfigMap"))
    """ConfigMap holding the script of the ``scripted`` backend (key ``script.yaml``)."""
    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Agent container image; the operator's default when unset."""
    runtime_class_name: str | None = Field(default=None, min_length=1, max_length=253,
                                           pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    """RuntimeClass of the build's agent Pods (a sandboxed runtime such as gVisor or Kata: model-written code then
    runs under a kernel of its own); the operator's ``agent.runtimeClassName`` when unset. A namespace labelled
    ``longshot.dev/runtime-class`` requires it (the chart's admission policy)."""
    resources: Resources | None = None
    """Requests and limits of agent Pods; the operator's defaults when unset."""
    timeout_seconds: int = Field(default=1800, ge=30, le=86400)
    """Wall-clock limit of one attempt (the Pod's ``activeDeadlineSeconds``)."""
    max_turns: int = Field(default=50, ge=1, le=1000)
    """Most model calls of one attempt (``openai`` and ``anthropic``); the last two require ``finish``. Small
    local models: 6 to 10."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra plain environment variables for the agent container."""
    credentials_secret: SecretName | None = None
    """Secret with the model API key (key ``api-key``): read by longshot-gateway only, which adds it to the agents'
    model calls upstream; never mounted into an agent Pod, never seen by the operator's Pods."""
    prompts: LocalObjectRef | None = Field(default=None, json_schema_extra=names("ConfigMap"))
    """ConfigMap whose keys override the packaged prompt templates."""
    fallback_models: list[str] = Field(
        default_factory=list,
        max_length=10,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 256}},
    )
    """Models to fall back to, in order: after an attempt that failed because the model API was failing or
    rate-limited (``RateLimited``, or ``Infrastructure`` naming the model API), the task's next attempt uses the
    next model of ``[model, *fallbackModels]`` (wrapping round), and keeps it while it works. Every attempt
    records its model in ``status.attempts[].model``. Same provider and credentials as ``model``."""
    hooks: Hooks | None = None
    """Workspace hooks (``afterClone``, ``beforeRun``, ``afterRun``, ``beforeGate``): shell commands run in the
    checkout around the agent's work and before a gate's tests."""
    models: list[NamedModel] = Field(
        default_factory=list, max_length=MAX_MODELS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The build's named models (``{name, model, backend?, description?}``): a plan's task, a spawned child or a
    persona may choose one by ``name`` and no other; a person's ``spec.agent.model`` on the task still wins. See
    docs/agent.md, Models per task and personas."""
    personas: list[Persona] = Field(
        default_factory=list, max_length=MAX_PERSONAS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Named prompt templates with their own model, tool allowlist and skills (``{name, prompt?, model?, tools?,
    skills?}``), given to a role by ``rolePersonas`` or to a planned task by its ``persona``."""
    role_personas: RolePersonas | None = None
    """The persona of each role (``planner``, ``worker``, ``reviewer``, ``tester``, ``fixer``)."""
    allow_questions: bool = True
    """Whether planners, workers and fixers may ask a person (their ``ask`` tool, which stops the task until its
    ``spec.answer``). ``false`` for builds nobody watches: agents get no ``ask`` tool and decide for themselves."""
    skills: list[Skill] = Field(default_factory=list, max_length=MAX_SKILLS)
    """Skills written into every agent's checkout after the clone, each from a ConfigMap (``SKILL.md`` and the
    files it names), where coding agents look for them (``.agents/skills/<name>/``, ``.claude/skills/<name>/``);
    the prompt lists them. Never committed."""
    instructions: Instructions | None = None
    """The build's instructions to its agents, from a ConfigMap: the checkout's ``AGENTS.md`` (appended to the
    repository's own). Never committed."""
    mcp_servers: list[McpServer] = Field(default_factory=list, max_length=MAX_MCP_SERVERS)
    """Remote MCP servers (streamable HTTP) whose tools the agents get next to the built-in ones, each through
    longshot-gateway, which adds the headers of its Secret, applies the egress allowlist and the server's tool
    allowlist, bounds and meters every call and records it in the attempt's ledger (docs/agent.md, "Your team's
    tools (MCP servers)")."""
    warm_pool: WarmPool | None = None
    """Sandboxes started ahead (``{size, idleSeconds}``): an attempt claims a warm Pod of the build's worker template
    instead of starting one cold; the operator's ``LONGSHOT_WARM_POOL_SIZE`` (chart ``agents.warmPool.size``) when
    unset. Off by default."""


class WorkerSettings(Model):
    """Limits of the worker pool."""

    max: int = Field(default=4, ge=1, le=1000)
    """Most agent Pods of this build running at once."""


class RetryPolicy(Model):
    """How failed attempts are retried."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts before the task fails for good."""
    backoff_seconds: int = Field(default=10, ge=1, le=3600)
    """First backoff; it doubles with each failed attempt (with jitter)."""
    max_backoff_seconds: int = Field(default=600, ge=1, le=86400)
    """Largest backoff."""


Delivery = Literal["push", "pullRequest"]
ForgeProvider = Literal["github", "gitlab"]
ForgeMergeMethod = Literal["merge", "squash", "rebase"]
PullRequestPer = Literal["task", "build"]
GateBy = Literal["tester", "ci", "both"]
CHECK_NAME = r"^[^\s\x00-\x1f][^\x00-\x1f]*$"
"""A required check's name: a GitHub status context or check run name, a GitLab commit status name or ``pipeline``
(printable, not starting with a space)."""
MERGE_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.delivery) || self.delivery != 'pullRequest' || has(self.pullRequest)",
        "message": "spec.merge.delivery pullRequest needs spec.merge.pullRequest (provider, project, tokenSecretRef)",
        "fieldPath": ".pullRequest",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "!has(self.gate) || !has(self.gate.by) || self.gate.by == 'tester' || has(self.pullRequest)",
        "message": "spec.merge.gate.by ci or both reads the checks from the forge named by spec.merge.pullRequest "
                   "(provider, apiUrl, project, tokenSecretRef): set it, whatever spec.merge.delivery is",
        "fieldPath": ".pullRequest",
        "reason": "FieldValueRequired",
    },
]
GATE_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.by) || self.by == 'tester' || (has(self.checks) && size(self.checks) > 0)",
        "message": "spec.merge.gate.checks must name at least one required check when spec.merge.gate.by is ci or "
                   "both (a GitHub status context or check run name, a GitLab commit status name or pipeline)",
        "fieldPath": ".checks",
        "reason": "FieldValueRequired",
    },
]
PULL_REQUEST_RULES: list[JsonValue] = [
    {
        "rule": "self.provider != 'github' || self.project.matches('^[^/]+/[^/]+$')",
        "message": "spec.merge.pullRequest.project must be owner/name for the github provider",
        "fieldPath": ".project",
    },
    {
        "rule": f"!has(self.apiUrl) || !self.apiUrl.matches('{USERINFO}')",
        "message": "spec.merge.pullRequest.apiUrl " + _NO_CREDENTIALS.format(
            also=" or user@", secret="spec.merge.pullRequest.tokenSecretRef"),
        "fieldPath": ".apiUrl",
        "reason": "FieldValueInvalid",
    },
]


class ForgeToken(Model):
    """A key of a Secret in the build's namespace holding the forge's API token."""

    name: ObjectName
    """Name of the Secret (read by the operator only; never given to agents, never logged)."""
    key: str = Field(default="token", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key inside the Secret whose value is the token."""


class AutoMerge(Model):
    """Hand the pull request to the forge's own auto-merge (``spec.merge.pullRequest.autoMerge``)."""

    enabled: bool = False
    """Once the pull request is open and Longshot's gate passed on its head, ask the forge to merge it when the
    forge's own rules pass (GitHub ``enablePullRequestAutoMerge``, GitLab ``merge_when_pipeline_succeeds``) instead
    of merging it after the approvals Longshot counts; the job follows the forge's result."""
    method: ForgeMergeMethod = "merge"
    """How the forge merges: ``merge``, ``squash`` or ``rebase`` (GitLab: ``squash`` squashes, the others merge)."""


class PullRequestSettings(Model):
    """Delivery through the forge (``spec.merge.delivery: pullRequest``): which forge, which project, which token,
    and how the forge merges."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": PULL_REQUEST_RULES})

    provider: ForgeProvider = "github"
    """``github`` (pull requests) or ``gitlab`` (merge requests)."""
    api_url: str | None = Field(default=None, min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
    """API base address, for example ``https://github.example.com/api/v3`` or ``https://gitlab.example.com/api/v4``;
    the public ``https://api.github.com`` or ``https://gitlab.com/api/v4`` when unset."""
    project: str = Field(min_length=1, max_length=512, pattern=ISSUE_REPOSITORY)
    """The repository on the forge: ``owner/name`` on GitHub; a numeric project id or the ``group/project`` path on
    GitLab. It must be the repository ``spec.repository.url`` names."""
    token_secret_ref: ForgeToken = Field(json_schema_extra=names("Secret"))
    """The Secret key with the forge token. It needs to push branches' pull requests, write commit statuses, read
    reviews and merge (GitHub: pull requests read/write, commit statuses read/write, contents read; GitLab: the
    ``api`` scope, Developer role or higher on protected branches as they allow)."""
    per: PullRequestPer = "task"
    """``task``: one pull request per merged branch (a task's, or its fixer's on the same branch). ``build``: one
    pull request for the whole build, from the build branch ``longshot/<namespace>/<build>/_pull`` (created at the
    base branch) that the merge queue advances to each tested candidate; the gate's status goes on its head, and
    every MergeJob on it follows its outcome (merged: Merged; closed without merge: Failed)."""
    merge_method: ForgeMergeMethod = "merge"
    """How the forge merges an approved, mergeable pull request: ``merge``, ``squash`` or ``rebase``."""
    labels: list[str] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"^[^,\n]+$"}},
    )
    """Labels put on each pull request when it is opened."""
    reviewers: list[str] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 255,
                                     "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"}},
    )
    """Forge accounts whose reviews decide (approve, or ask for changes that a fixer then makes). When set, only
    these accounts' reviews count. When empty (the default), the reviews of accounts with write access count:
    GitHub ``author_association`` ``OWNER``, ``MEMBER`` or ``COLLABORATOR``; GitLab members with Developer access
    or higher. Other accounts' reviews (anyone, on a public repository) are ignored."""
    poll_seconds: int = Field(default=30, ge=1, le=3600)
    """Time between two looks at an open pull request (approvals, mergeability, merged or closed)."""
    auto_merge: AutoMerge | None = None
    """Hand each pull request to the forge's auto-merge once the gate passed (see :class:`AutoMerge`)."""


class MergeGate(Model):
    """Who gates a speculative candidate: Longshot's tester Pod (the quality gate's steps), the repository's own CI
    (required checks read from the forge on exactly the queue commit), or both."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": GATE_RULES})

    by: GateBy = "tester"
    """``tester``: a tester Pod runs the quality gate on each gated prefix (the default). ``ci``: the team's CI does:
    each speculative commit is pushed to its queue branch ``longshot/<namespace>/<build>/_queue/<batch>/<position>``
    (configure the CI to run on pushes to ``longshot/**/_queue/**``), and the queue waits for ``checks`` on that
    exact commit, read from the forge of ``spec.merge.pullRequest``. ``both``: a prefix passes when the tester and
    every required check passed, and fails when either failed."""
    checks: list[str] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": CHECK_NAME}},
    )
    """The required checks (with ``by`` ``ci`` or ``both``): on GitHub, commit status contexts or check run names; on
    GitLab, commit status names (each CI job reports one under its name; ``stage:job`` for a job in a stage is not
    special) or ``pipeline`` (the latest pipeline of the commit). Each must be reported on the commit and pass
    (GitHub: ``success``, or a check run concluding ``success``, ``neutral`` or ``skipped``; GitLab: ``success``)."""
    timeout_seconds: int = Field(default=3600, ge=10, le=86400)
    """Longest wait for the required checks of one gated commit, from when the queue asked for it. A check still
    pending then, or never reported, breaks the batch's gate with that reason (its candidates are tried again, up
    to three times), not a candidate: the CI, not a change, is at fault."""
    poll_seconds: int = Field(default=10, ge=1, le=600)
    """Time between two reads of a gated commit's checks while some are pending (each read is one or two requests to
    the forge; mind its rate limit: GitHub allows 5,000 an hour to a token)."""


class MergeSettings(Model):
    """How task branches are merged into the base branch."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": MERGE_RULES})

    strategy: MergeStrategy = "rebase"
    """``fast-forward``, ``rebase`` or ``merge-commit``."""
    max_conflict_retries: int = Field(default=2, ge=0, le=10)
    """Merge retries of a conflicting branch before a fixer task is created."""
    max_fixers: int = Field(default=5, ge=0, le=100)
    """Most fixer tasks created for this build: conflicts, failed quality gates, requested changes, secrets
    found and failing sweeps each hand the branch (or the target) to a fixer while this allows."""
    window: int = Field(default=4, ge=1, le=32)
    """Largest speculative batch: up to this many candidates are gated together as they would land (the
    target plus the candidates ahead of each) and land in one push; the window grows by one after a batch lands
    whole, and halves (floor 1) after an eviction that follows another broken batch of the build (an isolated
    culprit keeps it). 1 is the serial queue."""
    depth: int = Field(default=2, ge=1, le=8)
    """Batches under test at once: the head batch and those stacked on it, each built on the longest speculative
    commit of the batch below and gated at once on the bet that the batches below land whole (Zuul's dependent
    pipeline; GitHub's merge queue calls it the builds in flight). A batch below that breaks sends the ones above it
    back to the queue. 1: one batch at a time. Deeper stacks merge more per gate cycle while failures are rare; each
    stacked batch costs a tester Pod, wasted when a batch below breaks. Ignored when ``window`` is 1."""
    require_approval: bool = False
    """Hold every MergeJob of this build at ``AwaitingApproval`` until someone sets its ``spec.approved`` to
    true (a hook for GitOps or ChatOps approvals)."""
    delivery: Delivery = "push"
    """How a candidate that passed its quality gate lands: ``push`` (the queue pushes the target itself) or
    ``pullRequest`` (the queue opens a pull request on the forge, posts the gate's result on it as a commit status,
    waits for the forge's approvals and branch protection, and lands by the forge's merge; see
    ``merge.pullRequest``)."""
    pull_request: PullRequestSettings | None = None
    """The forge to deliver through when ``delivery`` is ``pullRequest``, and the forge whose checks gate the queue
    when ``gate.by`` is ``ci`` or ``both`` (with ``delivery: push`` only its provider, apiUrl, project and
    tokenSecretRef are used)."""
    gate: MergeGate = Field(default_factory=MergeGate)
    """Who gates each speculative candidate: the tester Pod (default), the repository's own CI (required checks on
    the forge), or both."""


class ReconcilerSettings(Model):
    """Periodic build/test sweeps on the target branch."""

    enabled: bool = True
    """Run sweeps at all."""
    command: str = Field(default="make test", min_length=1, max_length=4096)
    """Build and test command run in a sweep Pod at the repository root."""
    interval_seconds: int = Field(default=300, ge=30, le=86400)
    """Time between sweeps while the target branch passes; shortened while it fails."""
    max_fixers_per_sweep: int = Field(default=3, ge=0, le=50)
    """Most fixer tasks one failing sweep creates."""


class FinalizationSettings(Model):
    """The finalization phase that runs when no work is left."""

    enabled: bool = True
    """Run finalization at all; when false the build is Ready once every task is done."""
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Drain, retry and final-sweep rounds before the build is marked failed."""


GATE_STEP_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A gate step's name: a DNS label (lowercase letters, digits and ``-``)."""
MAX_GATE_STEPS = 20
"""Most steps a BuildRequest's quality gate may list (the presets add at most three)."""
GATE_STEP_TIMEOUT_MAX = 6 * 3600
"""Longest timeout of one gate step, in seconds."""
COVERAGE_REPORT = r"^[^/]"
"""A coverage report's path: relative to the repository root (the runner also refuses one that resolves outside it
or into ``.git``)."""


class Coverage(Model):
    """A coverage threshold: after the step's command (if any) the gate reads a standard coverage report from the
    checkout and fails the step when fewer lines are covered than ``minPercent``."""

    report: str = Field(min_length=1, max_length=1024, pattern=COVERAGE_REPORT)
    """Path of the report in the checkout, relative to the repository root (for example ``coverage.xml``). A
    report larger than 16 MiB, missing, or that cannot be read fails the step."""
    format: CoverageFormat = "cobertura"
    """``cobertura``: Cobertura XML (``coverage xml``, ``pytest --cov-report=xml``, JaCoCo and Istanbul's
    ``cobertura`` reporter), read from the root element's ``lines-covered``/``lines-valid`` (else
    ``line-rate``); ``lcov``: an LCOV tracefile
    (``lcov.info``), lines found and hit summed over its ``LF:``/``LH:`` records."""
    min_percent: float = Field(ge=0, le=100)
    """Least share of lines covered, in percent (0 to 100)."""


GATE_STEP_RULES: list[JsonValue] = [
    {
        "rule": "has(self.command) || has(self.coverage)",
        "message": "a qualityGate step needs a command, a coverage threshold, or both",
        "fieldPath": ".command",
        "reason": "FieldValueRequired",
    },
]


class GateStep(Model):
    """One named step of a quality gate: a shell command run in the checkout (``/bin/sh -c``, the repository root
    as working directory, in the tester's sandbox with its limits), and optionally a coverage threshold checked
    after it. Steps run in order; the first that fails fails the gate, and its name and output tail reach the
    fixer."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": GATE_STEP_RULES})

    name: str = Field(min_length=1, max_length=63, pattern=GATE_STEP_NAME)
    """Name of the step (a DNS label, unique in the gate), as the gate's result and the fixer see it."""
    command: str | None = Field(default=None, min_length=1, max_length=4096)
    """Shell command of the step; it passes when it exits with code 0."""
    timeout_seconds: int | None = Field(default=None, ge=1, le=GATE_STEP_TIMEOUT_MAX)
    """Seconds the command may run before its process group is killed and the step fails; the runner's test
    timeout (``LONGSHOT_TEST_TIMEOUT_SECONDS``) when unset."""
    coverage: Coverage | None = None
    """A coverage threshold checked after the command (or on its own, on a report an earlier step wrote)."""


QUALITY_GATE_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.profile) || self.profile != 'custom' || (has(self.steps) && size(self.steps) > 0)",
        "message": "qualityGate.profile custom runs exactly qualityGate.steps: list at least one step",
        "fieldPath": ".steps",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "!has(self.steps) || self.steps.all(s, self.steps.exists_one(t, t.name == s.name))",
        "message": "qualityGate.steps names must be unique",
        "fieldPath": ".steps",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.steps) || (has(self.profile) && self.profile == 'custom') || "
                "self.steps.all(s, !(s.name in ['typecheck', 'lint', 'test']))",
        "message": "qualityGate.steps run after the profile's preset steps, whose names typecheck, lint and test they "
                   "must not take: rename the step, or use profile custom",
        "fieldPath": ".steps",
        "reason": "FieldValueInvalid",
    },
]


class QualityGate(Model):
    """Checks a branch passes before it is merged: a list of named steps run in order (docs/merge-queue.md)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": QUALITY_GATE_RULES})

    profile: GateProfile = "standard"
    """A preset of steps: ``minimal``: ``test``; ``standard``: ``lint`` and ``test``; ``strict``: ``typecheck``,
    ``lint``, ``test`` and a reviewer's approval; ``custom``: exactly ``steps`` (which it requires). A preset's
    step is left out when its command is unset; ``steps`` run after the preset's."""
    test_command: str | None = Field(default=None, min_length=1, max_length=4096)
    """Test command (step ``test``); ``reconciler.command`` when unset."""
    lint_command: str | None = Field(default=None, min_length=1, max_length=4096)
    """Lint command (step ``lint``, in ``standard`` and ``strict``)."""
    typecheck_command: str | None = Field(default=None, min_length=1, max_length=4096)
    """Type-check command (step ``typecheck``, in ``strict``)."""
    steps: list[GateStep] = Field(default_factory=list, max_length=MAX_GATE_STEPS)
    """Named steps: the whole gate with ``profile: custom``, else run after the preset's steps (for example a
    coverage threshold after ``standard``'s lint and tests), under other names than ``typecheck``, ``lint`` and
    ``test``."""
    review: bool = False
    """Also require a reviewer agent's approval before merging (``strict`` always does)."""


class Budget(Model):
    """Spending limits; when one is spent no new agent Pod starts until it is raised."""

    max_tokens: int | None = Field(default=None, ge=0)
    """Most model tokens (input plus output) the build may use."""
    max_cost: float | None = Field(default=None, ge=0)
    """Most cost, in the backend's currency units, the build may use."""


class LedgerRetention(Model):
    """How long a build keeps its attempts' ledger entries (docs/ledger.md)."""

    max_entries: int = Field(default=500, ge=1, le=100_000)
    """Ledger entries (one ConfigMap per attempt, at most 256 KiB of transcript before compression) kept per build;
    the oldest finished ones beyond this are deleted."""
    ttl_seconds: int = Field(default=30 * 86400, ge=3600, le=366 * 86400)
    """Seconds an entry is kept after its attempt ended (default 30 days, at least one hour, at most a year)."""


class Retention(Model):
    """What a build keeps of its finished work beyond the AgentTasks' status."""

    finished_pods: int = Field(default=10, ge=0, le=10_000)
    """Finished agent Pods kept for debugging (``kubectl logs``): the most recently finished ones. Older ones
    are deleted once their AgentTask has recorded the attempt (exit, failure class and handoff stay in its
    status), so a 10,000-task build does not leave 10,000 Pods behind. A planner's Pod stays until its plan has
    been taken in, whatever this says."""
    ledger: LedgerRetention = Field(default_factory=LedgerRetention)
    """The attempts' ledger entries (transcripts and results, kept after their Pods are gone): how many and how
    long. Deleting the build deletes them all."""


CleanupBranches = Literal["OnSuccess", "Always", "Never"]


class Cleanup(Model):
    """What Longshot removes from the repository when the BuildRequest is deleted (docs/cleanup.md)."""

    branches: CleanupBranches = "OnSuccess"
    """Refs of the build in the repository (task and candidate branches ``longshot/<namespace>/<build>/*``,
    queue branches, handoff refs ``refs/longshot/handoffs/<namespace>/<build>/*``) deleted when the build is
    deleted. ``OnSuccess`` (default): when the build succeeded, the refs whose work landed on the target or was
    abandoned (a best-of-N candidate that lost); a branch whose work did not merge is kept, and a build that did
    not succeed keeps every branch and handoff ref (only its queue branches, scratch copies, go). ``Always``:
    every ref of the build. ``Never``: nothing."""


class ScopeSettings(Model):
    """How the build treats its tasks' file scopes (AgentTask ``spec.scope``)."""

    enforce: bool = False
    """When true, a task's scope is a limit, not only a hint: the gateway refuses a push whose new commits change
    a file no entry of the task's scope covers, naming the files (the attempt then fails as an agent error and
    its retry is told why). A fixer of a task's branch inherits that task's scope. A task with an empty scope is
    not limited. Default false: scopes only keep overlapping tasks from running at once."""


class DelegationSettings(Model):
    """Whether workers may delegate: spawn child AgentTasks at run time and await them (docs/planning.md,
    Delegation)."""

    enabled: bool = False
    """When true, worker agents get the ``spawn_task`` and ``await_tasks`` tools (and the MCP server's): a child is
    a worker AgentTask of the same build, created by the operator, that runs, merges through the merge queue like
    any task, and merges before its parent. Default false: a spawn is refused, naming this field."""
    max_depth: int = Field(default=2, ge=1, le=5)
    """How deep delegation may go: a task made by the planner has depth 0, its children 1, theirs 2. A spawn whose
    child would be deeper is refused, naming this field."""
    max_children: int = Field(default=5, ge=1, le=20)
    """Most children one task may spawn (over all its attempts); further spawns are refused, naming this field.
    Children also count against ``spec.planner.maxTotalTasks`` and the budget."""


class BuildRequestSpec(Model):
    """What to build, where, and how."""

    request: str = Field(min_length=1, max_length=100_000)
    """The natural-language build request."""
    repository: Repository
    """The git repository to work on."""
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    """How the request is split into tasks."""
    agent: AgentSettings = Field(default_factory=AgentSettings)
    """How agent Pods run."""
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    """Worker pool limits."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """Default retry policy of this build's tasks."""
    merge: MergeSettings = Field(default_factory=MergeSettings)
    """Merge queue settings."""
    reconciler: ReconcilerSettings = Field(default_factory=ReconcilerSettings)
    """Periodic build/test sweeps."""
    finalization: FinalizationSettings = Field(default_factory=FinalizationSettings)
    """The finalization phase."""
    quality_gate: QualityGate = Field(default_factory=QualityGate)
    """Checks a branch passes before it is merged."""
    budget: Budget = Field(default_factory=Budget)
    """Token and cost limits."""
    dependencies: DependencyMode = "merged"
    """When a task's dependencies count as done: ``merged`` (default): their branches are merged and the task
    starts from a target commit that contains them; ``stacked``: it starts from its dependency's branch as soon
    as the dependency succeeded (faster; it restacks if the dependency changes, and merges after it)."""
    suspend: bool = False
    """When true no new agent Pod starts; running Pods finish their attempt."""
    fanout: FanoutSettings | None = None
    """Best-of-N for every worker task of the build (a task's own ``spec.fanout`` wins)."""
    retention: Retention = Field(default_factory=Retention)
    """Finished agent Pods kept; the others are deleted once their attempt is recorded."""
    cleanup: Cleanup = Field(default_factory=Cleanup)
    """What is removed from the repository when the build is deleted."""
    scope: ScopeSettings = Field(default_factory=ScopeSettings)
    """Whether task scopes are enforced on push (``enforce``)."""
    delegation: DelegationSettings = Field(default_factory=DelegationSettings)
    """Whether workers may spawn child tasks and await them (``enabled``), and the limits."""
    intake: IntakeSettings | None = None
    """When set, this BuildRequest is a standing intake: it watches a tracker and starts a child BuildRequest per
    eligible issue, with the rest of this spec as the children's template; it never plans or finalizes itself."""


class TaskCounts(Model):
    """AgentTasks of the build by state."""

    total: int = Field(default=0, ge=0)
    """All tasks."""
    pending: int = Field(default=0, ge=0)
    """Waiting for dependencies, a worker slot or a backoff."""
    running: int = Field(default=0, ge=0)
    """With a Pod that has not finished."""
    succeeded: int = Field(default=0, ge=0)
    """Finished with a valid handoff."""
    failed: int = Field(default=0, ge=0)
    """Failed for good."""
    cancelled: int = Field(default=0, ge=0)
    """Cancelled by a user."""
    blocked: int = Field(default=0, ge=0)
    """Pending tasks that cannot start because a dependency failed or was cancelled."""
    stopped: int = Field(default=0, ge=0)
    """Failed tasks that wait on a person (credentials, configuration, budget) and resume when it is fixed."""
    progress: str = Field(default="0/0", max_length=32)
    """``done/total`` for display."""
    attempts: int | None = Field(default=None, ge=0)
    """Attempts the build's work tasks have started, retries and relaunches included (each task's newest attempt
    number, summed). A finished build that finds more than it recorded reopens: a task ran again."""


class MergeCounts(Model):
    """MergeJobs of the build by state."""

    queued: int = Field(default=0, ge=0)
    """Waiting in the merge queue."""
    testing: int = Field(default=0, ge=0)
    """In a speculative batch whose quality gate runs."""
    merged: int = Field(default=0, ge=0)
    """Merged into the target branch."""
    superseded: int = Field(default=0, ge=0)
    """Carried onto the target by the fixer that took the branch over."""
    conflicted: int = Field(default=0, ge=0)
    """Conflicting with the target branch."""
    failed: int = Field(default=0, ge=0)
    """Failed a gate or for good."""


class SweepStatus(Model):
    """The last reconciler sweep."""

    commit: str | None = Field(default=None, max_length=64)
    """Target commit the sweep ran on."""
    result: Literal["Passed", "Failed", "Running"] | None = None
    """Outcome of the sweep."""
    time: Timestamp | None = None
    """When the sweep finished."""
    message: str | None = Field(default=None, max_length=4096)
    """Tail of the failing output, if any."""


class Usage(Model):
    """What the build's agents consumed."""

    tokens: int = Field(default=0, ge=0)
    """Model tokens, input plus output."""
    cost: float = Field(default=0.0, ge=0)
    """Cost in the backend's currency units."""


class IterationStatus(Model):
    """One planning iteration: the tasks its plan created and how they ended."""

    number: int = Field(ge=1)
    """Iteration number, from 1."""
    tasks: int = Field(default=0, ge=0)
    """Tasks the iteration's plan created."""
    merged: int = Field(default=0, ge=0)
    """Of those, tasks whose branch was merged."""
    failed: int = Field(default=0, ge=0)
    """Of those, tasks that failed for good."""


class IntakeEntry(Model):
    """One child build of a standing intake."""

    issue: int = Field(ge=1)
    """The (first) issue number the child build works on."""
    issues: list[int] = Field(default_factory=list, max_length=50)
    """Every issue number of the child build (a batch has several)."""
    build: str = Field(max_length=253)
    """The child BuildRequest's name."""
    outcome: Literal["Active", "Succeeded", "Failed"] = "Active"
    """The child build's outcome so far."""


class IntakeStatus(Model):
    """What a standing intake (``spec.intake``) saw and started."""

    last_poll: Timestamp | None = None
    """When the tracker was last read successfully."""
    eligible: int = Field(default=0, ge=0)
    """Open eligible issues at the last poll."""
    active: int = Field(default=0, ge=0)
    """Child builds not finished."""
    started: int = Field(default=0, ge=0)
    """Child builds that exist (started by this intake)."""
    waiting: int = Field(default=0, ge=0)
    """Eligible issues without a build, waiting for a slot (``maxActiveBuilds``)."""
    builds: list[IntakeEntry] = Field(default_factory=list, max_length=50)
    """The 50 newest child builds, with their issues and outcome."""


class BuildRequestStatus(Model):
    """Observed state of the build, written by the operator."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)
    """Planned, Progressing, Merged, Finalized, Ready and friends."""
    phase: str | None = Field(default=None, max_length=64)
    """Summary of the conditions for display; decide on the conditions, not on this."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` the operator last acted on."""
    planner_task: str | None = None
    """Name of the planner AgentTask."""
    replans: int = Field(default=0, ge=0)
    """Plans refused so far."""
    iteration: int = Field(default=0, ge=0)
    """The planning iteration under way (1 for the first plan, 0 before planning); see ``iterations``."""
    iterations: list[IterationStatus] = Field(default_factory=list, max_length=20)
    """One entry per planning iteration, oldest first."""
    tasks: TaskCounts = Field(default_factory=TaskCounts)
    """AgentTasks by state."""
    merges: MergeCounts = Field(default_factory=MergeCounts)
    """MergeJobs by state."""
    last_sweep: SweepStatus | None = None
    """The last reconciler sweep."""
    finalization_attempts: int = Field(default=0, ge=0)
    """Finalization rounds run."""
    usage: Usage = Field(default_factory=Usage)
    """Tokens and cost used."""
    start_time: Timestamp | None = None
    """When the operator started the build."""
    completion_time: Timestamp | None = None
    """When the build became Ready."""
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    """The build's OpenTelemetry trace ID (32 hex digits: the first 16 bytes of the SHA-256 of its UID), set while
    the operator exports traces (docs/tracing.md)."""
    intake: IntakeStatus | None = None
    """A standing intake's polls and child builds (only with ``spec.intake``)."""


PENDING_TEXT: Final = "the build waits for the operator"
INITIAL_CONDITIONS: Final[tuple[tuple[str, Literal["True", "False", "Unknown"], str, str], ...]] = (
    (c.READY, c.FALSE, "Pending", f"Pending: {PENDING_TEXT}"),
    (c.STALLED, c.FALSE, "NotStalled", "nothing needs a person"),
    (c.RECONCILING, c.TRUE, "Pending", PENDING_TEXT),
    (c.PROGRESSING, c.FALSE, "Idle", PENDING_TEXT),
)
"""The summary conditions of a build the operator has not looked at yet: (type, status, reason, message); the
same as ``core.builds.summary`` of a fresh build, so the operator's first write flips none of them."""


def initial_status() -> dict[str, Any]:
    """The status every BuildRequest has from its creation: the CRD's default for ``status``, which the API server
    fills in whenever it reads the object from storage. ``Reconciling=True`` makes kstatus (Flux, kpt, cli-utils)
    and Argo CD call a build nobody has looked at yet InProgress / Progressing, where an object without conditions
    would be Current: a Flux Kustomization with ``wait: true`` would go green before any work started. There is no
    ``observedGeneration`` (a default cannot carry the generation), which also says the operator has not seen it."""
    return {"phase": "Pending",
            "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in INITIAL_CONDITIONS]}


BUILD_REQUEST_RULES = [
    {
        "rule": "!self.planner.roadmapPath.startsWith('/') "
                "&& !self.planner.roadmapPath.matches('(^|/)[.][.](/|$)')",
        "message": "planner.roadmapPath must be a path inside the repository: relative, without '..'",
        "fieldPath": ".planner.roadmapPath",
    },
    {
        "rule": "self.planner.source != 'issues' || has(self.planner.issues)",
        "message": "planner.issues is required when planner.source is issues",
        "fieldPath": ".planner.issues",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "!(self.agent.backend in ['openai', 'anthropic']) || has(self.agent.model)",
        "message": "agent.model is required for the openai and anthropic backends",
        "fieldPath": ".agent.model",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "self.agent.backend != 'command' || has(self.agent.command)",
        "message": "agent.command is required for the command backend",
        "fieldPath": ".agent.command",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "self.retry.backoffSeconds <= self.retry.maxBackoffSeconds",
        "message": "retry.backoffSeconds must not exceed retry.maxBackoffSeconds",
        "fieldPath": ".retry.backoffSeconds",
    },
    {
        "rule": "self.repository.url == oldSelf.repository.url",
        "message": "repository.url is immutable; create a new BuildRequest for another repository",
        "fieldPath": ".repository.url",
    },
]
