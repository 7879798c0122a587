#!/usr/bin/env python3
"""A CI stand-in: a small CI server that really runs the repository's tests on every pushed merge-queue branch and
posts the result through the forge's API, as GitHub Actions or GitLab CI would.

    python tests/ci_standin.py --git-dir REPO.git --api URL --project owner/name --token-file F
                               [--forge github|gitlab] [--report check-run|status] [--name ci/test]
                               [--command "sh ./test.sh"] [--delay 0] [--refs 'refs/heads/longshot/*/*/_queue/']

It watches the server repository ``--git-dir`` (polls its refs every 0.1 s) for branches under ``--refs`` (the queue
branches ``longshot/<namespace>/<build>/_queue/<batch>/<position>``, as a CI configured for ``longshot/**/_queue/**``
would). For each new commit on one of them it posts ``pending`` (GitHub check run ``in_progress``), takes the
commit's tree out of the repository (``git archive``) into a scratch directory, runs ``--command`` there (after
``--delay`` seconds: a CI's fixed cost), each commit in its own thread (runners in parallel), and posts the verdict
with a link to its log (``http://ci.example/<project>/runs/<n>``) and the output's last line as description:

* GitHub check run: ``POST /repos/{o}/{r}/check-runs`` (``name``, ``head_sha``, ``status``/``conclusion``,
  ``details_url``, ``output.title``/``summary``);
* GitHub commit status: ``POST /repos/{o}/{r}/statuses/{sha}`` (``context``, ``state``, ``target_url``,
  ``description``);
* GitLab commit status: ``POST /projects/{id}/statuses/{sha}`` (``name``, ``state``, ``target_url``,
  ``description``).

Each line on stdout is one run: ``<sha> <passed|failed> <ref>``. It stops on SIGTERM. Used by
tests/integration/test_ci_gate.py and hack/bench_queue.py (``--ci``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {"LC_ALL": "C"}


class Ci:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.token = Path(args.token_file).read_text().strip()
        self.seen: set[tuple[str, str]] = set()
        self.runs = 0
        self.lock = threading.Lock()
        self.scratch = Path(tempfile.mkdtemp(prefix="ci-standin-"))
        self.stopping = threading.Event()
        self.jobs: set[subprocess.Popen[str]] = set()
        """Runs in progress, each its own process group: ended with the stand-in (a `sleep` in a run's command
        would otherwise outlive it)."""

    # --- the forge ---------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any]) -> None:
        if self.args.forge == "github":
            url = f"{self.args.api}/repos/{self.args.project}{path}"
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
                       "X-GitHub-Api-Version": "2022-11-28"}
        else:
            url = f"{self.args.api}/projects/{urllib.parse.quote(self.args.project, safe='')}{path}"
            headers = {"PRIVATE-TOKEN": self.token}
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                         headers={**headers, "Content-Type": "application/json"})
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    r.read()
                return
            except OSError as e:
                if attempt == 4:
                    print(f"ci-standin: {method} {path}: {e}", file=sys.stderr, flush=True)
                time.sleep(0.2)

    def post(self, sha: str, state: str, url: str, text: str) -> None:
        """``state``: pending, passed or failed."""
        a = self.args
        if a.forge == "gitlab":
            self._call("POST", f"/statuses/{sha}", {"name": a.name, "target_url": url, "description": text[:140],
                                                    "state": {"pending": "running", "passed": "success",
                                                              "failed": "failed"}[state]})
        elif a.report == "status":
            self._call("POST", f"/statuses/{sha}", {"context": a.name, "target_url": url, "description": text[:140],
                                                    "state": {"pending": "pending", "passed": "success",
                                                              "failed": "failure"}[state]})
        elif state == "pending":
            self._call("POST", "/check-runs", {"name": a.name, "head_sha": sha, "status": "in_progress",
                                               "details_url": url})
        else:
            self._call("POST", "/check-runs", {"name": a.name, "head_sha": sha, "details_url": url,
                                               "conclusion": "success" if state == "passed" else "failure",
                                               "output": {"title": text[:140] or state,
                                                          "summary": f"{a.command}: {state}"}})

    # --- the runs ----------------------------------------------------------------------------------

    def refs(self) -> list[tuple[str, str]]:
        out = subprocess.run(["git", "--git-dir", self.args.git_dir, "for-each-ref", "--format=%(objectname) "
                              "%(refname)", self.args.refs.rstrip("*").rstrip("/")], env=ENV, capture_output=True,
                             text=True, check=False).stdout
        pairs = [tuple(line.split(" ", 1)) for line in out.splitlines() if " " in line]
        return [(sha, ref) for sha, ref in pairs if "/_queue/" in ref]

    def run(self, sha: str, ref: str) -> None:
        with self.lock:
            self.runs += 1
            n = self.runs
        url = f"http://ci.example/{self.args.project}/runs/{n}"
        self.post(sha, "pending", url, "running")
        work = self.scratch / f"run-{n}"
        work.mkdir(parents=True)
        script = (f"git --git-dir={self.args.git_dir} archive {sha} | tar -x -C {work} && cd {work} && "
                  + (f"sleep {self.args.delay} && " if self.args.delay > 0 else "") + self.args.command)
        job = subprocess.Popen(["sh", "-c", script], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
        with self.lock:
            self.jobs.add(job)
        stdout, stderr = job.communicate()
        with self.lock:
            self.jobs.discard(job)
        proc = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
        shutil.rmtree(work, ignore_errors=True)
        if self.stopping.is_set():
            return
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        verdict = "passed" if proc.returncode == 0 else "failed"
        self.post(sha, verdict, url, lines[-1] if lines else verdict)
        print(f"{sha} {verdict} {ref}", flush=True)

    def serve(self) -> None:
        while not self.stopping.is_set():
            for sha, ref in self.refs():
                if (sha, ref) in self.seen:
                    continue
                self.seen.add((sha, ref))
                if any(s == sha for s, r in self.seen if r != ref):
                    continue  # one run a commit (GitHub runs a workflow once per pushed commit and ref; enough)
                threading.Thread(target=self.run, args=(sha, ref), daemon=True).start()
            self.stopping.wait(0.1)
        with self.lock:
            for job in self.jobs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.pid, signal.SIGKILL)
        shutil.rmtree(self.scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--git-dir", required=True)
    p.add_argument("--api", required=True, help="the forge's API base (…/github or …/gitlab/api/v4)")
    p.add_argument("--project", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--forge", choices=("github", "gitlab"), default="github")
    p.add_argument("--report", choices=("check-run", "status"), default="check-run", help="GitHub only")
    p.add_argument("--name", default="ci/test", help="the check's name (context)")
    p.add_argument("--command", default="sh ./test.sh", help="the repository's test command")
    p.add_argument("--delay", type=float, default=0.0, help="seconds each run waits before the tests")
    p.add_argument("--refs", default="refs/heads/longshot/", help="the ref prefix to watch")
    ci = Ci(p.parse_args(argv))
    signal.signal(signal.SIGTERM, lambda *_: ci.stopping.set())
    with contextlib.suppress(KeyboardInterrupt):
        ci.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
