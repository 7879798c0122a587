"""Benchmark: clone time of a repository directly from its forge and through longshot-gateway's mirror.

A real control plane (the agent's token must pass a TokenReview), a git forge (smart HTTP, Basic auth)
whose responses are throttled to a WAN-like bandwidth (``--mbps``, 0 for loopback speed) and a per-request
latency (``--latency-ms``), and a repository of ``--files`` files of random content. Prints, for each way,
the median of ``--runs`` clones:

* ``direct``: ``git clone`` from the forge with the credential (what agents did before the gateway);
* ``gateway_cold``: the first clone through the gateway (the mirror is filled from the forge);
* ``gateway_warm``: later clones through the gateway (the mirror answers; the forge is only asked
  what changed);
* ``gateway_after_push``: a clone through the gateway after one new commit on the forge.

Usage: ``python hack/bench_gateway.py [--mbps 40] [--latency-ms 20] [--files 400] [--runs 3]``
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    base = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
            "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x", "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, env={**base, **(env or {})}, check=True, capture_output=True,
                          text=True).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbps", type=float, default=40.0, help="forge bandwidth in Mbit/s (0: unthrottled)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="forge latency per request")
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--file-kib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bin-dir", type=Path, default=None)
    args = parser.parse_args()

    import kubernetes
    from gateway_attempts import make_attempt, secret
    from gateway_server import GatewayThread, settings_for

    from longshot_testing import controlplane
    from longshot_testing import forge as forge_mod

    bin_dir = args.bin_dir or Path(subprocess.run(["bash", str(ROOT / "hack" / "k8s-binaries.sh")], check=True,
                                                  capture_output=True, text=True).stdout.split()[-1])
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    cp = controlplane.ControlPlane(workdir=work / "cp", bin_dir=bin_dir)
    cp.start()
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/buildrequests.longshot.dev",
                   "crd/agenttasks.longshot.dev")
        client = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
        core, custom = kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        controlplane.wait_until(lambda: core.list_namespaced_service_account(ns).items, 30, "the default SA")

        # the forge, throttled
        repos = work / "forge"
        repos.mkdir()
        password = "bench-password"
        (work / "creds").write_text(f"alice:{password}\n")
        bytes_per_s = args.mbps * 1e6 / 8

        class Throttled(forge_mod._Handler):
            def log_message(self, format: str, *a: object) -> None:
                pass

            def _serve(self) -> None:
                time.sleep(args.latency_ms / 1000)
                real = self.wfile

                class Slow:
                    def write(self, data: bytes) -> int:
                        for i in range(0, len(data), 65536):
                            chunk = data[i:i + 65536]
                            real.write(chunk)
                            if bytes_per_s:
                                time.sleep(len(chunk) / bytes_per_s)
                        return len(data)

                    def flush(self) -> None:
                        real.flush()

                self.wfile = Slow()  # type: ignore[assignment]
                try:
                    super()._serve()
                finally:
                    self.wfile = real

        server = forge_mod.Forge(repos, "127.0.0.1", 0, {"alice": password})
        server.RequestHandlerClass = Throttled
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/app.git"

        git("init", "-q", "--bare", "-b", "main", str(repos / "app.git"))
        seed = work / "seed"
        git("init", "-q", "-b", "main", str(seed))
        for i in range(args.files):
            (seed / f"f{i:05}.bin").write_bytes(base64.b64encode(os.urandom(args.file_kib * 768)))
        git("add", "-A", cwd=seed)
        git("commit", "-qm", "seed", cwd=seed)
        git("push", "-q", str(repos / "app.git"), "main", cwd=seed)
        size = sum(p.stat().st_size for p in (repos / "app.git").rglob("*") if p.is_file())

        secret(core, ns, "git-token", {"username": "alice", "password": password})
        settings = settings_for(ns, work).replace(token_cache_seconds=30.0)
        with GatewayThread(cp.kubeconfig, settings) as gw:
            a = make_attempt(core, custom, ns, gw.url, build_spec={"repository": {"url": url,
                                                                                  "credentialsSecret": "git-token"}})
            token_env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                         "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {a.token}"}
            basic = base64.b64encode(f"alice:{password}".encode()).decode()
            direct_env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                          "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}
            via = f"{gw.url}/git/{ns}/b1.git"

            def clone(source: str, env: dict[str, str]) -> float:
                dest = work / f"clone-{time.monotonic_ns()}"
                start = time.monotonic()
                git("clone", "-q", "--no-tags", source, str(dest), env=env)
                took = time.monotonic() - start
                shutil.rmtree(dest)
                return took

            direct = [clone(url, direct_env) for _ in range(args.runs)]
            cold = clone(via, token_env)
            warm = [clone(via, token_env) for _ in range(args.runs)]
            after = []
            for i in range(args.runs):
                (seed / f"new{i}.txt").write_text(f"{i}\n")
                git("add", "-A", cwd=seed)
                git("commit", "-qm", f"new {i}", cwd=seed)
                git("push", "-q", str(repos / "app.git"), "main", cwd=seed)
                after.append(clone(via, token_env))
        server.shutdown()
        print(f"repository: {args.files} files, {size / 1e6:.1f} MB packed; forge {args.mbps:g} Mbit/s, "
              f"{args.latency_ms:g} ms per request; median of {args.runs}")
        print(f"direct_clone_seconds={statistics.median(direct):.2f}")
        print(f"gateway_cold_clone_seconds={cold:.2f}")
        print(f"gateway_warm_clone_seconds={statistics.median(warm):.2f}")
        print(f"gateway_after_push_clone_seconds={statistics.median(after):.2f}")
        print(f"warm_speedup_vs_direct={statistics.median(direct) / statistics.median(warm):.2f}")
    finally:
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
