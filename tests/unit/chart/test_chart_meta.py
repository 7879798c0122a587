"""Chart.yaml says true things to ArtifactHub: its CRDs are the operator's, its images the chart's, its CRD example a
valid BuildRequest, its icon a file of the chart, its links documents of this repository."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from longshot import api
from longshot.api import buildrequest

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "longshot"
REPO = "https://github.com/longshot-dev/longshot"


def meta() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "Chart.yaml").read_text()))


def annotation(name: str) -> Any:
    return yaml.safe_load(meta()["annotations"][f"artifacthub.io/{name}"])


def test_the_crds_annotation_lists_the_operator_s_resources() -> None:
    listed = {(c["kind"], c["version"], c["name"]) for c in annotation("crds")}
    assert listed == {(r.kind, api.VERSION, r.crd_name) for r in api.RESOURCES}
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == sorted(
        f"{api.GROUP}_{r.plural}.yaml" for r in api.RESOURCES)


def test_the_crd_example_is_a_valid_build_request() -> None:
    (example,) = annotation("crdsExamples")
    assert (example["apiVersion"], example["kind"]) == (api.API_VERSION, "BuildRequest")
    buildrequest.BuildRequestSpec.model_validate(example["spec"])


def test_the_images_annotation_names_the_chart_s_images_at_its_app_version() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app = meta()["appVersion"]
    assert {i["image"] for i in annotation("images")} == {
        f"{values['operator']['image']['repository']}:{app}", f"{values['agent']['image']['repository']}:{app}"}


def test_the_icon_is_the_chart_s_svg() -> None:
    m = meta()
    assert m["icon"] == "https://raw.githubusercontent.com/longshot-dev/longshot/main/charts/longshot/icon.svg"
    root = ET.parse(CHART / "icon.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox") == "0 0 64 64"


def test_links_maintainers_license_and_changes() -> None:
    m = meta()
    assert m["maintainers"] and all(x["name"] for x in m["maintainers"])
    assert m["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    for link in annotation("links"):
        assert link["url"].startswith(REPO), link
        path = link["url"].removeprefix(REPO).removeprefix("/blob/main/")
        assert not path or (ROOT / path).exists(), link
    assert all(c["kind"] in ("added", "changed", "deprecated", "removed", "fixed", "security") and c["description"]
               for c in annotation("changes"))
