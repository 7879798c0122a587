#!/usr/bin/env python3
"""Vendor gitleaks' maintained ruleset (``config/gitleaks.toml``) into the secret scan, at a pinned commit.

Run: ``.venv/bin/python hack/vendor_gitleaks.py [--commit SHA --version vX.Y.Z] [--git-dir DIR]``. It reads the
ruleset and the licence of https://github.com/gitleaks/gitleaks at ``--commit`` (by default the pin below) from
raw.githubusercontent.com, or from a local clone with ``--git-dir``, and writes
``operator/longshot/vcs/rules/gitleaks.toml`` (the upstream file verbatim under a header that names the version,
the commit and the licence) and ``operator/longshot/vcs/rules/LICENSE.gitleaks``. Then run
``pytest tests/unit/vcs/test_secretscan_rules.py tests/integration/vcs/test_secretscan_samples.py``: a rule RE2 cannot
compile is skipped and counted there, and the samples say whether anything was lost. To update, change the pin
here (a release tag's commit), rerun, review the diff and commit both files with the script.
"""

from __future__ import annotations

import argparse
import subprocess
import tomllib
import urllib.request
from pathlib import Path

VERSION = "v8.30.1"
COMMIT = "83d9cd684c87d95d656c1458ef04895a7f1cbd8e"
REPO = "https://github.com/gitleaks/gitleaks"
RULES = Path(__file__).resolve().parents[1] / "operator" / "longshot" / "vcs" / "rules"


def read(path: str, commit: str, git_dir: str | None) -> str:
    if git_dir:
        return subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                              capture_output=True, text=True).stdout
    url = f"https://raw.githubusercontent.com/gitleaks/gitleaks/{commit}/{path}"
    with urllib.request.urlopen(url, timeout=60) as answer:
        return str(answer.read().decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--version", default=VERSION, help="the release the commit is (recorded in the header)")
    parser.add_argument("--git-dir", help="read from this local clone of gitleaks instead of GitHub")
    args = parser.parse_args()
    rules = read("config/gitleaks.toml", args.commit, args.git_dir)
    licence = read("LICENSE", args.commit, args.git_dir)
    tomllib.loads(rules)  # refuse anything that is not TOML before writing it
    header = "".join(f"# {line}".rstrip() + "\n" for line in [
        f"Vendored from {REPO} (config/gitleaks.toml) by hack/vendor_gitleaks.py: do not edit by hand.",
        f"upstream-version: {args.version}",
        f"upstream-commit: {args.commit}",
        "", *licence.strip().splitlines(), "", "The upstream file follows, unchanged.", ""])
    RULES.mkdir(parents=True, exist_ok=True)
    (RULES / "gitleaks.toml").write_text(header + rules)
    (RULES / "LICENSE.gitleaks").write_text(licence)
    count = len(tomllib.loads(rules).get("rules", []))
    print(f"wrote {RULES / 'gitleaks.toml'}: gitleaks {args.version} ({args.commit[:12]}), {count} rules")


if __name__ == "__main__":
    main()
