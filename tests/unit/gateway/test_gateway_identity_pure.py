from __future__ import annotations

import base64
import json

import pytest

from longshot.gateway import identity

pytestmark = pytest.mark.unit


def jwt(claims: dict) -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part(claims)}.sig"


@pytest.mark.parametrize("headers, token", [
    ({"Authorization": "Bearer abc"}, "abc"),
    ({"authorization": "bearer  abc "}, "abc"),
    ({"x-api-key": "abc"}, "abc"),
    ({"Authorization": "Basic " + base64.b64encode(b"x-access-token:abc").decode()}, "abc"),
    ({"Authorization": "Basic !!!"}, None),
    ({}, None),
    ({"Authorization": "Bearer " + "a" * (identity.MAX_TOKEN_BYTES + 1)}, None),
])
def test_the_token_comes_from_the_usual_headers(headers, token):
    assert identity.token_from(headers) == token


def test_the_claimed_pod_of_a_token_is_read_only_for_our_audience():
    claims = {"aud": ["longshot-gateway"], "kubernetes.io": {"namespace": "ns", "pod": {"name": "p", "uid": "u"}}}
    assert identity.claimed_pod(jwt(claims), "longshot-gateway") == ("ns", "p", "u")
    assert identity.claimed_pod(jwt({**claims, "aud": ["other"]}), "longshot-gateway") is None
    assert identity.claimed_pod(jwt({"aud": "longshot-gateway"}), "longshot-gateway") is None
    assert identity.claimed_pod("garbage", "longshot-gateway") is None
