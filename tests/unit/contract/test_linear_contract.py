"""The Linear client's GraphQL against Linear's schema (tests/fixtures/contracts/linear-schema.graphql, read back by
hack/linear_schema.py from @linear/sdk 98.0.0's generated types): every document of ``runtime.trackers.Linear``
validates, and every request the client makes (list, comment, close) carries variables the schema accepts. The check
itself fails on a misspelled field, an unknown argument, a wrong variable type and a filter field Linear lacks."""

from __future__ import annotations

import hashlib
import json
import re

import graphql
import httpx
import pytest
from graphql.execution.values import get_variable_values

import forge_contract
import hack_modules
from longshot.runtime import trackers

pytestmark = pytest.mark.unit

script = hack_modules.load("linear_schema")
SCHEMA_FILE = forge_contract.DESCRIPTIONS / "linear-schema.graphql"


def schema() -> graphql.GraphQLSchema:
    return graphql.build_schema(SCHEMA_FILE.read_text())


def problems(document: str, variables: dict | None = None) -> list[str]:
    """What Linear's schema refuses in ``document`` with ``variables`` (empty: accepted)."""
    s = schema()
    try:
        ast = graphql.parse(document)
    except graphql.GraphQLError as e:
        return [e.message]
    errors = [e.message for e in graphql.validate(s, ast)]
    if errors:
        return errors
    operation = next(d for d in ast.definitions if isinstance(d, graphql.OperationDefinitionNode))
    coerced = get_variable_values(s, operation.variable_definitions or (), variables or {})
    return [e.message for e in coerced] if isinstance(coerced, list) else []


def test_the_pin_and_the_files_agree():
    sources = json.loads((forge_contract.DESCRIPTIONS / "sources-linear.json").read_text())["linear-schema.graphql"]
    assert (sources["package"], sources["version"]) == ("@linear/sdk", "98.0.0") == (
        script.PACKAGE["package"], script.PACKAGE["version"])
    assert sources["tarball_sha256"] == script.PINNED_SHA256
    header = SCHEMA_FILE.read_text().split("\n\n", 1)[0]
    assert script.PINNED_SHA256 in header and sources["member_sha256"] in header
    assert sources["kept"] == {k: sorted(v[1]) for k, v in script.KEEP.items()}
    # everything kept is in the file, and nothing else
    s = schema()
    for name, (_, keep) in script.KEEP.items():
        kept = s.get_type(name)
        assert kept is not None, name
        if keep:
            assert set(kept.fields) == set(keep), name  # type: ignore[union-attr]
    mine = {n for n in s.type_map if not n.startswith("__")} - {"String", "Int", "Float", "Boolean", "ID"}
    assert mine == set(script.KEEP)


@pytest.mark.parametrize("name", sorted(trackers.LINEAR_DOCUMENTS))
def test_every_document_of_the_client_validates(name):
    assert [e.message for e in graphql.validate(schema(), graphql.parse(trackers.LINEAR_DOCUMENTS[name]))] == []


def answer(request: httpx.Request) -> httpx.Response:
    """A Linear answer of the shape the schema gives, for each of the client's documents."""
    query = json.loads(request.content)["query"]
    page = {"hasNextPage": False, "endCursor": None}
    if "LongshotIssues" in query:
        data: dict = {"issues": {"nodes": [], "pageInfo": page}}
    elif "LongshotComments" in query:
        data = {"issue": {"id": "uuid-1", "comments": {"nodes": [], "pageInfo": page}}}
    elif "LongshotStates" in query:
        data = {"issue": {"id": "uuid-1", "state": {"type": "started"}},
                "workflowStates": {"nodes": [{"id": "st-done", "name": "Done", "type": "completed"}]}}
    elif "LongshotComment(" in query:
        data = {"commentCreate": {"success": True}}
    else:
        data = {"issueUpdate": {"success": True}}
    return httpx.Response(200, json={"data": data})


def test_every_request_of_the_client_keeps_the_schema():
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return answer(request)

    client = trackers.Linear(repository="ENG", token="lin_api_x", transport=httpx.MockTransport(handler))
    with client:
        client.list_issues(["longshot", "ready"])
        client.list_issues()
        client.comment(1, "hello", marker="intake/b/started/1")
        client.close_issue(1)
    assert {re.search(r"(query|mutation) (\w+)", r["query"]).group(2) for r in sent} == {  # type: ignore[union-attr]
        "LongshotIssues", "LongshotComments", "LongshotComment", "LongshotStates", "LongshotClose"}
    for request in sent:
        assert problems(request["query"], request["variables"]) == [], request


@pytest.mark.parametrize(("document", "variables", "why"), [
    ("query { issues { nodes { titel } } }", None, "titel"),
    ("query { issues(team: \"ENG\") { nodes { id } } }", None, "team"),
    ("query Q($f: IssueFilter) { issues(filter: $f) { nodes { id } } }", {"f": {"team": {"name": {"eq": "x"}}}},
     "name"),
    ("query Q($f: IssueFilter) { issues(filter: $f) { nodes { id } } }", {"f": {"assignee": {}}}, "assignee"),
    ("mutation M($id: Int!) { issueUpdate(id: $id, input: {stateId: \"s\"}) { success } }", {"id": 1}, "Int"),
    ("mutation { commentCreate(input: {issue_id: \"u\", body: \"b\"}) { success } }", None, "issue_id"),
])
def test_the_check_catches_what_linear_would_refuse(document, variables, why):
    found = problems(document, variables)
    assert found and any(why in p for p in found), found


def test_the_schema_file_is_not_edited_by_hand():
    text = SCHEMA_FILE.read_text()
    assert text.startswith("# Linear's GraphQL schema, cut down to what Longshot asks (hack/linear_schema.py")
    assert hashlib.sha256(text.encode()).hexdigest()  # the --check run of hack/linear_schema.py compares it whole
