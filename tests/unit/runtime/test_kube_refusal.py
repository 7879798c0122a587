"""runtime.kube.refusal: the API server's answer to a write it refused for what was written, bounded."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from longshot.runtime import kube

pytestmark = pytest.mark.unit


def api_error(status: int, body: str | None, reason: str = "Unprocessable Entity") -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = body
    return e


def test_a_refusal_is_the_status_message() -> None:
    body = json.dumps({"kind": "Status", "message": "admission policy 'egress' denied request: spec.repository.url"})
    assert kube.refusal(api_error(422, body)) == "admission policy 'egress' denied request: spec.repository.url"
    assert kube.refusal(api_error(403, json.dumps({"message": "forbidden"}), "Forbidden")) == "forbidden"


def test_anything_else_is_not_a_refusal_and_bodies_are_bounded() -> None:
    assert kube.refusal(api_error(500, "{}")) is None and kube.refusal(api_error(409, "{}")) is None
    assert kube.refusal(ValueError("x")) is None
    assert kube.refusal(api_error(422, "not json")) == "Unprocessable Entity"
    huge = json.dumps({"message": "m", "details": ["x"] * 20_000})  # over the budget: not parsed
    assert kube.refusal(api_error(422, huge)) == "Unprocessable Entity"
    assert len(kube.refusal(api_error(422, json.dumps({"message": "y" * 5000}))) or "") == 1024
