"""The web console on a real API server (docs/console.md): the console watches with its own least-privilege
ServiceAccount (list and watch of the three kinds), people connect with their own tokens (ServiceAccounts with
different RoleBindings, tokens from TokenRequest), and every write is made with the person's token so the API
server's RBAC decides. Live changes reach 20 viewers of a 50-task build; hostile fields come out escaped; and, where
Debian's chromium is installed, a real headless browser draws the page, and in it a person answers, approves and
sees a change without a reload, and another sees the API server's refusal (LONGSHOT_SCREENSHOTS=dir: the views'
pictures, for docs/console.md)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kubernetes
import pytest
from k8s_builders import GROUP, VERSION, build, create, get, merge_job, task

from longshot.console import people, server
from longshot.console.settings import ConsoleSettings
from longshot.core import ledger
from longshot_testing.controlplane import wait_until

pytestmark = pytest.mark.integration

KINDS_RULE = {"apiGroups": [GROUP], "resources": ["buildrequests", "agenttasks", "mergejobs"]}


# --- people and the console -------------------------------------------------------------------------------


def _token(core_v1: kubernetes.client.CoreV1Api, namespace: str, account: str) -> str:
    body = {"spec": {"expirationSeconds": 3600}}
    return str(core_v1.create_namespaced_service_account_token(account, namespace, body).status.token)


@dataclass
class Cluster:
    api: kubernetes.client.ApiClient
    core: kubernetes.client.CoreV1Api
    rbac: kubernetes.client.RbacAuthorizationV1Api
    cleanup: list[Callable[[], object]] = field(default_factory=list)

    def account(self, namespace: str, name: str) -> None:
        self.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})

    def grant(self, namespace: str, account_ns: str, account: str, rules: list[dict[str, Any]]) -> None:
        role = f"{account}-{account_ns}"[:63]
        self.rbac.create_namespaced_role(namespace, {"metadata": {"name": role}, "rules": rules})
        self.rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": role}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                    "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_ns}]})

    def token(self, namespace: str, account: str) -> str:
        return _token(self.core, namespace, account)


@pytest.fixture
def cluster(api_client: kubernetes.client.ApiClient, core_v1: kubernetes.client.CoreV1Api) -> Iterator[Cluster]:
    c = Cluster(api_client, core_v1, kubernetes.client.RbacAuthorizationV1Api(api_client))
    yield c
    for undo in reversed(c.cleanup):
        with contextlib.suppress(kubernetes.client.ApiException):
            undo()


def console_account(c: Cluster, namespaces: list[str]) -> kubernetes.client.ApiClient:
    """The console's own account, as the chart grants it: list and watch of the three kinds, nothing else (a
    ClusterRole bound in each watched namespace); a client that holds only its token."""
    name = "longshot-console-" + hashlib.sha1(",".join(namespaces).encode()).hexdigest()[:8]
    home = namespaces[0]
    c.account(home, "console")
    c.rbac.create_cluster_role({"metadata": {"name": name}, "rules": [{**KINDS_RULE, "verbs": ["list", "watch"]}]})
    c.cleanup.append(lambda: c.rbac.delete_cluster_role(name))
    for ns in namespaces:
        c.rbac.create_namespaced_role_binding(ns, {
            "metadata": {"name": "longshot-console"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "console", "namespace": home}]})
    return endpoint(c).client(c.token(home, "console"), timeout=(5.0, 300.0))


def endpoint(c: Cluster) -> people.Endpoint:
    return people.Endpoint.of(c.api.configuration)


@contextlib.asynccontextmanager
async def running_console(c: Cluster, namespaces: list[str], **settings: Any) -> AsyncIterator[tuple[server.Console,
                                                                                                   str]]:
    console = server.Console(ConsoleSettings(port=0, namespaces=",".join(namespaces), **settings), endpoint(c))
    served = await server.serve(console, console_account(c, namespaces))
    try:
        await until(lambda: console.ready, 30, "the console's lists")
        yield console, f"http://127.0.0.1:{served.port}"
    finally:
        await served.cleanup()


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Viewer:
    """One person's live stream: the snapshot, then each change with the time it arrived."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token
        self.snapshot: dict[str, Any] | None = None
        self.changes: list[tuple[float, dict[str, Any]]] = []
        self.others: list[tuple[str, dict[str, Any]]] = []
        self.raw = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.status = 0

    async def start(self) -> None:
        self.task = asyncio.create_task(self._read())
        await until(lambda: self.snapshot is not None or self.status >= 400, 30, "the snapshot")

    async def _read(self) -> None:
        async with self.http.get(self.base + "/api/events",
                                 headers={"Authorization": f"Bearer {self.token}"}) as r:
            self.status = r.status
            if r.status != 200:
                return
            buffer = b""
            async for chunk in r.content.iter_any():
                self.raw += chunk
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    lines = block.decode().split("\n")
                    event = next((x[7:] for x in lines if x.startswith("event: ")), "")
                    data = next((x[6:] for x in lines if x.startswith("data: ")), "")
                    if event == "snapshot":
                        self.snapshot = json.loads(data)
                    elif event == "change":
                        self.changes.append((time.monotonic(), json.loads(data)))
                    elif event in ("namespace", "forget"):
                        self.others.append((event, json.loads(data)))

    def names(self) -> set[tuple[str, str, str]]:
        assert self.snapshot is not None
        return {(o["kind"], o["namespace"], o["name"]) for o in self.snapshot["objects"]}

    def seen(self, kind: str, ns: str, name: str, test: Callable[[dict[str, Any]], bool]) -> float | None:
        for at, change in self.changes:
            if (change["kind"], change["namespace"], change["name"]) == (kind, ns, name) and change["object"] and \
                    test(change["object"]):
                return at
        return None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def act(http: aiohttp.ClientSession, base: str, token: str, path: str,
              body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{base}/api/act/{path}", json=body or {},
                         headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


def set_status(custom: kubernetes.client.CustomObjectsApi, ns: str, plural: str, name: str,
               status: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, plural, name, {"status": status})


READ = {**KINDS_RULE, "verbs": ["get", "list", "watch"]}
WRITE = {**KINDS_RULE, "verbs": ["get", "list", "watch", "patch"]}


@pytest.fixture
def two_teams(cluster: Cluster, namespace: str, another_namespace: Callable[[str], str],
              custom: kubernetes.client.CustomObjectsApi) -> dict[str, Any]:
    """Namespace A (``namespace``) and B: alice may read and patch in A, and read ledger entries there; bob may only
    read A; carol is a ServiceAccount with no rights. A build with tasks and a MergeJob in each namespace."""
    a, b = namespace, another_namespace("console-b")
    for person in ("alice", "bob", "carol"):
        cluster.account(a, person)
    cluster.grant(a, a, "alice", [WRITE, {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])
    cluster.grant(a, a, "bob", [READ])
    for ns in (a, b):
        create(custom, ns, build("b1"))
        create(custom, ns, task("t1"))
        create(custom, ns, task("t2", dependsOn=["t1"]))
        create(custom, ns, merge_job("m1"))
    return {"a": a, "b": b, "alice": cluster.token(a, "alice"), "bob": cluster.token(a, "bob"),
            "carol": cluster.token(a, "carol")}


async def test_each_person_sees_only_the_namespaces_they_may_list(
        cluster: Cluster, two_teams: dict[str, Any], custom: kubernetes.client.CustomObjectsApi) -> None:
    a, b = two_teams["a"], two_teams["b"]
    async with running_console(cluster, [a, b]) as (_, base), aiohttp.ClientSession() as http:
        alice, carol = Viewer(http, base, two_teams["alice"]), Viewer(http, base, two_teams["carol"])
        await alice.start()
        await carol.start()
        try:
            assert alice.names() == {("BuildRequest", a, "b1"), ("AgentTask", a, "t1"), ("AgentTask", a, "t2"),
                                     ("MergeJob", a, "m1")}
            assert alice.snapshot is not None and alice.snapshot["user"] == f"system:serviceaccount:{a}:alice"
            assert carol.names() == set()  # a person who may list nothing sees nothing
            # a change in B never reaches alice; the one in A after it does (so B's had its chance to arrive)
            set_status(custom, b, "agenttasks", "t1", {"phase": "Running"})
            set_status(custom, a, "agenttasks", "t1", {"phase": "Running"})
            await until(lambda: alice.seen("AgentTask", a, "t1", lambda o: o["phase"] == "Running"), 30, "A's change")
            assert all(change["namespace"] == a for _, change in alice.changes)
            assert carol.changes == []
            t2 = next(o for o in alice.snapshot["objects"] if o["name"] == "t2" and o["kind"] == "AgentTask")
            assert t2["dependsOn"] == ["t1"] and t2["build"] == "b1"
        finally:
            await alice.stop()
            await carol.stop()
        # a token the API server does not accept is refused at the door
        async with http.get(base + "/api/events", headers={"Authorization": "Bearer not-a-token"}) as r:
            assert r.status == 401


async def test_a_right_granted_or_revoked_while_watching_shows_or_takes_back_the_namespace(
        cluster: Cluster, two_teams: dict[str, Any], custom: kubernetes.client.CustomObjectsApi) -> None:
    a, b = two_teams["a"], two_teams["b"]
    async with running_console(cluster, [a, b], access_cache_seconds=0) as (console, base), \
            aiohttp.ClientSession() as http:
        alice = Viewer(http, base, two_teams["alice"])
        await alice.start()
        try:
            assert {ns for _, ns, _ in alice.names()} == {a}
            cluster.grant(b, a, "alice", [READ])
            counter = iter(range(10_000))

            def b_arrived() -> bool:  # each poll writes a change in B: the next one after RBAC has the binding shows B
                set_status(custom, b, "mergejobs", "m1", {"phase": f"Poll{next(counter)}"})
                return any(event == "namespace" and data["namespace"] == b for event, data in alice.others)

            await until(b_arrived, 30, "namespace B to arrive whole")
            (whole,) = [data for event, data in alice.others if event == "namespace"]
            assert {(o["kind"], o["name"]) for o in whole["objects"]} == {
                ("BuildRequest", "b1"), ("AgentTask", "t1"), ("AgentTask", "t2"), ("MergeJob", "m1")}
            cluster.rbac.delete_namespaced_role_binding(f"alice-{a}"[:63], b)

            def b_forgotten() -> bool:
                set_status(custom, b, "mergejobs", "m1", {"phase": f"Poll{next(counter)}"})
                return any(event == "forget" and data["namespace"] == b for event, data in alice.others)

            await until(b_forgotten, 30, "namespace B to be taken back")
            seen_b = len([c for _, c in alice.changes if c["namespace"] == b])
            # a change in B after that reaches the console's view, then one in A reaches alice: B's never did
            set_status(custom, b, "mergejobs", "m1", {"phase": "AfterRevoke"})
            await until(lambda: console.view.objects[("MergeJob", b, "m1")]["phase"] == "AfterRevoke", 30,
                        "B's change in the view")
            set_status(custom, a, "mergejobs", "m1", {"phase": "MarkA"})
            await until(lambda: alice.seen("MergeJob", a, "m1", lambda o: o["phase"] == "MarkA"), 30, "A's change")
            assert len([c for _, c in alice.changes if c["namespace"] == b]) == seen_b
        finally:
            await alice.stop()


async def test_writes_are_made_with_the_persons_token_and_rbac_decides(
        cluster: Cluster, two_teams: dict[str, Any], custom: kubernetes.client.CustomObjectsApi) -> None:
    a, b, alice, bob = two_teams["a"], two_teams["b"], two_teams["alice"], two_teams["bob"]
    set_status(custom, a, "agenttasks", "t1", {"phase": "AwaitingInput", "question": "which port?"})
    set_status(custom, a, "mergejobs", "m1", {"phase": "AwaitingApproval"})
    async with running_console(cluster, [a, b]) as (_, base), aiohttp.ClientSession() as http:
        # alice, in A: every action, each one a patch the API server accepted as her
        assert await act(http, base, alice, f"{a}/BuildRequest/b1/suspend") == (
            200, {"done": "buildrequest/b1 suspended (no new agent Pod starts; running ones finish)"})
        assert get(custom, a, "buildrequests", "b1")["spec"]["suspend"] is True
        status, said = await act(http, base, alice, f"{a}/BuildRequest/b1/resume")
        assert status == 200 and get(custom, a, "buildrequests", "b1")["spec"]["suspend"] is False, said
        status, said = await act(http, base, alice, f"{a}/AgentTask/t1/answer", {"text": "8080"})
        assert status == 200 and get(custom, a, "agenttasks", "t1")["spec"]["answer"] == "8080", said
        status, said = await act(http, base, alice, f"{a}/MergeJob/m1/approve")
        assert status == 200 and get(custom, a, "mergejobs", "m1")["spec"]["approved"] is True, said
        status, said = await act(http, base, alice, f"{a}/AgentTask/t2/relaunch", {"model": "other-model"})
        spec = get(custom, a, "agenttasks", "t2")["spec"]
        assert status == 200 and spec["retryToken"].startswith("cli-") and spec["agent"]["model"] == "other-model"
        status, said = await act(http, base, alice, f"{a}/AgentTask/t2/cancel")
        assert status == 200 and get(custom, a, "agenttasks", "t2")["spec"]["cancel"] is True, said
        status, said = await act(http, base, alice, f"{a}/AgentTask/t1/suspend")
        assert status == 200 and get(custom, a, "agenttasks", "t1")["spec"]["suspend"] is True, said
        # a message goes only to a running attempt (kubectl longshot say's own rule), then lands on the task as hers
        status, said = await act(http, base, alice, f"{a}/AgentTask/t1/message", {"text": "hello"})
        assert status >= 400 and "no running attempt" in said["error"], said
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, a, "agenttasks", "t1", {"status": {
            "phase": "Running", "attempts": [{"number": 1, "pod": "t1-a1", "startTime": "2026-11-28T12:00:00Z"}]}})
        status, said = await act(http, base, alice, f"{a}/AgentTask/t1/message", {"text": "use 8080",
                                                                                   "interrupt": True})
        assert status == 200 and "interrupt #1 sent to attempt 1" in said["done"], said
        sent = get(custom, a, "agenttasks", "t1")["spec"]["messages"]
        assert [(m["id"], m["text"], m.get("interrupt"), m["author"]) for m in sent] == [
            (1, "use 8080", True, f"system:serviceaccount:{a}:alice")]

        # bob may read A but not patch: the API server refuses, naming him; nothing changed
        status, said = await act(http, base, bob, f"{a}/AgentTask/t1/resume")
        assert status == 403 and f"system:serviceaccount:{a}:bob" in said["error"], said
        assert get(custom, a, "agenttasks", "t1")["spec"]["suspend"] is True
        # alice has no rights in B: the console does not stop her, the API server does
        status, said = await act(http, base, alice, f"{b}/BuildRequest/b1/suspend")
        assert status == 403 and f"system:serviceaccount:{a}:alice" in said["error"], said
        assert not get(custom, b, "buildrequests", "b1")["spec"].get("suspend")
        # a malformed action is refused before any call
        status, said = await act(http, base, alice, f"{a}/MergeJob/m1/answer", {"text": "x"})
        assert status == 400 and "applies to AgentTask" in said["error"]
        async with http.post(f"{base}/api/act/{a}/AgentTask/t1/cancel", data="{}",
                             headers={"Authorization": f"Bearer {alice}", "Content-Type": "text/plain"}) as r:
            assert r.status == 415  # a form post from another site cannot be JSON without a preflight


async def test_transcripts_are_read_with_the_persons_rights(
        cluster: Cluster, two_teams: dict[str, Any], custom: kubernetes.client.CustomObjectsApi) -> None:
    a = two_teams["a"]
    pod = "t1-a1"
    entry = ledger.entry_name(pod)
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in ({"type": "text", "text": "<b>hi</b>\x1b[2J"},
                                                               {"type": "tool", "name": "bash"}))
    cluster.core.create_namespaced_config_map(a, {"metadata": {"name": entry}, "binaryData": {
        ledger.TRANSCRIPT_KEY: base64.b64encode(gzip.compress(lines)).decode()},
        "data": {ledger.RESULT_KEY: json.dumps({"number": 1, "exitReason": "done"})}})
    attempt = {"number": 1, "pod": pod, "startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-01T00:01:00Z",
               "ledger": entry}
    set_status(custom, a, "agenttasks", "t1", {"attempts": [attempt]})
    async with running_console(cluster, [a]) as (_, base), aiohttp.ClientSession() as http:
        url = f"{base}/api/transcript/{a}/t1?attempt=1&source=ledger"
        async with http.get(url, headers={"Authorization": f"Bearer {two_teams['alice']}"}) as r:
            raw = await r.text()
            assert r.status == 200, raw
            data = json.loads(raw)
        assert [e["type"] for e in data["events"]] == ["text", "tool"] and data["result"]["exitReason"] == "done"
        assert "<" not in raw and "\x1b" not in raw  # escaped for the page
        async with http.get(url, headers={"Authorization": f"Bearer {two_teams['bob']}"}) as r:
            said = await r.json()
            assert r.status == 403 and "configmaps" in said["error"], said  # bob may not read ledger entries


