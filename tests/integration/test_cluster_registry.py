"""The local cluster's node pulls from a registry on this host over plain HTTP (the registry e2e test,
tests/e2e/test_registry_e2e.py): containerd's registry ``config_path`` and the ``hosts.toml`` written under it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from longshot_testing import cluster as lc

pytestmark = pytest.mark.integration


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> lc.LocalCluster:
    monkeypatch.setattr(lc, "_cni_bin_dir", lambda: "/usr/lib/cni")
    c = lc.LocalCluster(bin_dir=tmp_path / "bin", workdir=tmp_path / "cluster")
    (c.workdir / "containerd").mkdir(parents=True)
    (c.workdir / "containerd" / "config.toml").write_text(c.containerd_config())
    return c


def test_containerd_reads_registry_hosts_from_the_work_directory(node: lc.LocalCluster) -> None:
    config = tomllib.loads(node.containerd_config())
    assert config["plugins"]["io.containerd.grpc.v1.cri"]["registry"] == {"config_path": str(node.registry_hosts)}
    assert node.registry_hosts.is_relative_to(node.workdir)


def test_a_loopback_registry_is_trusted_in_plain_http_for_pulls_only(node: lc.LocalCluster) -> None:
    hosts = node.trust_plain_http_registry("127.0.0.1:5000")
    assert hosts == node.registry_hosts / "127.0.0.1:5000" / "hosts.toml"
    assert tomllib.loads(hosts.read_text()) == {
        "server": "http://127.0.0.1:5000", "host": {"http://127.0.0.1:5000": {"capabilities": ["pull", "resolve"]}}}


@pytest.mark.parametrize("hostport", ["10.244.0.1:5000", "registry.example.com:5000", "127.0.0.1.example.com:80"])
def test_any_other_registry_is_refused(node: lc.LocalCluster, hostport: str) -> None:
    with pytest.raises(ValueError, match="plain HTTP only for a registry on this host"):
        node.trust_plain_http_registry(hostport)
    assert not node.registry_hosts.exists()


def test_a_node_started_without_config_path_is_refused_naming_the_fix(node: lc.LocalCluster) -> None:
    config = node.workdir / "containerd" / "config.toml"
    config.write_text(config.read_text().split('  [plugins."io.containerd.grpc.v1.cri".registry]')[0])
    with pytest.raises(lc.ClusterError, match="make cluster-down"):
        node.trust_plain_http_registry("127.0.0.1:5000")
