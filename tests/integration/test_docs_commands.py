"""Docs that run (issue 55, item 3): every shell command of README.md, docs/install.md, docs/operations.md and
docs/runbooks.md names things that exist. Make targets against the Makefile; the repository's scripts and their
subcommands; ``kubectl`` and ``helm`` subcommands and flags against the real binaries' ``--help`` (the pinned
binaries of hack/k8s-binaries.sh); label selectors against the labels the chart renders and the keys the operator
sets (``longshot.api.keys``); ``--set`` paths against the chart's values.yaml; ``kubectl longshot`` lines against
the plugin's own parser. The test prints how many commands it checked, and the commands no rule covers.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import docs_commands as dc
from longshot.api import keys
from longshot.cli import main as cli
from longshot.runtime import pods

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "longshot"
UNCHECKED_PROGRAMS = frozenset({"docker", "git", "eval", "export", "skaffold", "cat", "echo", "grep", "tail",
                                "head", "curl", "jq", "cd", "ls", "sort", "for", "do", "done", "source", "."})
"""Programs whose lines are only counted: not Longshot's to check (the lines are printed as unchecked)."""


VALUE_FLAGS = frozenset({"-n", "--namespace", "--context", "--kubeconfig", "--as", "--as-group", "-s", "--server",
                         "--user", "--cluster", "--kube-context"})
"""Global flags that take a value as the next word."""


class Tools:
    """``--help`` of the pinned kubectl and helm, cached per subcommand path."""

    def __init__(self, bin_dir: Path, workdir: Path) -> None:
        self.bin_dir, self.env = bin_dir, {"HOME": str(workdir), "PATH": "/usr/bin:/bin",
                                           "KUBECONFIG": str(workdir / "none")}

    @functools.cache  # noqa: B019 - one instance per test
    def help(self, tool: str, path: tuple[str, ...]) -> str | None:
        done = subprocess.run([str(self.bin_dir / tool), *path, "--help"], capture_output=True, text=True,
                              env=self.env, timeout=60, check=False)
        return done.stdout if done.returncode == 0 else None

    def resolve(self, tool: str, args: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
        """The longest subcommand path of ``args`` the tool knows (``create rolebinding``), and its help."""
        words: list[str] = []
        skip = False
        for w in args:  # the positional words, past global flags and their values (kubectl -n team-a get ...)
            if skip:
                skip = False
            elif w in VALUE_FLAGS:
                skip = True
            elif not w.startswith("-"):
                words.append(w)
        for n in range(min(len(words), 3), 0, -1):
            path = tuple(words[:n])
            text = self.help(tool, path)
            # a deeper path is a subcommand when its help is its own (kubectl top pods: not kubectl top's help)
            if text is not None and (n == 1 or text != self.help(tool, path[:-1])):
                return path, text
        return None

    @functools.cached_property
    def kubectl_globals(self) -> set[str]:
        done = subprocess.run([str(self.bin_dir / "kubectl"), "options"], capture_output=True, text=True,
                              env=self.env, timeout=60, check=True)
        return dc.help_flags(done.stdout)


def _chart_labels(control_plane: Any) -> set[tuple[str, str]]:
    """Every (key, value) label the chart renders, on objects and Pod templates, with tracing and the gateway on."""
    import chart_render
    docs = chart_render.render(control_plane, "longshot-system", release="longshot")
    found: set[tuple[str, str]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("labels", "matchLabels") and isinstance(v, dict):
                    found.update((str(a), str(b)) for a, b in v.items())
                walk(v)
        elif isinstance(node, list):
            for x in node:
                walk(x)
    walk(docs)
    return found


def check_kubectl(cmd: dc.Command, report: dc.Report, tools: Tools, labels: set[tuple[str, str]]) -> None:
    args = cmd.argv[1:]
    if args and args[0] == "longshot":
        check_plugin(cmd, report)
        return
    resolved = tools.resolve("kubectl", args)
    if resolved is None:
        report.fail(cmd, f"kubectl has no subcommand {args[:1]}")
        return
    path, text = resolved
    known = dc.help_flags(text) | tools.kubectl_globals
    for flag in dc.flags_used(args):
        if flag not in known:
            report.fail(cmd, f"kubectl {' '.join(path)} has no flag {flag}")
    label_keys = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str) and "/" in v}
    for key, value in dc.selectors(args):
        if dc.PLACEHOLDER.search(key) or (value and dc.PLACEHOLDER.search(value)):
            continue
        if key.startswith("longshot.dev/"):
            if key not in label_keys:
                report.fail(cmd, f"no object carries the label {key} (longshot.api.keys has no such key)")
            elif key == keys.PURPOSE and value and "pod" in " ".join(path + args).lower() \
                    and value not in pods.DELIVERY_PURPOSES:
                report.fail(cmd, f"no Pod carries {key}={value} (Pods carry {sorted(pods.DELIVERY_PURPOSES)})")
        elif value is not None and (key, value) not in labels:
            report.fail(cmd, f"the chart renders no object labelled {key}={value}")
        elif value is None and not any(k == key for k, _ in labels):
            report.fail(cmd, f"the chart renders no object with the label {key}")
    report.checked += 1


