"""The merge-side secret scan (``vcs.secretscan.scan_range``) on real repositories: every commit, binary and big
files, merges, the allow marker, a hostile checkout config, and memory bounded whatever the file sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vcs_servers import git

from longshot.vcs import secretscan

# Built from pieces so that this file itself does not trip scanners.
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
AWS = "AKIA" + "Z7VQ3HMXK2PLN4RT"  # not AWS's documented example key, which gitleaks allowlists
JWT = ("eyJ" + "hbGciOiJIUzI1NiJ9" + ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIn0" + "."
       + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")
MARKER = secretscan.ALLOW_MARKER


class Repo:
    """A repository with a ``main`` branch and helpers to commit on the checked-out branch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        git("init", "--quiet", "-b", "main", str(path))
        self.commit({"README.md": "# app\n", "tests/fixtures.py": f"FAKE = '{AWS}'  # {MARKER}\n"}, "base")

    def commit(self, files: dict[str, str | bytes | None], message: str = "change") -> str:
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        git("add", "--all", cwd=self.path)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.path)
        return str(git("rev-parse", "HEAD", cwd=self.path))

    def branch(self, name: str, start: str = "main") -> None:
        git("checkout", "--quiet", "-B", name, start, cwd=self.path)

    def scan(self, base: str = "main", head: str = "work", **kw: object) -> list[str]:
        return [str(f) for f in secretscan.scan_range(self.path, base, head, **kw)]  # type: ignore[arg-type]


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo(tmp_path / "repo")
    r.branch("work")
    return r


def test_a_secret_removed_by_a_later_commit_is_still_found(repo: Repo) -> None:
    added = repo.commit({"app/config.py": f"TOKEN = '{GITHUB}'\n"}, "add config")
    repo.commit({"app/config.py": "import os\nTOKEN = os.environ['TOKEN']\n"}, "use the environment")
    assert git("diff", "main", "work", cwd=repo.path).count(GITHUB) == 0  # the net diff is clean
    assert repo.scan() == [f"app/config.py:1: github-pat (commit {added[:12]})"]


def test_a_secret_in_a_binary_file_is_found_and_one_already_in_the_target_is_not(repo: Repo) -> None:
    blob = os.urandom(20_000) + b"\0 " + AWS.encode() + b" " + os.urandom(10_000)
    git("checkout", "--quiet", "main", cwd=repo.path)
    repo.commit({"assets/logo.png": blob}, "a binary with a credential already on main")
    repo.branch("work")
    repo.commit({"assets/logo.png": blob + os.urandom(5000)}, "change the binary")
    assert repo.scan() == []  # the credential was in the blob it replaces
    noise = bytes(b for b in os.urandom(4000) if b not in b"\n\r")
    new = repo.commit({"assets/icon.bin": noise + b"\0\n\n" + GITHUB.encode() + b"\n"}, "new binary")
    assert repo.scan() == [f"assets/icon.bin:3: github-pat (commit {new[:12]})"]


def test_the_allow_marker_is_not_honoured_on_lines_the_branch_adds(repo: Repo) -> None:
    moved = repo.path / "tests" / "fixtures.py"
    repo.commit({"tests/old_fixtures.py": moved.read_text(), "tests/fixtures.py": None}, "move the fixture")
    assert repo.scan() == []  # the marked line is on main already: moving it introduces nothing
    added = repo.commit({"tests/more.py": f"OTHER = '{GITHUB}'  # {MARKER}\n"}, "the agent marks its own")
    assert repo.scan() == [f"tests/more.py:1: github-pat (commit {added[:12]})"]
    # scan_diff, for people's own tooling, still honours it
    assert secretscan.scan_diff(git("diff", "main", "work", cwd=repo.path)) == []


def test_jwt_and_env_assignments(repo: Repo) -> None:
    c = repo.commit({
        ".env": "DB_HOST=db\nDB_PASSWORD=hunter2hunter2\nAPI_TOKEN=${FROM_VAULT}\nSECRET_KEY=changeme\n",
        "deploy/run.sh": "#!/bin/sh\nexport SERVICE_SECRET=s3cr3t-v4lue\nexport PASSWORD=$1\n",
        "web/session.ts": f"const session = '{JWT}';\n",
    }, "config")
    assert repo.scan() == [f".env:2: env-secret-assignment (commit {c[:12]})",
                           f"deploy/run.sh:2: env-secret-assignment (commit {c[:12]})",
                           f"web/session.ts:1: jwt (commit {c[:12]})"]


