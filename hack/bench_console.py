"""Benchmark: how long a status write takes to reach the web console's viewers (issue 53 item 4: "within 2 s of
the status write, at 50 tasks and with 20 viewers").

A real control plane with the CRDs; one namespace with a build of ``--tasks`` AgentTasks; the console in this
process (its one shared watch made with a list/watch-only ServiceAccount, as the chart grants it); ``--viewers``
live streams, each with its own token (a TokenRequest each: as many people), all through the console's real HTTP
server and access reviews. Then ``--rounds`` times: one AgentTask's status is patched (the time the API server
answered the patch is the start) and the time each viewer's stream delivers the change is recorded. Prints the
latency p50, p95 and max over every delivery, and the API server watches the console held (one per kind).

Usage: ``python hack/bench_console.py [--tasks 50] [--viewers 20] [--rounds 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


async def run(args: argparse.Namespace) -> int:
    import aiohttp
    import kubernetes

    from longshot.console import people, server
    from longshot.console.settings import ConsoleSettings
    from longshot_testing import controlplane

    bin_dir = args.bin_dir or Path(subprocess.run(["bash", str(ROOT / "hack" / "k8s-binaries.sh")], check=True,
                                                  capture_output=True, text=True).stdout.split()[-1])
    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    cp = controlplane.ControlPlane(workdir=work / "cp", bin_dir=bin_dir)
    cp.start()
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/buildrequests.longshot.dev",
                   "crd/agenttasks.longshot.dev", "crd/mergejobs.longshot.dev")
        client = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
        core, custom = kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
        rbac = kubernetes.client.RbacAuthorizationV1Api(client)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        kinds = {"apiGroups": ["longshot.dev"], "resources": ["buildrequests", "agenttasks", "mergejobs"]}
        for account, verbs in (("console", ["list", "watch"]), ("viewer", ["get", "list", "watch"])):
            core.create_namespaced_service_account(ns, {"metadata": {"name": account}})
            rbac.create_namespaced_role(ns, {"metadata": {"name": account}, "rules": [{**kinds, "verbs": verbs}]})
            rbac.create_namespaced_role_binding(ns, {
                "metadata": {"name": account},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]})

        def token(account: str) -> str:
            return str(core.create_namespaced_service_account_token(
                account, ns, {"spec": {"expirationSeconds": 3600}}).status.token)

        group, version = "longshot.dev", "v1alpha1"
        custom.create_namespaced_custom_object(group, version, ns, "buildrequests", {
            "apiVersion": f"{group}/{version}", "kind": "BuildRequest", "metadata": {"name": "b1"},
            "spec": {"request": "bench", "repository": {"url": "https://git.example.com/o/r.git"}}})
        for i in range(args.tasks):
            custom.create_namespaced_custom_object(group, version, ns, "agenttasks", {
                "apiVersion": f"{group}/{version}", "kind": "AgentTask", "metadata": {"name": f"t{i:03d}"},
                "spec": {"buildRef": {"name": "b1"}, "description": f"task {i}",
                         **({"dependsOn": [f"t{i - 1:03d}"]} if i else {})}})

        endpoint = people.Endpoint.of(client.configuration)
        console = server.Console(ConsoleSettings(port=0, namespaces=ns), endpoint)
        served = await server.serve(console, endpoint.client(token("console"), timeout=(5.0, 300.0)))
        arrivals: dict[tuple[int, str], list[float]] = {}
        try:
            deadline = time.monotonic() + 60
            while not console.ready:
                if time.monotonic() > deadline:
                    raise RuntimeError("the console's first lists did not arrive")
                await asyncio.sleep(0.05)
            base = f"http://127.0.0.1:{served.port}"
            ready: list[int] = []

            async def viewer(http: aiohttp.ClientSession, number: int, tok: str) -> None:
                async with http.get(base + "/api/events", headers={"Authorization": f"Bearer {tok}"}) as r:
                    r.raise_for_status()
                    buffer = b""
                    async for chunk in r.content.iter_any():
                        now = time.monotonic()
                        buffer += chunk
                        while b"\n\n" in buffer:
                            block, buffer = buffer.split(b"\n\n", 1)
                            lines = block.decode().split("\n")
                            event = next((x[7:] for x in lines if x.startswith("event: ")), "")
                            data = next((x[6:] for x in lines if x.startswith("data: ")), "")
                            if event == "snapshot":
                                ready.append(number)
                            elif event == "change":
                                change: dict[str, Any] = json.loads(data)
                                obj = change.get("object") or {}
                                mark = str(obj.get("phase") or "")
                                if mark.startswith("Round"):
                                    arrivals.setdefault((int(mark[5:]), change["name"]), []).append(now)

            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
                tasks = [asyncio.create_task(viewer(http, n, token("viewer"))) for n in range(args.viewers)]
                while len(ready) < args.viewers:
                    await asyncio.sleep(0.05)
                latencies: list[float] = []
                for round_ in range(args.rounds):
                    name = f"t{(round_ * 7) % args.tasks:03d}"
                    # a phase no real task has: the round's own mark, so that each write is a change to show
                    await asyncio.to_thread(custom.patch_namespaced_custom_object_status, group, version, ns,
                                            "agenttasks", name, {"status": {"phase": f"Round{round_}"}})
                    written = time.monotonic()
                    end = written + 30
                    while len(arrivals.get((round_, name), [])) < args.viewers and time.monotonic() < end:
                        await asyncio.sleep(0.005)
                    got = arrivals.get((round_, name), [])
                    if len(got) < args.viewers:
                        print(f"round {round_}: only {len(got)} of {args.viewers} viewers saw the change in 30 s")
                        return 1
                    latencies += [max(0.0, t - written) for t in got]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await served.cleanup()
        latencies.sort()
        p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
        print(f"console_latency tasks={args.tasks} viewers={args.viewers} rounds={args.rounds} "
              f"deliveries={len(latencies)} p50_ms={statistics.median(latencies) * 1000:.0f} "
              f"p95_ms={p95 * 1000:.0f} max_ms={latencies[-1] * 1000:.0f} dropped_viewers={console.dropped} "
              f"api_watches={3 * len(console.settings.namespace_list() or [''])}")
        return 0
    finally:
        cp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--bin-dir", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "operator"))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
