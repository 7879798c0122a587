"""BuildSchedule (short name ``bs``): a BuildRequest template with a cron schedule, as a CronJob is a Job template.

Each run makes one child BuildRequest from ``spec.buildTemplate``, owned by the schedule and named from the run's
time (``<schedule>-<minutes since the epoch>``); ``core.schedules`` decides, ``controllers.schedules`` acts.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from longshot.api import conditions as c
from longshot.api.buildrequest import BUILD_REQUEST_RULES, BuildRequestSpec
from longshot.api.common import CONDITIONS_SCHEMA_EXTRA, Condition, Model, ObjectName, Timestamp

CRON: Final = (r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
               r"|[0-9A-Za-z*/,-]+( +[0-9A-Za-z*/,-]+){4})$")
"""Five fields of digits, names and ``* / , -`` (the ranges are checked by the operator: a condition names the
field), or a macro."""
TIME_ZONE: Final = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,3}$"
"""The shape of an IANA time zone name (``Europe/Berlin``, ``America/Argentina/Buenos_Aires``, ``Etc/GMT+5``, ``UTC``):
no dots, no leading slash."""
LABEL_KEY: Final = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MAX_ACTIVE: Final = 100
"""Most children listed in ``status.active``."""

LABEL_RULES: Final[list[Any]] = [
    {"rule": f"self.all(k, k.size() <= 253 && k.matches('{LABEL_KEY}'))",
     "message": "label keys must be a Kubernetes label key: [prefix/]name, the name at most 63 characters of "
                "[A-Za-z0-9-_.] starting and ending alphanumeric"},
    {"rule": f"self.all(k, self[k].matches('{LABEL_VALUE}'))",
     "message": "label values must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"},
]
ANNOTATION_RULES: Final[list[Any]] = [
    {"rule": f"self.all(k, k.size() <= 253 && k.matches('{LABEL_KEY}'))",
     "message": "annotation keys must be a Kubernetes annotation key: [prefix/]name"},
]


class TemplateMetadata(Model):
    """Labels and annotations every child build gets (the operator adds its own, which win)."""

    labels: dict[str, str] = Field(default_factory=dict, max_length=32, json_schema_extra={
        "additionalProperties": {"type": "string", "maxLength": 63},
        "x-kubernetes-validations": LABEL_RULES})
    """Labels of each child BuildRequest."""
    annotations: dict[str, str] = Field(default_factory=dict, max_length=32, json_schema_extra={
        "additionalProperties": {"type": "string", "maxLength": 4096},
        "x-kubernetes-validations": ANNOTATION_RULES})
    """Annotations of each child BuildRequest."""


TEMPLATE_SPEC_RULES: Final[list[Any]] = [
    *(r for r in BUILD_REQUEST_RULES if "oldSelf" not in r["rule"]),  # a template may change: its next child is new
    {"rule": "!has(self.intake)", "message": "a scheduled build cannot be a standing intake: remove intake",
     "fieldPath": ".intake"},
]


class BuildTemplate(Model):
    """The BuildRequest each run creates."""

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    """Labels and annotations of each child."""
    spec: BuildRequestSpec = Field(json_schema_extra={"x-kubernetes-validations": TEMPLATE_SPEC_RULES})
    """The child's spec, as a BuildRequest's (``spec.suspend`` on the schedule pauses the schedule; here it makes
    every child start suspended)."""


Concurrency = Literal["Allow", "Forbid", "Replace"]


class BuildScheduleSpec(Model):
    """When to build, and what."""

    schedule: str = Field(min_length=1, max_length=128, pattern=CRON)
    """A cron expression, ``minute hour day-of-month month day-of-week`` (``*``, lists, ranges, steps, month and day
    names), or one of ``@yearly``, ``@monthly``, ``@weekly``, ``@daily``, ``@hourly``; read in ``timeZone``."""
    time_zone: str | None = Field(default=None, min_length=1, max_length=64, pattern=TIME_ZONE)
    """The IANA time zone the schedule is read in (``Europe/Berlin``); UTC when unset. A wall-clock time skipped
    by a daylight-saving change runs when the clocks have jumped; one that happens twice runs once."""
    concurrency_policy: Concurrency = "Allow"
    """When a run is due while an earlier child is still active: ``Allow`` starts it too, ``Forbid`` waits for the
    active child to end (and starts it then if it is still the latest run and within
    ``startingDeadlineSeconds``), ``Replace`` cancels the active child (spec.suspend on it, spec.cancel on its
    unfinished tasks) and starts the new one."""
    starting_deadline_seconds: int | None = Field(default=None, ge=1, le=31_536_000)
    """How late a run may still start; a run later than this is missed (condition ``MissedRuns``). Unset: a run
    missed while the operator was down or the schedule suspended starts late (only the latest one)."""
    successful_builds_history_limit: int = Field(default=3, ge=0, le=100)
    """Succeeded children kept; older ones are deleted."""
    failed_builds_history_limit: int = Field(default=1, ge=0, le=100)
    """Failed (or replaced) children kept; older ones are deleted."""
    suspend: bool = False
    """When true no run starts (children already running go on). Runs missed meanwhile: see
    ``startingDeadlineSeconds``."""
    build_template: BuildTemplate
    """The BuildRequest each run creates."""


class ActiveBuild(Model):
    """A child build that has not finished."""

    name: ObjectName
    """The child BuildRequest's name."""


class BuildScheduleStatus(Model):
    """Observed state of the schedule, written by the operator."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)
    """Ready, Stalled and MissedRuns."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` the operator last acted on."""
    last_schedule_time: Timestamp | None = None
    """The run the latest child was created for."""
    last_successful_time: Timestamp | None = None
    """When a child last succeeded."""
    next_schedule_time: Timestamp | None = None
    """The next run (unset while suspended or when the schedule cannot run)."""
    active: list[ActiveBuild] = Field(default_factory=list, max_length=MAX_ACTIVE)
    """Children that have not finished."""


INITIAL_CONDITIONS: Final = (
    (c.READY, c.FALSE, "Pending", "the schedule waits for the operator"),
    (c.STALLED, c.FALSE, "NotStalled", "nothing needs a person"),
)


def initial_status() -> dict[str, Any]:
    """The status of a schedule the operator has not looked at yet (the CRD's default)."""
    return {"conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in INITIAL_CONDITIONS]}
