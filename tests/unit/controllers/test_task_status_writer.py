"""One writer of an AgentTask's status in the operator: the task reconciler (``controllers/tasks.py``).

An AST walk over the product package finds every status write of an AgentTask: an executor ``WriteStatus`` whose
kind is ``"AgentTask"``, a ``patch_status`` of that kind, a ``patch_namespaced_custom_object_status`` of
``"agenttasks"``. Others ask the task reconciler (the dispatcher carries out what ``TaskReconciler.admit`` returns;
the build's reconcile enqueues a parent whose ``status.children`` should change). A write whose kind is not a
constant is allowed only where writes of every kind are carried out (the executor, the Kubernetes adapter).

The gateway is a process of its own and writes the fields only it knows (``status.progress``: heartbeats, tokens,
cost; ``status.delegation.requests``; ``status.messages.delivered``), fenced on the task's resourceVersion: it is
listed here by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import longshot

PACKAGE = Path(longshot.__file__).parent
WRITERS = {"controllers/tasks.py", "gateway/cluster.py"}
"""Modules that write an AgentTask's status."""
CARRIERS = {"controllers/executor.py", "runtime/kube.py"}
"""Modules that carry out status writes of any kind (the kind is a value there, never decided there)."""


def _arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    for k in call.keywords:
        if k.arg == keyword:
            return k.value
    return call.args[index] if len(call.args) > index else None


def _name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def writes(source: str) -> list[tuple[int, str]]:
    """(line, what) of every AgentTask status write in ``source``; ``what`` is ``"dynamic"`` when the kind is not
    a constant."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node)
        if name in ("WriteStatus", "patch_status"):
            kind = _arg(node, 0, "kind")
            wanted = "AgentTask"
        elif name == "patch_namespaced_custom_object_status":
            kind = _arg(node, 3, "plural")
            wanted = "agenttasks"
        else:
            continue
        if not isinstance(kind, ast.Constant):
            out.append((node.lineno, "dynamic"))
        elif kind.value == wanted:
            out.append((node.lineno, name))
    return out


def test_the_walk_finds_each_form_of_a_write():
    source = "\n".join([
        "ex.WriteStatus('AgentTask', ns, n, rv, {})",
        "WriteStatus(kind='AgentTask', namespace=ns)",
        "k.patch_status('AgentTask', ns, n, {})",
        "c.patch_namespaced_custom_object_status(g, v, ns, 'agenttasks', n, b)",
        "ex.WriteStatus(kind, ns, n, rv, {})",
        "ex.WriteStatus('BuildRequest', ns, n, rv, {})",
    ])
    assert [line for line, _ in writes(source)] == [1, 2, 3, 4, 5]
    assert writes(source)[-1] == (5, "dynamic")


def test_only_the_task_reconciler_writes_an_agent_tasks_status():
    found: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        hits = [(line, what) for line, what in writes(path.read_text())
                if not (what == "dynamic" and rel in CARRIERS)]
        if hits:
            found[rel] = hits
    outside = {rel: hits for rel, hits in found.items() if rel not in WRITERS}
    assert not outside, (f"AgentTask status written outside {sorted(WRITERS)}: {outside}; let the task reconciler "
                         "write it (enqueue the task, or put what it needs in the task's spec or annotations)")
    assert "controllers/tasks.py" in found
