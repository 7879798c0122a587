"""The model proxy's allowlist (gateway.modelroutes): the build's one provider, exact routes, the raw request
target refused when it could escape or inject, and the request fields read without building the body."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.gateway import modelroutes
from property_budget import examples

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("method", "target", "flavour", "path", "metered"), [
    ("POST", "/model/openai/chat/completions", "openai", "chat/completions", True),
    ("POST", "/model/openai/completions", "openai", "completions", True),
    ("POST", "/model/openai/responses", "openai", "responses", True),
    ("GET", "/model/openai/models", "openai", "models", False),
    ("POST", "/model/anthropic/v1/messages", "anthropic", "v1/messages", True),
    ("POST", "/model/anthropic/v1/messages?beta=true", "anthropic", "v1/messages", True),
    ("POST", "/model/anthropic/v1/messages/count_tokens", "anthropic", "v1/messages/count_tokens", False),
])
def test_the_routes_backends_use_are_served(method, target, flavour, path, metered):
    assert modelroutes.parse_target(method, target) == modelroutes.Route(flavour, path, metered)


@pytest.mark.parametrize(("method", "target", "status"), [
    ("POST", "/model/openai/batches", 404),
    ("DELETE", "/model/openai/files/file-1", 404),
    ("GET", "/model/openai/files", 404),
    ("POST", "/model/openai/chat/completions/", 400),
    ("DELETE", "/model/openai/chat/completions", 405),
    ("GET", "/model/anthropic/v1/messages", 405),
    ("POST", "/model/google/v1/generate", 404),
    ("POST", "/model/openai/..%2F..%2Fcomputemetadata/v1", 400),
    ("POST", "/model/openai/chat%2Fcompletions", 400),
    ("POST", "/model/openai/chat/completions%3Fx=1", 400),
    ("POST", "/model/openai/chat/completions%23", 400),
    ("POST", "/model/openai/%2e%2e/admin", 400),
    ("POST", "/model/openai/%2E%2E/admin", 400),
    ("POST", "/model/openai/../anthropic/v1/messages", 400),
    ("POST", "/model/openai/./chat/completions", 400),
    ("POST", "/model/openai//chat/completions", 400),
    ("POST", "/model/openai/chat\\completions", 400),
    ("POST", "http://evil/model/openai/chat/completions", 400),
])
def test_anything_else_is_refused_with_a_clear_status(method, target, status):
    with pytest.raises(modelroutes.RouteError) as e:
        modelroutes.parse_target(method, target)
    assert e.value.status == status and e.value.message
    if status == 404 and "/model/openai/" in target:
        assert "POST /model/openai/chat/completions" in e.value.message


_ADVERSARIAL = st.lists(st.sampled_from([
    "..", ".", "", "%2e", "%2E", "%2e%2e", "%2F", "%2f", "%3F", "%3f", "%23", "%00", "\\", "#", "?", ";", "@",
    "chat", "completions", "v1", "messages", "openai", "anthropic", "model", "batches", "files", " ", "\n", "é",
    "%252e", "..;", "\t"]), min_size=1, max_size=8)


@settings(max_examples=examples(800), deadline=None)
@given(flavour=st.sampled_from(["openai", "anthropic"]), parts=_ADVERSARIAL,
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_an_accepted_target_is_exactly_a_listed_route(flavour, parts, method):
    target = f"/model/{flavour}/" + "/".join(parts)
    try:
        route = modelroutes.parse_target(method, target)
    except modelroutes.RouteError as e:
        assert e.status in (400, 404, 405)
        return
    assert modelroutes.ROUTES[route.flavour][route.path] == method
    assert target.partition("?")[0] == f"/model/{route.flavour}/{route.path}"


@settings(max_examples=examples(500), deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_no_target_with_escapes_or_dot_segments_is_accepted(text):
    target = "/model/openai/" + text
    try:
        route = modelroutes.parse_target("POST", target)
    except modelroutes.RouteError:
        return
    path = target.partition("?")[0]
    assert "%" not in path and "\\" not in path and "/." not in path and "//" not in path
    assert route.path in modelroutes.ROUTES["openai"]


@pytest.mark.parametrize(("agent", "provider"), [
    ({"backend": "openai"}, "openai"),
    ({"backend": "anthropic"}, "anthropic"),
    ({"backend": "scripted"}, None),
    ({"backend": "command", "command": "claude -p {prompt}"}, "anthropic"),
    ({"backend": "command", "command": "/usr/local/bin/claude -p {prompt}"}, "anthropic"),
    ({"backend": "command", "command": "codex exec {prompt}"}, "openai"),
    ({"backend": "command", "command": "aider --message-file {prompt_file}", "model": "claude-sonnet-4"}, "anthropic"),
    ({"backend": "command", "command": "aider", "baseUrl": "https://api.anthropic.com"}, "anthropic"),
    ({"backend": "command", "command": "aider", "model": "gpt-5"}, "openai"),
])
def test_a_build_has_one_provider(agent, provider):
    assert modelroutes.provider(agent) == provider


def test_the_fields_are_the_top_level_ones_only():
    body = json.dumps({"messages": [{"role": "user", "content": "x", "max_tokens": 1, "model": "cheap"}],
                       "tools": [{"parameters": {"properties": {"stream": True}}}],
                       "model": "gpt-test", "stream": True, "max_tokens": 900}).encode()
    f = modelroutes.read_fields(body)
    assert (f.model, f.stream, f.max_output_tokens, f.has_stream_options) == ("gpt-test", True, 900, False)


def test_max_completion_and_output_tokens_count():
    assert modelroutes.read_fields(b'{"max_completion_tokens": 77}').max_output_tokens == 77
    assert modelroutes.read_fields(b'{"max_output_tokens": 55, "max_tokens": 3}').max_output_tokens == 55


@pytest.mark.parametrize("body", [b"[1, 2]", b'"x"', b"{", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_a_body_that_is_not_an_object_is_refused(body):
    with pytest.raises(modelroutes.BodyError):
        modelroutes.read_fields(body)


def test_a_body_of_countless_containers_is_refused_before_it_is_parsed():
    body = b'{"m":[' + b"[]," * (4 * 1024 * 1024 // 3 - 10) + b"[]]}"
    with pytest.raises(modelroutes.BodyError, match="too many JSON values"):
        modelroutes.read_fields(body)


def test_a_body_of_countless_small_strings_is_refused_before_it_is_parsed():
    # 4 MiB of "ab", is about 840,000 values: 50 MiB of Python strings and list slots if it were parsed
    body = b'{"model": "m", "messages": [' + b'"ab",' * (4 * 1024 * 1024 // 5 - 10) + b'"ab"]}'
    with pytest.raises(modelroutes.BodyError, match="too many JSON values"):
        modelroutes.read_fields(body)


def test_a_large_plain_body_is_read():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 4_000_000}]}).encode()
    assert modelroutes.read_fields(body).model == "m"


@pytest.mark.parametrize(("body", "options"), [
    (b'{"model": "m", "stream": true}', {"include_usage": True}),
    (b'{"stream": true, "stream_options": {"include_usage": false}}  \n', {"include_usage": True}),
    (b"{ }", {"include_usage": True}),
])
def test_usage_is_requested_as_the_last_key(body, options):
    out = modelroutes.with_usage_requested(body, modelroutes.read_fields(body))
    assert json.loads(out)["stream_options"] == options


@pytest.mark.parametrize(("body", "choices"), [
    (b'{"n": 128, "max_tokens": 4000}', 128), (b'{"best_of": 5, "n": 2}', 5), (b'{"n": 2.5}', 3),
    (b'{"n": true}', 1), (b'{"n": "128"}', 1), (b'{"n": 0}', 1), (b"{}", 1),
    (b'{"messages": [{"n": 99}], "n": 3}', 3),
])
def test_n_and_best_of_are_the_choices(body, choices):
    assert modelroutes.read_fields(body).choices == choices


@pytest.mark.parametrize(("route", "body", "key"), [
    (("openai", "chat/completions"), b'{"model": "m", "messages": []}', "max_completion_tokens"),
    (("openai", "completions"), b'{"prompt": "x"} \n', "max_tokens"),
    (("openai", "responses"), b'{"input": "x"}', "max_output_tokens"),
    (("anthropic", "v1/messages"), b"{ }", "max_tokens"),
])
def test_a_call_without_a_maximum_gets_its_apis_own_field(route, body, key):
    out = modelroutes.with_maximum(body, route, modelroutes.read_fields(body), 77)
    data = json.loads(out)
    assert data[key] == 77 and {k: v for k, v in data.items() if k != key} == json.loads(body)


def test_a_maximum_named_larger_is_replaced_without_a_duplicate_key():
    body = b'{"model": "m", "n": 128, "max_tokens": 4000, "max_completion_tokens": null, "messages": ["\xc3\xa9"]}'
    out = modelroutes.with_maximum(body, ("openai", "chat/completions"), modelroutes.read_fields(body), 78)
    assert out.count(b"max_tokens") == 1 and out.count(b"max_completion_tokens") == 1
    assert json.loads(out) == {"model": "m", "n": 128, "max_tokens": 78, "max_completion_tokens": 78,
                               "messages": ["\u00e9"]}
