"""The Secret-access admission policy is generated from the models, and misses no reference a CRD carries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from longshot import api
from longshot.api import references
from longshot.api.common import LocalObjectRef, Model, SecretName, names

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / references.POLICY_PATH

# A field that looks like a Secret or ConfigMap reference: by its name, or by a description that says it names one.
NAME_LOOKS_LIKE_A_REF = re.compile(r"(?i)(secret|configmap|config_map)(name|ref)?$|^secretName$")
DESCRIPTION_LOOKS_LIKE_A_REF = re.compile(r"^(The |Name of the |A |An )?(Secret|ConfigMap)\b")


def walk(node: dict[str, Any], path: str) -> Any:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def looks_like_a_ref(path: str, node: dict[str, Any]) -> bool:
    return bool(NAME_LOOKS_LIKE_A_REF.search(path.rsplit(".", 1)[-1])
                or DESCRIPTION_LOOKS_LIKE_A_REF.match(node.get("description", "")))


def crd_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        out.append((crd["spec"]["names"]["kind"],
                    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]))
    return out


def checked_fields() -> dict[str, set[str]]:
    """Kind -> the fields the committed chart policy checks: each field's message names it, and its variable reads
    exactly that field of the object."""
    text = POLICY.read_text()
    out: dict[str, set[str]] = {}
    for chunk in text.split("kind: ValidatingAdmissionPolicy\n")[1:]:
        plural = re.search(r"resources: \[(\w+)\]", chunk)
        assert plural is not None
        kind = next(r.kind for r in api.RESOURCES if r.plural == plural.group(1))
        variables = dict(re.findall(r'- name: (\w+)\n\s+expression: "[^"]*\? object\.([\w.]+) : \'\'"', chunk))
        listed = {var: f"{outer}[].{inner}" for var, outer, inner in re.findall(
            r'- name: (\w+)\n\s+expression: "[^"]*\? object\.([\w.]+)'
            r'\.filter\(i, [^"]*?\)\.map\(i, i\.([\w.]+)\) : \[\]"', chunk)}
        fields = set()
        message = r"messageExpression: \"'([\w.\[\]]+): ' .*?\+ variables\.(\w+)(?:\.join\(', '\))? \+"
        for field, var in re.findall(message, chunk):
            if var in listed:
                assert listed[var] == field, f"{kind} {field}: its message and its variable disagree"
                assert f"variables.{var}.all(n, variables." in chunk and ".name(n).check('get')" in chunk
            else:
                assert variables.get(var) == field, f"{kind} {field}: its message and its variable disagree"
                assert (f"variables.{var} == '' || variables." in chunk
                        and f".name(variables.{var}).check('get')" in chunk)
            fields.add(field)
        out[kind] = fields
    return out


def test_committed_policy_equals_the_generator_output() -> None:
    assert POLICY.read_text() == references.render_policy(), f"{POLICY} is stale: run make crds"


def test_every_reference_is_listed_with_its_kind() -> None:
    refs = {r.field: r.kind for r in references.references(api.BUILD_REQUEST)}
    assert refs == {
        "spec.repository.credentialsSecret": "Secret",
        "spec.planner.issues.credentialsSecret": "Secret",
        "spec.agent.script.name": "ConfigMap",
        "spec.agent.credentialsSecret": "Secret",
        "spec.agent.prompts.name": "ConfigMap",
        "spec.agent.skills[].configMap.name": "ConfigMap",
        "spec.agent.instructions.configMap.name": "ConfigMap",
        "spec.agent.mcpServers[].headersSecretRef.name": "Secret",
        "spec.merge.pullRequest.tokenSecretRef.name": "Secret",
        "spec.intake.tracker.credentialsSecret": "Secret",
        "spec.intake.webhook.name": "Secret",
    }
    assert references.references(api.AGENT_TASK) == [] and references.references(api.MERGE_JOB) == []


def test_the_policy_checks_every_field_of_a_crd_that_looks_like_a_reference() -> None:
    checked = checked_fields()
    assert "spec.merge.pullRequest.tokenSecretRef.name" in checked["BuildRequest"]
    assert "spec.agent.skills[].configMap.name" in checked["BuildRequest"]
    assert "spec.agent.mcpServers[].headersSecretRef.name" in checked["BuildRequest"]
    missed = []
    looked = 0
    for kind, spec in crd_specs():
        for path, node in walk(spec, "spec"):
            if not looks_like_a_ref(path, node):
                continue
            looked += 1
            if path not in checked.get(kind, set()) and f"{path}.name" not in checked.get(kind, set()):
                missed.append(f"{kind} {path}")
    assert looked >= 9, looked  # the walk sees the references (and tokenSecretRef's name)
    assert missed == [], f"fields that look like Secret/ConfigMap references but the admission policy misses: {missed}"


def test_the_walk_fails_on_an_unchecked_reference() -> None:
    """The check above can fail: a reference-shaped field the policy does not list is reported."""
    spec = {"properties": {"cacheConfigMap": {"type": "string", "description": "ConfigMap with the cache."}}}
    hits = [p for p, n in walk(spec, "spec") if looks_like_a_ref(p, n)]
    assert hits == ["spec.cacheConfigMap"]


class _Listed(Model):
    secret: SecretName


class _WithList(Model):
    items: list[_Listed] = Field(default_factory=list, max_length=4)


class _Unbounded(Model):
    items: list[_Listed] = Field(default_factory=list)


class _Nested(Model):
    outer: list[_WithList] = Field(default_factory=list, max_length=4)


class _Marked(Model):
    token: SecretName | None = None
    config: LocalObjectRef | None = Field(default=None, json_schema_extra=names("ConfigMap"))


def test_markers_become_references_and_a_reference_in_a_bounded_list_is_checked_item_by_item() -> None:
    from longshot.api import crdgen

    schema = crdgen.model_schema(_Marked, markers=True)
    assert [r.field for r in references._walk(schema, ("spec",), in_list=False)] == ["spec.token", "spec.config.name"]
    assert "x-longshot-ref" not in str(crdgen.model_schema(_Marked))
    (listed,) = references._walk(crdgen.model_schema(_WithList, markers=True), ("spec",), in_list=False)
    assert (listed.field, listed.variable, listed.in_list) == ("spec.items[].secret", "itemsSecrets", True)
    assert references._value(listed) == ("has(object.spec.items) ? object.spec.items.filter(i, has(i.secret))"
                                         ".map(i, i.secret) : []")
    assert "variables.itemsSecrets.all(n, variables.secrets.name(n).check('get').allowed())" in references._check(
        listed)
    with pytest.raises(ValueError, match=r"spec\.items: a list holding Secret or ConfigMap references needs maxItems"):
        references._walk(crdgen.model_schema(_Unbounded, markers=True), ("spec",), in_list=False)
    with pytest.raises(ValueError, match=r"inside a list inside a list is not supported"):
        references._walk(crdgen.model_schema(_Nested, markers=True), ("spec",), in_list=False)
