"""The configuration check holds a build's URLs to the egress policy: a refused destination stops the build as a
Configuration error naming the field, before any Pod, git or HTTP call; the tracker intake refuses the same way."""

from __future__ import annotations

from typing import Any

import pytest

from fake_kube import FakeKube
from longshot.api import objects
from longshot.controllers import intake
from longshot.core import egress
from longshot.net import guard as gd
from longshot.runtime import preflight

pytestmark = pytest.mark.unit


def a_build(url: str, **spec: Any) -> objects.BuildRequest:
    body = {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": "demo", "namespace": "team-a", "generation": 1},
            "spec": {"request": "r", "repository": {"url": url, "baseBranch": "main"}, **spec}}
    return objects.parse(body, objects.BuildRequest)


def never(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host}: the URL alone should have been refused")


GUARD = gd.Guard(egress.Policy.parse(allowed_hosts="github.com,api.github.com,api.openai.com"), resolve=never)


@pytest.mark.parametrize(("field", "build"), [
    ("spec.repository.url", a_build("https://evil.io/o/r.git")),
    ("spec.repository.url", a_build("http://169.254.169.254/latest/meta-data/")),
    ("spec.agent.baseUrl", a_build("https://github.com/o/r.git",
                                   agent={"backend": "openai", "model": "m", "baseUrl": "http://2852039166/v1"})),
    ("spec.planner.issues.url", a_build("https://github.com/o/r.git", planner={
        "source": "issues", "issues": {"provider": "gitlab", "repository": "7"}})),  # gitlab.com is not listed
])
def test_a_refused_destination_is_a_configuration_stop_naming_the_field(field: str,
                                                                       build: objects.BuildRequest) -> None:
    problem = preflight.check(FakeKube(), build, guard=GUARD)
    assert problem is not None and problem.startswith(f"{field} ") and "egress policy" in problem, problem


def test_a_listed_destination_goes_on_to_the_other_checks() -> None:
    build = a_build("https://github.com/o/r.git", agent={"backend": "openai", "model": "m",
                                                         "baseUrl": "https://api.openai.com/v1"})
    assert preflight.check_egress(GUARD, build) is None


def test_the_tracker_intake_refuses_before_any_request() -> None:
    build = a_build("https://github.com/o/r.git", planner={
        "source": "issues", "issues": {"url": "http://10.0.0.1/api/v4", "provider": "gitlab", "repository": "7"}})
    with pytest.raises(intake.IntakeError) as e:
        intake.read_issues(FakeKube(), build, guard=GUARD)
    assert e.value.failure_class == "Configuration"
    assert e.value.message.startswith("spec.planner.issues.url 'http://10.0.0.1/api/v4' is refused")
