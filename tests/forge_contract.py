"""The forge contract check (issue 52): every exchange with GitHub's REST API, and every webhook delivery, checked
against GitHub's published descriptions (tests/fixtures/contracts/, cut from the pinned npm packages by
hack/forge_openapi.py) with openapi-core.

What is checked, for an :class:`Exchange` (one request and its answer):

* the operation exists in the description (method and path; a call to any other fails: add it to
  ``hack/forge_openapi.py``'s list and regenerate);
* the request: path and query parameters (types, enums, required ones) and the JSON body against the operation's
  schema (openapi-core), and more strictly than a server would: a query parameter or a body field the operation
  does not name is an error (GitHub ignores unknown fields, so a misspelled one would silently do nothing);
* the answer: a status the operation lists is checked against its schema (headers and body); a status it does
  not list is an error, except GitHub's answers to any call (401, 403, 429 and 5xx: :data:`ANY_CALL`), whose body
  must then be a ``basic-error``. Answers may carry fields the description does not name (GitHub adds fields).

A webhook delivery (:func:`webhook_violations`) is checked against the webhooks description: the event's
headers and its JSON payload.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from openapi_core import Config, OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator

DESCRIPTIONS = Path(__file__).resolve().parent / "fixtures" / "contracts"
API_VERSION = "2022-11-28"
"""The REST API version the descriptions describe (later versions' changes are marked ``x-github-breaking-changes``
in them): a request that names a version must name this one."""
ANY_CALL = frozenset({401, 403, 404, 429, 500, 502, 503, 504})
"""Answers GitHub may give to any call, whether or not the operation lists them (bad credentials, rate limits, a
repository or pull request the token cannot see, outages): their body is checked as a ``basic-error``."""


@dataclass(frozen=True)
class Exchange:
    """One request to a forge API and its answer. ``path`` is relative to the API base (``/repos/o/r/pulls``)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    status: int = 200
    answer: bytes = b""
    answer_headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    """The request's headers (lower-case names)."""

    def __str__(self) -> str:
        q = f"?{urllib.parse.urlencode(self.query)}" if self.query else ""
        return f"{self.method.upper()} {self.path}{q} -> {self.status}"


