"""``hack/k8s-binaries.sh`` keeps its pins: wrong versions are replaced or refused, downloads are checksummed,
two runs at once leave one consistent cache, and the Go wrapper modules are re-pinned on every run.

Everything runs in a temporary ``LONGSHOT_CACHE`` (never the real ~/.cache/longshot) with small fake binaries
that answer ``--version`` as the real ones do. The download source is a local HTTP server standing in for
dl.k8s.io, the etcd and kwok release pages and get.helm.sh (same paths, same checksum files); the build
source is a fake ``go`` on PATH that implements the few subcommands the script uses.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "hack" / "k8s-binaries.sh"
K8S, ETCD, HELM, KWOK = "v1.34.4", "v3.6.16", "v3.19.0", "v0.7.0"
KUBE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")
ALL = ("etcd", *KUBE, "helm", "kwok")
PINNED = {"etcd": ETCD, "helm": HELM, "kwok": KWOK, **dict.fromkeys(KUBE, K8S)}


def fake_binary(name: str, version: str) -> str:
    """A shell script that reports ``version`` the way the real ``name`` does."""
    line = {
        "etcd": f"etcd Version: {version.removeprefix('v')}\\nGit SHA: fake",
        "kubectl": f"Client Version: {version}\\nKustomize Version: v5.7.1",
        "helm": version,
        "kwok": f"kwok version {version}",
        "kubeadm": version,
    }.get(name, f"Kubernetes {version}")
    return f"#!/bin/sh\nprintf '{line}\\n'\n"


def plant(directory: Path, name: str, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(fake_binary(name, version))
    path.chmod(0o755)
    return path


def reported(path: Path, name: str) -> str:
    args = {"kubectl": ["version", "--client"], "helm": ["version", "--template", "{{.Version}}"],
            "kubeadm": ["version", "-o", "short"]}.get(name, ["--version"])
    return subprocess.run([str(path), *args], capture_output=True, text=True, check=True).stdout


def run(cache: Path, *args: str, sources: str, env: dict[str, str] | None = None,
        path_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "KUBEBUILDER_ASSETS"}
    full.update({"LONGSHOT_CACHE": str(cache), "K8S_BINARIES_SOURCES": sources,
                 # never the real release hosts from a test
                 "K8S_RELEASE_URL": "http://127.0.0.1:9/release"})
    if path_prefix is not None:
        full["PATH"] = f"{path_prefix}:{full['PATH']}"
    full.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=120)


def good_cache(cache: Path, **wrong: str) -> Path:
    """A cache whose binaries all report their pins, except ``wrong`` (``name=version``)."""
    for name in ALL:
        plant(cache / "bin", name, wrong.get(name, PINNED[name]))
    return cache / "bin"


def assert_consistent(bin_dir: Path) -> None:
    for name in ALL:
        assert PINNED[name].removeprefix("v") in reported(bin_dir / name, name), name
    assert not list(bin_dir.glob(".tmp.*")), "temporary files left behind"


# --- version checks --------------------------------------------------------------------------------------------


def test_a_cache_at_the_pinned_versions_is_used_as_it_is(tmp_path: Path) -> None:
    bin_dir = good_cache(tmp_path / "cache")
    check = run(tmp_path / "cache", "--check", sources="")
    result = run(tmp_path / "cache", sources="")
    assert check.returncode == 0, check.stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(bin_dir)
    assert "nothing to do" in result.stderr


def test_a_wrong_version_in_the_cache_is_replaced(tmp_path: Path) -> None:
    # the state issue 9 found: etcd 3.7.3 in the v1.34.4 cache, which pins etcd v3.6.16
    bin_dir = good_cache(tmp_path / "cache", etcd="v3.7.3")
    assets = tmp_path / "assets"
    plant(assets, "etcd", ETCD)

    check = run(tmp_path / "cache", "--check", sources="")
    assert check.returncode == 1
    assert "etcd: reports v3.7.3, pinned v3.6.16" in check.stderr

    result = run(tmp_path / "cache", sources="assets", env={"KUBEBUILDER_ASSETS": str(assets)})
    assert result.returncode == 0, result.stderr
    assert "rejected the cached etcd: reports v3.7.3, pinned v3.6.16" in result.stderr
    assert "etcd Version: 3.6.16" in reported(bin_dir / "etcd", "etcd")
    (rejected,) = (bin_dir / ".rejected").iterdir()
    assert "3.7.3" in reported(rejected, "etcd")
    assert_consistent(bin_dir)
    assert run(tmp_path / "cache", "--check", sources="").returncode == 0


def test_a_wrong_version_with_no_source_is_refused_not_served(tmp_path: Path) -> None:
    bin_dir = good_cache(tmp_path / "cache", kubelet="v1.35.0")
    assets = tmp_path / "assets"
    plant(assets, "kubelet", "v1.33.1")  # a source at the wrong version is not used either

    result = run(tmp_path / "cache", sources="assets", env={"KUBEBUILDER_ASSETS": str(assets)})
    assert result.returncode == 1
    assert result.stdout == ""
    assert "KUBEBUILDER_ASSETS has v1.33.1, pinned v1.34.4; not used" in result.stderr
    assert "could not provide kubelet: missing" in result.stderr
    assert not (bin_dir / "kubelet").exists(), "a wrong kubelet stays executable under its final name"
    assert run(tmp_path / "cache", "--check", sources="").returncode == 1


def test_a_dangling_kubebuilder_link_is_provided_again(tmp_path: Path) -> None:
    bin_dir = good_cache(tmp_path / "cache")
    (bin_dir / "kubectl").unlink()
    (bin_dir / "kubectl").symlink_to(tmp_path / "gone" / "kubectl")
    assets = tmp_path / "assets"
    plant(assets, "kubectl", K8S)
    result = run(tmp_path / "cache", sources="assets", env={"KUBEBUILDER_ASSETS": str(assets)})
    assert result.returncode == 0, result.stderr
    assert (bin_dir / "kubectl").resolve() == assets / "kubectl"
    assert_consistent(bin_dir)


def test_extra_binaries_are_checked_like_the_others(tmp_path: Path) -> None:
    # the kind node image needs kubeadm and kube-proxy too, at the same Kubernetes pin
    bin_dir = good_cache(tmp_path / "cache")
    plant(bin_dir, "kubeadm", "v1.33.0")
    assets = tmp_path / "assets"
    plant(assets, "kubeadm", K8S)
    plant(assets, "kube-proxy", K8S)
    env = {"KUBEBUILDER_ASSETS": str(assets), "K8S_BINARIES_EXTRA": "kubeadm kube-proxy"}
    assert run(tmp_path / "cache", "--check", sources="", env=env).returncode == 1
    result = run(tmp_path / "cache", sources="assets", env=env)
    assert result.returncode == 0, result.stderr
    assert "rejected the cached kubeadm: reports v1.33.0, pinned v1.34.4" in result.stderr
    assert reported(bin_dir / "kubeadm", "kubeadm").strip() == K8S
    assert "Kubernetes v1.34.4" in reported(bin_dir / "kube-proxy", "kube-proxy")
    unknown = run(tmp_path / "cache", sources="", env={"K8S_BINARIES_EXTRA": "kubefed"})
    assert unknown.returncode == 2 and "unknown binary kubefed" in unknown.stderr


# --- downloads -------------------------------------------------------------------------------------------------


@dataclass
class ReleaseServer:
    """dl.k8s.io, the etcd and kwok GitHub releases and get.helm.sh, on one loopback port."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    url: str = ""

    def env(self) -> dict[str, str]:
        return {"K8S_RELEASE_URL": f"{self.url}/release", "ETCD_RELEASE_URL": f"{self.url}/etcd",
                "HELM_RELEASE_URL": f"{self.url}/helm", "KWOK_RELEASE_URL": f"{self.url}/kwok"}


