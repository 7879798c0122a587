"""The custom resources as whole typed objects: what the shell keeps in its cache and reads.

Observed objects (watch events, API responses) are parsed once, at the edge, with :func:`parse`; after
that the shell and the deciders read typed fields and the models' defaults, never raw dicts. ``metadata``
keeps only what the operator needs (no managedFields, no last-applied annotation).

``resourceVersion`` is opaque: it is only ever compared for equality (Kubernetes API conventions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import Field

from longshot.api.agenttask import AgentTaskSpec, AgentTaskStatus
from longshot.api.buildrequest import BuildRequestSpec, BuildRequestStatus
from longshot.api.buildschedule import BuildScheduleSpec, BuildScheduleStatus
from longshot.api.common import API_VERSION, Model
from longshot.api.mergejob import MergeJobSpec, MergeJobStatus

Kind = Literal["BuildRequest", "AgentTask", "MergeJob", "BuildSchedule"]
SKIPPED_ANNOTATION_PREFIXES = ("kopf.", "kubectl.kubernetes.io/last-applied-configuration")


class OwnerReference(Model):
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class ObjectMeta(Model):
    """The part of ``metadata`` the operator reads."""

    name: str
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def deleting(self) -> bool:
        return self.deletion_timestamp is not None


class Resource(Model):
    """Fields every custom resource has."""

    api_version: str = API_VERSION
    kind: str = ""
    metadata: ObjectMeta

    @property
    def key(self) -> tuple[str, str]:
        return self.metadata.key

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def generation(self) -> int:
        return self.metadata.generation

    def ref(self) -> dict[str, Any]:
        """A minimal object (for Events and owner references): apiVersion, kind, metadata."""
        m = self.metadata
        return {"apiVersion": self.api_version, "kind": self.kind,
                "metadata": {"name": m.name, "namespace": m.namespace, "uid": m.uid,
                             "resourceVersion": m.resource_version}}

    def owner_reference(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name,
                "uid": self.metadata.uid, "controller": True, "blockOwnerDeletion": True}


class BuildRequest(Resource):
    kind: str = "BuildRequest"
    spec: BuildRequestSpec
    status: BuildRequestStatus = Field(default_factory=BuildRequestStatus)


class AgentTask(Resource):
    kind: str = "AgentTask"
    spec: AgentTaskSpec
    status: AgentTaskStatus = Field(default_factory=AgentTaskStatus)

    @property
    def build_name(self) -> str:
        return self.spec.build_ref.name


class MergeJob(Resource):
    kind: str = "MergeJob"
    spec: MergeJobSpec
    status: MergeJobStatus = Field(default_factory=MergeJobStatus)

    @property
    def build_name(self) -> str:
        return self.spec.build_ref.name

    @property
    def task_name(self) -> str:
        return self.spec.task_ref.name


class BuildSchedule(Resource):
    kind: str = "BuildSchedule"
    spec: BuildScheduleSpec
    status: BuildScheduleStatus = Field(default_factory=BuildScheduleStatus)


R = TypeVar("R", bound=Resource)
MODELS: dict[str, type[Resource]] = {"BuildRequest": BuildRequest, "AgentTask": AgentTask, "MergeJob": MergeJob,
                                     "BuildSchedule": BuildSchedule}


def slim_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` without what the operator never reads (managedFields, kopf's and kubectl's annotations)."""
    out: dict[str, Any] = {k: meta[k] for k in ("name", "namespace", "uid", "generation", "resourceVersion", "labels",
                                "creationTimestamp", "deletionTimestamp", "ownerReferences", "finalizers") if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if not k.startswith(SKIPPED_ANNOTATION_PREFIXES)}
    if annotations:
        out["annotations"] = annotations
    return out


def parse(body: dict[str, Any] | Any, model: type[R]) -> R:
    """The typed object of a raw body (a dict from the API or a watch event). Raises pydantic's
    ValidationError for an object the model cannot read."""
    raw = dict(body)
    raw["metadata"] = slim_metadata(dict(raw.get("metadata") or {}))
    if raw.get("status") is None:
        raw.pop("status", None)
    return model.model_validate(raw)


def parse_kind(body: dict[str, Any]) -> Resource:
    """The typed object of a raw body, by its ``kind``."""
    return parse(body, MODELS[str(body.get("kind"))])
