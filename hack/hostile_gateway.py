"""Hostile-tenant figures of the gateway's model proxy, on a real API server and the real gateway.

* :func:`gateway_peak_rss_mib`: ``python -m longshot gateway`` as a subprocess (the chart's process, default
  settings: 4 MiB body cap, 4 calls in flight per attempt, 48 MiB of bodies in flight, the ingress's 64 MiB
  in-flight byte budget and 30 s body deadline; tracing on, with a stand-in collector), a fake model API
  upstream, and 20 agent attempts each sending one maximum-size body at once, twice: bodies of one long
  string (a real prompt's shape) and bodies of countless tiny JSON values (the most a parse could cost); then
  800 held slow-drip connections from those attempts across ``/ledger``, ``/delegation/spawn`` (delegation on),
  ``/traces`` and the model route (``hack/hostile_ingress.py``), while another attempt's ``/ledger`` is served.
  Returns the gateway process's peak resident memory (``VmHWM``) in MiB; the chart's limit is 512Mi.
* :func:`budget_overshoot_tokens`: 20 parallel calls of one attempt against ``spec.budget.maxTokens: 100``
  (each reporting 90 tokens, the model holding every call it gets until all 20 are decided); then, each on a
  fresh build with ``maxTokens: 10000`` and an upstream that generates every token it is allowed (30,000 per
  choice when the call names no maximum), one call with ``n=128`` and ``max_tokens=4000`` and one call naming
  no maximum. Returns the largest of the three overshoots (tokens metered beyond the budget); prints each.

Usage: ``python hack/hostile_gateway.py [--bin-dir DIR]``; the last line is
``gateway_peak_rss_mib=... budget_overshoot_tokens=...``. ``hack/bench_hostile.py`` imports both functions.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

MAX_BODY = 4 * 1024 * 1024
"""The gateway's default ``max_model_request_bytes``."""


def _bin_dir(bin_dir: Path | None) -> Path:
    if bin_dir is not None:
        return bin_dir
    out = subprocess.run(["bash", str(ROOT / "hack" / "k8s-binaries.sh")], check=True, capture_output=True,
                         text=True).stdout
    return Path(out.split()[-1])


@dataclasses.dataclass
class _World:
    kubeconfig: Path
    core: Any
    custom: Any
    namespace: str
    work: Path


@contextlib.contextmanager
def _world(bin_dir: Path | None) -> Iterator[_World]:
    import kubernetes
    from gateway_attempts import secret

    from longshot_testing import controlplane

    work = Path(tempfile.mkdtemp(prefix="hostile-gateway-"))
    cp = controlplane.ControlPlane(workdir=work / "cp", bin_dir=_bin_dir(bin_dir))
    cp.start()
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/buildrequests.longshot.dev",
                   "crd/agenttasks.longshot.dev")
        client = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
        core, custom = kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
        ns = "hostile"
        core.create_namespace({"metadata": {"name": ns}})
        controlplane.wait_until(lambda: core.list_namespaced_service_account(ns).items, 30, "the default SA")
        secret(core, ns, "llm-key", {"api-key": "sk-hostile"})
        core.create_namespaced_config_map(ns, {"metadata": {"name": "longshot-prices"}, "data": {
            "prices.yaml": "models:\n  gpt-test: {input: 2, output: 8}\n"}})
        yield _World(cp.kubeconfig, core, custom, ns, work)
    finally:
        cp.stop()


def _spec(model_url: str, budget: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"agent": {"backend": "openai", "model": "gpt-test", "baseUrl": f"{model_url}/v1",
                      "credentialsSecret": "llm-key"}, "budget": budget or {}}


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def _bodies() -> dict[str, bytes]:
    head = b'{"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "'
    tail = b'"}]}'
    string = head + b"x" * (MAX_BODY - len(head) - len(tail)) + tail
    dense_head = b'{"model": "gpt-test", "max_tokens": 10, "messages": ['
    unit = b'"ab",'
    count = (MAX_BODY - len(dense_head) - 8) // len(unit)
    dense = dense_head + unit * count + b'"ab"]}'
    return {"one_string": string, "tiny_values": dense}