def _tgz(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def releases() -> Iterator[ReleaseServer]:
    srv = ReleaseServer()
    srv.files["/release/stable.txt"] = f"{K8S}\n".encode()
    for name in KUBE:
        data = fake_binary(name, K8S).encode()
        srv.files[f"/release/{K8S}/bin/linux/amd64/{name}"] = data
        srv.files[f"/release/{K8S}/bin/linux/amd64/{name}.sha256"] = _sha(data).encode()
    etcd_tgz = _tgz({f"etcd-{ETCD}-linux-amd64/etcd": fake_binary("etcd", ETCD),
                     f"etcd-{ETCD}-linux-amd64/etcdctl": "#!/bin/sh\n"})
    srv.files[f"/etcd/{ETCD}/etcd-{ETCD}-linux-amd64.tar.gz"] = etcd_tgz
    srv.files[f"/etcd/{ETCD}/SHA256SUMS"] = (
        f"{'0' * 64}  etcd-{ETCD}-darwin-arm64.zip\n{_sha(etcd_tgz)}  etcd-{ETCD}-linux-amd64.tar.gz\n").encode()
    helm_tgz = _tgz({"linux-amd64/helm": fake_binary("helm", HELM), "linux-amd64/LICENSE": ""})
    srv.files[f"/helm/helm-{HELM}-linux-amd64.tar.gz"] = helm_tgz
    srv.files[f"/helm/helm-{HELM}-linux-amd64.tar.gz.sha256sum"] = (
        f"{_sha(helm_tgz)}  helm-{HELM}-linux-amd64.tar.gz\n").encode()
    srv.files[f"/kwok/{KWOK}/kwok-linux-amd64"] = fake_binary("kwok", KWOK).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            srv.hits[self.path] += 1
            body = srv.files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield srv
    server.shutdown()
    server.server_close()


def test_downloads_are_verified_against_the_published_checksums(tmp_path: Path, releases: ReleaseServer) -> None:
    result = run(tmp_path / "cache", sources="download", env=releases.env())
    assert result.returncode == 0, result.stderr
    bin_dir = Path(result.stdout.strip())
    assert_consistent(bin_dir)
    # every checksum file was read
    for name in KUBE:
        assert releases.hits[f"/release/{K8S}/bin/linux/amd64/{name}.sha256"] == 1
    assert releases.hits[f"/etcd/{ETCD}/SHA256SUMS"] == 1
    assert releases.hits[f"/helm/helm-{HELM}-linux-amd64.tar.gz.sha256sum"] == 1


def test_a_download_that_does_not_match_its_checksum_is_refused(tmp_path: Path, releases: ReleaseServer) -> None:
    # a truncated or tampered kube-apiserver, and a helm whose checksum file names another archive
    releases.files[f"/release/{K8S}/bin/linux/amd64/kube-apiserver"] = b"#!/bin/sh\necho Kubernetes v1.34.4\n#x"
    releases.files[f"/helm/helm-{HELM}-linux-amd64.tar.gz.sha256sum"] = f"{'1' * 64}  helm.tgz\n".encode()
    result = run(tmp_path / "cache", sources="download", env=releases.env())
    assert result.returncode == 1
    assert "kube-apiserver: sha256" in result.stderr and "does not match the published" in result.stderr
    assert f"helm-{HELM}-linux-amd64.tar.gz: sha256" in result.stderr
    bin_dir = tmp_path / "cache" / "bin"
    assert not (bin_dir / "kube-apiserver").exists()
    assert not (bin_dir / "helm").exists()
    assert (bin_dir / "kubelet").exists() and (bin_dir / "etcd").exists()  # the rest was installed
    assert not list(bin_dir.glob(".tmp.*"))


def test_a_download_at_the_wrong_version_is_not_installed(tmp_path: Path, releases: ReleaseServer) -> None:
    # a checksum that matches proves only that the file is what the host serves, not that it is the pin
    wrong = fake_binary("kwok", "v0.6.1").encode()
    releases.files[f"/kwok/{KWOK}/kwok-linux-amd64"] = wrong
    result = run(tmp_path / "cache", sources="download", env=releases.env())
    assert result.returncode == 1
    assert "kwok: the new binary reports v0.6.1, pinned v0.7.0; not installed" in result.stderr
    assert not (tmp_path / "cache" / "bin" / "kwok").exists()


def test_two_runs_at_once_leave_one_consistent_cache(tmp_path: Path, releases: ReleaseServer) -> None:
    cache = tmp_path / "cache"
    good_cache(cache, etcd="v3.7.3")  # plus one wrong binary for both runs to notice
    (cache / "bin" / "kubectl").unlink()
    env = {k: v for k, v in os.environ.items() if k != "KUBEBUILDER_ASSETS"}
    env.update({"LONGSHOT_CACHE": str(cache), "K8S_BINARIES_SOURCES": "download", **releases.env()})
    procs = [subprocess.Popen(["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert outs[0][0] == outs[1][0] == f"{cache / 'bin'}\n"
    assert_consistent(cache / "bin")
    # the lock: one run provided the binaries, the other found them ready
    assert releases.hits[f"/etcd/{ETCD}/etcd-{ETCD}-linux-amd64.tar.gz"] == 1
    assert releases.hits[f"/release/{K8S}/bin/linux/amd64/kubectl"] == 1
    assert sum("nothing to do" in e for _, e in outs) == 1, [e for _, e in outs]
    assert len(list((cache / "bin" / ".rejected").iterdir())) == 1


# --- builds: the wrapper modules' pins -------------------------------------------------------------------------

FAKE_GO = r"""#!/usr/bin/env bash
# A stand-in for the go command: `get M@V` requires M V in ./go.mod, `list -m -f {{.Version}} M` prints the
# required version (or $FAKE_GO_RESOLVES), `build ... -o OUT PKG` writes a binary reporting the required version.
set -eu
echo "go $*" >>"$FAKE_GO_LOG"
cmd=$1; shift
case "$cmd" in
  get) mv="$1"; printf 'require %s %s\n' "${mv%@*}" "${mv#*@}" >>go.mod ;;
  list) m="${@: -1}"; if [[ -n "${FAKE_GO_RESOLVES:-}" ]]; then echo "$FAKE_GO_RESOLVES";
        else awk -v m="$m" '$1 == "require" && $2 == m {v=$3} END {print v}' go.mod; fi ;;
  build)
    out=""; while [[ $# -gt 0 ]]; do [[ "$1" == -o ]] && { out=$2; shift; }; shift; done
    v=$(awk '$1 == "require" {v=$3} END {print v}' go.mod)
    printf '#!/bin/sh\nprintf "etcd Version: %s\\n"\n' "${v#v}" >"$out"; chmod +x "$out" ;;
  *) echo "fake go: unexpected $cmd" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def fake_go(tmp_path: Path) -> Path:
    d = tmp_path / "fake-go"
    d.mkdir()
    (d / "go").write_text(FAKE_GO)
    (d / "go").chmod(0o755)
    return d


def test_the_wrapper_module_is_re_pinned_on_every_run(tmp_path: Path, fake_go: Path) -> None:
    cache = tmp_path / "cache"
    bin_dir = good_cache(cache, etcd="v3.7.3")
    # what an older run (or a concurrent one) left: a wrapper go.mod pinning another etcd
    stale = cache / "src" / "etcd" / "go.mod"
    stale.parent.mkdir(parents=True)
    stale.write_text("module longshot.dev/hack/etcd\n\ngo 1.24\nrequire go.etcd.io/etcd/server/v3 v3.7.3\n")
    log = tmp_path / "go.log"
    result = run(cache, sources="build", path_prefix=fake_go, env={"FAKE_GO_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    assert f"go get go.etcd.io/etcd/server/v3@{ETCD}" in log.read_text()
    assert "v3.7.3" not in stale.read_text()
    assert "etcd Version: 3.6.16" in reported(bin_dir / "etcd", "etcd")
    assert_consistent(bin_dir)


def test_a_wrapper_module_that_resolves_another_version_is_refused(tmp_path: Path, fake_go: Path) -> None:
    cache = tmp_path / "cache"
    bin_dir = good_cache(cache)
    (bin_dir / "etcd").unlink()
    log = tmp_path / "go.log"
    result = run(cache, sources="build", path_prefix=fake_go,
                 env={"FAKE_GO_LOG": str(log), "FAKE_GO_RESOLVES": "v3.7.3"})
    assert result.returncode != 0
    assert f"go.mod resolves go.etcd.io/etcd/server/v3 to v3.7.3, pinned {ETCD}" in result.stderr
    assert "go build" not in log.read_text()
    assert not (bin_dir / "etcd").exists()
