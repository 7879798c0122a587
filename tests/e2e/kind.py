"""The e2e tier on a kind cluster, through pytest-kind: ``LONGSHOT_E2E_CLUSTER=kind`` (or automatically when
the local cluster cannot run here and kind can).

:class:`KindE2ECluster` offers what the tests use of ``longshot.testing.cluster.LocalCluster``: ``kubectl``,
``kubeconfig``, ``bin_dir``, ``workdir``, ``git_root`` and ``git_url``, ``keep_logs`` and ``down``. The
cluster is pytest-kind's ``KindCluster`` with the kind of ``hack/go-tools.sh kind`` (sigs.k8s.io/kind v0.30.0
built from the Go module proxy; or ``$LONGSHOT_KIND``), the node image of ``hack/kind-node-image.sh`` (built
locally from the pinned binaries, no registry) and ``hack/kind/cluster.yaml``; the images are the
archives of ``hack/images.sh`` loaded with ``kind load image-archive``, and the git server is ``git daemon``
in a container of the agent image on kind's Docker network, serving ``git_root`` from the host (as
``hack/demo.sh`` does), so the tests create and inspect repositories on the host exactly as with the local
cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLUSTER_NAME = "longshot-e2e"
GIT_CONTAINER = "longshot-e2e-git"
WORKDIR = Path("/var/tmp/longshot-e2e-kind")
ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONFIG = ROOT / "hack" / "kind" / "cluster.yaml"


def kind_binary() -> str | None:
    """``$LONGSHOT_KIND``, else the kind that ``hack/go-tools.sh kind`` builds (cached), else the one on PATH."""
    if os.environ.get("LONGSHOT_KIND"):
        return os.environ["LONGSHOT_KIND"]
    built = subprocess.run(["bash", str(ROOT / "hack" / "go-tools.sh"), "kind"], capture_output=True, text=True,
                           check=False)
    if built.returncode == 0:
        return built.stdout.strip().splitlines()[-1]
    return shutil.which("kind")


def unavailable() -> str | None:
    """Why a kind cluster cannot be made here, or None when it can."""
    if importlib.util.find_spec("pytest_kind") is None:
        return "pytest-kind is not installed (pip install -e '.[e2e]')"
    if kind_binary() is None:
        return "no kind: `hack/go-tools.sh kind` could not build it and there is none on PATH"
    if shutil.which("docker") is None:
        return "no `docker` on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          check=False)
    if info.returncode != 0 or not info.stdout.strip():
        last = (info.stderr.strip().splitlines() or ["no server version"])[-1]
        return f"no working Docker engine (`docker info`: {last})"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


@dataclass
class KindE2ECluster:
    bin_dir: Path
    images: Sequence[Path]
    agent_image: str
    """Reference of the agent image inside ``images`` (it also runs the git daemon)."""
    name: str = CLUSTER_NAME
    workdir: Path = WORKDIR
    reused: bool = False
    kind: Any = field(default=None, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def git_root(self) -> Path:
        return self.workdir / "git"

    git_url: str = ""
    """``git://<container IP>:9418`` once :meth:`up` ran."""

    def up(self) -> KindE2ECluster:
        from pytest_kind import KindCluster

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.git_root.mkdir(parents=True, exist_ok=True)
        kind_bin = kind_binary()
        assert kind_bin is not None
        node_image = _run("bash", str(ROOT / "hack" / "kind-node-image.sh")).stdout.strip().splitlines()[-1]
        self.kind = KindCluster(self.name, kubeconfig=self.kubeconfig, kind_path=Path(kind_bin),
                                kubectl_path=self.bin_dir / "kubectl", image=node_image)
        self.kind.create(config_file=CLUSTER_CONFIG)
        for archive in self.images:
            _run(kind_bin, "load", "image-archive", "--name", self.name, str(archive))
        self._start_git_daemon()
        return self

    def _start_git_daemon(self) -> None:
        agent = next(a for a in self.images if "agent" in a.name)
        _run("docker", "load", "-i", str(agent))
        _run("docker", "rm", "-f", GIT_CONTAINER, check=False)
        _run("docker", "run", "-d", "--name", GIT_CONTAINER, "--network", "kind", "--user", "0:0",
             "-v", f"{self.git_root}:/git", "--entrypoint", "git", self.agent_image,
             "daemon", "--base-path=/git", "--export-all", "--enable=receive-pack", "--reuseaddr",
             "--informative-errors", "/git")
        ip = _run("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  GIT_CONTAINER).stdout.strip()
        self.git_url = f"git://{ip}:9418"

    def guard(self) -> None:
        """Refuse to run against anything but this kind cluster."""
        config = self.kind_config()
        context = config.get("current-context")
        if context != f"kind-{self.name}":
            raise RuntimeError(f"refusing to run e2e tests against context {context!r}: not kind-{self.name}")

    def kind_config(self) -> dict[str, Any]:
        out = _run(str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", "config", "view", "--raw",
                   "-o", "json").stdout
        return dict(json.loads(out))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, check=check, timeout=timeout)

    def keep_logs(self, destination: Path) -> Path:
        destination.mkdir(parents=True, exist_ok=True)
        kind_bin = kind_binary()
        if kind_bin:
            _run(kind_bin, "export", "logs", "--name", self.name, str(destination / "kind"), check=False)
        return destination

    def down(self) -> None:
        _run("docker", "rm", "-f", GIT_CONTAINER, check=False)
        if self.kind is not None:
            self.kind.delete()
        shutil.rmtree(self.workdir, ignore_errors=True)
