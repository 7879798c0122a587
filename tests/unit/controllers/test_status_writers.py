"""Each status kind has one writer (DESIGN §9, "one mechanism per guarantee"): the controllers' code is read (its
AST, not run) for every status write, and a write of a kind listed in ``WRITERS`` outside the modules allowed to
write it fails. A status write is expressed as an executor action ``WriteStatus(kind, ...)``, a Kubernetes call
``patch_status(kind, ...)``, or a ``PatchObject(kind, ..., {"status": ...})``; the executor, which carries the
actions out (its kind is a variable), is the one module allowed a write whose kind is not written out."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3] / "operator"
CONTROLLERS = ROOT / "longshot" / "controllers"

WRITERS: dict[str, tuple[str, ...]] = {
    "MergeJob": ("longshot.controllers.queue",),
    "AgentTask": ("longshot.controllers.tasks",),
    "BuildRequest": ("longshot.controllers.builds", "longshot.controllers.standing"),
    "BuildSchedule": ("longshot.controllers.schedules",),
}
"""Status kind -> the module prefixes allowed to write it (the kind's one controller). A BuildRequest's status is
written by the build reconciler's status stage (``builds``) or, for a standing intake, by the route it hands the
intake to (``standing``): one controller, one reconcile, one write. The gateway's live figures of an attempt
(``status.progress``) are outside the controllers: ``test_task_status_writer`` holds them to their fields."""

CARRIERS: tuple[str, ...] = ("longshot.controllers.executor",)
"""Modules that carry out status writes whatever their kind (the kind is a variable there)."""

STATUS_CALLS = frozenset({"WriteStatus", "patch_status"})


@dataclass(frozen=True)
class Write:
    module: str
    line: int
    kind: str | None
    """The kind written, None when it is not a string literal."""


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _kind(call: ast.Call) -> str | None:
    arg = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "kind"), None)
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def _patches_status(call: ast.Call) -> bool:
    body = call.args[3] if len(call.args) > 3 else next((k.value for k in call.keywords if k.arg == "body"), None)
    return isinstance(body, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "status" for k in body.keys)


def writes_in(source: str, module: str) -> Iterator[Write]:
    """Every status write in ``source`` (the code of ``module``)."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in STATUS_CALLS or (name == "PatchObject" and _patches_status(node)):
            yield Write(module, node.lineno, _kind(node))


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_writes() -> list[Write]:
    return [w for path in sorted(CONTROLLERS.rglob("*.py"))
            for w in writes_in(path.read_text(encoding="utf-8"), module_of(path))]


def misplaced(writes: list[Write]) -> list[str]:
    """The writes that break one writer per kind, each named with its place and why."""
    out: list[str] = []
    for w in writes:
        if w.kind is None and not w.module.startswith(CARRIERS):
            out.append(f"{w.module}:{w.line}: a status write whose kind is not a string literal (write the kind out, "
                       "or carry it out in the executor)")
        elif w.kind is not None and w.kind in WRITERS and not w.module.startswith(WRITERS[w.kind]):
            out.append(f"{w.module}:{w.line}: writes {w.kind} status; only {', '.join(WRITERS[w.kind])} may "
                       f"(ask it through spec, an annotation or an event instead)")
    return out


def test_each_status_kind_has_one_writer() -> None:
    writes = all_writes()
    assert {w.kind for w in writes} >= set(WRITERS), "a kind's status write was not found: the walk finds nothing"
    assert misplaced(writes) == []


def test_the_walk_finds_a_status_write_outside_its_writer() -> None:
    """The check can fail: a MergeJob status write anywhere else, in any of the three shapes, is found."""
    source = '''
def reconcile(job):
    out = [ex.WriteStatus("MergeJob", job.namespace, job.name, "1", {})]
    kube.patch_status(kind="MergeJob", namespace="ns", name="n", status={})
    out.append(ex.PatchObject("MergeJob", "ns", "n", {"status": {"phase": "Failed"}}))
    out.append(ex.PatchObject("MergeJob", "ns", "n", {"metadata": {"annotations": {}}}))  # not a status write
    out.append(ex.WriteStatus(kind_of(job), "ns", "n", "1", {}))
    return out
'''
    found = sorted(writes_in(source, "longshot.controllers.finalizing"), key=lambda w: w.line)
    assert [(w.line, w.kind) for w in found] == [(3, "MergeJob"), (4, "MergeJob"), (5, "MergeJob"), (7, None)]
    assert len(misplaced(found)) == 4
    assert misplaced(list(writes_in(source, "longshot.controllers.queue.batch"))) == [
        "longshot.controllers.queue.batch:7: a status write whose kind is not a string literal (write the kind out, "
        "or carry it out in the executor)"]
