#!/usr/bin/env python3
"""Pin GitHub's published API descriptions and cut them down to what Longshot uses (issue 52, the forge contracts).

Run: ``.venv/bin/python hack/forge_openapi.py [--tarball-dir DIR] [--check]``. It gets the two pinned npm packages
with npm's own client (``npm pack @octokit/openapi@23.0.2 @octokit/openapi-webhooks@12.1.0``, or reads the
tarballs from ``--tarball-dir``), refuses a tarball whose sha256 is not the one pinned below, reads GitHub's REST
description (``package/generated/api.github.com.json``, OpenAPI 3.0.3) and webhooks description (OpenAPI 3.1.0) out
of them, and writes into ``tests/fixtures/contracts/``:

* ``github-rest.json``: exactly the operations of :data:`REST_OPERATIONS` (the calls of ``runtime/forge.py`` and
  ``runtime/trackers.py``, and what the stand-ins serve besides), with every component they reach through
  ``$ref`` (the closure: each ``$ref`` in the file resolves in the file) and nothing else;
* ``github-webhooks.json``: exactly the webhooks of :data:`WEBHOOKS` (what the standing intake is subscribed to:
  the ``issues`` events, and the ``ping`` GitHub sends when a hook is made), with their closure;
* ``sources.json``: where each came from (package, version, tarball sha256 and npm integrity, the member's sha256)
  and the lists above; ``LICENSE.octokit-openapi``: the packages' licence (MIT).

Nothing is changed inside what is kept, except that the media types' ``examples`` (references to example
payloads, megabytes of them) are left out. ``--check`` writes nothing and fails when the files differ from what
the pinned tarballs give. To change what Longshot calls: add the operation to :data:`REST_OPERATIONS`, rerun, and
commit the files with the client change; the contract tests (tests/unit/contract) fail on a call to an operation
that is not in ``github-rest.json``. To move to a newer description, change the pins (version and sha256), rerun,
and read the diff: it is GitHub's change to the contract.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "contracts"

PACKAGES: dict[str, dict[str, str]] = {
    "github-rest.json": {
        "package": "@octokit/openapi", "version": "23.0.2",
        "tarball": "octokit-openapi-23.0.2.tgz",
        "sha256": "71a18407dd5e8464f4e0525daf03deabbe65abd9287d6adc7b5d98f516cd0d0c",
        "integrity": "sha512-pV8M7L9GY23AybNvTmo2nyjmpmnt6+2sRE/tqr0ZLQcPS4lnw7u5eZGNmwRNkBC3D7gZXbFx5AHzLUVRBXGDhg==",
        "member": "package/generated/api.github.com.json",
    },
    "github-webhooks.json": {
        "package": "@octokit/openapi-webhooks", "version": "12.1.0",
        "tarball": "octokit-openapi-webhooks-12.1.0.tgz",
        "sha256": "112b87c7dcda464640248dcf5965bcd69027c65bb45c26ae78fbf3f0d1eaa740",
        "integrity": "sha512-Z5eDsLCUNbx1zHpZb1LNQirADqdMTvWJQ/deahi0ws+tWWnwHXB+Pr4jfmM9OrETS9Y5iW8ZRu1fdbudObhLrg==",
        "member": "package/generated/api.github.com.json",
    },
}

REST_OPERATIONS: tuple[tuple[str, str], ...] = (
    # runtime/trackers.py (issues of spec.planner.issues and spec.intake)
    ("get", "/repos/{owner}/{repo}/issues"),
    ("patch", "/repos/{owner}/{repo}/issues/{issue_number}"),
    ("get", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("post", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    # runtime/forge.py (spec.merge.delivery: pullRequest)
    ("get", "/repos/{owner}/{repo}/pulls"),
    ("post", "/repos/{owner}/{repo}/pulls"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews/{review_id}/comments"),
    ("put", "/repos/{owner}/{repo}/pulls/{pull_number}/merge"),
    ("post", "/repos/{owner}/{repo}/issues/{issue_number}/labels"),
    ("post", "/repos/{owner}/{repo}/statuses/{sha}"),
    # runtime/forge.py (spec.merge.gate: the team's CI as the gate) reads a queue commit's statuses and check runs
    ("get", "/repos/{owner}/{repo}/commits/{ref}/status"),
    ("get", "/repos/{owner}/{repo}/commits/{ref}/check-runs"),
    # the CI stand-in (tests/ci_standin.py) posts its verdict as a check run, as GitHub Actions does
    ("post", "/repos/{owner}/{repo}/check-runs"),
    # served by tests/integration/forge_server.py for the tests' own reads
    ("get", "/repos/{owner}/{repo}/commits/{ref}/statuses"),
)
"""The REST operations kept: (method, path template) as in the description."""

WEBHOOKS: tuple[str, ...] = (
    "issues-assigned", "issues-closed", "issues-deleted", "issues-demilestoned", "issues-edited", "issues-labeled",
    "issues-locked", "issues-milestoned", "issues-opened", "issues-pinned", "issues-reopened", "issues-transferred",
    "issues-typed", "issues-unassigned", "issues-unlabeled", "issues-unlocked", "issues-unpinned", "issues-untyped",
    "ping",
)
"""The webhooks kept: every action of the ``issues`` event the intake is subscribed to, and ``ping``."""

KEPT_BASENAME_INFO = ("title", "version", "description", "license", "termsOfService", "contact")


class NotInDescription(KeyError):
    """An operation or webhook asked for is not in the description."""


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` string in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """The node a local ``$ref`` (``#/a/b``, JSON pointer escapes ``~1`` and ``~0``) names in ``doc``."""
    if not ref.startswith("#/"):
        raise ValueError(f"not a local $ref: {ref!r}")
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise NotInDescription(ref)
        node = node[part]
    return node


def _without_examples(node: Any) -> Any:
    """``node`` with the media type objects' ``examples`` left out: a ``{"<type>/<subtype>": {"schema": ...}}``
    entry's ``examples`` (only there: a schema may name a property ``examples``)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if "/" in key and isinstance(value, dict) and "schema" in value:
                value = {k: v for k, v in value.items() if k != "examples"}
            out[key] = _without_examples(value)
        return out
    if isinstance(node, list):
        return [_without_examples(item) for item in node]
    return node


def trim(doc: dict[str, Any], operations: Iterable[tuple[str, str]] = (), webhooks: Iterable[str] = ()
         ) -> dict[str, Any]:
    """The description cut to ``operations`` (method, path) and ``webhooks`` (names), with the components they
    reach: every ``$ref`` of the result resolves in it. :class:`NotInDescription` names what is missing."""
    out: dict[str, Any] = {"openapi": doc["openapi"],
                           "info": {k: doc["info"][k] for k in KEPT_BASENAME_INFO if k in doc["info"]}}
    if "servers" in doc:
        out["servers"] = copy.deepcopy(doc["servers"])
    paths: dict[str, Any] = {}
    for method, path in operations:
        item = doc.get("paths", {}).get(path)
        if not isinstance(item, dict) or method not in item:
            raise NotInDescription(f"{method.upper()} {path}")
        kept = paths.setdefault(path, {k: copy.deepcopy(v) for k, v in item.items()
                                       if k in ("parameters", "summary", "description")})
        kept[method] = _without_examples(item[method])
    if paths or "paths" in doc:
        out["paths"] = dict(sorted(paths.items()))
    hooks: dict[str, Any] = {}
    for name in webhooks:
        if name not in doc.get("webhooks", {}):
            raise NotInDescription(f"webhook {name}")
        hooks[name] = _without_examples(doc["webhooks"][name])
    if hooks:
        out["webhooks"] = dict(sorted(hooks.items()))
    components: dict[str, dict[str, Any]] = {}
    pending = list(refs(out))
    while pending:
        ref = pending.pop()
        parts = ref.split("/")
        if len(parts) != 4 or parts[:2] != ["#", "components"]:
            raise ValueError(f"a $ref outside #/components/<kind>/<name>: {ref!r}")
        kind, name = parts[2], parts[3].replace("~1", "/").replace("~0", "~")
        if name in components.get(kind, {}):
            continue
        if kind == "examples":
            raise ValueError(f"an example is referenced outside a media type: {ref!r}")
        node = _without_examples(resolve(doc, ref))
        components.setdefault(kind, {})[name] = node
        pending.extend(refs(node))
    if components:
        out["components"] = {kind: dict(sorted(items.items())) for kind, items in sorted(components.items())}
    return out


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def member_of(tarball: Path, member: str) -> bytes:
    with tarfile.open(tarball, "r:gz") as tar:
        f = tar.extractfile(member)
        if f is None:
            raise SystemExit(f"{tarball}: no {member}")
        return f.read()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(directory: Path) -> None:
    """The pinned tarballs into ``directory`` with npm's own client (the npm registry; nothing else)."""
    specs = [f"{p['package']}@{p['version']}" for p in PACKAGES.values()]
    subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(directory), *specs], check=True,
                   stdout=subprocess.DEVNULL)


