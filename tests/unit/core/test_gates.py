"""Quality gates as named steps (``core.gates``): the presets, ``custom``, the command the queue compares, the
review."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from longshot.api import objects
from longshot.api.buildrequest import GateStep, QualityGate
from longshot.core import gates, sweeps
from longshot.core import manifests as mjc

pytestmark = pytest.mark.unit

COMMANDS = {"typecheckCommand": "mypy .", "lintCommand": "ruff check .", "testCommand": "pytest -q"}


def gate(**wire: Any) -> QualityGate:
    return QualityGate.model_validate(wire)


def names(steps: tuple[GateStep, ...]) -> list[tuple[str, str | None]]:
    return [(s.name, s.command) for s in steps]


@pytest.mark.parametrize(("profile", "expected"), [
    ("minimal", [("test", "pytest -q")]),
    ("standard", [("lint", "ruff check ."), ("test", "pytest -q")]),
    ("strict", [("typecheck", "mypy ."), ("lint", "ruff check ."), ("test", "pytest -q")]),
])
def test_the_presets_are_named_steps_in_order(profile, expected):
    assert names(gates.steps_of(gate(profile=profile, **COMMANDS), "make test")) == expected


def test_a_preset_leaves_out_steps_without_a_command_and_tests_with_the_reconcilers_command():
    assert names(gates.steps_of(gate(profile="strict"), "make test")) == [("test", "make test")]
    assert names(gates.steps_of(gate(profile="standard", lintCommand="make lint"), "make check")) == [
        ("lint", "make lint"), ("test", "make check")]


def test_custom_runs_exactly_its_steps_and_a_preset_runs_them_after_its_own():
    steps = [{"name": "build", "command": "make build", "timeoutSeconds": 60},
             {"name": "coverage", "coverage": {"report": "coverage.xml", "minPercent": 85}}]
    custom = gates.steps_of(gate(profile="custom", steps=steps, **COMMANDS), "make test")
    assert [s.name for s in custom] == ["build", "coverage"]
    assert custom[0].timeout_seconds == 60 and custom[1].coverage is not None
    assert custom[1].coverage.format == "cobertura" and custom[1].coverage.min_percent == 85
    standard = gates.steps_of(gate(profile="standard", steps=steps, **COMMANDS), "make test")
    assert [s.name for s in standard] == ["lint", "test", "build", "coverage"]


def test_the_command_joins_the_parts_and_a_coverage_only_step_checks_its_report_exists():
    steps = gates.steps_of(gate(profile="custom", steps=[
        {"name": "unit", "command": "pytest --cov --cov-report=xml"},
        {"name": "coverage", "coverage": {"report": "out dir/cov.xml", "minPercent": 80}}]), None)
    assert gates.parts_of(steps) == ["pytest --cov --cov-report=xml", "test -f 'out dir/cov.xml'"]
    assert gates.command_of(steps) == "pytest --cov --cov-report=xml && test -f 'out dir/cov.xml'"
    assert gates.command_of(()) == ""


def test_steps_are_run_by_name_only_for_the_command_the_tester_was_made_to_run():
    steps = gates.steps_of(gate(profile="standard", **COMMANDS), None)
    assert gates.steps_for_command(steps, "ruff check . && pytest -q") == steps
    assert gates.steps_for_command(steps, "pytest -q") == ()  # a sweep's own command
    assert gates.steps_for_command(steps, "ruff check . && pytest") == ()  # the gate was edited since
    assert gates.steps_for_command(steps, None) == ()
    assert gates.steps_for_command((), "") == ()


def test_the_reviewer_is_in_strict_always_and_elsewhere_by_choice():
    assert gates.needs_review(gate(profile="strict"))
    assert not gates.needs_review(gate(profile="standard"))
    assert gates.needs_review(gate(profile="standard", review=True))
    assert gates.needs_review(gate(profile="custom", review=True, steps=[{"name": "t", "command": "true"}]))


@pytest.mark.parametrize("step", [
    {"name": "Lint", "command": "x"},             # not a DNS label
    {"name": "a" * 64, "command": "x"},
    {"name": "lint", "command": ""},
    {"name": "lint", "command": "x" * 4097},
    {"name": "lint", "command": "x", "timeoutSeconds": 0},
    {"name": "lint", "command": "x", "timeoutSeconds": 6 * 3600 + 1},
    {"name": "cov", "coverage": {"report": "c.xml", "minPercent": 101}},
    {"name": "cov", "coverage": {"report": "c.xml", "minPercent": 50, "format": "jacoco"}},
    {"name": "cov", "coverage": {"report": "/abs/c.xml", "minPercent": 50}},
])
def test_step_fields_are_bounded(step):
    with pytest.raises(ValidationError):
        gate(profile="custom", steps=[step])


def test_at_most_twenty_steps():
    gate(profile="custom", steps=[{"name": f"s{i}", "command": "true"} for i in range(20)])
    with pytest.raises(ValidationError):
        gate(profile="custom", steps=[{"name": f"s{i}", "command": "true"} for i in range(21)])


def build(gate_wire: dict[str, Any], reconciler: str = "make test") -> objects.BuildRequest:
    return objects.BuildRequest.model_validate({
        "metadata": {"name": "app", "namespace": "ns", "uid": "u"},
        "spec": {"request": "r", "repository": {"url": "https://git.example.com/a.git"},
                 "qualityGate": gate_wire, "reconciler": {"command": reconciler}}})


def test_the_merge_queues_gate_command_and_parts_are_derived_from_the_steps():
    b = build({"profile": "strict", **COMMANDS})
    assert mjc.gate_parts(b) == ["mypy .", "ruff check .", "pytest -q"]
    assert mjc.gate_command(b) == "mypy . && ruff check . && pytest -q"
    assert [s.name for s in mjc.gate_steps(b)] == ["typecheck", "lint", "test"]
    assert mjc.gate_command(build({})) == "make test"  # standard without a lint command: the reconciler's
    custom = build({"profile": "custom", "steps": [{"name": "check", "command": "make check"}]})
    assert mjc.gate_command(custom) == "make check"
    # a sweep of `make check` is covered by a passing custom gate, as by a preset
    assert sweeps.gate_covers(mjc.gate_parts(custom), "make check")
    assert not sweeps.gate_covers(mjc.gate_parts(custom), "make test")
