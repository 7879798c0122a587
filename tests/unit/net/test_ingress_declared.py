"""Every route both servers register is declared with its limits (core.ingress.Route), so that the next route
cannot skip them: the gateway's application, the operator's metrics and probe port and its webhook port."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from longshot import metrics
from longshot.core import ingress as core
from longshot.gateway import server
from longshot.gateway.settings import GatewaySettings
from longshot.net import ingress

BODY_ROUTES = {"progress", "traces", "ledger", "delegation-spawn", "model", "git-upload-pack", "git-receive-pack",
               "mcp"}


async def test_every_gateway_route_is_declared_with_its_limits(tmp_path: Any) -> None:
    gateway = server.Gateway(cast(Any, object()), GatewaySettings(mirror_dir=str(tmp_path)))
    try:
        door = gateway.ingress()
        app = server.make_app(gateway, door)
        assert door.undeclared(app) == []
        registered = {door.declaration(r).name for r in app.router.routes()}  # type: ignore[union-attr]
        assert registered == {r.name for r in door.routes}
        readers = {r.name for r in door.routes if r.max_body_bytes > 0}
        assert readers == BODY_ROUTES
        for route in door.routes:
            assert route.problems() == []
            # the agents' port serves agents only: attempts, and a warm sandbox on its claim's door, and on the
            # clone and fetch of its own build's repository when its pool pre-clones (never a push)
            assert route.caller == {"claim": "sandbox-token", "git-info-refs": "reader-token",
                                    "git-upload-pack": "reader-token"}.get(route.name, "agent-token"), route
        # metrics and probes are on their own port, never on the agents' one
        probes = gateway.probes()
        probe_app = probes.app()
        assert probes.undeclared(probe_app) == []
        assert {probes.declaration(r).name for r in probe_app.router.routes()} == {  # type: ignore[union-attr]
            "metrics", "healthz", "readyz"}
        assert all(r.max_body_bytes == 0 and r.caller == "none" and r.problems() == [] for r in probes.routes)
        assert not {"/metrics", "/healthz", "/readyz"} & {r.path for r in door.routes}
        by_name = {r.name: r for r in door.routes}
        assert by_name["ledger"].max_body_bytes == gateway.settings.max_ledger_request_bytes
        assert by_name["git-receive-pack"].stream and by_name["git-receive-pack"].max_body_bytes == \
            gateway.settings.max_push_bytes
        assert by_name["model"].per_caller == gateway.settings.max_model_calls_per_attempt
        assert (by_name["mcp"].max_body_bytes, by_name["mcp"].per_caller, by_name["mcp"].methods) == (
            gateway.settings.max_mcp_request_bytes, gateway.settings.max_mcp_calls_per_attempt, ("POST",))
        assert by_name["mcp"].timeout_seconds > gateway.settings.mcp_timeout_seconds
        # people's messages: a long poll that reads no body, answered before its own deadline
        messages = by_name["messages"]
        assert (messages.path, messages.methods, messages.max_body_bytes) == ("/v1/messages", ("GET",), 0)
        assert messages.timeout_seconds > server.MESSAGES_MAX_WAIT
        assert (by_name["claim"].path, by_name["claim"].methods, by_name["claim"].max_body_bytes,
                by_name["claim"].per_caller) == ("/v1/claim", ("GET",), 0, 1)
        assert by_name["claim"].timeout_seconds > gateway.settings.claim_wait_seconds
    finally:
        await gateway.close()


def test_every_operator_route_is_declared_with_its_limits() -> None:
    probes = metrics.probe_ingress()
    hook = metrics.webhook_ingress(lambda path, headers, body: (202, ""))
    for door, names in ((probes, {"metrics", "healthz", "readyz"}), (hook, {"intake"})):
        app = door.app()
        assert door.undeclared(app) == []
        assert {door.declaration(r).name for r in app.router.routes()} == names  # type: ignore[union-attr]
    # the probe port reads no body at all; the webhook's body is bounded and checked per source
    assert all(r.max_body_bytes == 0 and r.caller == "none" for r in probes.routes)
    (intake,) = hook.routes
    assert (intake.caller, intake.max_body_bytes) == ("webhook-signature", metrics.MAX_WEBHOOK_BYTES)


def test_a_route_registered_around_the_ingress_is_found_and_refused() -> None:
    door = metrics.probe_ingress()
    app = door.app()

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="no limits here")

    app.router.add_post("/sneaky", sneaky)
    assert door.undeclared(app) == ["POST /sneaky"]


def test_an_incomplete_declaration_is_refused_at_once() -> None:
    door = ingress.Ingress(ingress.Limits(), {})

    async def handler(request: web.Request, call: ingress.Call) -> web.StreamResponse:
        return web.Response()

    for bad, why in [
        (core.Route("open", "/open", ("POST",), "none", 1024, 5.0, 10.0, 1), "reads no body"),
        (core.Route("slow", "/slow", ("POST",), "agent-token", 1024, 0.0, 10.0, 1), "this server has no"),
        (core.Route("lanes", "/lanes", ("GET",), "none", 0, 0.0, 10.0, 0), "per_caller"),
        (core.Route("late", "/late", ("GET",), "none", 0, 0.0, 0.0, 1), "timeout_seconds"),
    ]:
        try:
            door.add(bad, handler)
        except ValueError as e:
            assert why in str(e), (bad, e)
        else:
            raise AssertionError(f"{bad} was accepted")
