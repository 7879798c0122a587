"""A warm sandbox and the gateway (identity.Authenticator.claimed, runner's Gateway.claim): before its claim the
Pod's token opens no door but /v1/claim, which answers nothing until the operator bound an attempt to the Pod; after
it, the Pod is that attempt's caller at once, whatever the identity cache held."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from longshot.agent import errors, runner
from longshot.agent import gateway as agent_gateway
from longshot.api import handoff as ho
from longshot.api import keys
from longshot.gateway import cluster as gcluster
from longshot.gateway import identity

pytestmark = pytest.mark.unit


class FakeCluster:
    def __init__(self) -> None:
        self.pod: dict[str, Any] = {
            "metadata": {"name": "b-warm-1", "namespace": "ns", "uid": "pod-uid",
                         "labels": {keys.WARM_TEMPLATE: "abc", keys.BUILD: "b"},
                         "ownerReferences": [{"kind": "BuildRequest", "name": "b", "uid": "b-uid",
                                              "controller": True}]},
            "status": {"phase": "Running"}}
        self.task: dict[str, Any] = {"metadata": {"name": "b-t", "namespace": "ns", "uid": "task-uid"},
                                     "spec": {"buildRef": {"name": "b"}, "description": "d", "role": "worker"},
                                     "status": {}}
        self.build = {"metadata": {"name": "b", "namespace": "ns"},
                      "spec": {"repository": {"url": "https://x/r.git"}}}
        self.reads = 0

    def review(self, token: str, audience: str) -> gcluster.Review | None:
        return gcluster.Review("ns", "default", "b-warm-1", "pod-uid")

    def get_pod(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        self.reads += 1
        return self.pod

    def get_task(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        return self.task

    def get_build(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        return self.build

    def claim(self, *, record: bool) -> None:
        """What the operator's claim does: the AgentTask becomes the controller; then the attempt's record."""
        self.pod["metadata"]["ownerReferences"] = [{"kind": "AgentTask", "name": "b-t", "uid": "task-uid",
                                                    "controller": True}]
        self.pod["metadata"]["labels"][keys.WARM_CLAIM] = "b-t-a1"
        if record:
            self.task["status"] = {"attempts": [{"number": 1, "pod": "b-t-a1", "podUID": "pod-uid"}]}


HEADERS = {"Authorization": "Bearer t"}


def authenticator(c: FakeCluster) -> identity.Authenticator:
    return identity.Authenticator(c, audience="longshot-gateway", cache_seconds=30,  # type: ignore[arg-type]
                                  identity_cache_seconds=60)


def test_before_its_claim_a_warm_pods_token_opens_no_attempts_door_and_the_claim_waits():
    c = FakeCluster()
    a = authenticator(c)
    with pytest.raises(identity.Denied) as e:
        asyncio.run(a.authenticate(HEADERS))  # git, model, progress, ledger ...: every agent-token route
    assert e.value.status == 403 and "not a Longshot agent Pod" in e.value.message
    review = asyncio.run(a.sandbox(HEADERS))
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) == 3:
            c.claim(record=False)  # claimed, its attempt not recorded yet: still waiting
        if len(slept) == 5:
            c.claim(record=True)

    caller, _ = asyncio.run(a.claimed(review, wait=60, poll=0.2, sleep=sleep))  # type: ignore[misc]
    assert (caller.task, caller.attempt, caller.pod_uid) == ("b-t", 1, "pod-uid") and len(slept) == 5
    assert caller.pod == "b-t-a1"  # its attempt's name: one ledger entry per attempt, as for a cold Pod
    # the refusal cached before the claim is replaced: the attempt's first git call is served at once
    assert asyncio.run(a.authenticate(HEADERS)).task == "b-t"


def test_an_unclaimed_wait_ends_empty_and_a_pod_that_can_never_be_claimed_is_refused():
    c = FakeCluster()
    a = authenticator(c)
    review = asyncio.run(a.sandbox(HEADERS))

    async def no_sleep(s: float) -> None:
        return None

    assert asyncio.run(a.claimed(review, wait=0, poll=0.2, sleep=no_sleep)) is None
    c.pod["metadata"]["labels"] = {}  # neither warm nor an attempt's
    with pytest.raises(identity.Denied) as e:
        asyncio.run(a.claimed(review, wait=0, poll=0.2, sleep=no_sleep))
    assert e.value.status == 403
    c.pod["metadata"]["labels"] = {keys.WARM_TEMPLATE: "abc"}
    c.pod["status"] = {"phase": "Failed"}
    with pytest.raises(identity.Denied):
        asyncio.run(a.claimed(review, wait=0, poll=0.2, sleep=no_sleep))


TASK_INPUT = ho.TaskInput(task="b-t", build="b", namespace="ns", role="worker", description="d",
                          repository_url="https://x/r.git", branch="longshot/ns/b/b-t")


@contextlib.contextmanager
def claim_stand_in(answers: list[tuple[int, dict[str, str]]]) -> Iterator[tuple[str, list[str], list[int]]]:
    """A stand-in for the gateway's /v1/claim answering ``answers`` in turn (status, headers; the task input with
    a 200), then 403: its URL, and the paths and statuses it answered."""
    paths: list[str] = []
    seen: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert self.path.startswith("/v1/claim") and self.headers["Authorization"] == "Bearer pod-token"
            status, headers = answers.pop(0) if answers else (403, {})
            paths.append(self.path)
            seen.append(status)
            body = json.dumps(TASK_INPUT.to_wire()).encode() if status == 200 else b""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths, seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def claim_server() -> Iterator[tuple[str, list[int]]]:
    """A stand-in for the gateway's /v1/claim: 204 twice, then the task input."""
    with claim_stand_in([(204, {}), (204, {}), (200, {})]) as (url, paths, seen):
        yield url, seen
    assert set(paths) <= {"/v1/claim"}


