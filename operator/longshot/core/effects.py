"""Effects: what a decider asks the shell to do, as plain frozen data.

Effects shared by the AgentTask and BuildRequest deciders live here; each decider module re-exports the
ones it emits. The shell carries them out in order and writes the new state's status once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SetCondition:
    """Set condition ``type`` with ``conditions.set_condition`` (reasons are from ``api.conditions.REASONS``)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


@dataclass(frozen=True)
class EmitEvent:
    """Record a Kubernetes Event on the resource. ``type`` is ``Normal`` or ``Warning``."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
