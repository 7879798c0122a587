#!/usr/bin/env python3
"""Build the Krew archive of ``kubectl longshot`` and fill its manifest (``make krew-manifest``).

The archive (``dist/krew/kubectl-longshot-v<version>.tar.gz``) holds the launcher ``hack/krew/kubectl-longshot`` and
a README; it is reproducible (sorted members, fixed owner, mode and time), so its sha256 depends on its content
only. The manifest (``dist/krew/longshot.yaml``) is ``hack/krew/longshot.yaml`` with the version, the archive's URL
(``--base-url``, default the GitHub release of that version) and its sha256 for each platform listed in PLATFORMS.

    python hack/krew_manifest.py [--out dist/krew] [--base-url URL]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KREW = ROOT / "hack" / "krew"
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64"))
"""Where the shell launcher runs (Python and the package are the user's)."""
EPOCH = 315532800
"""1980-01-01: every member's mtime, so that the archive is the same for the same content."""
README = """kubectl longshot, installed by Krew.

The plugin runs on Python 3.11+ with the longshot package installed
(pip install 'longshot-operator[plugin]=={version}'); set LONGSHOT_PYTHON to choose the interpreter.
Commands: kubectl longshot --help. Completion: kubectl longshot completion bash|zsh|fish. Documentation: https://github.com/longshot-dev/longshot/blob/main/docs/operations.md
"""


def version() -> str:
    for line in (ROOT / "operator" / "longshot" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise SystemExit("no __version__ in operator/longshot/__init__.py")


def archive(v: str) -> bytes:
    """The tar.gz, byte for byte the same for the same launcher, README and version."""
    members = [("kubectl-longshot", (KREW / "kubectl-longshot").read_bytes(), 0o755),
               ("README.md", README.format(version=v).encode(), 0o644)]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=EPOCH, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def manifest(v: str, uri: str, sha256: str) -> str:
    platforms = "".join(
        f"  - selector:\n      matchLabels:\n        os: {os_}\n        arch: {arch}\n"
        f"    uri: {uri}\n    sha256: {sha256}\n    bin: kubectl-longshot\n"
        "    files:\n    - from: kubectl-longshot\n      to: .\n    - from: README.md\n      to: .\n"
        for os_, arch in PLATFORMS)
    text = (KREW / "longshot.yaml").read_text()
    body = text[text.index("apiVersion:"):]  # the template's comment is for the template, not the result
    return (body.replace("{{PLATFORMS}}\n", platforms).replace("{{VERSION}}", v).replace("{{URI}}", uri)
            .replace("{{SHA256}}", sha256))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "dist" / "krew")
    p.add_argument("--base-url", help="where the archive is published (default: the GitHub release of the version)")
    a = p.parse_args(argv)
    v = version()
    data = archive(v)
    name = f"kubectl-longshot-v{v}.tar.gz"
    base = a.base_url or f"https://github.com/longshot-dev/longshot/releases/download/v{v}"
    sha = hashlib.sha256(data).hexdigest()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / name).write_bytes(data)
    (a.out / "longshot.yaml").write_text(manifest(v, f"{base.rstrip('/')}/{name}", sha))
    print(f"{a.out / name}  sha256 {sha}\n{a.out / 'longshot.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
