#!/usr/bin/env python3
"""Pin GitHub's published GraphQL schema and cut it down to what Longshot asks (issue 52, handing a pull request to
the forge's auto-merge).

GitHub publishes its GraphQL schema on npm as ``@octokit/graphql-schema`` (``schema.graphql``, generated from
GitHub's own introspection). GitHub has no REST endpoint for auto-merge; ``enablePullRequestAutoMerge`` is a
GraphQL mutation, which ``runtime/forge.py`` (``GitHubForge.enable_auto_merge``) sends.

Run: ``.venv/bin/python hack/github_graphql_schema.py [--tarball-dir DIR] [--check]``. It gets the pinned package
with npm's own client (``npm pack @octokit/graphql-schema@15.26.1``, or reads the tarball from ``--tarball-dir``),
refuses a tarball whose sha256 is not the one pinned below, builds the whole schema with graphql-core, and writes
``tests/fixtures/contracts/github-graphql.graphql``: the types of :data:`KEEP`, each with the fields kept exactly
as the published schema types them (arguments, nullability, defaults; input types whole), with a header naming
the package, version and sha256s. A kept field the schema lacks fails the run: that is GitHub's change to the
contract. ``--check`` writes nothing and fails when the committed file differs.

``tests/unit/contract/test_github_graphql_contract.py`` validates every GraphQL request of ``runtime/forge.py``
against the file, and the stand-in forge (tests/integration/forge_server.py) validates every request it is sent.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import graphql

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "contracts" / "github-graphql.graphql"

PACKAGE = {"package": "@octokit/graphql-schema", "version": "15.26.1",
           "tarball": "octokit-graphql-schema-15.26.1.tgz", "member": "package/schema.graphql"}
PINNED_SHA256 = "053e74249dafce2118fd9b7ae499b067d57c5f910c57745699ac45108bc68d1e"

KEEP: dict[str, tuple[str, ...]] = {
    "Query": ("viewer",),
    "User": ("login",),
    "Mutation": ("enablePullRequestAutoMerge",),
    "EnablePullRequestAutoMergeInput": (),
    "EnablePullRequestAutoMergePayload": ("clientMutationId", "pullRequest"),
    "PullRequest": ("number", "state", "merged", "autoMergeRequest"),
    "AutoMergeRequest": ("enabledAt", "mergeMethod"),
    "PullRequestState": (),
    "PullRequestMergeMethod": (),
    "GitObjectID": (),
    "DateTime": (),
}
"""Object types with the fields kept; input types, enums and scalars are kept whole (an empty tuple)."""


def render(full: graphql.GraphQLSchema) -> str:
    out: list[str] = []
    for name, keep in KEEP.items():
        t = full.get_type(name)
        if t is None:
            raise SystemExit(f"{PACKAGE['package']} {PACKAGE['version']}: no type {name}")
        if isinstance(t, graphql.GraphQLObjectType):
            missing = [f for f in keep if f not in t.fields]
            if missing:
                raise SystemExit(f"{PACKAGE['package']} {PACKAGE['version']}: {name} has no field {missing}")
            t = graphql.GraphQLObjectType(name, {f: t.fields[f] for f in keep}, description=t.description)
        elif keep:
            raise SystemExit(f"{name}: only object types are cut to fields")
        out.append(graphql.print_type(t))
    cut = "\n\n".join(out) + "\n"
    schema = graphql.build_schema(cut)  # every type a kept field names is kept
    errors = graphql.validate_schema(schema)
    if errors:
        raise SystemExit(f"the cut schema is not valid: {errors[0].message}")
    return cut


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[1])
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
            extracted = tar.extractfile(PACKAGE["member"])
            assert extracted is not None
            raw = extracted.read()
    header = (f"# GitHub's GraphQL schema, cut down to what Longshot asks (hack/github_graphql_schema.py; do not "
              f"edit).\n# From {PACKAGE['package']} {PACKAGE['version']} (npm; tarball sha256 {digest}),\n"
              f"# member {PACKAGE['member']} (sha256 {hashlib.sha256(raw).hexdigest()}). Licence of the package: "
              "MIT.\n\n")
    # the published file defines two fields of EnterpriseOwnerInfo twice (identically); skip the SDL check, which
    # refuses that, not the types Longshot keeps
    text = header + render(graphql.build_schema(raw.decode(), assume_valid_sdl=True))
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} differs from what the pinned package gives; rerun without --check",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
