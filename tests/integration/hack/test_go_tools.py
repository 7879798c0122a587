"""``hack/go-tools.sh`` serves a cached tool only when it is the pinned build: the module and version recorded in a
Go binary (``go version -m``), or for kstatus the hash of ``hack/kstatus``'s sources it reports. Checked with
planted binaries in a temporary ``LONGSHOT_TOOLS`` (nothing is built)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "hack" / "go-tools.sh"


def run(tools: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LONGSHOT_TOOLS": str(tools)})


def plant(tools: Path, name: str, script: str) -> Path:
    path = tools / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def kstatus_hash() -> str:
    src = ROOT / "hack" / "kstatus"
    data = b"".join((src / n).read_bytes() for n in ("go.mod", "go.sum", *sorted(
        p.name for p in src.glob("*.go"))))
    return hashlib.sha256(data).hexdigest()[:16]


def test_a_binary_that_is_not_the_pinned_build_fails_the_check(tmp_path: Path) -> None:
    plant(tmp_path, "kind", "echo kind v0.30.0")  # says the right version, but is no Go build of the module
    assert run(tmp_path, "--check", "kind").returncode == 1
    assert run(tmp_path, "--check", "coredns").returncode == 1  # missing


def test_kstatus_is_checked_against_its_sources(tmp_path: Path) -> None:
    plant(tmp_path, "kstatus", f'echo "kstatus {kstatus_hash()} cli-utils v0.37.2"')
    assert run(tmp_path, "--check", "kstatus").returncode == 0
    plant(tmp_path, "kstatus", 'echo "kstatus 0123456789abcdef cli-utils v0.37.2"')  # built from older sources
    assert run(tmp_path, "--check", "kstatus").returncode == 1
    plant(tmp_path, "kstatus", f'echo "kstatus {kstatus_hash()} cli-utils v0.36.0"')
    assert run(tmp_path, "--check", "kstatus").returncode == 1


def test_an_unknown_tool_is_refused(tmp_path: Path) -> None:
    result = run(tmp_path, "kubefed")
    assert result.returncode == 2
    assert "unknown tool kubefed" in result.stderr


def test_skaffold_is_a_known_tool_checked_as_a_build_of_its_wrapper_module(tmp_path: Path) -> None:
    assert run(tmp_path, "--check", "skaffold").returncode == 1  # missing
    plant(tmp_path, "skaffold", "echo v2.16.1")  # says the right version, but is no Go build of hack/skaffold
    assert run(tmp_path, "--check", "skaffold").returncode == 1
    gomod = (ROOT / "hack" / "skaffold" / "go.mod").read_text()
    assert "tool github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold" in gomod
    assert "github.com/GoogleContainerTools/skaffold/v2 v2.16.1" in gomod
    # skaffold's own replace directives at v2.16.1, which `go install pkg@version` would refuse
    for replaced in ("github.com/docker/docker => github.com/docker/docker v27.5.1+incompatible",
                     "github.com/spf13/viper => github.com/spf13/viper v1.19.0"):
        assert f"replace {replaced}" in gomod


def test_kube_router_is_a_known_tool_checked_by_its_module_and_version(tmp_path: Path) -> None:
    """The kind tier's NetworkPolicy engine: pinned at the version the Go module proxy serves, and a cached binary
    that is no Go build of that module at that version is rebuilt, whatever it prints."""
    assert run(tmp_path, "--check", "kube-router").returncode == 1  # missing
    plant(tmp_path, "kube-router", "echo 'Running kube-router version v2.1.0'")
    assert run(tmp_path, "--check", "kube-router").returncode == 1
    script = SCRIPT.read_text()
    assert ('kube-router) echo "github.com/cloudnativelabs/kube-router/v2 v2.1.0 '
            'github.com/cloudnativelabs/kube-router/v2/cmd/kube-router pkg/version.Version"') in script
