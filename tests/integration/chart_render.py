"""Rendering the chart with the cached helm, for the RBAC and admission tests (``test_chart.py`` has its own)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "longshot"
KUBE_VERSION = "1.34.4"


def render(control_plane: Any, namespace: str, *sets: str, release: str = "ls",
           json_sets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``helm template`` of the chart in ``namespace`` with ``--set`` (and ``--set-json``) values: the rendered
    objects."""
    args = ["template", release, str(CHART), "--namespace", namespace, f"--kube-version={KUBE_VERSION}"]
    for s in sets:
        args += ["--set", s]
    for s in json_sets:
        args += ["--set-json", s]
    workdir = Path(control_plane.workdir)
    result = subprocess.run([str(Path(control_plane.bin_dir) / "helm"), *args], capture_output=True, text=True,
                            check=False, env={"HOME": str(workdir), "PATH": "/usr/bin:/bin",
                                              "HELM_CACHE_HOME": str(workdir / "helm-cache"),
                                              "HELM_CONFIG_HOME": str(workdir / "helm-config"),
                                              "HELM_DATA_HOME": str(workdir / "helm-data")})
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def of_kinds(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]
