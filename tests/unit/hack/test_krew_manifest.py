"""``hack/krew_manifest.py`` (``make krew-manifest``): a reproducible archive with the launcher, and a manifest
whose every platform names that archive's sha256."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
import yaml

import hack_modules

pytestmark = pytest.mark.unit

krew = hack_modules.load("krew_manifest")


def test_the_archive_is_reproducible_and_holds_the_executable_launcher():
    v = krew.version()
    first, second = krew.archive(v), krew.archive(v)
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"kubectl-longshot", "README.md"}
        assert members["kubectl-longshot"].mode == 0o755 and members["kubectl-longshot"].mtime == krew.EPOCH
        launcher = tar.extractfile("kubectl-longshot").read().decode()
    assert launcher.startswith("#!/bin/sh\n") and 'exec "$python" -m longshot.cli "$@"' in launcher


def test_the_manifest_names_the_archive_and_its_sha256_for_every_platform(tmp_path):
    assert krew.main(["--out", str(tmp_path), "--base-url", "https://example.test/rel/"]) == 0
    v = krew.version()
    data = (tmp_path / f"kubectl-longshot-v{v}.tar.gz").read_bytes()
    text = (tmp_path / "longshot.yaml").read_text()
    assert "{{" not in text
    plugin = yaml.safe_load(text)
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and plugin["kind"] == "Plugin"
    assert plugin["metadata"]["name"] == "longshot" and plugin["spec"]["version"] == f"v{v}"
    assert f"pip install 'longshot-operator[plugin]=={v}'" in plugin["spec"]["caveats"]
    platforms = plugin["spec"]["platforms"]
    assert [(p["selector"]["matchLabels"]["os"], p["selector"]["matchLabels"]["arch"]) for p in platforms] == list(
        krew.PLATFORMS)
    for p in platforms:
        assert p["sha256"] == hashlib.sha256(data).hexdigest()
        assert p["uri"] == f"https://example.test/rel/kubectl-longshot-v{v}.tar.gz"
        assert p["bin"] == "kubectl-longshot" and {f["from"] for f in p["files"]} == {"kubectl-longshot", "README.md"}