def generate(tarballs: Path) -> dict[str, str]:
    """File name -> text of everything this script writes."""
    files: dict[str, str] = {}
    sources: dict[str, Any] = {}
    licence = ""
    for name, pin in PACKAGES.items():
        tarball = tarballs / pin["tarball"]
        got = sha256(tarball)
        if got != pin["sha256"]:
            raise SystemExit(f"{tarball}: sha256 {got}, pinned {pin['sha256']}: refusing it")
        raw = member_of(tarball, pin["member"])
        doc = json.loads(raw)
        if name == "github-rest.json":
            trimmed = trim(doc, REST_OPERATIONS)
            kept: dict[str, Any] = {"operations": [f"{m.upper()} {p}" for m, p in REST_OPERATIONS]}
        else:
            trimmed = trim(doc, (), WEBHOOKS)
            kept = {"webhooks": list(WEBHOOKS)}
        files[name] = dumps(trimmed)
        sources[name] = {**{k: pin[k] for k in ("package", "version", "sha256", "integrity", "member")},
                         "member_sha256": hashlib.sha256(raw).hexdigest(), "openapi": doc["openapi"],
                         "components_kept": sum(len(v) for v in trimmed.get("components", {}).values()),
                         "components_upstream": sum(len(v) for v in doc.get("components", {}).values()), **kept}
        licence = member_of(tarball, "package/LICENSE").decode()
    files["sources.json"] = dumps({"generator": "hack/forge_openapi.py", "descriptions": sources})
    files["LICENSE.octokit-openapi"] = licence
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tarball-dir", type=Path, help="read the pinned tarballs from here instead of npm pack")
    parser.add_argument("--check", action="store_true", help="write nothing; fail when the files differ")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarballs = args.tarball_dir
        if tarballs is None:
            tarballs = Path(tmp)
            fetch(tarballs)
        files = generate(tarballs)
    if args.check:
        stale = [n for n, text in files.items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        for n in stale:
            print(f"{OUT / n}: differs from what the pinned tarballs give; run hack/forge_openapi.py", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for n, text in files.items():
        (OUT / n).write_text(text)
        print(f"wrote {OUT / n} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
