#!/usr/bin/env python3
"""Benchmark of the merge-side secret scan on big files: time and peak memory of one scan of a branch.

Run: ``.venv/bin/python hack/bench_secretscan.py [--mb 45]``. Builds a repository whose branch adds a text file
of ``--mb`` MB (with a credential in the middle), a file of one 50 MB line, and a 5 MB binary file, then scans
``main..branch`` in a fresh process each time and prints wall time, the Python process's peak RSS (VmHWM) and
the peak RSS of its largest git child (``ru_maxrss``, which also counts the scanner's RSS when git was started):

* ``scan_range``: the streaming scan (``vcs.secretscan.scan_range``);
* with ``--compare``, ``diff+scan_diff``: the previous approach (``git diff`` read whole, then ``scan_diff``).

Then it scans the realistic samples of issue 32 (``longshot_testing.secret_samples``) and prints
``samples_caught=a/b`` (samples with at least one finding) and ``false_positives=c/d`` (controls with one).

Figures only, no assertion (the tests assert generous memory bounds, and that every sample is found).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

ENV = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.com", "GIT_COMMITTER_NAME": "a",
       "GIT_COMMITTER_EMAIL": "a@example.com", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
SECRET = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"

MEASURE = """
import json, resource, sys, time

def peak_mib():  # VmHWM: this process's own peak (ru_maxrss would count the parent's RSS at exec)
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024

start, cpu = time.perf_counter(), time.process_time()
from longshot.vcs import secretscan
repo, mode = sys.argv[1], sys.argv[2]
if mode == "scan_range":
    found = secretscan.scan_range(repo, "main", "branch")
else:
    import subprocess
    diff = subprocess.run(["git", "-C", repo, "diff", "--no-color", "main...branch"], capture_output=True,
                          check=True).stdout.decode(errors="replace")
    found = secretscan.scan_diff(diff)
print(json.dumps({"seconds": time.perf_counter() - start, "findings": [str(f) for f in found],
                  "cpu_seconds": time.process_time() - cpu,
                  "self_mib": peak_mib(),
                  "git_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=ENV, capture_output=True)


def text_file(path: Path, size: int, rnd: random.Random) -> None:
    """``size`` bytes of code-like lines with one credential in the middle."""
    words = ["".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(2, 9))) for _ in range(2000)]
    with path.open("w") as f:
        written, planted = 0, False
        while written < size:
            line = f"    {rnd.choice(words)} = {rnd.choice(words)}({rnd.randint(0, 10**6)}, '{rnd.choice(words)}')\n"
            if not planted and written > size // 2:
                line, planted = f"    token = '{SECRET}'\n", True
            f.write(line)
            written += len(line)


def make_repo(root: Path, mb: int) -> Path:
    rnd = random.Random(7)
    repo = root / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=ENV)
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "branch")
    text_file(repo / "big.py", mb * 1000 * 1000, rnd)
    with (repo / "one-line.min.js").open("w") as f:
        chunk = "".join(rnd.choices(string.ascii_letters + "{}();,. ", k=1 << 20))
        for i in range(50):
            f.write(chunk if i != 25 else chunk[:1000] + f'"{SECRET}"' + chunk[1002 + len(SECRET):])
    (repo / "data.bin").write_bytes(os.urandom(5 << 20))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "big files")
    return repo


def measure(repo: Path, mode: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(repo), mode], capture_output=True, text=True,
                         check=True, env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)})
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=45, help="size of the big text file in MB")
    parser.add_argument("--compare", action="store_true", help="also time the previous approach (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        repo = make_repo(Path(tmp), args.mb)
        print(f"repository: a {args.mb} MB text file, a 50 MB one-line file and a 5 MB binary "
              f"(built in {time.perf_counter() - t0:.1f} s)")
        for mode in ("scan_range", "diff+scan_diff") if args.compare else ("scan_range",):
            r = measure(repo, mode)
            print(f"{mode:15} {r['seconds']:6.2f} s ({r['cpu_seconds']:5.2f} s CPU)   "
                  f"python peak RSS {r['self_mib']:6.0f} MiB   largest git child {r['git_mib']:6.0f} MiB   "
                  f"findings: {', '.join(r['findings']) or '-'}")  # type: ignore[arg-type]
    print(samples())


def samples() -> str:
    """``samples_caught=a/b false_positives=c/d`` of the scan on the realistic samples and the controls."""
    from longshot.vcs import secretscan
    from longshot_testing.secret_samples import NOT_SECRETS, SAMPLES

    caught = sum(bool(secretscan.scan_text(s.path, s.text)) for s in SAMPLES)
    false = sum(bool(secretscan.scan_text(s.path, s.text)) for s in NOT_SECRETS)
    return f"samples_caught={caught}/{len(SAMPLES)} false_positives={false}/{len(NOT_SECRETS)}"


if __name__ == "__main__":
    main()