@dataclass
class Contract:
    """One description, ready to check exchanges against."""

    name: str
    doc: dict[str, Any]
    api: OpenAPI = field(init=False)
    server: str = field(init=False)

    def __post_init__(self) -> None:
        if str(self.doc.get("openapi", "")).startswith("3.0"):
            self.doc = nullable_enums(self.doc)
        # the description itself is validated once, by tests/unit/contract/test_descriptions.py
        self.api = OpenAPI.from_dict(self.doc, config=Config(spec_validator_cls=None))
        self.server = str(self.doc.get("servers", [{"url": "https://api.github.com"}])[0]["url"]).rstrip("/")

    # --- REST ---------------------------------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """The path template and operation object that ``method path`` calls, else None."""
        parts = path.strip("/").split("/")
        for template, item in self.doc.get("paths", {}).items():
            want = template.strip("/").split("/")
            if len(want) == len(parts) and all(w.startswith("{") or w == p for w, p in zip(want, parts, strict=True)):
                op = item.get(method.lower())
                if isinstance(op, dict):
                    return template, op
        return None

    def violations(self, ex: Exchange) -> list[str]:
        """What is wrong with one exchange (empty: it keeps the contract)."""
        found = self.operation(ex.method, ex.path)
        if found is None:
            return [f"{ex}: {ex.method.upper()} {ex.path} is not an operation of {self.name} (add it to "
                    "hack/forge_openapi.py's REST_OPERATIONS if GitHub has it)"]
        template, op = found
        out: list[str] = []
        request = MockRequest(self.server, ex.method.lower(), ex.path, args=list(ex.query),
                              data=ex.body or None, content_type=ex.content_type if ex.body else "")
        try:
            self.api.validate_request(request)
        except OpenAPIError as e:
            out.append(f"{ex}: request: {_detail(e)}")
        out += [f"{ex}: request: {m}" for m in self._strict_request(template, op, ex)]
        version = dict(ex.headers).get("x-github-api-version")
        if version is not None and version != API_VERSION:
            out.append(f"{ex}: request: X-GitHub-Api-Version {version!r}, the description is of {API_VERSION}")
        out += [f"{ex}: answer: {m}" for m in self._answer(request, op, ex)]
        return out

    def _parameters(self, template: str, op: dict[str, Any]) -> list[dict[str, Any]]:
        item = self.doc["paths"][template]
        return [self.deref(p) for p in [*item.get("parameters", []), *op.get("parameters", [])]]

    def _strict_request(self, template: str, op: dict[str, Any], ex: Exchange) -> list[str]:
        out = []
        named = {p["name"] for p in self._parameters(template, op) if p.get("in") == "query"}
        out += [f"query parameter {k!r} is not one the operation takes ({sorted(named)})"
                for k in dict(ex.query) if k not in named]
        if ex.body:
            schema = (self.deref(op.get("requestBody", {})).get("content", {}).get("application/json", {})
                      .get("schema"))
            if schema is None:
                out.append("a JSON body, but the operation takes none")
            else:
                try:
                    out += undeclared(json.loads(ex.body), schema, self)
                except ValueError:
                    out.append("the body is not JSON")
        return out

    def _answer(self, request: MockRequest, op: dict[str, Any], ex: Exchange) -> list[str]:
        listed = {str(k) for k in op.get("responses", {})}
        response = MockResponse(ex.answer, status_code=ex.status, headers=dict(ex.answer_headers),
                                content_type="application/json")
        if str(ex.status) in listed or "default" in listed:
            try:
                self.api.validate_response(request, response)
            except OpenAPIError as e:
                return [_detail(e)]
            return []
        if ex.status in ANY_CALL:
            try:
                body = json.loads(ex.answer)
            except ValueError:
                return ["not JSON"]
            errors = sorted(OAS30Validator(self.deref({"$ref": "#/components/schemas/basic-error"}))
                            .iter_errors(body), key=str)
            return [f"not a basic-error: {e.message}" for e in errors]
        return [f"status {ex.status} is not one the operation answers ({', '.join(sorted(listed))})"]

    def deref(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def check(self, exchanges: Iterable[Exchange]) -> None:
        """AssertionError listing every violation of the exchanges."""
        problems = [v for ex in exchanges for v in self.violations(ex)]
        if problems:
            raise AssertionError(f"{len(problems)} violation(s) of {self.name}:\n" + "\n".join(problems[:40]))

    # --- webhooks -----------------------------------------------------------------------------------------------

    def webhook_violations(self, name: str, headers: Mapping[str, str], body: bytes) -> list[str]:
        """What is wrong with a delivery of webhook ``name`` (``issues-opened``): its headers and payload."""
        hook = self.doc.get("webhooks", {}).get(name, {}).get("post")
        if hook is None:
            return [f"webhook {name} is not in {self.name}"]
        request = _WebhookRequest(name, headers, body)
        try:
            self.api.validate_request(request)  # type: ignore[arg-type]
        except OpenAPIError as e:
            return [f"webhook {name}: {_detail(e)}"]
        return []


class _WebhookRequest(MockRequest):
    """openapi-core's webhook request: a request with the webhook's name."""

    def __init__(self, name: str, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__("", "post", "", headers=dict(headers), data=body, content_type="application/json")
        self.name = name


def undeclared(value: Any, schema: Any, contract: Contract, where: str = "body") -> list[str]:
    """Fields of ``value`` that ``schema`` does not name, where it names its fields (``properties``) and says
    nothing of others: what a client sends must be something the operation takes."""
    schema = contract.deref(schema)
    if not isinstance(schema, dict):
        return []
    variants = [contract.deref(s) for k in ("allOf", "anyOf", "oneOf") for s in schema.get(k, [])]
    if isinstance(value, dict):
        props: dict[str, Any] = dict(schema.get("properties", {}))
        for v in variants:
            if isinstance(v, dict):
                props.update(v.get("properties", {}))
        extra = schema.get("additionalProperties")
        out = []
        for key, item in value.items():
            if key in props:
                out += undeclared(item, props[key], contract, f"{where}.{key}")
            elif props and extra in (None, False):
                out.append(f"{where}.{key} is not a field of the operation's body ({', '.join(sorted(props))})")
            elif isinstance(extra, dict):
                out += undeclared(item, extra, contract, f"{where}.{key}")
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [m for n, item in enumerate(value) for m in undeclared(item, schema["items"], contract, f"{where}[{n}]")]
    return []


def _detail(e: Exception) -> str:
    """The exception's kind and its schema errors by path (not the whole value it quotes)."""
    errors: list[Any] = []
    cause: BaseException | None = e
    while cause is not None and not errors:
        errors = list(getattr(cause, "schema_errors", None) or ())
        cause = cause.__cause__
    if not errors:
        return f"{type(e).__name__}: {str(e)[:600]}"
    shown = []
    for x in errors[:12]:
        where = "/".join(map(str, x.absolute_path)) or "."
        shown.append(f"{where}: {x.message[:200]}")
        shown += [f"  {'/'.join(map(str, c.absolute_path)) or '.'}: {c.message[:160]}" for c in (x.context or [])[:4]]
    said = str(e)
    head = f"{type(e).__name__}: {said}" if len(said) <= 160 else type(e).__name__  # not the whole value it quotes
    return f"{head}: " + "; ".join(shown)


def nullable_enums(node: Any) -> Any:
    """``node`` with ``null`` added to the ``enum`` of each ``nullable: true`` schema (OpenAPI 3.0.3 wants it in the
    enum; GitHub's description means "null or one of these", and GitHub sends ``null``: an issue's
    ``state_reason`` is null while it is open)."""
    if isinstance(node, dict):
        out = {k: nullable_enums(v) for k, v in node.items()}
        if out.get("nullable") is True and isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    if isinstance(node, list):
        return [nullable_enums(v) for v in node]
    return node


@cache
def github() -> Contract:
    """GitHub's REST API (``@octokit/openapi``, cut to what Longshot calls)."""
    return Contract("github-rest.json", json.loads((DESCRIPTIONS / "github-rest.json").read_text()))


@cache
def github_webhooks() -> Contract:
    """GitHub's webhooks (``@octokit/openapi-webhooks``, cut to the intake's events)."""
    return Contract("github-webhooks.json", json.loads((DESCRIPTIONS / "github-webhooks.json").read_text()))


def webhook_violations(event: str, headers: Mapping[str, str], body: bytes) -> list[str]:
    """A GitHub delivery checked against the webhooks description: ``event`` is the ``X-GitHub-Event`` header,
    the payload's ``action`` names the webhook (``issues`` + ``opened`` = ``issues-opened``)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return ["the payload is not JSON"]
    action = payload.get("action") if isinstance(payload, dict) else None
    name = f"{event}-{action}" if action else event
    return github_webhooks().webhook_violations(name, headers, body)