def test_a_runner_with_an_empty_task_input_waits_for_its_claim_and_checks_it_as_the_file(
        tmp_path: Path, claim_server: tuple[str, list[int]]) -> None:
    url, seen = claim_server
    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "task.json").write_text("")  # a warm Pod's downward-API file: its annotation is not there yet
    gw = agent_gateway.Gateway(url=url, token_file=tmp_path / "token")
    task = runner.load_task_input(tmp_path / "task.json", gw, sleep=lambda s: None)
    assert (task.task, task.branch, seen) == ("b-t", "longshot/ns/b/b-t", [204, 204, 200])
    # a refusal is final: the runner exits, the operator deletes the sandbox
    with pytest.raises(errors.ConfigError, match="HTTP 403"):
        runner.load_task_input(tmp_path / "task.json", gw, sleep=lambda s: None)
    # a Pod with a task input (a cold one) never asks
    (tmp_path / "task.json").write_text(json.dumps(TASK_INPUT.to_wire()))
    assert runner.load_task_input(tmp_path / "task.json", gw).task == "b-t" and len(seen) == 4


# --- pre-clone (docs/warm-pools.md, "Pre-clone") ------------------------------------------------------------------

def pre_cloning(c: FakeCluster, *, pre_clone: bool = True) -> FakeCluster:
    """The Pod as the operator makes a warm sandbox (its controller reference with its apiVersion), of a build whose
    pool pre-clones (or not)."""
    c.pod["metadata"]["ownerReferences"][0]["apiVersion"] = "longshot.dev/v1alpha1"
    c.build["metadata"]["uid"] = "b-uid"
    c.build["spec"]["agent"] = {"warmPool": {"size": 2, "preClone": pre_clone}}
    return c