def test_a_merge_commit_is_scanned_for_its_own_changes(repo: Repo) -> None:
    repo.commit({"a.txt": "a\n"}, "work")
    git("checkout", "--quiet", "main", cwd=repo.path)
    repo.commit({"b.txt": f"b\n{AWS}\n"}, "main moves, with a credential of its own")
    git("checkout", "--quiet", "work", cwd=repo.path)
    git("merge", "--quiet", "--no-ff", "--no-commit", "main", cwd=repo.path)
    (repo.path / "b.txt").write_text(f"b\n{AWS}\nevil = '{GITHUB}'\n")
    git("add", "b.txt", cwd=repo.path)
    git("commit", "--quiet", "-m", "merge main", cwd=repo.path)
    merge = git("rev-parse", "HEAD", cwd=repo.path)
    assert repo.scan() == [f"b.txt:3: github-pat (commit {merge[:12]})"]


def test_known_credentials_are_found_even_when_the_target_has_them(repo: Repo) -> None:
    known = "plain-looking-password-42"
    git("checkout", "--quiet", "main", cwd=repo.path)
    repo.commit({"notes.txt": f"pw {known}\n"}, "a leak already on main")
    repo.branch("work")
    c = repo.commit({"copy.txt": f"pw {known}\n", "blob.bin": b"\0" + known.encode()}, "copied")
    assert repo.scan(known=[known]) == [f"blob.bin:1: known-credential (commit {c[:12]})",
                                        f"copy.txt:1: known-credential (commit {c[:12]})"]


def test_a_secret_across_the_pieces_of_a_long_line_is_found(repo: Repo) -> None:
    line = "x = '" + "a" * (secretscan.LINE_PIECE - 20) + f"' + '{GITHUB}' + 'b'\n"
    c = repo.commit({"long.py": "first\n" + line}, "a long line")
    assert repo.scan() == [f"long.py:2: github-pat (commit {c[:12]})"]


def test_a_hostile_checkout_config_does_not_blind_the_scan(repo: Repo) -> None:
    """The agent-side scan runs in a checkout whose .git/config the model may have written."""
    c = repo.commit({"app.py": "def f():\n\n    return 1\n"}, "blank lines")
    c = repo.commit({"app.py": f"def f():\n\n    return 1\n\nk = '{GITHUB}'\n", "data.txt": f"t {AWS}\n"}, "hide")
    (repo.path / ".gitattributes").write_text("*.txt diff=hide\n")
    for key, value in (("diff.noprefix", "true"), ("diff.suppressBlankEmpty", "true"), ("diff.external", "true"),
                       ("diff.hide.textconv", "true"), ("diff.hide.binary", "true"),
                       ("core.bigFileThreshold", "1g"), ("diff.mnemonicPrefix", "true"), ("color.ui", "always")):
        git("config", key, value, cwd=repo.path)
    assert repo.scan() == [f"app.py:5: github-pat (commit {c[:12]})",
                           f"data.txt:1: aws-access-token (commit {c[:12]})"]


def test_bad_revisions(repo: Repo) -> None:
    with pytest.raises(secretscan.ScanError, match=r"rev-list main\.\.nope"):
        repo.scan(head="nope")
    with pytest.raises(ValueError, match="not a revision"):
        repo.scan(head="--output=/tmp/x")


MEASURE = """
import json, resource, sys

def peak_mib():  # VmHWM: this process's own peak (ru_maxrss would count the parent's RSS at exec)
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024

from longshot.vcs import secretscan
found = secretscan.scan_range(sys.argv[1], "main", "work")
print(json.dumps({"findings": [str(f) for f in found],
                  "python_mib": peak_mib(),
                  "git_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def test_50_mb_and_45_mb_files_are_scanned_with_bounded_memory(repo: Repo) -> None:
    block = "".join(f"    value_{i} = compute({i}, 'some text to make a line of code')\n" for i in range(16_000))
    per_mb = -(-1_000_000 // len(block))
    text = block * (per_mb * 45 // 2) + f"    token = '{GITHUB}'\n" + block * (per_mb * 45 // 2)
    one_line = ("abc; " * 200_000 + f" '{AWS}' " + "def; " * 200_000) * 25  # 50 MB without a newline
    c = repo.commit({"big.py": text, "bundle.min.js": one_line}, "big files")
    assert len(one_line) > 50_000_000 and len(text) > 45_000_000
    del text, one_line
    out = subprocess.run([sys.executable, "-c", MEASURE, str(repo.path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    print(f"peak RSS: scanner {result['python_mib']:.0f} MiB, largest git child {result['git_mib']:.0f} MiB")
    line = 1 + 16_000 * (per_mb * 45 // 2)
    assert result["findings"] == [f"big.py:{line}: github-pat (commit {c[:12]})",
                                  f"bundle.min.js:1: aws-access-token (commit {c[:12]})"]
    # generous bounds (about 30 and 45 MiB measured); reading the files whole would need over 100 MiB each
    assert result["python_mib"] < 100
    assert result["git_mib"] < 100
