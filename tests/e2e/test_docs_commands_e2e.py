"""Docs that run, on the local cluster (issue 55, item 3): the read-only ``kubectl`` commands of README.md,
docs/install.md, docs/operations.md and docs/runbooks.md (``get``, ``describe``, ``logs``, ``auth can-i``), with their
placeholders filled in for the chart this tier installs and a suspended build, run against the cluster as written:
each must succeed. A wrong Service name, Deployment, label or jsonpath fails here. ``tests/integration/
test_docs_commands.py`` checks every command statically in ``make test``; this runs the ones that are safe to run.

Left out, and printed: commands that change something, ``--previous`` (no replica restarted here), ``top`` (no
metrics-server here), ServiceMonitors (no prometheus-operator here), and commands with a placeholder this test has
no value for."""

from __future__ import annotations

from typing import Any

import pytest

import docs_commands as dc  # tests/docs_commands.py (tests/ is on the path: tests/conftest.py)

from .conftest import apply, build_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

READ_ONLY = {("get",), ("describe",), ("logs",), ("auth", "can-i")}
LEFT_OUT = ("--previous", "servicemonitor", "top ")


def _placeholders(namespace: str) -> dict[str, str]:
    return {"<operator-namespace>": "longshot-system", "<fullname>": "longshot", "<release>": "longshot",
            "<ns>": namespace, "<namespace>": namespace, "<build>": "docs"}


def _runnable(cmd: dc.Command, values: dict[str, str]) -> list[str] | None:
    args = list(cmd.argv[1:])
    if not args or args[0] == "longshot" or any(x in cmd.text for x in LEFT_OUT):
        return None
    words = [w for w in args if not w.startswith("-")]
    if not any(tuple(words[:len(v)]) == v for v in READ_ONLY):
        return None
    filled = []
    for w in args:
        for k, v in values.items():
            w = w.replace(k, v)
        if dc.PLACEHOLDER.search(w):
            return None
        filled.append(w)
    return filled


def test_the_docs_read_only_commands_run_against_the_cluster(operator, kubectl, namespace, capsys) -> None:  # type: ignore[no-untyped-def]
    # a build to look at (suspended: no agent runs, its status is written)
    apply(kubectl, namespace, build_request("docs", "https://git.example.invalid/docs.git", script="none",
                                            suspend=True))
    values = _placeholders(namespace)
    ran: list[str] = []
    failed: list[str] = []
    skipped: list[str] = []
    for cmd in dc.commands():
        if cmd.argv[0] != "kubectl" or cmd.refused:
            continue
        args = _runnable(cmd, values)
        if args is None:
            skipped.append(cmd.where)
            continue
        done: Any = kubectl(*args, check=False)
        ran.append(cmd.where)
        if done.returncode != 0:
            failed.append(f"{cmd.where}\n    kubectl {' '.join(args)}\n    {done.stderr.strip()[-400:]}")
    with capsys.disabled():
        print(f"\ndocs commands on the cluster: {len(ran)} run, {len(failed)} failed, {len(skipped)} left out")
    assert len(ran) >= 15, ran
    assert not failed, "\n".join(failed)
