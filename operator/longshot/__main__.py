"""Command line: ``python -m longshot operator | gateway | console | agent | mcp | crds``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _crds(args: argparse.Namespace) -> int:
    from longshot.api import crdgen, references

    policy = references.render_policy()
    if args.check:
        stale = []
        for name, text in crdgen.rendered_files().items():
            path = args.output / name
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        if args.policy.parent.is_dir() and (not args.policy.exists() or args.policy.read_text() != policy):
            stale.append(str(args.policy))
        if stale:
            print("CRDs are out of date, run `make crds`: " + ", ".join(stale), file=sys.stderr)
            return 1
        print(f"CRDs in {args.output} are up to date")
        return 0
    if args.stdout:
        sys.stdout.write("---\n".join(crdgen.rendered_files().values()))
        return 0
    for path in crdgen.write(args.output):
        print(f"wrote {path}")
    if args.policy.parent.is_dir():
        args.policy.write_text(policy)
        print(f"wrote {args.policy}")
    return 0


def _operator(args: argparse.Namespace) -> int:
    from longshot import operator_main

    namespaces = list(args.namespace or [])
    env = os.environ.get("LONGSHOT_WATCH_NAMESPACES", "")
    namespaces += [n.strip() for n in env.split(",") if n.strip() and n.strip() not in namespaces]
    return operator_main.run(namespaces=namespaces or None)


def _gateway(args: argparse.Namespace) -> int:
    from longshot.gateway import server
    from longshot.gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env()
    if args.port is not None:
        settings = settings.replace(port=args.port)
    return server.run(settings)


def _console(args: argparse.Namespace) -> int:
    from longshot.console import server
    from longshot.console.settings import ConsoleSettings

    settings = ConsoleSettings.from_env()
    if args.port is not None:
        settings = settings.replace(port=args.port)
    return server.run(settings)


def _agent(args: argparse.Namespace) -> int:
    from longshot.agent import runner

    return runner.main(args.rest)


def _mcp(args: argparse.Namespace) -> int:
    from longshot.agent import mcpserver

    return mcpserver.main()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="longshot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="render the CustomResourceDefinitions from the models")
    crds.add_argument("--output", type=Path, default=Path("crds"), help="directory to write (default: crds)")
    crds.add_argument("--check", action="store_true", help="fail when the files in --output are stale")
    crds.add_argument("--stdout", action="store_true", help="print all CRDs as one YAML stream")
    crds.add_argument("--policy", type=Path, default=Path("charts/longshot/templates/admission-references.yaml"),
                      help="the chart's generated Secret/ConfigMap reference policy (written when its directory "
                           "exists; default: %(default)s)")
    crds.set_defaults(func=_crds)

    op = sub.add_parser("operator", help="run the operator (kopf)")
    op.add_argument("--namespace", "-n", action="append",
                    help="watch only this namespace (repeatable; also $LONGSHOT_WATCH_NAMESPACES, comma-separated)")
    op.set_defaults(func=_operator)

    gw = sub.add_parser("gateway", help="run longshot-gateway (agent Pods' git and model access)")
    gw.add_argument("--port", type=int, default=None, help="listen port (default: $LONGSHOT_GATEWAY_PORT or 8080)")
    gw.set_defaults(func=_gateway)

    console = sub.add_parser("console", help="run the web console (people's builds, live; acts with each person's "
                                              "own Kubernetes token)")
    console.add_argument("--port", type=int, default=None, help="listen port (default: $LONGSHOT_CONSOLE_PORT or 8080)")
    console.set_defaults(func=_console)

    agent = sub.add_parser("agent", help="run an agent inside an agent Pod")
    agent.add_argument("rest", nargs=argparse.REMAINDER)
    agent.set_defaults(func=_agent)

    mcp = sub.add_parser("mcp", help="serve the delegation tools over MCP (stdio), for CLI agents in an agent Pod")
    mcp.set_defaults(func=_mcp)

    args = parser.parse_args(argv)
    try:
        from longshot.envsettings import SettingsError
    except ModuleNotFoundError as e:  # the base install alone: `crds` works, the programs need their extra
        return _missing_extra(args.command, e)

    try:
        return int(args.func(args) or 0)
    except SettingsError as e:  # a setting's variable with a bad value: say which, without a traceback
        print(f"longshot {args.command}: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        return _missing_extra(args.command, e)


EXTRAS = {"operator": "operator", "gateway": "gateway", "agent": "agent", "mcp": "agent"}
"""The install extra (pyproject.toml) each command needs beyond the base install."""


def _missing_extra(command: str, error: ModuleNotFoundError) -> int:
    """A third-party package a command imports is not installed: name the extra that brings it (exit 2)."""
    if (error.name or "longshot").partition(".")[0] in {"longshot", "longshot_testing"} or command not in EXTRAS:
        raise error
    extra = EXTRAS[command]
    print(f"longshot {command}: the package {error.name!r} is not installed; it comes with the extra {extra!r}: "
          f"pip install 'longshot-operator[{extra}]'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
