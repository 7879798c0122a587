"""Render the CustomResourceDefinitions from the pydantic models.

The models are the only schema. Pydantic's JSON schema is turned into a Kubernetes *structural* schema:
``$ref``s inlined, ``Optional`` as ``nullable``, titles dropped, nested objects defaulted to ``{}`` so the
API server applies their fields' defaults, CEL rules attached as ``x-kubernetes-validations``.

``python -m longshot crds`` writes ``crds/*.yaml``; a unit test fails when the committed files drift.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from longshot import api
from longshot.api.common import REF_MARKER

_DROP = {"title", "$defs", "additionalProperties"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve every ``$ref`` in ``node`` against ``defs`` (recursively)."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        # the field's own description wins over the model's docstring
        target.update(siblings)
        return _inline(target, defs)
    return {k: _inline(v, defs) for k, v in node.items()}


def _structural(node: Any) -> Any:
    """Rewrite pydantic's JSON schema into what the Kubernetes API server accepts."""
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROP or (k == "additionalProperties" and isinstance(v, dict))}
    if isinstance(node.get("description"), str):
        # docstrings are written for people reading the code; kubectl explain wants one plain paragraph
        node["description"] = " ".join(node["description"].replace("``", "`").split())

    any_of = node.get("anyOf")
    if any_of and any(s.get("type") == "null" for s in any_of):
        rest = [s for s in any_of if s.get("type") != "null"]
        node.pop("anyOf")
        if len(rest) == 1:
            merged = dict(rest[0])
            merged.update(node)
            node = merged
        else:
            node["anyOf"] = rest
        node["nullable"] = True
        if node.get("default", 0) is None:
            node.pop("default")
        return _structural(node)

    if "properties" in node:
        node["type"] = "object"
        required = set(node.get("required", ()))
        props = {}
        for name, sub in node["properties"].items():
            sub = _structural(sub)
            nested_object = sub.get("type") == "object" and "properties" in sub
            if nested_object and name not in required and not sub.get("nullable") and "default" not in sub:
                # pydantic omits defaults made by default_factory; {} lets the API server default inside
                sub["default"] = {}
            elif nested_object and isinstance(sub.get("default"), dict):
                sub["default"] = {}
            props[name] = sub
        node["properties"] = props
        if not node.get("required"):
            node.pop("required", None)

    for key in ("items", "additionalProperties"):
        if key in node:
            node[key] = _structural(node[key])
    if "anyOf" in node:
        node["anyOf"] = [_structural(s) for s in node["anyOf"]]
    return node


def _strip(node: Any, key: str) -> Any:
    """``node`` without ``key`` in any schema node (not in ``properties``, whose keys are field names)."""
    if isinstance(node, list):
        return [_strip(n, key) for n in node]
    if not isinstance(node, dict):
        return node
    return {k: (v if k == "properties" and not isinstance(v, dict) else
                {n: _strip(s, key) for n, s in v.items()} if k == "properties" else _strip(v, key))
            for k, v in node.items() if k != key}


def model_schema(model: type[Any], *, markers: bool = False) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model; with ``markers``, the Secret and ConfigMap
    reference markers (``x-longshot-ref``, read by ``longshot.api.references``) are kept, otherwise dropped (the
    API server does not know the key)."""
    raw = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(_inline(raw, defs))
    return schema if markers else dict(_strip(schema, REF_MARKER))


def render(resource: api.Resource) -> dict[str, Any]:
    """The CustomResourceDefinition of one resource, as a dict."""
    spec = model_schema(resource.spec)
    if resource.spec_rules:
        spec["x-kubernetes-validations"] = [dict(r) for r in resource.spec_rules]
    status = model_schema(resource.status)
    if resource.status_default is not None:
        # applied by the API server on every read from storage: a status subresource drops ``status`` on create
        status["default"] = resource.status_default
    root: dict[str, Any] = {
        "type": "object",
        "description": resource.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource this object represents.",
            },
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if resource.root_rules:
        root["x-kubernetes-validations"] = [dict(r) for r in resource.root_rules]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.crd_name,
            "labels": {"app.kubernetes.io/name": "longshot", "app.kubernetes.io/part-of": "longshot"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": [api.CATEGORY],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in resource.printer_columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER = "# Generated by `python -m longshot crds` from operator/longshot/api. Do not edit.\n"


def dump(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=120, allow_unicode=True)


def filename(resource: api.Resource) -> str:
    return f"{api.GROUP}_{resource.plural}.yaml"


def rendered_files() -> dict[str, str]:
    """File name -> content, for every resource."""
    return {filename(r): dump(render(r)) for r in api.RESOURCES}


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_files().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
