#!/usr/bin/env python3
"""Cut a release and publish it to a registry (``make release``, ``make push``).

``release`` (``make release VERSION=x.y.z [REGISTRY=...]``) writes ``dist/``:

* ``longshot-operator-VERSION.oci.tar`` and ``longshot-agent-VERSION.oci.tar``: the images ``hack/images.sh``
  builds (cached: a warm cache rebuilds nothing), retagged ``REGISTRY/longshot-NAME:VERSION`` and saved as OCI
  archives with gzip layers (skopeo); each one's manifest digest is printed and recorded;
* ``sbom/longshot-NAME-VERSION.spdx.json`` and ``.cdx.json``: an SPDX and a CycloneDX SBOM of each image made by
  syft (``hack/go-tools.sh syft``, pinned): the Debian packages (dpkg status) and the Python packages
  (``site-packages``) in the image;
* ``longshot-VERSION.tgz``: the chart, ``helm package`` with version and appVersion VERSION, whose image
  repositories name REGISTRY (default ``ghcr.io/longshot-dev``, the chart's own default) and whose tags default to
  the appVersion: ``helm install longshot oci://REGISTRY/charts/longshot --version VERSION`` pulls these images;
* ``SHA256SUMS`` of all of the above and ``release.json`` (version, registry, each image's reference and digest).

``push`` (``make push REGISTRY=host[:port][/path] [VERSION=...] [COSIGN_KEY=cosign.key]``) publishes that release:
each image with ``skopeo copy --preserve-digests`` (the digest pushed is the digest recorded, checked after the
push), the chart with ``helm push ... oci://REGISTRY/charts``; with a cosign key, each image and the chart signed by
digest (``cosign sign --tlog-upload=false``: no transparency log, the key is the trust) and each image's CycloneDX
SBOM attached as a signed attestation (``cosign attest --type cyclonedx``), both verified with the public key
beside the key (``cosign verify --insecure-ignore-tlog``). A push to another registry than the release named
repackages the chart for that registry (the images are the same bytes under another name).

Plain HTTP and no TLS verification only for a registry on this machine (``localhost``, ``127.0.0.0/8``, ``::1``):
skopeo's ``--dest-tls-verify=false``, helm's ``--plain-http``, cosign's ``--allow-http-registry``. Every other
registry is spoken to over verified TLS.

    python hack/release.py release --version 0.2.0 [--registry ghcr.io/longshot-dev] [--dist dist]
    python hack/release.py push --registry 127.0.0.1:5000/longshot-dev [--version 0.2.0] [--cosign-key k.key]
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "longshot"
DEFAULT_REGISTRY = "ghcr.io/longshot-dev"
"""Where the chart's default image repositories point: ``DEFAULT_REGISTRY/longshot-operator`` and ``-agent``."""
IMAGES = ("operator", "agent")
"""The images of a release (the pause image is the cluster's, never ours to ship)."""
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
REGISTRY = re.compile(r"[a-z0-9.-]+(:\d{1,5})?(/[a-z0-9._-]+)*|\[[0-9a-f:]+\](:\d{1,5})?(/[a-z0-9._-]+)*")


def log(message: str) -> None:
    print(f"[release] {message}", file=sys.stderr, flush=True)


def check_version(version: str) -> str:
    """``version`` when it is semantic versioning (a chart's version must be), else exit naming the rule."""
    if not SEMVER.fullmatch(version):
        raise SystemExit(f"VERSION={version!r} is not a semantic version (x.y.z, e.g. 0.2.0 or 0.2.0-rc.1)")
    return version


def check_registry(registry: str) -> str:
    """``registry`` (``host[:port][/path]``, no scheme, no trailing slash) when well formed, else exit."""
    if not REGISTRY.fullmatch(registry):
        raise SystemExit(f"REGISTRY={registry!r}: expected host[:port][/path] in lower case, no scheme "
                         "(e.g. ghcr.io/longshot-dev or 127.0.0.1:5000)")
    return registry


def is_local(registry: str) -> bool:
    """Whether ``registry``'s host is this machine (localhost, 127.0.0.0/8, ::1): the only registries spoken to
    over plain HTTP."""
    hostport = registry.split("/", 1)[0]
    host = hostport[1:hostport.index("]")] if hostport.startswith("[") else hostport.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def image_ref(registry: str, name: str, version: str) -> str:
    return f"{registry}/longshot-{name}:{version}"


def chart_values(text: str, registry: str) -> str:
    """The chart's values.yaml with each image repository in ``DEFAULT_REGISTRY`` moved to ``registry``;
    exits unless each of the release's images is named exactly once."""
    for name in IMAGES:
        pattern = re.compile(rf"^(\s+repository: ){re.escape(DEFAULT_REGISTRY)}/longshot-{name}$", re.M)
        text, n = pattern.subn(rf"\g<1>{registry}/longshot-{name}", text)
        if n != 1:
            raise SystemExit(f"charts/longshot/values.yaml names {DEFAULT_REGISTRY}/longshot-{name} {n} times, "
                             "not once")
    return text