class Follower:
    """One followed transcript (``/api/follow``): its status, then its events in order."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.status = 0
        self.error: dict[str, Any] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.closed = False
        self.task = asyncio.create_task(self._read(http, url, token))

    async def _read(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            if r.status != 200:
                self.error = await r.json()
                self.status = r.status
                return
            self.status = r.status
            buffer = b""
            async for chunk in r.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    lines = block.decode().split("\n")
                    event = next((x[7:] for x in lines if x.startswith("event: ")), "")
                    data = next((x[6:] for x in lines if x.startswith("data: ")), "")
                    if event:
                        self.events.append((event, json.loads(data)))
        self.closed = True

    def lines(self) -> list[str]:
        return [data["text"] for event, data in self.events if event == "line"]

    async def leave(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_a_running_attempts_log_streams_to_the_page_then_its_result(
        control_plane: Any, cluster: Cluster, namespace: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    """The API server proxies a real growing Pod log (a kubelet's log endpoint, log_kubelet.py): each line appended
    reaches the viewer in order, cleaned; the attempt's end ends the stream with its result; a person without
    ``pods/log`` gets the API server's refusal; a viewer that leaves stops the follow's thread."""
    from log_kubelet import LogKubelet, restricted_pod

    a = namespace
    for person in ("alice", "bob"):
        cluster.account(a, person)
    cluster.grant(a, a, "alice", [READ, {"apiGroups": [""], "resources": ["pods/log", "configmaps"],
                                         "verbs": ["get"]}])
    cluster.grant(a, a, "bob", [READ])
    alice, bob = cluster.token(a, "alice"), cluster.token(a, "bob")
    create(custom, a, build("b1"))
    started = "2026-11-28T08:00:00Z"
    with LogKubelet(cluster.core, control_plane.pki, f"log-{a}"[:63]) as kubelet:
        for name in ("b1-w", "b1-v"):
            create(custom, a, task(name, buildRef={"name": "b1"}))
            cluster.core.create_namespaced_pod(a, restricted_pod(f"{name}-a1", kubelet.node))
            set_status(custom, a, "agenttasks", name, {"phase": "Running", "attempts": [
                {"number": 1, "pod": f"{name}-a1", "startTime": started}]})
        async with running_console(cluster, [a]) as (console, base), aiohttp.ClientSession() as http:
            url = f"{base}/api/follow/{a}/b1-w?attempt=1"
            refused = Follower(http, url, bob)
            await until(lambda: refused.task.done(), 30, "bob's answer")
            assert refused.status == 403 and "pods/log" in refused.error["error"], (refused.error, refused.events)
            await until(lambda: not console.follows, 30, "bob's follow thread ends")

            viewer = Follower(http, url, alice)
            kubelet.write('{"type": "message", "text": "one <b>"}\n')
            await until(lambda: viewer.lines(), 30, "the first line, through the API server")
            kubelet.write("two \x1b[31mred\x1b[0m\n")
            kubelet.write("three\n")
            await until(lambda: len(viewer.lines()) == 3, 30, "the next lines")
            assert viewer.lines() == ['{"type": "message", "text": "one <b>"}', "two red", "three"]
            assert not viewer.closed and len(console.follows) == 1  # still following
            kubelet.end()
            cluster.core.create_namespaced_config_map(a, {"metadata": {"name": "b1-w-a1-ledger"}, "data": {
                ledger.RESULT_KEY: json.dumps({"exitCode": 0, "endTime": "2026-11-28T08:01:00Z"})}})
            set_status(custom, a, "agenttasks", "b1-w", {"phase": "Succeeded", "attempts": [
                {"number": 1, "pod": "b1-w-a1", "startTime": started, "endTime": "2026-11-28T08:01:00Z",
                 "exitReason": "Completed", "ledger": "b1-w-a1-ledger"}]})
            await until(lambda: viewer.closed, 30, "the stream ends with the attempt")
            event, end = viewer.events[-1]
            assert event == "end" and end["result"] == {"exitCode": 0, "endTime": "2026-11-28T08:01:00Z"}, end
            assert f"{a}/b1-w-a1-ledger" in end["said"] and [e for e, _ in viewer.events] == ["line"] * 3 + ["end"]
            await until(lambda: not console.follows, 30, "the follow thread ends with the stream")

            leaving = Follower(http, f"{base}/api/follow/{a}/b1-v?attempt=1", alice)
            await until(lambda: leaving.status == 200, 30, "the log of b1-v is open")
            assert len(console.follows) == 1
            await leaving.leave()
            await until(lambda: not console.follows, 30, "the follow thread stops when its viewer leaves")


async def test_hostile_fields_come_out_escaped(
        cluster: Cluster, namespace: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    a = namespace
    cluster.account(a, "alice")
    cluster.grant(a, a, "alice", [READ])
    hostile = "<img src=x onerror=alert(1)></script>\x1b[31m\x07\u202e&amp;"
    create(custom, a, build("b1"))
    create(custom, a, task("evil", description=hostile))
    set_status(custom, a, "agenttasks", "evil", {"phase": "AwaitingInput", "question": hostile})
    async with running_console(cluster, [a]) as (_, base), aiohttp.ClientSession() as http:
        viewer = Viewer(http, base, cluster.token(a, "alice"))
        await viewer.start()
        try:
            set_status(custom, a, "agenttasks", "evil", {"phase": "AwaitingInput", "question": hostile + "2"})
            await until(lambda: viewer.seen("AgentTask", a, "evil", lambda o: o["question"].endswith("2")), 30,
                        "the hostile change")
        finally:
            await viewer.stop()
    raw = bytes(viewer.raw)
    for forbidden in (b"<", b">", b"&", b"\x1b", b"\x07", "\u202e".encode()):
        assert forbidden not in raw, forbidden
    assert viewer.snapshot is not None
    (evil,) = [o for o in viewer.snapshot["objects"] if o["name"] == "evil"]
    assert evil["question"] == "<img src=x onerror=alert(1)></script>&amp;"  # text, cleaned of controls
    assert evil["description"] == evil["question"]


async def test_a_status_write_reaches_20_viewers_of_a_50_task_build(
        cluster: Cluster, namespace: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    a = namespace
    cluster.account(a, "viewer")
    cluster.grant(a, a, "viewer", [READ])
    create(custom, a, build("b1"))
    for i in range(50):
        create(custom, a, task(f"t{i:02d}", **({"dependsOn": [f"t{i - 1:02d}"]} if i else {})))
    async with running_console(cluster, [a]) as (console, base), aiohttp.ClientSession() as http:
        viewers = [Viewer(http, base, cluster.token(a, "viewer")) for _ in range(20)]  # 20 tokens: 20 people
        await asyncio.gather(*(v.start() for v in viewers))
        try:
            assert all(len(v.names()) == 51 for v in viewers)
            latencies: list[float] = []
            for round_ in range(5):
                name = f"t{round_ * 7:02d}"
                written = time.monotonic()
                await asyncio.to_thread(set_status, custom, a, "agenttasks", name, {"phase": "Running"})
                await until(lambda n=name: all(v.seen("AgentTask", a, n, lambda o: o["phase"] == "Running")
                                                for v in viewers), 30, f"{name}'s change at every viewer")
                arrived = [v.seen("AgentTask", a, name, lambda o: o["phase"] == "Running") for v in viewers]
                latencies += [at - written for at in arrived if at is not None]
            latencies.sort()
            p50, p95 = statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.95) - 1] * 1000
            print(f"\nconsole: status write -> SSE at 20 viewers, 50 tasks: p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
                  f"max {latencies[-1] * 1000:.0f} ms ({len(latencies)} deliveries)")
            assert console.dropped == 0
        finally:
            await asyncio.gather(*(v.stop() for v in viewers))


async def test_a_viewer_that_falls_behind_is_dropped_and_told_to_reload(
        cluster: Cluster, namespace: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    a = namespace
    cluster.account(a, "viewer")
    cluster.grant(a, a, "viewer", [READ])
    create(custom, a, build("b1"))
    async with running_console(cluster, [a], viewer_queue=10) as (console, base), aiohttp.ClientSession() as http:
        viewer = Viewer(http, base, cluster.token(a, "viewer"))
        await viewer.start()
        try:
            (watcher,) = console.viewers
            # more changes than its queue holds before its stream task runs again (all folded in one loop turn)
            for i in range(12):
                console.on_event("AgentTask", "ADDED", task(f"x{i}") | {"metadata": {"name": f"x{i}", "namespace": a}})
            assert watcher.outbox.dropped and console.dropped == 1
            await until(lambda: b"event: reload" in viewer.raw, 10, "the reload event")
            await until(lambda: not console.viewers, 10, "the viewer's stream to end")
        finally:
            await viewer.stop()


# --- a real browser ---------------------------------------------------------------------------------------


class Chromium:
    """Headless Debian chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3 in,
    fd 4 out, NUL-separated JSON), so no extra package is needed."""

    def __init__(self, binary: str, profile: str) -> None:
        to_chrome_r, self._to = os.pipe()
        self._from, from_chrome_w = os.pipe()

        def fds() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4, to_chrome_r, from_chrome_w), preexec_fn=fds, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)  # its renderers and helpers: one group to end
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self._replies = 1_000_000  # ids of the dialog answers sent from inside call(), never awaited
        self.session = ""
        self.answers: list[str] = []  # what the next prompt()s are answered; confirm() is accepted
        self.dialogs: list[dict[str, Any]] = []  # each JS dialog the page opened

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from, 65536)
                if not chunk:
                    raise AssertionError("chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("method") == "Page.javascriptDialogOpening":
                self._answer_dialog(answer)
            elif answer.get("id") == self._id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return dict(answer.get("result") or {})

    def _answer_dialog(self, event: dict[str, Any]) -> None:
        """A prompt()/confirm() the page opened (it blocks the page, and the pending Runtime.evaluate, until it is
        answered): accept it, typing the next of ``answers`` into a prompt."""
        dialog = dict(event.get("params") or {})
        self.dialogs.append(dialog)
        params: dict[str, Any] = {"accept": True}
        if dialog.get("type") == "prompt":
            params["promptText"] = self.answers.pop(0) if self.answers else ""
        self._replies += 1
        os.write(self._to, json.dumps({"id": self._replies, "method": "Page.handleJavaScriptDialog", "params": params,
                                       "sessionId": event.get("sessionId", self.session)}).encode() + b"\0")

    def screenshot(self, selector: str, path: str) -> None:
        """A PNG of the element ``selector`` (the whole of it, beyond the viewport if it is taller)."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return {x: r.left + scrollX, y: r.top + scrollY,"
                            " width: r.width, height: r.height}; })()")
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {**box, "scale": 1}})
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return (result.get("result") or {}).get("value")

    def close(self) -> None:
        """End the browser and every process it started (renderers, zygote, utilities), which otherwise still write
        into the profile while the test removes it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the group's other members are not our children: poll until gone
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        os.close(self._to)
        os.close(self._from)


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
async def test_a_real_browser_draws_the_builds_and_hostile_text_stays_text(
        cluster: Cluster, namespace: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    a = namespace
    cluster.account(a, "alice")
    cluster.grant(a, a, "alice", [READ])
    create(custom, a, build("b1"))
    create(custom, a, task("t1", description="<img src=x onerror=\"document.title='owned'\">"))
    set_status(custom, a, "agenttasks", "t1", {"phase": "AwaitingInput",
                                              "question": "<img src=x onerror=\"document.title='owned'\">"})
    token = cluster.token(a, "alice")
    assert CHROMIUM is not None
    async with running_console(cluster, [a]) as (_, base):
        with tempfile.TemporaryDirectory() as profile:
            browser = Chromium(CHROMIUM, profile)
            try:
                def drive() -> dict[str, Any]:
                    browser.open(base + "/")
                    browser.call("Runtime.enable")
                    wait_until(lambda: browser.evaluate("document.readyState") == "complete", 30, "the page")
                    # the person pastes their token (the form is what a person uses)
                    browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)};"
                                     "document.getElementById('login-form').requestSubmit(); true")
                    try:
                        wait_until(lambda: browser.evaluate(
                            "document.querySelector('[data-build=\"b1\"]') !== null"), 30, "the build list")
                    except TimeoutError:
                        raise AssertionError("the page drew no build: " + str(browser.evaluate(
                            "document.getElementById('state').textContent + ' | ' + document.body.innerText"))) \
                            from None
                    return dict(browser.evaluate(
                        "({build: document.querySelector('[data-build=\"b1\"]').textContent,"
                        " waiting: document.getElementById('waiting').textContent,"
                        " images: document.querySelectorAll('img').length, title: document.title,"
                        " state: document.getElementById('state').textContent,"
                        " stored: sessionStorage.getItem('longshot.console.token') !== null,"
                        " url: location.href})"))
                seen = await asyncio.to_thread(drive)
            finally:
                browser.close()
    assert "t1" in seen["build"] and "AwaitingInput" in seen["build"], seen
    assert "<img src=x" in seen["waiting"]  # shown as text
    assert seen["images"] == 0 and seen["title"] == "Longshot console"  # never parsed as markup, never ran
    assert seen["state"] == "live" and seen["stored"] and token not in seen["url"]


SHOTS = os.environ.get("LONGSHOT_SCREENSHOTS", "")  # a directory: the browser tests save the console's views there


def _click(label: str, within: str) -> str:
    """JS that clicks the button labelled ``label`` inside ``within`` (as a person would), or throws."""
    return (f"(() => {{ const b = [...document.querySelectorAll({json.dumps(within + ' button')})]"
            f".find((x) => x.textContent === {json.dumps(label)});"
            f" if (!b) throw new Error('no button ' + {json.dumps(label)}); b.click(); return true; }})()")


@pytest.fixture
def a_real_looking_build(cluster: Cluster, another_namespace: Callable[[str], str],
                         custom: kubernetes.client.CustomObjectsApi) -> dict[str, Any]:
    """A build in the middle of its work, as the operator would have written it (the integration tier has no
    kubelet, so the test writes the statuses): a planner done, tasks in several phases, one asking a question, a
    finished attempt with a ledger entry, MergeJobs merged, under test in a batch, waiting for approval and queued.
    alice may patch the three kinds and read ledger entries; bob may only read."""
    a = another_namespace("team-checkout")
    for person in ("alice", "bob"):
        cluster.account(a, person)
    cluster.grant(a, a, "alice", [WRITE, {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])
    cluster.grant(a, a, "bob", [READ])
    ref = {"buildRef": {"name": "checkout-api"}}
    create(custom, a, build("checkout-api", budget__maxTokens=2_000_000, budget__maxCost=40.0,
                            request="A checkout service: a REST API over the cart and payments"))
    set_status(custom, a, "buildrequests", "checkout-api", {
        "phase": "Running", "iteration": 1, "usage": {"tokens": 812_400, "cost": 9.73},
        "tasks": {"total": 7, "pending": 1, "running": 2, "succeeded": 3, "failed": 1, "progress": "3/7"}})
    tasks = [  # name, role, depends on, phase, branch, attempts (number, exit reason), MergeJob
        ("plan", "planner", [], "Succeeded", None, [(1, "done")], None),
        ("schema", "worker", ["plan"], "Succeeded", "longshot/checkout-api/schema", [(1, "done")], "schema"),
        ("cart-api", "worker", ["schema"], "Succeeded", "longshot/checkout-api/cart-api", [(1, "done")], "cart-api"),
        ("payments", "worker", ["schema"], "AwaitingInput", "longshot/checkout-api/payments", [(1, None)],
         "payments-spike"),
        ("auth", "worker", ["plan"], "Running", "longshot/checkout-api/auth", [(1, "model error: 529 overloaded"),
                                                                               (2, None)], "auth-fix"),
        ("review", "reviewer", ["cart-api", "payments"], "Pending", None, [], None),
        ("docs", "worker", ["cart-api"], "Failed", "longshot/checkout-api/docs", [(1, "tests failed"),
                                                                                  (2, "tests failed")], "docs"),
    ]
    for name, role, deps, phase, branch, attempts, job in tasks:
        create(custom, a, task(name, role=role, dependsOn=deps, description=f"the {name} part", **ref))
        status: dict[str, Any] = {"phase": phase, "attempts": [
            {"number": n, "pod": f"{name}-a{n}", "startTime": f"2026-11-28T11:{10 + 9 * n:02d}:00Z",
             **({"endTime": f"2026-11-28T11:{17 + 9 * n:02d}:00Z", "exitReason": why,
                 "ledger": ledger.entry_name(f"{name}-a{n}")} if why else {})} for n, why in attempts]}
        if job:
            status["mergeJob"] = job
        if branch:
            status["handoff"] = {"branch": branch, "commit": hashlib.sha1(name.encode()).hexdigest()}
        if phase == "AwaitingInput":
            status["question"] = "Which payment provider: Stripe or Adyen?"
        set_status(custom, a, "agenttasks", name, status)
    transcript = b"".join(json.dumps(e).encode() + b"\n" for e in (
        {"type": "text", "text": "Reading the plan: a carts table and a payments table."},
        {"type": "tool", "name": "bash", "input": {"command": "alembic revision -m 'carts and payments'"}},
        {"type": "tool_result", "output": "Generating migrations/versions/1a2b_carts_and_payments.py ... done"},
        {"type": "text", "text": "The migration runs and the tests pass; handing off the branch."}))
    cluster.core.create_namespaced_config_map(a, {"metadata": {"name": ledger.entry_name("schema-a1")}, "binaryData": {
        ledger.TRANSCRIPT_KEY: base64.b64encode(gzip.compress(transcript)).decode()},
        "data": {ledger.RESULT_KEY: json.dumps({"number": 1, "exitReason": "done", "tokens": 48_210})}})
    jobs = [  # name, task, phase, queue position, batch position, checks, merged commit
        ("schema", "schema", "Merged", None, None, "passed", hashlib.sha1(b"m-schema").hexdigest()),
        ("cart-api", "cart-api", "Testing", 1, 1, "passed", None),
        ("auth-fix", "auth", "Testing", 2, 2, "passed", None),
        ("payments-spike", "payments", "AwaitingApproval", 3, None, "passed", None),
        ("docs", "docs", "Queued", 4, None, "pending", None),
    ]
    for name, of, phase, position, batch, checks, merged in jobs:
        create(custom, a, merge_job(name, taskRef={"name": of}, branch=f"longshot/checkout-api/{of}", **ref))
        status = {"phase": phase, "checks": checks, **({"queuePosition": position} if position else {}),
                  **({"mergedCommit": merged, "attempts": [{"result": "merged"}]} if merged else {})}
        if batch:
            status["batch"] = {"id": "7f3c9a21d0e84b55", "position": batch, "base": "0" * 40, "commit": "1" * 40}
        set_status(custom, a, "mergejobs", name, status)
    return {"namespace": a, "alice": cluster.token(a, "alice"), "bob": cluster.token(a, "bob")}


def _log_in(browser: Chromium, base: str, token: str) -> None:
    browser.open(base + "/")
    browser.call("Runtime.enable")
    browser.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                        "mobile": False})
    wait_until(lambda: browser.evaluate("document.readyState") == "complete", 30, "the page")
    browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)};"
                     "document.getElementById('login-form').requestSubmit(); true")
    wait_until(lambda: browser.evaluate("document.querySelector('[data-task=\"docs\"]') !== null"), 30,
               "the build list")


def _notice(browser: Chromium, starts: str) -> str:
    return str(wait_until(lambda: (lambda n: n if n.startswith(starts) else "")(
        str(browser.evaluate("document.getElementById('notice').textContent"))), 30, f"a notice '{starts}...'"))


def _phase_of(browser: Chromium, name: str) -> str:
    return str(browser.evaluate(f"document.querySelector('[data-task=\"{name}\"] td.phase').textContent"))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
async def test_in_a_real_browser_a_person_answers_approves_and_sees_changes_live(
        cluster: Cluster, a_real_looking_build: dict[str, Any], custom: kubernetes.client.CustomObjectsApi) -> None:
    a = a_real_looking_build["namespace"]
    assert CHROMIUM is not None
    async with running_console(cluster, [a]) as (_, base):
        with tempfile.TemporaryDirectory() as profile:
            browser = Chromium(CHROMIUM, profile)
            try:
                def drive() -> None:
                    _log_in(browser, base, a_real_looking_build["alice"])
                    if SHOTS:  # the views, before anything is clicked (docs/console.md embeds them)
                        os.makedirs(SHOTS, exist_ok=True)
                        for view, selector in (("overview", "body"), ("builds", "section:has(#builds)"),
                                               ("queue", "section:has(#queue)"),
                                               ("waiting", "section:has(#waiting)")):
                            browser.screenshot(selector, os.path.join(SHOTS, f"console-{view}.png"))
                    browser.evaluate("window.sameDocument = true")  # gone if the page ever reloads

                    # the question: the person clicks "answer", types into the prompt(), and the task has it
                    browser.answers.append("Stripe, through its test mode")
                    browser.evaluate(_click("answer", "[data-waiting=\"question\"]"))
                    assert browser.dialogs[-1]["type"] == "prompt" and browser.dialogs[-1]["message"] == "Your answer"
                    wait_until(lambda: get(custom, a, "agenttasks", "payments")["spec"].get("answer") ==
                               "Stripe, through its test mode", 30, "the answer on the AgentTask")
                    assert "payments" in _notice(browser, "agenttask/payments")

                    # the approval: the MergeJob is approved as alice, and leaves "waiting for a person" live
                    browser.evaluate(_click("approve", "[data-waiting=\"approval\"]"))
                    wait_until(lambda: get(custom, a, "mergejobs", "payments-spike")["spec"].get("approved") is True,
                               30, "the approval on the MergeJob")
                    wait_until(lambda: browser.evaluate(
                        "document.querySelector('[data-waiting=\"approval\"]') === null"), 30,
                        "the approval to leave the waiting list")

                    # a status write by someone else (here the test, as the operator would) shows without a reload
                    assert _phase_of(browser, "review") == "Pending"
                    set_status(custom, a, "agenttasks", "review", {"phase": "Running", "attempts": [
                        {"number": 1, "pod": "review-a1", "startTime": "2026-11-28T12:40:00Z"}]})
                    wait_until(lambda: _phase_of(browser, "review") == "Running", 30, "the live change")
                    assert browser.evaluate("window.sameDocument") is True

                    # a finished attempt's transcript, read from the ledger with alice's rights
                    browser.evaluate(_click("transcript", "[data-task=\"schema\"]"))
                    wait_until(lambda: "alembic revision" in str(browser.evaluate(
                        "document.getElementById('transcript').textContent")), 30, "the transcript")
                    if SHOTS:
                        browser.screenshot("#transcript-box", os.path.join(SHOTS, "console-transcript.png"))
                await asyncio.to_thread(drive)
            finally:
                browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
async def test_in_a_real_browser_a_person_without_rights_sees_the_api_servers_refusal(
        cluster: Cluster, a_real_looking_build: dict[str, Any], custom: kubernetes.client.CustomObjectsApi) -> None:
    a = a_real_looking_build["namespace"]
    bob = f"system:serviceaccount:{a}:bob"
    assert CHROMIUM is not None
    async with running_console(cluster, [a]) as (_, base):
        with tempfile.TemporaryDirectory() as profile:
            browser = Chromium(CHROMIUM, profile)
            try:
                def drive() -> tuple[str, str]:
                    _log_in(browser, base, a_real_looking_build["bob"])
                    browser.answers.append("Adyen")
                    browser.evaluate(_click("answer", "[data-waiting=\"question\"]"))
                    answered = _notice(browser, "answer refused (403)")
                    # a confirm() first (cancel the build?), accepted: then the API server refuses
                    browser.evaluate(_click("cancel", "[data-build=\"checkout-api\"] > div"))
                    assert browser.dialogs[-1]["type"] == "confirm", browser.dialogs
                    return answered, _notice(browser, "cancel refused (403)")
                answered, cancelled = await asyncio.to_thread(drive)
            finally:
                browser.close()
    for said, resource in ((answered, "agenttasks"), (cancelled, "buildrequests")):
        assert f'User "{bob}" cannot patch resource "{resource}"' in said, said  # the API server's own words
    assert "answer" not in get(custom, a, "agenttasks", "payments")["spec"]
    assert not get(custom, a, "buildrequests", "checkout-api")["spec"].get("cancel")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
async def test_in_a_real_browser_a_running_attempts_transcript_follows_its_log_as_text(
        control_plane: Any, cluster: Cluster, namespace: str, custom: kubernetes.client.CustomObjectsApi) -> None:
    """The person clicks "transcript" on a running task: the box grows with the Pod's log (through the API server,
    with their token in the Authorization header only), hostile markup stays text, and the attempt's end shows."""
    from log_kubelet import LogKubelet, restricted_pod

    a = namespace
    cluster.account(a, "alice")
    cluster.grant(a, a, "alice", [READ, {"apiGroups": [""], "resources": ["pods/log", "configmaps"],
                                         "verbs": ["get"]}])
    alice = cluster.token(a, "alice")
    assert CHROMIUM is not None
    create(custom, a, build("b1"))
    create(custom, a, task("b1-w", buildRef={"name": "b1"}))
    started = "2026-11-28T08:00:00Z"
    with LogKubelet(cluster.core, control_plane.pki, f"log-{a}"[:63]) as kubelet:
        cluster.core.create_namespaced_pod(a, restricted_pod("b1-w-a1", kubelet.node))
        set_status(custom, a, "agenttasks", "b1-w", {"phase": "Running", "attempts": [
            {"number": 1, "pod": "b1-w-a1", "startTime": started}]})
        async with running_console(cluster, [a]) as (console, base):
            with tempfile.TemporaryDirectory() as profile:
                browser = Chromium(CHROMIUM, profile)
                try:
                    def text() -> str:
                        return str(browser.evaluate("document.getElementById('transcript').textContent"))

                    def drive() -> None:
                        browser.open(base + "/")
                        browser.call("Runtime.enable")
                        wait_until(lambda: browser.evaluate("document.readyState") == "complete", 30, "the page")
                        browser.evaluate(f"document.getElementById('token').value = {json.dumps(alice)};"
                                         "document.getElementById('login-form').requestSubmit(); true")
                        wait_until(lambda: browser.evaluate("document.querySelector('[data-task=\"b1-w\"]') !== null"),
                                   30, "the task")
                        browser.evaluate(_click("transcript", "[data-task=\"b1-w\"]"))
                        wait_until(lambda: len(console.follows) == 1, 30, "the page follows the log")
                        kubelet.write('{"type": "text", "text": "<img src=x id=pwned>"}\n')
                        wait_until(lambda: "pwned" in text(), 30, "the first line in the box")
                        kubelet.write("second line\n")
                        wait_until(lambda: text().endswith("second line\n"), 30, "the second line, after the first")
                        assert text() == '{"type": "text", "text": "<img src=x id=pwned>"}\nsecond line\n'
                        assert browser.evaluate("document.getElementById('pwned') === null") is True
                        kubelet.end()
                        cluster.core.create_namespaced_config_map(a, {"metadata": {"name": "b1-w-a1-ledger"}, "data": {
                            ledger.RESULT_KEY: json.dumps({"exitCode": 0})}})
                        set_status(custom, a, "agenttasks", "b1-w", {"phase": "Succeeded", "attempts": [
                            {"number": 1, "pod": "b1-w-a1", "startTime": started, "endTime": "2026-11-28T08:01:00Z",
                             "exitReason": "Completed", "ledger": "b1-w-a1-ledger"}]})
                        wait_until(lambda: str(browser.evaluate(
                            "document.getElementById('transcript-title').textContent")).endswith("(ended)"), 30,
                            "the attempt's end in the box")
                        assert '{"type":"result","exitCode":0}\nattempt 1 ended (Completed)' in text()
                        if SHOTS:
                            browser.screenshot("#transcript-box", os.path.join(SHOTS, "console-follow.png"))
                    await asyncio.to_thread(drive)
                finally:
                    browser.close()
            await until(lambda: not console.follows, 30, "the follow thread ends with the attempt")
