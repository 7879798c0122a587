#!/usr/bin/env python3
"""Pin Linear's GraphQL schema and cut it down to what Longshot uses (issue 54, the Jira and Linear intake).

Linear publishes its schema as ``schema.graphql`` in the ``linear/linear`` repository; the npm package that is built
from it, ``@linear/sdk``, does not ship that file, but ships the TypeScript types that graphql-codegen generated from
it (``dist/index-*.d.mts``: one ``type X = {...}`` per object and input type, with every field's type, nullability,
arguments (``XFieldArgs``) and description, and one ``declare enum`` per enum). This script reads those types back
into GraphQL SDL, for the types and fields of :data:`KEEP` only.

Run: ``.venv/bin/python hack/linear_schema.py [--tarball-dir DIR] [--check]``. It gets the pinned package with npm's
own client (``npm pack @linear/sdk@98.0.0``, or reads the tarball from ``--tarball-dir``), refuses a tarball whose
sha256 is not the one pinned below, and writes ``tests/fixtures/contracts/linear-schema.graphql`` (with a header
naming the package, version, sha256 and member) and ``sources-linear.json``. A field of :data:`KEEP` that the
package's types do not have fails the run: that is Linear's change to the contract. ``--check`` writes nothing and
fails when the committed file differs from what the pinned tarball gives.

To change what Longshot asks Linear: add the type or field to :data:`KEEP`, rerun, and commit the schema with the
client change; ``tests/unit/contract/test_linear_contract.py`` validates every query of ``runtime/trackers.py``
against the file (graphql-core), and the stand-in (tests/integration/tracker_server.py) executes them on it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "contracts"
SCHEMA = OUT / "linear-schema.graphql"
SOURCES = OUT / "sources-linear.json"

PACKAGE = {
    "package": "@linear/sdk", "version": "98.0.0", "tarball": "linear-sdk-98.0.0.tgz",
    "member_prefix": "package/dist/index-", "member_suffix": ".d.mts",
}
PINNED_SHA256 = "fd1737a0cc4fe6ede4374878c8bf2d80dac27163bf593495f3673774e20095cc"

# kind, then the fields kept (for objects: with the arguments kept; for inputs: the fields)
KEEP: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "Query": ("type", {"issue": ("id",), "issues": ("filter", "first", "after", "orderBy"),
                       "workflowStates": ("filter", "first")}),
    "Mutation": ("type", {"commentCreate": ("input",), "issueUpdate": ("id", "input")}),
    "Issue": ("type", {"id": (), "identifier": (), "number": (), "title": (), "description": (), "url": (),
                       "labels": ("first",), "assignee": (), "creator": (), "projectMilestone": (), "team": (),
                       "state": (), "comments": ("first", "after")}),
    "IssueConnection": ("type", {"nodes": (), "pageInfo": ()}),
    "IssueLabel": ("type", {"name": ()}),
    "IssueLabelConnection": ("type", {"nodes": ()}),
    "User": ("type", {"id": (), "displayName": (), "guest": ()}),
    "ProjectMilestone": ("type", {"name": ()}),
    "Team": ("type", {"key": ()}),
    "WorkflowState": ("type", {"id": (), "name": (), "type": ()}),
    "WorkflowStateConnection": ("type", {"nodes": ()}),
    "Comment": ("type", {"body": ()}),
    "CommentConnection": ("type", {"nodes": (), "pageInfo": ()}),
    "PageInfo": ("type", {"hasNextPage": (), "endCursor": ()}),
    "CommentPayload": ("type", {"success": ()}),
    "IssuePayload": ("type", {"success": ()}),
    "IssueFilter": ("input", {"team": (), "state": (), "labels": (), "and": ()}),
    "TeamFilter": ("input", {"key": ()}),
    "WorkflowStateFilter": ("input", {"type": (), "team": ()}),
    "IssueLabelCollectionFilter": ("input", {"some": ()}),
    "IssueLabelFilter": ("input", {"name": ()}),
    "StringComparator": ("input", {"eq": (), "in": (), "nin": ()}),
    "CommentCreateInput": ("input", {"issueId": (), "body": ()}),
    "IssueUpdateInput": ("input", {"stateId": ()}),
    "PaginationOrderBy": ("enum", {}),
}
"""What ``runtime/trackers.py`` (class ``Linear``) asks, and nothing else."""

BUILTIN = {"String", "Int", "Float", "Boolean", "ID"}


def block(text: str, name: str) -> str:
    """The body of ``type NAME = ... {...};`` or ``declare enum NAME {...}``."""
    m = re.search(rf"^(?:type {name} = [^{{\n]*\{{|declare enum {name} \{{)\n(.*?)^\}};?$", text, re.M | re.S)
    if m is None:
        raise SystemExit(f"{PACKAGE['package']} {PACKAGE['version']}: no type {name}")
    return m.group(1)


def fields(body: str) -> dict[str, tuple[str, bool, str]]:
    """name -> (TypeScript type, optional, description) of a type's body."""
    out: dict[str, tuple[str, bool, str]] = {}
    doc = ""
    for line in body.splitlines():
        s = line.strip()
        if s.startswith("/**"):
            doc = s.removeprefix("/**").removesuffix("*/").strip()
            continue
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(\??): (.*);", s)
        if m and m.group(1) != "__typename":
            out[m.group(1)] = (m.group(3), bool(m.group(2)), doc)
        doc = ""
    return out


