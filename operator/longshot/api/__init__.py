"""The custom resources of group ``longshot.dev``: their models and how they are served.

``RESOURCES`` is what ``crdgen`` renders and what the operator registers with kopf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from longshot.api import agenttask, buildrequest, buildschedule, common, mergejob

GROUP = common.GROUP
VERSION = common.VERSION
API_VERSION = common.API_VERSION
CATEGORY = "longshot"


@dataclass(frozen=True)
class Resource:
    """A custom resource: names, schema models, validation rules and printer columns."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: tuple[dict[str, Any], ...]
    spec_rules: tuple[dict[str, Any], ...] = ()
    root_rules: tuple[dict[str, Any], ...] = ()
    status_default: dict[str, Any] | None = None
    """The CRD's default for ``status``: what the object's status is until the operator first writes it."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _condition_column(name: str, type_: str, priority: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status',
        "priority": priority,
    }


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

BUILD_REQUEST = Resource(
    kind="BuildRequest",
    plural="buildrequests",
    short_names=("br",),
    description="One build: a natural-language request against a git repository, planned, worked on by "
    "agent Pods, merged, swept and finalized by the Longshot operator.",
    spec=buildrequest.BuildRequestSpec,
    status=buildrequest.BuildRequestStatus,
    spec_rules=tuple(buildrequest.BUILD_REQUEST_RULES),
    status_default=buildrequest.initial_status(),
    printer_columns=(
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Tasks", "type": "string", "jsonPath": ".status.tasks.progress",
         "description": "Tasks done/total"},
        {"name": "Merged", "type": "integer", "jsonPath": ".status.merges.merged"},
        _condition_column("Ready", "Ready"),
        {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
         "description": "Why the build is (not) ready: the phase while working, the failure or what needs a "
                        "person (TaskBlocked, Configuration, BudgetExceeded) otherwise"},
        _condition_column("Finalized", "Finalized"),
        {"name": "Iteration", "type": "integer", "jsonPath": ".status.iteration",
         "description": "The planning iteration under way"},
        {"name": "Repository", "type": "string", "jsonPath": ".spec.repository.url", "priority": 1},
        {"name": "Tokens", "type": "integer", "jsonPath": ".status.usage.tokens", "priority": 1},
        AGE,
    ),
)

AGENT_TASK = Resource(
    kind="AgentTask",
    plural="agenttasks",
    short_names=("at",),
    description="One unit of agent work (plan, implement, review, test or fix), run as one sandboxed Pod "
    "per attempt; owned by its BuildRequest.",
    spec=agenttask.AgentTaskSpec,
    status=agenttask.AgentTaskStatus,
    spec_rules=tuple(agenttask.AGENT_TASK_SPEC_RULES),
    root_rules=tuple(agenttask.AGENT_TASK_RULES),
    status_default=agenttask.initial_status(),
    printer_columns=(
        {"name": "Build", "type": "string", "jsonPath": ".spec.buildRef.name"},
        {"name": "Role", "type": "string", "jsonPath": ".spec.role"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        _condition_column("Ready", "Ready"),
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.message",
         "description": "The running attempt's last progress line"},
        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority", "priority": 1},
        {"name": "Branch", "type": "string", "jsonPath": ".status.handoff.branch", "priority": 1},
        AGE,
    ),
)

MERGE_JOB = Resource(
    kind="MergeJob",
    plural="mergejobs",
    short_names=("mj",),
    description="Merging one task branch into its build's target branch through the repository's serial, "
    "leader-elected merge queue; owned by its AgentTask.",
    spec=mergejob.MergeJobSpec,
    status=mergejob.MergeJobStatus,
    spec_rules=tuple(mergejob.MERGE_JOB_SPEC_RULES),
    status_default=mergejob.initial_status(),
    printer_columns=(
        {"name": "Build", "type": "string", "jsonPath": ".spec.buildRef.name"},
        {"name": "Task", "type": "string", "jsonPath": ".spec.taskRef.name"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Position", "type": "integer", "jsonPath": ".status.queuePosition"},
        _condition_column("Ready", "Ready"),
        {"name": "Commit", "type": "string", "jsonPath": ".status.mergedCommit", "priority": 1},
        AGE,
    ),
)

BUILD_SCHEDULE = Resource(
    kind="BuildSchedule",
    plural="buildschedules",
    short_names=("bs",),
    description="A BuildRequest template with a cron schedule and time zone: each run creates a child "
    "BuildRequest, owned by the schedule, with a CronJob's concurrency policy, starting deadline, history "
    "limits and suspend.",
    spec=buildschedule.BuildScheduleSpec,
    status=buildschedule.BuildScheduleStatus,
    status_default=buildschedule.initial_status(),
    printer_columns=(
        {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
        {"name": "Timezone", "type": "string", "jsonPath": ".spec.timeZone"},
        {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
        {"name": "Active", "type": "string", "jsonPath": ".status.active[*].name",
         "description": "Child builds that have not finished"},
        {"name": "Last", "type": "date", "jsonPath": ".status.lastScheduleTime",
         "description": "How long ago the latest child was scheduled"},
        {"name": "Next", "type": "string", "jsonPath": ".status.nextScheduleTime",
         "description": "The next run (UTC)"},
        _condition_column("Ready", "Ready", priority=1),
        AGE,
    ),
)

RESOURCES: tuple[Resource, ...] = (BUILD_REQUEST, AGENT_TASK, MERGE_JOB, BUILD_SCHEDULE)
