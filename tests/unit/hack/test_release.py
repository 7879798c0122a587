"""``hack/release.py`` (``make release``, ``make push``): what a release is named and where it may go in plain HTTP.

The whole path (images, SBOMs, signatures, a real registry, the install from OCI) is tests/e2e/test_registry_e2e.py.
"""

from __future__ import annotations

import pytest
import yaml

import hack_modules

pytestmark = pytest.mark.unit

rel = hack_modules.load("release")


@pytest.mark.parametrize("version", ["0.1.0", "1.20.3", "0.2.0-rc.1", "0.0.0-e2e.1764300000", "1.0.0+build.5"])
def test_semantic_versions_are_accepted(version: str) -> None:
    assert rel.check_version(version) == version


@pytest.mark.parametrize("version", ["", "v0.1.0", "0.1", "01.0.0", "0.1.0 ", "latest", "0.1.0/../x"])
def test_anything_else_is_refused_naming_the_rule(version: str) -> None:
    with pytest.raises(SystemExit, match="not a semantic version"):
        rel.check_version(version)


@pytest.mark.parametrize("registry", ["ghcr.io/longshot-dev", "127.0.0.1:5000", "localhost:5000/a/b",
                                      "registry.example.com:443/team", "[::1]:5000/x"])
def test_registries_are_host_port_and_path(registry: str) -> None:
    assert rel.check_registry(registry) == registry


@pytest.mark.parametrize("registry", ["https://ghcr.io/x", "ghcr.io/x/", "GHCR.io/x", "ghcr.io x", "", "a/b:c"])
def test_schemes_trailing_slashes_and_odd_names_are_refused(registry: str) -> None:
    with pytest.raises(SystemExit, match="host\\[:port\\]\\[/path\\]"):
        rel.check_registry(registry)


@pytest.mark.parametrize(("registry", "local"), [
    ("127.0.0.1:5000", True), ("127.0.0.53:80/x", True), ("localhost:5000/longshot-dev", True), ("[::1]:5000", True),
    ("ghcr.io/longshot-dev", False), ("10.244.0.1:5000", False), ("localhost.example.com:5000", False),
    ("registry.example.com", False), ("[2001:db8::1]:5000", False),
])
def test_only_a_registry_on_this_machine_is_spoken_to_in_plain_http(registry: str, local: bool) -> None:
    assert rel.is_local(registry) is local


def test_the_chart_defaults_name_the_default_registry_and_a_release_moves_both_images() -> None:
    text = (rel.CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    assert values["operator"]["image"] == {"repository": "ghcr.io/longshot-dev/longshot-operator", "tag": "",
                                           "digest": "", "pullPolicy": "IfNotPresent"}
    assert values["agent"]["image"]["repository"] == "ghcr.io/longshot-dev/longshot-agent"
    assert values["agent"]["image"]["tag"] == ""  # the chart's appVersion: make release sets it to VERSION
    assert rel.chart_values(text, rel.DEFAULT_REGISTRY) == text
    moved = rel.chart_values(text, "127.0.0.1:5000/longshot-dev")
    got = yaml.safe_load(moved)
    assert got["operator"]["image"]["repository"] == "127.0.0.1:5000/longshot-dev/longshot-operator"
    assert got["agent"]["image"]["repository"] == "127.0.0.1:5000/longshot-dev/longshot-agent"
    # nothing else changed, comments (the chart README's source) included
    assert [a for a, b in zip(text.splitlines(), moved.splitlines(), strict=True) if a != b] == [
        "    repository: ghcr.io/longshot-dev/longshot-operator", "    repository: ghcr.io/longshot-dev/longshot-agent"]


def test_a_values_file_that_does_not_name_each_image_once_is_refused() -> None:
    text = (rel.CHART / "values.yaml").read_text()
    with pytest.raises(SystemExit, match="longshot-agent 0 times"):
        rel.chart_values(text.replace("ghcr.io/longshot-dev/longshot-agent", "elsewhere/agent"), "r.example/x")


def test_the_artifacthub_annotation_names_the_released_images() -> None:
    text = (rel.CHART / "Chart.yaml").read_text()
    out = yaml.safe_load(rel.chart_metadata(text, "127.0.0.1:5000/longshot-dev", "0.3.0"))
    images = yaml.safe_load(out["annotations"]["artifacthub.io/images"])
    assert images == [{"name": "longshot-operator", "image": "127.0.0.1:5000/longshot-dev/longshot-operator:0.3.0"},
                      {"name": "longshot-agent", "image": "127.0.0.1:5000/longshot-dev/longshot-agent:0.3.0"}]
