"""The kubeconfig kubectl would use, merged as kubectl merges it (client-go ``clientcmd``'s loading rules), pure.

- ``--kubeconfig FILE``: that file alone (it must exist).
- else ``$KUBECONFIG``: a list of files (``:`` on Unix), read in order; missing and empty entries are skipped, a
  file named twice counts once. For ``clusters``, ``users`` and ``contexts`` the **first file that defines a name
  wins** (a later file cannot change a cluster an earlier one defined); ``current-context`` is **the first file's
  that sets it**. Relative paths in a file (``certificate-authority``, ``client-certificate``, ``client-key``,
  ``tokenFile``, an exec plugin's ``command`` with a ``/``) are relative to that file's folder.
- else ``~/.kube/config``.

Impersonation (``--as``, ``--as-group``, ``--as-uid``) is the user entry's ``as``/``as-groups``/``as-uid``, which
the flags replace, as kubectl does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAMED = ("clusters", "users", "contexts")
"""The lists whose entries are keyed by ``name``: the first file to define a name wins."""
PATH_KEYS = {"clusters": ("certificate-authority",), "users": ("client-certificate", "client-key", "tokenFile")}
"""The fields holding a file path, per list (relative to the file that holds them)."""


class KubeconfigError(Exception):
    """A kubeconfig that cannot be used; the message says which file and why."""


def files(explicit: str | None, env: str | None, home: str) -> list[str]:
    """The files to read, in order: ``--kubeconfig``, else ``$KUBECONFIG``'s entries, else ``~/.kube/config``."""
    if explicit:
        return [explicit]
    if env:
        seen: list[str] = []
        for entry in env.split(os.pathsep):
            if entry and entry not in seen:
                seen.append(entry)
        if seen:
            return seen
    return [os.path.join(home, ".kube", "config")]


def _absolute(value: Any, base: str) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(value):
        return os.path.normpath(os.path.join(base, value))
    return value


def _resolved(kind: str, entry: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A copy of one named entry with its relative paths made absolute against ``base`` (the file's folder)."""
    out = dict(entry)
    inner_key = {"clusters": "cluster", "users": "user", "contexts": "context"}[kind]
    inner = out.get(inner_key)
    if isinstance(inner, Mapping):
        inner = dict(inner)
        for key in PATH_KEYS.get(kind, ()):
            if key in inner:
                inner[key] = _absolute(inner[key], base)
        ex = inner.get("exec")
        if kind == "users" and isinstance(ex, Mapping) and "/" in str(ex.get("command") or ""):
            inner["exec"] = {**ex, "command": _absolute(ex["command"], base)}
        out[inner_key] = inner
    return out


def merge(documents: Sequence[tuple[str, Mapping[str, Any] | None]]) -> dict[str, Any]:
    """One kubeconfig from ``(path, parsed file)`` pairs in ``files`` order (None: missing or empty)."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    names: dict[str, set[str]] = {k: set() for k in NAMED}
    for path, doc in documents:
        if not doc:
            continue
        if not isinstance(doc, Mapping):
            raise KubeconfigError(f"the kubeconfig {path} is not a mapping")
        base = os.path.dirname(os.path.abspath(path))
        if doc.get("current-context") and not merged.get("current-context"):
            merged["current-context"] = doc["current-context"]
        for kind in NAMED:
            entries = doc.get(kind) or []
            if not isinstance(entries, list):
                raise KubeconfigError(f"the kubeconfig {path}: {kind} is not a list")
            for entry in entries:
                if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                    raise KubeconfigError(f"the kubeconfig {path}: an entry of {kind} has no name")
                if entry["name"] in names[kind]:
                    continue  # an earlier file defined it: the first wins
                names[kind].add(entry["name"])
                merged[kind].append(_resolved(kind, entry, base))
        for key in ("preferences", "extensions"):
            if doc.get(key) and key not in merged:
                merged[key] = doc[key]
    return merged


def _entry(config: Mapping[str, Any], kind: str, name: str | None) -> dict[str, Any] | None:
    inner_key = {"clusters": "cluster", "users": "user", "contexts": "context"}[kind]
    for e in config.get(kind) or []:
        if e.get("name") == name:
            inner: dict[str, Any] = dict(e.get(inner_key) or {})
            return inner
    return None


@dataclass(frozen=True)
class Identity:
    """Who the requests act as: the context's name and namespace, and the impersonation headers to send."""

    context: str
    namespace: str | None
    user: str | None = None
    groups: tuple[str, ...] = ()
    uid: str | None = None
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def headers(self) -> list[tuple[str, str]]:
        """The ``Impersonate-*`` headers (a group or an extra value may repeat, so a list of pairs)."""
        out: list[tuple[str, str]] = []
        if self.user:
            out.append(("Impersonate-User", self.user))
        out += [("Impersonate-Group", g) for g in self.groups]
        if self.uid:
            out.append(("Impersonate-Uid", self.uid))
        for key, values in sorted(self.extra.items()):
            out += [(f"Impersonate-Extra-{key}", v) for v in values]
        return out


def identity(config: Mapping[str, Any], context: str | None, *, as_user: str | None = None,
             as_groups: Sequence[str] = (), as_uid: str | None = None) -> Identity:
    """The context to use (``--context``, else ``current-context``) and whom to impersonate."""
    name = context or config.get("current-context")
    if not name:
        raise KubeconfigError("the kubeconfig has no current-context; pass --context")
    ctx = _entry(config, "contexts", name)
    if ctx is None:
        known = ", ".join(sorted(str(e.get("name")) for e in config.get("contexts") or [])) or "none"
        raise KubeconfigError(f"the kubeconfig has no context {name!r} (contexts: {known})")
    user = _entry(config, "users", ctx.get("user")) or {}
    if (as_groups or as_uid) and not (as_user or user.get("as")):
        raise KubeconfigError("--as-group and --as-uid need --as (the user to impersonate)")
    who: str | None
    groups: tuple[str, ...]
    uid: str | None
    extra: dict[str, tuple[str, ...]]
    if as_user:
        who, groups, uid, extra = as_user, tuple(as_groups), as_uid, {}
    else:
        who = user.get("as")
        groups = tuple(as_groups) or tuple(user.get("as-groups") or ())
        uid = as_uid or user.get("as-uid")
        extra = {str(k): tuple(str(x) for x in v) for k, v in (user.get("as-user-extra") or {}).items()}
    return Identity(context=str(name), namespace=ctx.get("namespace") or None, user=who, groups=groups, uid=uid,
                    extra=extra)