def gateway_peak_rss_mib(bin_dir: Path | None = None, *, calls: int = 20, held: int = 800,
                         verbose: bool = False) -> float:
    """Peak RSS (MiB) of a real gateway process answering ``calls`` concurrent maximum-size model requests, then
    ``held`` slow-drip connections spread over ``/ledger``, ``/delegation/spawn``, ``/traces`` and the model route
    from ``calls`` attempts (each declaring the route's largest body and sending a byte a second), while another
    attempt's ``/ledger`` request is sent."""
    import hostile_ingress
    import httpx
    from gateway_attempts import make_attempt
    from gateway_fakes import Reply, fake_model, openai_json

    from longshot_testing import controlplane, otlp

    with _world(bin_dir) as w, fake_model() as model, otlp.Receiver() as collector:
        port, probe_port = controlplane.free_port(), controlplane.free_port()
        env = {**os.environ, "KUBECONFIG": str(w.kubeconfig), "PYTHONPATH": str(ROOT / "operator"),
               "LONGSHOT_GATEWAY_PORT": str(port), "LONGSHOT_GATEWAY_METRICS_PORT": str(probe_port),
               "LONGSHOT_GATEWAY_ADDRESS": "127.0.0.1",
               "LONGSHOT_GATEWAY_NAMESPACE": w.namespace, "LONGSHOT_GATEWAY_MIRROR_DIR": str(w.work / "mirrors"),
               # tracing on (a stand-in collector), so that /traces reads its bodies
               "LONGSHOT_GATEWAY_TRACING_ENDPOINT": collector.endpoint,
               # the fake model listens on loopback: listed, or every model call is refused (403) before its body
               "LONGSHOT_GATEWAY_EGRESS_ALLOWED_CIDRS": "127.0.0.0/8"}
        url = f"http://127.0.0.1:{port}"
        log = (w.work / "gateway.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "longshot", "gateway"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            controlplane.wait_until(
                lambda: httpx.get(f"http://127.0.0.1:{probe_port}/readyz", timeout=2).status_code == 200, 60,
                "the gateway's /readyz")
            idle = _vm_hwm_mib(proc.pid)
            # delegation on, so that /delegation/spawn reads its bodies too
            spec = {**_spec(model.url), "delegation": {"enabled": True}}
            attempts = [make_attempt(w.core, w.custom, w.namespace, url, task=f"b1-t{i}", build_spec=spec)
                        for i in range(calls)]
            statuses: dict[str, list[int]] = {}
            for name, body in _bodies().items():
                model.script(*[Reply(body=openai_json("gpt-test", (10, 10))) for _ in range(calls)])

                def call(i: int, body: bytes = body) -> int:
                    return httpx.post(f"{url}/model/openai/chat/completions", content=body,
                                      headers={**attempts[i].headers, "Content-Type": "application/json"},
                                      timeout=300).status_code

                with concurrent.futures.ThreadPoolExecutor(calls) as pool:
                    statuses[name] = list(pool.map(call, range(calls)))
            after_bodies = _vm_hwm_mib(proc.pid)
            routes = {"/ledger": 1024 * 1024, "/delegation/spawn": 1024 * 1024, "/traces": 1024 * 1024,
                      "/model/openai/chat/completions": MAX_BODY}
            paths = list(routes)
            requests = [(paths[i % len(paths)], attempts[i % calls].headers, routes[paths[i % len(paths)]],
                         "127.0.0.1") for i in range(held)]
            victim = make_attempt(w.core, w.custom, w.namespace, url, build="b2", task="b2-t1",
                                  build_spec=_spec(model.url))

            def meanwhile() -> int:
                return httpx.post(f"{url}/ledger", json={"events": [{"type": "note", "text": "served"}]},
                                  headers=victim.headers, timeout=30).status_code

            got, served = hostile_ingress.hold(port, requests, give_up=60.0, meanwhile=meanwhile)
            peak = _vm_hwm_mib(proc.pid)
            if verbose:
                for name, codes in statuses.items():
                    print(f"{name}: {calls} concurrent {MAX_BODY // 1024} KiB bodies -> "
                          f"{hostile_ingress.counts(codes)}")
                for path in paths:
                    mine = [s for (p, *_), s in zip(requests, got, strict=True) if p == path]
                    print(f"{path}: {len(mine)} held slow drips from {calls} attempts -> "
                          f"{hostile_ingress.counts(mine)}")
                print(f"another attempt's /ledger meanwhile: {served}")
                print(f"gateway idle_rss_mib={idle:.1f} after_bodies_mib={after_bodies:.1f} peak_rss_mib={peak:.1f} "
                      "(chart limit 512)")
            return peak
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()


