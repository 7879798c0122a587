"""Held slow-drip connections, and the operator's HTTP server process under them (issue 50, item 1).

* :func:`hold`: ``n`` connections that each send a request head declaring a large body and then one byte a second,
  until they are answered; returns the statuses (0: no answer before ``give_up``; -1: reset or refused at connect).
  ``hack/hostile_gateway.py`` spreads 800 of them across the gateway's body routes.
* :func:`operator_peak_rss_mib`: a real process of the operator's HTTP servers (``longshot.metrics.start_http_server``
  with its default limits, the webhook on its own port; the webhook callable checks the HMAC of the body as
  ``controllers.standing.delivery`` does, without the Secret read) under 600 held webhook connections from 150
  source addresses (``127.0.0.2`` and up: four each, so every source's lane is full), while three amplifying
  tracker answers are polled at once with the operator's own client (``runtime.trackers`` inside
  ``controllers.lanes``) and the loads in :data:`LOADS` run in the same process. Returns its peak resident memory
  (``VmHWM``) in MiB; the chart's memory limit of the operator is 512Mi.

Usage: ``python hack/hostile_ingress.py`` prints ``operator_peak_rss_mib=...``; ``--serve`` is the measured process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

LOADS: list[Callable[[], None]] = []
"""Work run in the measured operator process at the same time as the held webhook connections, each in a thread of
its own (the hook for issue 50's "three amplifying tracker answers at once": append three callables that each poll
a hostile tracker through ``runtime.trackers`` with the operator's real client; they run in the process whose peak
is measured, and :func:`operator_peak_rss_mib` waits for them)."""

HOOK_SECRET = "hostile-bench-secret"


async def _one(port: int, path: str, headers: dict[str, str], declared: int, give_up: float, source: str,
               sent: asyncio.Semaphore) -> int:
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError:
        sent.release()
        return -1
    try:
        head = [f"POST {path} HTTP/1.1", "Host: longshot", f"Content-Length: {declared}",
                "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        sent.release()
        answer = asyncio.ensure_future(reader.readline())
        while not answer.done() and loop.time() - start < give_up:
            with contextlib.suppress(ConnectionError):
                writer.write(b"x")
            await asyncio.wait([answer], timeout=1.0)
        if not answer.done():
            answer.cancel()
            return 0
        line = answer.result()
        return int(line.split()[1]) if line.startswith(b"HTTP/") else -1
    except (ConnectionError, ValueError):
        return -1
    finally:
        writer.close()


def hold(port: int, requests: Sequence[tuple[str, dict[str, str], int, str]], *, give_up: float = 60.0,
         meanwhile: Callable[[], Any] | None = None) -> tuple[list[int], Any]:
    """Hold every request of ``requests`` (path, headers, declared length, source address) at once; once every head
    is sent, ``meanwhile()`` runs in a worker thread (a legitimate request). Returns the statuses the held requests
    were answered with, in order, and what ``meanwhile`` returned."""

    async def run() -> tuple[list[int], Any]:
        sent = asyncio.Semaphore(0)
        held = [asyncio.ensure_future(_one(port, path, headers, declared, give_up, source, sent))
                for path, headers, declared, source in requests]
        for _ in requests:
            await sent.acquire()
        during = await asyncio.to_thread(meanwhile) if meanwhile is not None else None
        return list(await asyncio.gather(*held)), during

    return asyncio.run(run())


def counts(statuses: Sequence[int]) -> dict[int, int]:
    return {s: statuses.count(s) for s in sorted(set(statuses))}


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def _tracker_loads(url: str, shapes: Sequence[str]) -> Callable[[], None]:
    """Three issue listings at once, one per tenant, against the amplifying tracker at ``url``, with the operator's
    own code: ``runtime.trackers`` inside ``controllers.lanes`` (as ``hack/hostile_trackers.py`` runs them). It prints
    one line, ``loads {shape: what the listing ended with}``, when they are done."""

    def load() -> None:
        import json

        from longshot.controllers import lanes
        from longshot.runtime import trackers

        def listing(shape: str) -> str:
            try:
                with trackers.GitHub(repository=f"org/{shape}", token=None, url=url, max_retries=0) as t:
                    return f"{len(t.list_issues(['longshot']))} issues"
            except Exception as e:  # what the intake would report
                return f"{type(e).__name__}: {str(e)[:120]}"

        async def run() -> list[str]:
            lanes_ = lanes.Lanes()

            async def one(shape: str) -> str:
                async with lanes_.lane(f"tenant-{shape}"):
                    return await asyncio.to_thread(listing, shape)

            return list(await asyncio.gather(*(one(s) for s in shapes)))

        print("loads " + json.dumps(dict(zip(shapes, asyncio.run(run()), strict=True))), flush=True)

    return load


def _serve(metrics_port: int, webhook_port: int, tracker: Sequence[str] = ()) -> int:
    """The measured process: the operator's HTTP servers with their default limits, and :data:`LOADS`. With
    ``tracker`` (a URL and the shapes), three tracker listings start when the bench writes ``go`` on stdin (once its
    connections are held)."""
    from longshot import metrics
    from longshot.core import standing

    def delivery(path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        if standing.parse_path(path) is None or not standing.verify_delivery(HOOK_SECRET, headers, body):
            return standing.REFUSED_DELIVERY
        return 202, "poll scheduled"

    server = metrics.start_http_server(metrics_port, addr="127.0.0.1", webhook=delivery, webhook_port=webhook_port)
    threads = [threading.Thread(target=load, name=f"load-{i}", daemon=True) for i, load in enumerate(LOADS)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    if tracker and sys.stdin.readline().strip() == "go":
        _tracker_loads(tracker[0], tracker[1:])()
    sys.stdin.readline()  # until the bench closes stdin
    for t in threads:
        t.join(60)
    server.close()
    return 0


def operator_peak_rss_mib(*, held: int = 600, sources: int = 150, trackers: bool = True,
                          verbose: bool = False) -> float:
    """Peak RSS (MiB) of the operator's HTTP server process under ``held`` slow-drip webhook connections and, with
    ``trackers``, three amplifying tracker answers at once (``tests/integration/amplifying_servers.py``: ``[],``
    repeated, deep nesting, a million small objects, each at the 8 MiB answer cap), polled while the connections are
    held."""
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from amplifying_servers import SHAPES, AmplifyingTracker, amplifying

    with contextlib.ExitStack() as stack:
        url = ""
        if trackers:
            for shape in SHAPES:
                amplifying(shape)
            url = stack.enter_context(AmplifyingTracker()).github_url
        return _measure(held, sources, [url, *SHAPES] if trackers else [], verbose)


def _measure(held: int, sources: int, tracker: list[str], verbose: bool) -> float:
    import httpx

    from longshot_testing import controlplane

    sources = min(sources, 250)
    metrics_port, webhook_port = controlplane.free_port(), controlplane.free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    extra = ["--tracker", *tracker] if tracker else []
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(metrics_port), str(webhook_port), *extra],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    loads: dict[str, str] = {}
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        idle = _vm_hwm_mib(proc.pid)
        body = b'{"zen": "a delivery"}'
        signature = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        requests = [("/intake/ns/intake", {"X-Hub-Signature-256": "sha256=00"}, 1024 * 1024,
                     f"127.0.2.{2 + i % min(sources, 250)}") for i in range(held)]

        def meanwhile() -> tuple[int, int]:  # the tracker answers, a genuine delivery (from 127.0.0.1) and a scrape
            if tracker:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                loads.update(json.loads(line.removeprefix("loads ")) if line.startswith("loads ") else {"?": line})
            genuine = httpx.post(f"http://127.0.0.1:{webhook_port}/intake/ns/intake", content=body,
                                 headers={"X-Hub-Signature-256": signature}, timeout=30).status_code
            return genuine, httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).status_code

        got, (genuine, scrape) = hold(webhook_port, requests, give_up=30.0, meanwhile=meanwhile)
        peak = _vm_hwm_mib(proc.pid)
        if verbose:
            print(f"operator webhook: {held} held connections from {sources} addresses -> {counts(got)}; "
                  f"a genuine delivery meanwhile: {genuine}, a scrape: {scrape}")
            for shape, result in loads.items():
                print(f"  three tracker answers at once, {shape}: {result}")
            print(f"operator http idle_rss_mib={idle:.1f} peak_rss_mib={peak:.1f} (chart limit 512)")
        return peak
    finally:
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--serve", nargs=2, type=int, metavar=("METRICS_PORT", "WEBHOOK_PORT"))
    parser.add_argument("--tracker", nargs="+", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return _serve(*args.serve, tracker=args.tracker)
    sys.path.insert(0, str(ROOT / "operator"))
    rss = operator_peak_rss_mib(verbose=True)
    print(f"operator_peak_rss_mib={rss:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
