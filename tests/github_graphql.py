"""GitHub's GraphQL contract: the pinned, cut-down published schema (tests/fixtures/contracts/github-graphql.graphql,
written by hack/github_graphql_schema.py from @octokit/graphql-schema) and the check of one request against it
(parse, validate the document, coerce the variables), as the unit contract test and the stand-in forge use it."""

from __future__ import annotations

import functools
import json
from typing import Any

import graphql
from graphql.execution.values import get_variable_values

import forge_contract

SCHEMA_FILE = forge_contract.DESCRIPTIONS / "github-graphql.graphql"


@functools.cache
def schema() -> graphql.GraphQLSchema:
    return graphql.build_schema(SCHEMA_FILE.read_text())


def problems(document: str, variables: dict[str, Any] | None = None) -> list[str]:
    """What GitHub's published schema refuses in ``document`` with ``variables`` (empty: accepted)."""
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


def request_problems(body: bytes) -> list[str]:
    """What is wrong with one request body sent to ``POST /graphql`` (a JSON object with ``query`` and
    ``variables``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return ["the body is not JSON"]
    if not isinstance(data, dict) or not isinstance(data.get("query"), str):
        return ["the body has no query"]
    variables = data.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return ["variables is not an object"]
    extra = set(data) - {"query", "variables", "operationName"}
    if extra:
        return [f"unknown keys {sorted(extra)}"]
    return problems(data["query"], variables)