def _greedy(body: Any) -> dict[str, Any]:
    """Usage as an upstream reports it that generates ``n`` choices of every token it is allowed."""
    from gateway_fakes import openai_json

    limits = [body.get(k) for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")]
    limits = [v for v in limits if isinstance(v, int)]
    return openai_json("gpt-test", (5, int(body.get("n") or 1) * (min(limits) if limits else 30_000)))


def budget_overshoot_tokens(bin_dir: Path | None = None, *, calls: int = 20, verbose: bool = False) -> int:
    """The largest overshoot (tokens metered beyond ``maxTokens``) of: ``calls`` parallel calls of one attempt
    against 100 (90 tokens each); one ``n=128``, ``max_tokens=4000`` call against 10,000; one call naming no
    maximum against 10,000."""
    import httpx
    from gateway_attempts import make_attempt
    from gateway_fakes import Reply, fake_model, openai_json
    from gateway_server import GatewayThread, settings_for

    from longshot_testing import controlplane

    budget = 100
    overshoots: dict[str, int] = {}
    with _world(bin_dir) as w, fake_model() as model:
        release = threading.Event()
        model.script(*[Reply(body=openai_json("gpt-test", (40, 50)), hold=release) for _ in range(calls)])
        settings = settings_for(w.namespace, w.work).replace(max_model_calls_per_attempt=calls,
                                                             model_call_burst=calls)
        with GatewayThread(w.kubeconfig, settings) as gw:
            a = make_attempt(w.core, w.custom, w.namespace, gw.url, build_spec=_spec(model.url, {"maxTokens": budget}))
            body = {"model": "gpt-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
            done: list[int] = []

            def call(_: int) -> int:
                status = httpx.post(f"{gw.url}/model/openai/chat/completions", json=body, headers=a.headers,
                                    timeout=120).status_code
                done.append(status)
                return status

            with concurrent.futures.ThreadPoolExecutor(calls) as pool:
                futures = [pool.submit(call, i) for i in range(calls)]
                controlplane.wait_until(lambda: len(done) + len(model.seen) >= calls, 60, "every call decided")
                release.set()
                statuses = [f.result() for f in futures]
            used = int(a.progress(w.custom).get("tokens") or 0)
            overshoots["parallel"] = max(0, used - budget)
            if verbose:
                counts = {s: statuses.count(s) for s in sorted(set(statuses))}
                print(f"{calls} parallel calls vs maxTokens {budget}: {counts}, {used} tokens metered "
                      f"(one reservation: {-(-len(json.dumps(body, separators=(',', ':'))) // 4) + 50} tokens)")
            big = 10_000
            for i, (name, extra) in enumerate((("n128_max4000", {"n": 128, "max_tokens": 4000}),
                                               ("no_maximum", {}))):
                with model.server.lock:  # the replies the refused parallel calls never took
                    model.server.replies.clear()
                model.script(Reply(body=_greedy))
                one = make_attempt(w.core, w.custom, w.namespace, gw.url, build=f"b{i + 2}", task=f"b{i + 2}-t1",
                                   build_spec=_spec(model.url, {"maxTokens": big}))
                asked = {"model": "gpt-test", "messages": [{"role": "user", "content": "write all you may"}], **extra}
                status = httpx.post(f"{gw.url}/model/openai/chat/completions", json=asked, headers=one.headers,
                                    timeout=120).status_code
                used = int(one.progress(w.custom).get("tokens") or 0)
                overshoots[name] = max(0, used - big)
                if verbose:
                    sent = model.seen[-1].body if model.seen else {}
                    limit = {k: sent[k] for k in ("max_tokens", "max_completion_tokens") if k in sent}
                    print(f"one call {extra or '(no maximum)'} vs maxTokens {big}: {status}, upstream told {limit}, "
                          f"{used} tokens metered, budget_overshoot_tokens[{name}]={overshoots[name]}")
    if verbose:
        print("budget_overshoot_tokens per case: " + " ".join(f"{k}={v}" for k, v in overshoots.items()))
    return max(overshoots.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, default=None)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    rss = gateway_peak_rss_mib(args.bin_dir, calls=args.calls, verbose=True)
    overshoot = budget_overshoot_tokens(args.bin_dir, calls=args.calls, verbose=True)
    print(f"gateway_peak_rss_mib={rss:.1f} budget_overshoot_tokens={overshoot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