def sdl_type(ts: str) -> str:
    """``Maybe<Array<Scalars["String"]>>`` -> ``[String!]``; a type not under Maybe/InputMaybe is non-null."""
    ts = ts.strip()
    for wrap in ("InputMaybe<", "Maybe<"):
        if ts.startswith(wrap) and ts.endswith(">"):
            return sdl_type(ts[len(wrap):-1]).removesuffix("!")
    if ts.startswith("Array<") and ts.endswith(">"):
        return f"[{sdl_type(ts[6:-1])}]!"
    m = re.fullmatch(r'Scalars\["([A-Za-z]+)"\](?:\["(?:input|output)"\])?', ts)
    if m:
        return m.group(1) + "!"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ts):
        return ts + "!"
    raise SystemExit(f"cannot read the TypeScript type {ts!r} as GraphQL")


def named(t: str) -> str:
    return t.strip("[]!")


def render(text: str) -> str:
    lines: list[str] = []
    scalars: set[str] = set()
    for name, (kind, keep) in KEEP.items():
        body = block(text, name)
        if kind == "enum":
            values = re.findall(r'^\s*[A-Za-z_][A-Za-z0-9_]* = "([A-Za-z_][A-Za-z0-9_]*)",?$', body, re.M)
            lines += [f"enum {name} {{", *[f"  {v}" for v in values], "}", ""]
            continue
        have = fields(body)
        lines.append(f"{kind} {name} {{")
        for fname, args in keep.items():
            if fname not in have:
                raise SystemExit(f"{PACKAGE['package']} {PACKAGE['version']}: {name}.{fname} does not exist")
            ts, optional, doc = have[fname]
            gql = sdl_type(ts)
            if optional and kind == "input":
                gql = gql.removesuffix("!")
            arg_text = ""
            if args:
                arg_fields = fields(block(text, f"{name}{fname[0].upper()}{fname[1:]}Args"))
                missing = [a for a in args if a not in arg_fields]
                required = [a for a, (_, opt, _) in arg_fields.items() if not opt and a not in args]
                if missing or required:
                    raise SystemExit(f"{name}.{fname}: arguments {missing} do not exist, {required} are required")
                rendered = []
                for a in args:
                    ats, aopt, _ = arg_fields[a]
                    at = sdl_type(ats)
                    rendered.append(f"{a}: {at.removesuffix('!') if aopt else at}")
                    scalars.add(named(at))
                arg_text = f"({', '.join(rendered)})"
            if doc:
                lines.append(f'  "{doc.replace(chr(92), "").replace(chr(34), chr(39))}"')
            lines.append(f"  {fname}{arg_text}: {gql}")
            scalars.add(named(gql))
        lines += ["}", ""]
    unknown = sorted(s for s in scalars if s not in BUILTIN and s not in KEEP)
    for s in unknown:
        if not re.search(rf"^  {s}: ", block(text, "Scalars"), re.M):
            raise SystemExit(f"type {s} is used by a kept field but not kept: add it to KEEP")
    head = [f"scalar {s}" for s in unknown]
    return "\n".join(head + ([""] if head else []) + lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--tarball-dir", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = args.tarball_dir or Path(tmp)
        tarball = where / PACKAGE["tarball"]
        if not tarball.exists():
            subprocess.run(["npm", "pack", f"{PACKAGE['package']}@{PACKAGE['version']}", "--silent"], cwd=where,
                           check=True, stdout=subprocess.DEVNULL)
        data = tarball.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != PINNED_SHA256:
            raise SystemExit(f"{tarball.name}: sha256 {digest}, pinned {PINNED_SHA256}; refusing it")
        with tarfile.open(tarball) as tar:
            member = next(m for m in tar.getmembers() if m.name.startswith(PACKAGE["member_prefix"])
                          and m.name.endswith(PACKAGE["member_suffix"]) and m.name.count("/") == 2)
            extracted = tar.extractfile(member)
            assert extracted is not None
            raw = extracted.read()
    text = raw.decode()
    header = (f"# Linear's GraphQL schema, cut down to what Longshot asks (hack/linear_schema.py; do not edit).\n"
              f"# Read back from the graphql-codegen types of {PACKAGE['package']} {PACKAGE['version']} "
              f"(npm; tarball sha256 {digest}),\n# member {member.name} (sha256 {hashlib.sha256(raw).hexdigest()}).\n"
              "# Licence of the package: MIT.\n\n")
    schema = header + render(text)
    sources = {"linear-schema.graphql": {"package": PACKAGE["package"], "version": PACKAGE["version"],
                                         "tarball_sha256": digest, "member": member.name,
                                         "member_sha256": hashlib.sha256(raw).hexdigest(),
                                         "kept": {k: sorted(v[1]) for k, v in KEEP.items()}}}
    sources_text = json.dumps(sources, indent=2, sort_keys=True) + "\n"
    if args.check:
        stale = [p.name for p, want in ((SCHEMA, schema), (SOURCES, sources_text))
                 if not p.exists() or p.read_text() != want]
        if stale:
            print(f"stale: {', '.join(stale)}; run hack/linear_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(schema)
    SOURCES.write_text(sources_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
