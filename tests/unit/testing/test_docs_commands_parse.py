"""The pure part of the docs-commands check (tests/docs_commands.py): what it extracts from Markdown and how it
reads flags, selectors and ``--set`` paths. The checks against the binaries: tests/integration/test_docs_commands.py."""

from __future__ import annotations

import docs_commands as dc

DOC = """
Some text with `make test` inline (not a block).

```bash
make demo   # the main job
kubectl -n team-a get br,at \\
  -o wide | grep demo && kubeconfig=$(sudo hack/kind.sh up)
```

```console
$ kubectl longshot tree demo
BuildRequest/demo
$ helm install longshot charts/longshot --set operator.replica=3
Error: values don't meet the specifications of the schema(s)
```

```yaml
kubectl: not a command
```
"""


def test_commands_come_from_shell_blocks_with_continuations_pipes_and_substitutions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "d.md").write_text(DOC)
    got = [(c.line, c.argv, c.refused) for c in dc.commands(tmp_path, ("d.md",))]
    assert got == [
        (5, ("make", "demo"), False),
        (6, ("kubectl", "-n", "team-a", "get", "br,at", "-o", "wide"), False),
        (6, ("grep", "demo"), False),
        (6, ("hack/kind.sh", "up"), False),  # from $( ); the assignment around it is no command
        (11, ("kubectl", "longshot", "tree", "demo"), False),
        (13, ("helm", "install", "longshot", "charts/longshot", "--set", "operator.replica=3"), True),
    ]


def test_flags_selectors_and_set_paths() -> None:
    assert dc.flags_used(("get", "pods", "-A", "--tail=5", "-it", "--", "-x")) == ["-A", "--tail", "-i", "-t"]
    assert dc.selectors(("get", "pods", "-l", "app.kubernetes.io/component=operator,longshot.dev/lease")) == [
        ("app.kubernetes.io/component", "operator"), ("longshot.dev/lease", None)]
    assert dc.selectors(("--selector=a!=b",)) == [("a", "b")]
    assert dc.set_keys(("--set", "a.b=1,c[0].d=x", "--set-json=e={}")) == ["a.b", "c[0].d", "e"]


def test_values_paths() -> None:
    values = {"operator": {"replicas": 2, "env": {}}, "tracing": {"peers": []}}
    assert dc.values_have(values, "operator.replicas")
    assert not dc.values_have(values, "operator.replica")
    assert dc.values_have(values, "operator.env.ANY")  # an open map
    assert dc.values_have(values, "tracing.peers[0].ipBlock.cidr")  # under a list
    assert not dc.values_have(values, "operator.replicas.x")


def test_make_targets_and_script_arms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Makefile").write_text("VENV ?= .venv\ntest: venv ## x\n\t$(X)\nX := 1\n.PHONY: test\n")
    assert dc.make_targets(tmp_path / "Makefile") == {"test"}
    (tmp_path / "s.sh").write_text('case "$1" in\n  up) go ;;\n  down|stop) no ;;\n  *) usage ;;\nesac\n')
    assert dc.script_subcommands(tmp_path / "s.sh") == {"up", "down", "stop"}
