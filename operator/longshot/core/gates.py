"""Quality gates as named steps: the presets, the command string the queue compares, and whether a review is needed.

A ``BuildRequest``'s ``spec.qualityGate`` is a ``profile`` and optional ``steps``. The profiles are presets of
steps (a step is left out when its command is unset):

============  =========================================  ========
profile       steps                                      reviewer
============  =========================================  ========
``minimal``   ``test``                                   ``review``
``standard``  ``lint``, ``test``                         ``review``
``strict``    ``typecheck``, ``lint``, ``test``          always
``custom``    exactly ``steps`` (required by the CRD)    ``review``
============  =========================================  ========

With a preset, ``steps`` run after the preset's steps. ``test`` is ``testCommand``, else ``reconciler.command``.

The tester runs the steps by name (``TaskInput.gate_steps``); :func:`command_of` is the same gate as one ``&&``
command, which is what a tester runs without steps, what the sweeps compare (``core.sweeps.gate_covers``) and
what Pod creation checks the steps against (:func:`steps_for_command`). A coverage-only step is, in that
command, a check that its report exists.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from longshot.api.buildrequest import GateStep, QualityGate

PRESETS: dict[str, tuple[str, ...]] = {
    "minimal": ("test",),
    "standard": ("lint", "test"),
    "strict": ("typecheck", "lint", "test"),
    "custom": (),
}
"""The step names of each profile, in the order they run."""


def steps_of(gate: QualityGate, reconciler_command: str | None) -> tuple[GateStep, ...]:
    """The gate's steps in the order they run: the profile's preset (those with a command), then ``gate.steps``."""
    commands = {"typecheck": gate.typecheck_command, "lint": gate.lint_command,
                "test": gate.test_command or reconciler_command}
    preset = tuple(GateStep(name=n, command=commands[n]) for n in PRESETS[gate.profile] if commands[n])
    return preset + tuple(gate.steps)


def part_of(step: GateStep) -> str:
    """The step as one shell command: its command, or (coverage only) a check that its report exists."""
    if step.command:
        return step.command
    assert step.coverage is not None  # the CRD requires a command or a coverage threshold
    return f"test -f {shlex.quote(step.coverage.report)}"


def parts_of(steps: Sequence[GateStep]) -> list[str]:
    """The steps as shell commands, in order."""
    return [part_of(s) for s in steps]


def command_of(steps: Sequence[GateStep]) -> str:
    """The steps as one command (``&&``-joined), "" when there are none."""
    return " && ".join(parts_of(steps))


def steps_for_command(steps: Sequence[GateStep], command: str | None) -> tuple[GateStep, ...]:
    """The steps a tester runs by name: ``steps`` when ``command`` (what its AgentTask was made to run) is their
    command, else none (a sweep's own command, or a gate edited since the task was made: the command runs as is)."""
    if not steps or not command or command != command_of(steps):
        return ()
    return tuple(steps)


def needs_review(gate: QualityGate) -> bool:
    """Whether a reviewer's approval is part of the gate: always in ``strict``, by choice (``review``) elsewhere."""
    return gate.profile == "strict" or gate.review
