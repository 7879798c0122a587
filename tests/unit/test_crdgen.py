from pathlib import Path

import yaml

from longshot import api
from longshot.api import crdgen

ROOT = Path(__file__).resolve().parents[2]


def schema_of(resource):
    return crdgen.render(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node, path="root"):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def test_committed_crds_equal_the_generator_output():
    for name, text in crdgen.rendered_files().items():
        path = ROOT / "crds" / name
        assert path.exists(), f"{path} missing: run make crds"
        assert path.read_text() == text, f"{path} is stale: run make crds"


def test_schemas_are_structural():
    for resource in api.RESOURCES:
        for path, node in walk(schema_of(resource)):
            assert "$ref" not in node and "title" not in node and "allOf" not in node, path
            if node.get("x-kubernetes-int-or-string"):
                assert "type" not in node, path
            else:
                assert "type" in node, f"{resource.kind} {path} has no type"
            if path != "root.metadata" and node.get("type") == "object":
                assert "properties" in node, path


def test_every_field_has_a_description():
    for resource in api.RESOURCES:
        for path, node in walk(schema_of(resource)):
            if path.endswith("[]") or path == "root.metadata":
                continue
            assert node.get("description"), f"{resource.kind} {path} has no description"
            assert "\n" not in node["description"]


def test_names_printer_columns_and_status_subresource():
    crd = crdgen.render(api.BUILD_REQUEST)
    assert crd["metadata"]["name"] == "buildrequests.longshot.dev"
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["br"] and names["categories"] == ["longshot"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:6] == ["Phase", "Tasks", "Merged", "Ready", "Reason", "Finalized"] and "Age" in columns
    assert [crdgen.render(r)["spec"]["names"]["shortNames"] for r in api.RESOURCES] == [["br"], ["at"], ["mj"]]


def test_enums_bounds_patterns_and_defaults_are_rendered():
    spec = schema_of(api.BUILD_REQUEST)["properties"]["spec"]
    props = spec["properties"]
    assert props["merge"]["properties"]["strategy"]["enum"] == ["fast-forward", "rebase", "merge-commit"]
    workers_max = props["workers"]["properties"]["max"]
    assert (workers_max["minimum"], workers_max["maximum"], workers_max["default"]) == (1, 1000, 4)
    assert props["repository"]["properties"]["url"]["pattern"].startswith("^")
    assert props["workers"]["default"] == {}  # so the API server fills in nested defaults
    assert props["request"]["minLength"] == 1
    assert spec["required"] == ["request", "repository"]
    memory = props["agent"]["properties"]["resources"]["properties"]["limits"]["properties"]["memory"]
    assert memory["x-kubernetes-int-or-string"] is True
    assert props["agent"]["properties"]["model"]["nullable"] is True


def test_cross_field_rules_are_cel_validations():
    spec = schema_of(api.BUILD_REQUEST)["properties"]["spec"]
    rules = {r["fieldPath"]: r for r in spec["x-kubernetes-validations"]}
    assert "roadmapPath" in rules[".planner.roadmapPath"]["message"]
    root = schema_of(api.AGENT_TASK)
    assert "depend on itself" in root["x-kubernetes-validations"][0]["message"]


def test_conditions_are_a_map_list_keyed_by_type():
    status = schema_of(api.MERGE_JOB)["properties"]["status"]
    conds = status["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]
    assert conds["items"]["required"] == ["type", "status"]


def test_rendered_yaml_parses_back():
    for text in crdgen.rendered_files().values():
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


def test_issue_14_fields_are_rendered_with_bounds_defaults_and_rules():
    br = schema_of(api.BUILD_REQUEST)["properties"]
    planner = br["spec"]["properties"]["planner"]["properties"]
    assert (planner["maxIterations"]["minimum"], planner["maxIterations"]["maximum"],
            planner["maxIterations"]["default"]) == (1, 20, 3)
    assert planner["roadmapPath"]["default"] == "ROADMAP.md"
    issues = planner["issues"]
    assert issues["properties"]["provider"]["enum"] == ["github", "gitlab", "jira", "linear"]
    assert issues["required"] == ["repository"]
    assert "owner/name" in issues["x-kubernetes-validations"][0]["message"]
    fanout = br["spec"]["properties"]["fanout"]
    assert fanout["nullable"] is True and fanout["properties"]["judge"]["enum"] == ["reviewer", "compare", "summarize"]
    assert fanout["properties"]["backends"]["items"]["enum"] == ["openai", "anthropic", "command", "scripted"]
    assert (fanout["properties"]["count"]["minimum"], fanout["properties"]["count"]["maximum"]) == (1, 10)
    assert "fanout.count" in fanout["x-kubernetes-validations"][0]["message"]
    assert br["spec"]["properties"]["merge"]["properties"]["requireApproval"]["default"] is False
    assert br["status"]["properties"]["iterations"]["items"]["required"] == ["number"]
    at = schema_of(api.AGENT_TASK)["properties"]
    policy = at["spec"]["properties"]["dependsOnPolicy"]
    assert policy["default"] == {} and policy["properties"]["type"]["enum"] == ["all", "any", "quorum"]
    assert at["spec"]["properties"]["fanout"]["properties"]["count"]["maximum"] == 10
    assert at["spec"]["properties"]["answer"]["maxLength"] == 32768
    assert set(at["status"]["properties"]["fanout"]["properties"]) == {"candidates", "judgeTask", "winner", "reasons",
                                                                     "summary"}
    mj = schema_of(api.MERGE_JOB)["properties"]
    assert mj["spec"]["properties"]["approved"]["default"] is False


def test_iteration_and_progress_printer_columns():
    def columns(resource):
        return {c["name"]: c for c in crdgen.render(resource)["spec"]["versions"][0]["additionalPrinterColumns"]}

    assert columns(api.BUILD_REQUEST)["Iteration"]["jsonPath"] == ".status.iteration"
    assert columns(api.BUILD_REQUEST)["Iteration"].get("priority", 0) == 0
    assert columns(api.AGENT_TASK)["Progress"]["jsonPath"] == ".status.progress.message"
    assert columns(api.AGENT_TASK)["Progress"].get("priority", 0) == 0
