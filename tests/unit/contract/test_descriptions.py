"""The pinned GitHub descriptions kept with the tests (tests/fixtures/contracts/, issue 52): what hack/forge_openapi.py
pins and keeps, checked without the network: the pins agree, the files are valid OpenAPI, every ``$ref`` resolves in
its file, and each file is exactly what the script keeps of itself (trimming it again changes nothing)."""

from __future__ import annotations

import json
import re

import pytest
from openapi_spec_validator import validate

import forge_contract
import hack_modules

pytestmark = pytest.mark.unit

script = hack_modules.load("forge_openapi")
HERE = forge_contract.DESCRIPTIONS


def load(name: str) -> dict:
    return json.loads((HERE / name).read_text())


def test_the_pins_recorded_with_the_files_are_the_scripts():
    sources = load("sources.json")["descriptions"]
    assert set(sources) == set(script.PACKAGES) == {"github-rest.json", "github-webhooks.json"}
    for name, pin in script.PACKAGES.items():
        for key in ("package", "version", "sha256", "integrity", "member"):
            assert sources[name][key] == pin[key], (name, key)
    assert (sources["github-rest.json"]["package"], sources["github-rest.json"]["version"]) == (
        "@octokit/openapi", "23.0.2")
    assert (sources["github-webhooks.json"]["package"], sources["github-webhooks.json"]["version"]) == (
        "@octokit/openapi-webhooks", "12.1.0")
    assert sources["github-rest.json"]["operations"] == [f"{m.upper()} {p}" for m, p in script.REST_OPERATIONS]
    assert sources["github-webhooks.json"]["webhooks"] == list(script.WEBHOOKS)
    assert "MIT" in (HERE / "LICENSE.octokit-openapi").read_text()


@pytest.mark.parametrize("name", ["github-rest.json", "github-webhooks.json"])
def test_each_kept_description_is_valid_openapi_and_every_ref_resolves_in_it(name):
    doc = load(name)
    validate(doc)  # openapi-spec-validator: 3.0.3 and 3.1.0, by the document's own version
    for ref in set(script.refs(doc)):
        script.resolve(doc, ref)  # NotInDescription if the closure missed one


def test_the_rest_description_is_exactly_what_the_script_keeps():
    doc = load("github-rest.json")
    assert script.trim(doc, script.REST_OPERATIONS) == doc  # nothing more, nothing less
    kept = {(m, p) for p, item in doc["paths"].items() for m in item if m in ("get", "put", "post", "patch", "delete")}
    assert kept == set(script.REST_OPERATIONS)
    assert doc["openapi"] == "3.0.3" and doc["info"]["version"] == "23.0.2"


def test_the_webhooks_description_is_exactly_what_the_script_keeps():
    doc = load("github-webhooks.json")
    assert script.trim(doc, (), script.WEBHOOKS) == doc
    assert set(doc["webhooks"]) == set(script.WEBHOOKS) and doc["openapi"] == "3.1.0"


def test_trimming_refuses_what_the_description_does_not_have():
    doc = load("github-rest.json")
    with pytest.raises(script.NotInDescription, match=re.escape("DELETE /repos/{owner}/{repo}/pulls")):
        script.trim(doc, [("delete", "/repos/{owner}/{repo}/pulls")])
    with pytest.raises(script.NotInDescription, match="webhook push"):
        script.trim(load("github-webhooks.json"), (), ["push"])


def test_trimming_keeps_the_closure_and_leaves_media_type_examples_out():
    doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {
        "/a": {"get": {"responses": {"200": {"description": "ok", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/A"}, "examples": {"x": {"$ref": "#/components/examples/x"}}}}}}},
               "post": {"responses": {"200": {"description": "ok"}}}},
        "/b": {"get": {"responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": {"A": {"type": "object", "properties": {
            "examples": {"$ref": "#/components/schemas/B"}}},  # a property named examples stays
            "B": {"type": "string"}, "Unused": {"type": "integer"}}, "examples": {"x": {"value": 1}}}}
    out = script.trim(doc, [("get", "/a")])
    assert list(out["paths"]) == ["/a"] and list(out["paths"]["/a"]) == ["get"]
    assert out["components"] == {"schemas": {"A": doc["components"]["schemas"]["A"], "B": {"type": "string"}}}
    assert "examples" not in out["paths"]["/a"]["get"]["responses"]["200"]["content"]["application/json"]


READS = {
    "pull-request": {"number", "html_url", "state", "merged", "merged_at", "merge_commit_sha", "head", "mergeable",
                     "mergeable_state"},
    "pull-request-simple": {"number"},
    "pull-request-review": {"id", "user", "state", "body", "commit_id", "author_association"},
    "review-comment": {"body", "path", "line", "original_line"},
    "issue": {"number", "title", "body", "labels", "html_url", "assignees", "assignee", "milestone", "user",
              "author_association", "pull_request"},
    "issue-comment": {"body"},
    "pull-request-merge-result": {"merged", "sha", "message"},
}
"""The fields of GitHub's objects that runtime/forge.py and runtime/trackers.py read."""


def test_what_newer_api_versions_remove_from_what_longshot_reads_is_known():
    """The description is of API version 2022-11-28 (the clients send ``X-GitHub-Api-Version: 2022-11-28``) and
    marks what later versions change (``x-github-breaking-changes``). 2026-03-10 removes a pull request's
    ``merge_commit_sha``, which the forge client reads for a pull request a person merged, and an issue's singular
    ``assignee`` (the tracker reads ``assignees`` first). A newer description that removes more of what Longshot
    reads fails here: read its changes before moving the clients to that version."""
    schemas = load("github-rest.json")["components"]["schemas"]
    removed = set()
    for name, fields in READS.items():
        for change in schemas[name].get("x-github-breaking-changes", []):
            gone = {k for k, v in change.get("patch", {}).get("properties", {}).items() if v is None}
            removed |= {(change["version"], name, f) for f in gone & fields}
    assert removed == {("2026-03-10", "pull-request", "merge_commit_sha"), ("2026-03-10", "issue", "assignee")}
