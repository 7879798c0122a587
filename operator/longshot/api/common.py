"""Building blocks shared by the three resources.

Every model here is also a schema: ``longshot.api.crdgen`` turns these pydantic models into the CRDs'
OpenAPI v3 schemas. Field docstrings become ``description`` (what ``kubectl explain`` prints), ``Field``
bounds become ``minimum``/``maximum``/``pattern``, ``Literal`` types become ``enum``, and the
``x-kubernetes-*`` keys given in ``json_schema_extra`` are copied as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "longshot.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# RFC 1123 subdomain, the rule for most object names (Secrets, ConfigMaps, custom resources).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A git branch name: no spaces, no "..", no leading "-" or "/", none of ~^:?*[\ and no trailing ".lock" or "/".
GIT_BRANCH = r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$"
# A repository address git can clone: scheme URLs or scp-like "user@host:path".
GIT_URL = r"^((https?|ssh|git|file)://[^\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)$"
# An environment variable name as Kubernetes accepts it.
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A Kubernetes resource quantity (cpu: 500m, memory: 1Gi).
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# A task's file scope (AgentTask spec.scope, a planned task's scope): bounded so that the overlap check of two
# scopes (core.scheduler.scopes_overlap) costs at most MAX_SCOPE_ENTRIES^2 entry pairs of at most
# (MAX_SCOPE_SEGMENTS + 2)^2 segment pairs, each of bounded length (docs/security.md).
MAX_SCOPE_ENTRIES = 128
"""Most entries of a task's scope."""
MAX_SCOPE_ENTRY_LENGTH = 1024
"""Most characters of one scope entry."""
MAX_SCOPE_SEGMENTS = 32
"""Most ``/``-separated segments of one scope entry."""
SCOPE_ENTRY = rf"^[^/]*(/[^/]*){{0,{MAX_SCOPE_SEGMENTS - 1}}}$"
"""At most :data:`MAX_SCOPE_SEGMENTS` segments (linear to match: every repetition starts with its own ``/``)."""

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]

REF_MARKER = "x-longshot-ref"
"""Schema key that marks a field naming a Secret or ConfigMap of the object's namespace (its value is the kind).
``longshot.api.references`` collects the marked fields; the chart's Secret-access admission policy is generated
from that list (docs/admission.md). The key is dropped from the rendered CRDs."""
SecretName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
                                  json_schema_extra={REF_MARKER: "Secret"})]
"""The name of a Secret in the object's namespace that the operator or the gateway reads."""


def names(kind: Literal["Secret", "ConfigMap"]) -> dict[str, Any]:
    """``json_schema_extra`` of an object field (``LocalObjectRef``, ``ForgeToken``) whose ``name`` is a Secret or
    ConfigMap of the object's namespace: ``Field(json_schema_extra=names("ConfigMap"))``."""
    return {REF_MARKER: kind}

ScopeEntry = Annotated[str, Field(max_length=MAX_SCOPE_ENTRY_LENGTH, pattern=SCOPE_ENTRY)]
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
Timestamp = Annotated[datetime, WithJsonSchema({"type": "string", "format": "date-time"})]


class Model(BaseModel):
    """Base of every resource model: camelCase on the wire, docstrings as descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
        validate_assignment=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectRef(Model):
    """A reference to an object in the same namespace."""

    name: ObjectName
    """Name of the referenced object."""


class SecretKeyRef(Model):
    """A key of a Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: str | None = Field(default=None, min_length=1, max_length=253)
    """Key inside the Secret; when unset the whole Secret is mounted."""


class EnvVar(Model):
    """A plain environment variable for the agent container. Use Secrets for credentials."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME)
    """Variable name."""
    value: str = Field(default="", max_length=32768)
    """Variable value (never put a credential here: it is visible to anyone who can read the resource)."""


class ResourceList(Model):
    """CPU and memory amounts, as Kubernetes quantities."""

    cpu: Quantity | None = None
    """CPU, for example ``500m`` or ``2``."""
    memory: Quantity | None = None
    """Memory, for example ``512Mi`` or ``2Gi``."""
    ephemeral_storage: Quantity | None = Field(default=None, alias="ephemeral-storage")
    """Scratch disk, for example ``1Gi``."""


class Resources(Model):
    """Compute resources of an agent Pod; operator defaults fill what is left unset."""

    requests: ResourceList | None = None
    """Minimum resources the scheduler reserves."""
    limits: ResourceList | None = None
    """Hard limits; an agent that exceeds its memory limit is OOM-killed and retried."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """One aspect of the object's state, following the Kubernetes API conventions."""

    type: str = Field(min_length=1, max_length=316)
    """Type of condition in CamelCase, for example ``Ready``."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    reason: str = Field(default="", max_length=1024)
    """One-word CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details about the last transition."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` the condition was set for."""
    last_transition_time: Timestamp | None = None
    """When the condition last changed status."""


CONDITIONS_SCHEMA_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