def test_a_warm_sandbox_of_a_pre_cloning_pool_reads_its_builds_repository_and_nothing_else_until_its_claim():
    c = pre_cloning(FakeCluster())
    a = authenticator(c)
    reader = asyncio.run(a.authenticate_reader(HEADERS))
    assert isinstance(reader, identity.Reader)
    assert (reader.namespace, reader.build, reader.pod, reader.build_spec["repository"]["url"]) == (
        "ns", "b", "b-warm-1", "https://x/r.git")
    with pytest.raises(identity.Denied) as e:  # every other door of the agents' port is still closed
        asyncio.run(a.authenticate(HEADERS))
    assert e.value.status == 403
    # after its claim (the identity cache replaced by the claim's wait) it is its attempt, on every door
    c.claim(record=True)
    review = asyncio.run(a.sandbox(HEADERS))
    assert asyncio.run(a.claimed(review, wait=0, poll=0.1)) is not None
    caller = asyncio.run(a.authenticate_reader(HEADERS))
    assert isinstance(caller, identity.Caller) and (caller.task, caller.attempt) == ("b-t", 1)


@pytest.mark.parametrize("change", ["pre_clone_off", "pool_off", "other_build_uid", "no_api_version", "ended",
                                    "deleting", "not_warm", "two_controllers", "build_gone"])
def test_a_pod_is_a_reader_only_as_an_unclaimed_live_warm_sandbox_of_a_pre_cloning_build_of_the_same_uid(change):
    c = pre_cloning(FakeCluster(), pre_clone=change != "pre_clone_off")
    meta = c.pod["metadata"]
    if change == "pool_off":
        c.build["spec"]["agent"]["warmPool"]["size"] = 0
    elif change == "other_build_uid":
        c.build["metadata"]["uid"] = "another-b-uid"  # a build of the same name made again
    elif change == "no_api_version":
        meta["ownerReferences"][0].pop("apiVersion")
    elif change == "ended":
        c.pod["status"] = {"phase": "Succeeded"}
    elif change == "deleting":
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    elif change == "not_warm":
        meta["labels"].pop(keys.WARM_TEMPLATE)
    elif change == "two_controllers":
        meta["ownerReferences"].append({"apiVersion": "v1", "kind": "ReplicaSet", "name": "r", "uid": "u",
                                        "controller": True})
    elif change == "build_gone":
        c.build = None  # type: ignore[assignment]
    with pytest.raises(identity.Denied) as e:
        asyncio.run(authenticator(c).authenticate_reader(HEADERS))
    assert e.value.status == 403


def test_the_pre_clone_header_names_a_namespace_and_a_build_or_nothing():
    assert agent_gateway.pre_clone_target("ns/b") == ("ns", "b")
    assert agent_gateway.pre_clone_target(" team-a/build.v2 ") == ("team-a", "build.v2")
    for bad in ("", "ns", "ns/", "/b", "ns/b/c", "NS/b", "ns/../b", "ns/b;rm", "n" * 64 + "/b", "ns/-b"):
        assert agent_gateway.pre_clone_target(bad) is None, bad


def test_a_runner_in_a_pre_cloning_sandbox_asks_once_without_waiting_then_pre_clones_then_waits(
        tmp_path: Path) -> None:
    answers = [(204, {ho.PRE_CLONE_HEADER: "ns/b"}), (204, {ho.PRE_CLONE_HEADER: "ns/other"}), (200, {})]
    (tmp_path / "token").write_text("pod-token")
    cloned: list[tuple[str, str]] = []
    with claim_stand_in(answers) as (url, seen, _):
        gw = agent_gateway.Gateway(url=url, token_file=tmp_path / "token")
        body = gw.claim(sleep=lambda s: None, pre_clone=lambda ns, b: cloned.append((ns, b)))
    assert json.loads(body)["task"] == "b-t"
    assert seen == ["/v1/claim?wait=0", "/v1/claim", "/v1/claim"]  # only the first does not wait
    assert cloned == [("ns", "b")]  # once, from the first answer