def check_plugin(cmd: dc.Command, report: dc.Report) -> None:
    args = [dc.PLACEHOLDER.sub("x", w) for w in cmd.argv[2:]]
    try:
        cli.parser().parse_args(args)
    except SystemExit as e:
        if e.code not in (0, None):
            report.fail(cmd, f"kubectl longshot refuses {args} (exit {e.code})")
    report.checked += 1


def check_helm(cmd: dc.Command, report: dc.Report, tools: Tools, values: Any) -> None:
    args = cmd.argv[1:]
    resolved = tools.resolve("helm", args)
    if resolved is None:
        report.fail(cmd, f"helm has no subcommand {args[:1]}")
        return
    path, text = resolved
    for flag in dc.flags_used(args):
        if flag not in dc.help_flags(text):
            report.fail(cmd, f"helm {' '.join(path)} has no flag {flag}")
    if any(w.rstrip("/") == "charts/longshot" for w in args):
        for key in dc.set_keys(args):
            if not dc.values_have(values, key):
                report.fail(cmd, f"charts/longshot/values.yaml has no value {key}")
    report.checked += 1


def check_make(cmd: dc.Command, report: dc.Report, targets: set[str]) -> None:
    for word in cmd.argv[1:]:
        if word.startswith("-") or "=" in word:
            continue
        if word not in targets:
            report.fail(cmd, f"the Makefile has no target {word}")
    report.checked += 1


def check_script(cmd: dc.Command, report: dc.Report) -> None:
    argv = cmd.argv[1:] if cmd.argv[0] in ("bash", "sh", "python", "python3", ".venv/bin/python") else cmd.argv
    script = ROOT / argv[0]
    if not script.is_file():
        report.fail(cmd, f"{argv[0]} is not a file of the repository")
        return
    sub = next((w for w in argv[1:] if not w.startswith("-")), None)
    if script.suffix == ".sh" and sub and not dc.PLACEHOLDER.search(sub):
        arms = dc.script_subcommands(script)
        if arms and sub not in arms:
            report.fail(cmd, f"{argv[0]} has no subcommand {sub} (it knows {sorted(arms - {'*'})})")
    report.checked += 1


def check_all(cmds: list[dc.Command], control_plane: Any) -> dc.Report:
    tools = Tools(Path(control_plane.bin_dir), Path(control_plane.workdir))
    labels = _chart_labels(control_plane)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    targets = dc.make_targets()
    report = dc.Report()
    for cmd in cmds:
        prog = cmd.argv[0]
        if cmd.refused:  # the docs show this one refused on purpose (a schema error, say)
            report.unchecked.append(cmd.where)
        elif prog == "kubectl":
            check_kubectl(cmd, report, tools, labels)
        elif prog == "helm":
            check_helm(cmd, report, tools, values)
        elif prog == "make":
            check_make(cmd, report, targets)
        elif prog.startswith(("hack/", "./hack/", ".ci/")) or (
                prog in ("bash", "sh", "python", "python3", ".venv/bin/python") and len(cmd.argv) > 1
                and cmd.argv[1].startswith(("hack/", ".ci/"))):
            check_script(cmd, report)
        else:
            report.unchecked.append(cmd.where)
    return report


def test_every_docs_command_names_what_exists(control_plane, capsys) -> None:  # type: ignore[no-untyped-def]
    cmds = dc.commands()
    report = check_all(cmds, control_plane)
    with capsys.disabled():
        print(f"\ndocs commands: {len(cmds)} in {len(dc.DOCS)} docs, {report.checked} checked, "
              f"{len(report.unchecked)} not Longshot's to check")
    assert report.checked >= 60, report
    assert not report.failures, "\n".join(report.failures)


BROKEN = """
```bash
kubectl get pods -A -l longshot.dev/purpose=fixer          # fixer Pods carry no purpose label
kubectl -n team-a get br --no-such-flag
kubectl get pods -l app.kubernetes.io/component=operatr
helm install longshot charts/longshot --set operator.replica=3
make no-such-target
bash hack/images.sh no-such-image
hack/no-such-script.sh up
kubectl longshot tree demo --no-such-flag
kubectl longshot logs demo
```
"""


def test_the_copy_paste_errors_it_exists_for_are_caught(control_plane, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "broken.md").write_text(BROKEN)
    cmds = dc.commands(tmp_path, ("broken.md",))
    report = check_all(cmds, control_plane)
    failed = {f.split("\n")[0].split(": ", 1)[1] for f in report.failures}
    assert failed == {c.text for c in cmds if c.text != "kubectl longshot logs demo"}, report.failures
    assert any("Pods carry" in f for f in report.failures)