def chart_metadata(text: str, registry: str, version: str) -> str:
    """Chart.yaml with the ArtifactHub image annotation naming the release's images."""
    for name in IMAGES:
        pattern = re.compile(rf"^(\s+image: )\S*longshot-{name}:\S+$", re.M)
        text, n = pattern.subn(rf"\g<1>{image_ref(registry, name, version)}", text)
        if n != 1:
            raise SystemExit(f"charts/longshot/Chart.yaml's artifacthub.io/images names longshot-{name} {n} times")
    return text


def run(*argv: str | Path, env: dict[str, str] | None = None, stderr: bool = False) -> str:
    """``argv``'s stdout (and its stderr after it with ``stderr``); exits with its stderr when it fails."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(str(a) for a in argv)} failed ({result.returncode}):\n"
                         f"{result.stderr[-4000:]}{result.stdout[-2000:]}")
    return result.stdout + (result.stderr if stderr else "")


def tool(name: str) -> str:
    """The pinned Go tool ``name``, built by hack/go-tools.sh when missing."""
    return run("bash", ROOT / "hack" / "go-tools.sh", name).strip().splitlines()[-1]


def helm() -> str:
    return str(Path(run("bash", ROOT / "hack" / "k8s-binaries.sh").strip().splitlines()[-1]) / "helm")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_digest(transport_ref: str, *extra: str) -> str:
    """The digest of the manifest at ``transport_ref`` (skopeo's ``oci-archive:...`` or ``docker://...``)."""
    result = subprocess.run(["skopeo", "inspect", "--raw", *extra, transport_ref], capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"skopeo inspect --raw {transport_ref} failed:\n{result.stderr.decode(errors='replace')}")
    return "sha256:" + hashlib.sha256(result.stdout).hexdigest()


def package_chart(dist: Path, registry: str, version: str) -> Path:
    """``dist/longshot-VERSION.tgz``: the chart with ``registry``'s image repositories and version/appVersion."""
    with tempfile.TemporaryDirectory(prefix="longshot-chart-") as tmp:
        copy = Path(tmp) / "longshot"
        shutil.copytree(CHART, copy)
        (copy / "values.yaml").write_text(chart_values((copy / "values.yaml").read_text(), registry))
        (copy / "Chart.yaml").write_text(chart_metadata((copy / "Chart.yaml").read_text(), registry, version))
        run(helm(), "package", copy, "--version", version, "--app-version", version, "--destination", dist)
    out = dist / f"longshot-{version}.tgz"
    log(f"chart: {out.relative_to(dist.parent) if out.is_relative_to(dist.parent) else out} "
        f"(images {registry}/longshot-*:{version})")
    return out


def sums(dist: Path, files: list[Path]) -> None:
    lines = [f"{sha256(f)}  {f.relative_to(dist)}\n" for f in sorted(files)]
    (dist / "SHA256SUMS").write_text("".join(lines))


def release(version: str, registry: str, dist: Path) -> dict[str, Any]:
    """Write the release of ``version`` into ``dist`` (see the module's docstring); returns release.json."""
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "sbom").mkdir(exist_ok=True)
    syft = tool("syft")
    files: list[Path] = []
    images: dict[str, Any] = {}
    for name in IMAGES:
        source = Path(run("bash", ROOT / "hack" / "images.sh", "path", name).strip().splitlines()[-1])
        ref = image_ref(registry, name, version)
        archive = dist / f"longshot-{name}-{version}.oci.tar"
        archive.unlink(missing_ok=True)
        log(f"{name}: {source.name} -> {archive.name} as {ref}")
        run("skopeo", "copy", "--quiet", "--dest-compress-format", "gzip", f"docker-archive:{source}",
            f"oci-archive:{archive}:{ref}")
        digest = manifest_digest(f"oci-archive:{archive}")
        spdx = dist / "sbom" / f"longshot-{name}-{version}.spdx.json"
        cdx = dist / "sbom" / f"longshot-{name}-{version}.cdx.json"
        run(syft, "scan", f"oci-archive:{archive}", "--source-name", f"longshot-{name}", "--source-version", version,
            "-o", f"spdx-json={spdx}", "-o", f"cyclonedx-json={cdx}", env={"SYFT_CHECK_FOR_APP_UPDATE": "false"})
        packages = len(json.loads(cdx.read_text()).get("components", []))
        log(f"{name}: {ref}@{digest} (SBOM: {packages} components)")
        print(f"{ref}@{digest}")
        images[name] = {"ref": ref, "digest": digest, "archive": archive.name, "source": source.name,
                        "sbom": {"spdx": str(spdx.relative_to(dist)), "cyclonedx": str(cdx.relative_to(dist))}}
        files += [archive, spdx, cdx]
    chart = package_chart(dist, registry, version)
    files.append(chart)
    sums(dist, files)
    record = {"version": version, "registry": registry, "images": images, "chart": chart.name}
    (dist / "release.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"release {version} in {dist}: SHA256SUMS, release.json")
    return record


def push(registry: str, version: str | None, dist: Path, cosign_key: Path | None) -> dict[str, Any]:
    """Publish ``dist``'s release to ``registry`` (see the module's docstring); returns what was pushed."""
    try:
        record = json.loads((dist / "release.json").read_text())
    except FileNotFoundError:
        raise SystemExit(f"no release in {dist}: run make release VERSION=x.y.z first") from None
    if version and version != record["version"]:
        raise SystemExit(f"{dist} holds release {record['version']}, not {version}: make release VERSION={version}")
    version = str(record["version"])
    local = is_local(registry)
    tls = ["--dest-tls-verify=false"] if local else []
    pushed: dict[str, Any] = {"version": version, "registry": registry, "images": {}}
    for name in IMAGES:
        ref = image_ref(registry, name, version)
        digest = record["images"][name]["digest"]
        run("skopeo", "copy", "--quiet", "--preserve-digests", *tls,
            f"oci-archive:{dist / record['images'][name]['archive']}", f"docker://{ref}")
        got = manifest_digest(f"docker://{ref}", *(["--tls-verify=false"] if local else []))
        if got != digest:
            raise SystemExit(f"{ref}: the registry holds {got}, the release recorded {digest}")
        log(f"{name}: pushed {ref}@{digest}")
        pushed["images"][name] = {"ref": ref, "digest": digest}
    chart = dist / str(record["chart"])
    if registry != record["registry"]:
        log(f"the release names {record['registry']}: repackaging the chart for {registry}")
        chart = package_chart(dist, registry, version)
    out = run(helm(), "push", chart, f"oci://{registry}/charts", *(["--plain-http"] if local else []), stderr=True)
    found = re.search(r"Digest:\s*(sha256:[0-9a-f]{64})", out)
    pushed["chart"] = {"ref": f"oci://{registry}/charts/longshot:{version}",
                       "digest": found.group(1) if found else None}
    log(f"chart: pushed {pushed['chart']['ref']} ({pushed['chart']['digest']})")
    if cosign_key is not None:
        sign(registry, pushed, dist, record, cosign_key, local)
    else:
        log("not signed: no COSIGN_KEY (make push COSIGN_KEY=path/to/cosign.key signs and attests each image)")
    (dist / "pushed.json").write_text(json.dumps(pushed, indent=2) + "\n")
    return pushed


def sign(registry: str, pushed: dict[str, Any], dist: Path, record: dict[str, Any], key: Path, local: bool) -> None:
    """Sign each image and the chart by digest with ``key`` and attest each image's CycloneDX SBOM; verify both
    with the public key beside it (``cosign.key`` -> ``cosign.pub``). No transparency log: the key is the trust."""
    cosign = tool("cosign")
    public = key.with_suffix(".pub")
    if not public.is_file():
        raise SystemExit(f"{public}: the public key of {key} is missing (cosign generate-key-pair writes both)")
    insecure = ["--allow-http-registry", "--allow-insecure-registry"] if local else []
    env = {"COSIGN_PASSWORD": os.environ.get("COSIGN_PASSWORD", ""), "COSIGN_YES": "true"}
    targets = [(name, f"{registry}/longshot-{name}@{image['digest']}") for name, image in pushed["images"].items()]
    if pushed["chart"]["digest"]:
        targets.append(("chart", f"{registry}/charts/longshot@{pushed['chart']['digest']}"))
    for name, ref in targets:
        run(cosign, "sign", "--key", key, "--tlog-upload=false", *insecure, ref, env=env)
        run(cosign, "verify", "--key", public, "--insecure-ignore-tlog=true", *insecure, ref, env=env)
        log(f"{name}: signed and verified {ref}")
        if name in record["images"]:
            sbom = dist / record["images"][name]["sbom"]["cyclonedx"]
            run(cosign, "attest", "--key", key, "--tlog-upload=false", "--type", "cyclonedx", "--predicate", sbom,
                *insecure, ref, env=env)
            run(cosign, "verify-attestation", "--key", public, "--insecure-ignore-tlog=true", "--type", "cyclonedx",
                *insecure, ref, env=env)
            log(f"{name}: SBOM attested and verified ({sbom.name})")
        (pushed["images"].get(name) or pushed["chart"])["signed"] = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("release", help="build dist/: OCI image archives, SBOMs, the chart, SHA256SUMS")
    r.add_argument("--version", required=True)
    r.add_argument("--registry", default=DEFAULT_REGISTRY)
    r.add_argument("--dist", type=Path, default=ROOT / "dist")
    p = sub.add_parser("push", help="push dist/'s images and chart to a registry, signed with --cosign-key")
    p.add_argument("--registry", required=True)
    p.add_argument("--version", default=None)
    p.add_argument("--dist", type=Path, default=ROOT / "dist")
    p.add_argument("--cosign-key", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "release":
        release(check_version(args.version), check_registry(args.registry), args.dist.resolve())
    else:
        push(check_registry(args.registry), args.version and check_version(args.version), args.dist.resolve(),
             args.cosign_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
