"""Check a BuildRequest's spec against the world before any Pod runs: deterministic errors are found here and
reported as a ``Configuration`` stop naming the field and the fix, instead of Pods retrying for minutes.

:func:`check` reads (never writes): the Secrets and ConfigMaps the spec names and their keys (a ConfigMap RBAC hides
is left to the kubelet's mount; a Secret RBAC hides is a stop that says which binding is missing), and the repository
(``git ls-remote`` with the build's credentials): that it answers, accepts the credentials and has the base
branch. It returns None when everything is in place, else one message. A repository that does not answer for
reasons that may pass (a timeout, a refused connection) is not a configuration error: it returns None and the
tasks' own retries handle it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from longshot.core import egress
from longshot.net import guard as gd
from longshot.runtime import kube as kubemod
from longshot.runtime import trackers
from longshot.vcs import workspace as vws

LS_REMOTE_TIMEOUT = 20.0
SKILL_FILE = "SKILL.md"
"""The key every skill's ConfigMap must have (``longshot.agent.skills.SKILL_FILE`` in the Pod)."""


def _secret(k: kubemod.KubeAPI, namespace: str, name: str, field: str, keys: tuple[str, ...],
            any_of: bool = False) -> tuple[str | None, dict[str, str] | None]:
    try:
        data = k.get_secret(namespace, name)
    except kubemod.Forbidden:
        return (f"{field}: the operator may not read Secret {name!r} in namespace {namespace} (Forbidden); bind "
                "the <release>-longshot-secret-reader ClusterRole to its ServiceAccount in this namespace, or list "
                "the namespace in the chart's rbac.secrets.namespaces (or operator.watchNamespaces)", None)
    if data is None:
        return (f"{field}: Secret {name!r} does not exist in namespace {namespace}; create it or fix the name",
                None)
    present = [key for key in keys if data.get(key)]
    if any_of and not present:
        return (f"{field}: Secret {name!r} has none of the keys {', '.join(keys)}; add one of them", data)
    if not any_of and len(present) < len(keys):
        missing = [key for key in keys if key not in present]
        return f"{field}: Secret {name!r} has no key {', '.join(missing)}; add it", data
    return None, data


def destinations(build: Any) -> list[tuple[str, str, egress.Purpose]]:
    """``(field, url, purpose)`` of every destination the spec names for the operator or the gateway."""
    spec = build.spec
    out: list[tuple[str, str, egress.Purpose]] = [("spec.repository.url", spec.repository.url, "git")]
    if spec.agent.base_url:
        out.append(("spec.agent.baseUrl", spec.agent.base_url, "model"))
    issues = getattr(spec.planner, "issues", None)
    if issues is not None:
        default = trackers.GITHUB_API if issues.provider == "github" else trackers.GITLAB_API
        out.append(("spec.planner.issues.url", issues.url or default, "tracker"))
    return out


def check_egress(guard: gd.Guard, build: Any) -> str | None:
    """None when the egress policy allows every URL of the spec (before resolving), else what to fix. Only the
    URLs themselves: a name's addresses are checked at each connection, which is where rebinding is stopped."""
    for field, url, purpose in destinations(build):
        d = guard.policy.check(url, purpose=purpose)
        if not d.allowed:
            return d.message(field, url)
    return None


def check(k: kubemod.KubeAPI, build: Any, guard: gd.Guard | None = None, runtime_class: str = "") -> str | None:
    """None when the spec of ``build`` (an ``api.objects.BuildRequest``) can work, else what to fix. With
    ``guard``, the spec's URLs are held to the egress policy first, and ``git ls-remote`` is pinned.
    ``runtime_class``: the operator's default RuntimeClass of agent Pods (``Settings.agent_runtime_class``)."""
    ns = build.namespace
    spec = build.spec
    repo = spec.repository
    if guard is not None:
        refused = check_egress(guard, build)
        if refused:
            return refused
    credentials = None
    if repo.credentials_secret:
        problem, data = _secret(k, ns, repo.credentials_secret, "spec.repository.credentialsSecret",
                                ("token", "password", "ssh-privatekey"), any_of=True)
        if problem:
            return problem
        credentials = vws.GitCredentials.from_secret_data(data or {})
    agent = spec.agent
    if agent.credentials_secret:
        problem, _ = _secret(k, ns, agent.credentials_secret, "spec.agent.credentialsSecret", ("api-key",))
        if problem:
            return problem
    elif agent.backend in ("openai", "anthropic") and not agent.base_url:
        return (f"spec.agent.credentialsSecret: the {agent.backend} backend needs a Secret with key api-key "
                "(or spec.agent.baseUrl of a server that needs no key)")
    named = agent.runtime_class_name or runtime_class
    if named:
        field = "spec.agent.runtimeClassName" if agent.runtime_class_name else "the operator's agent.runtimeClassName"
        try:
            exists = k.runtime_class_exists(named)
        except kubemod.Forbidden:
            exists = True  # not the operator's to read: the API server refuses a Pod naming a missing one
        if not exists:
            return (f"{field}: RuntimeClass {named!r} does not exist on this cluster; install the sandboxed runtime "
                    "and its RuntimeClass (docs/security.md, \"Kernel isolation\"), or fix the name")
    issues = getattr(spec.planner, "issues", None)
    if issues is not None and getattr(issues, "credentials_secret", None):
        problem, _ = _secret(k, ns, issues.credentials_secret, "spec.planner.issues.credentialsSecret", ("token",))
        if problem:
            return problem
    for field, ref, key in configmaps(agent):
        try:
            data = k.get_configmap(ns, ref.name)
        except kubemod.Forbidden:
            continue  # not the operator's to read here: the kubelet's mount reports a missing one (FailedMount)
        if data is None:
            return f"{field}: ConfigMap {ref.name!r} does not exist in namespace {ns}; create it or fix the name"
        if key and key not in data:
            return f"{field}: ConfigMap {ref.name!r} has no key {key}; add it"
    return repository(repo.url, repo.base_branch, credentials, guard=guard)


def configmaps(agent: Any) -> list[tuple[str, Any, str | None]]:
    """``(field, reference, required key)`` of every ConfigMap ``spec.agent`` names (an ``AgentSettings``): the
    scripted backend's script, the prompt overrides, each skill (its ``SKILL.md``) and the instructions."""
    out: list[tuple[str, Any, str | None]] = []
    if agent.script is not None:
        out.append(("spec.agent.script", agent.script, "script.yaml" if agent.backend == "scripted" else None))
    if agent.prompts is not None:
        out.append(("spec.agent.prompts", agent.prompts, None))
    for i, skill in enumerate(agent.skills):
        out.append((f"spec.agent.skills[{i}].configMap (skill {skill.name})", skill.config_map, SKILL_FILE))
    if agent.instructions is not None:
        out.append(("spec.agent.instructions.configMap", agent.instructions.config_map, agent.instructions.key))
    return out


def repository(url: str, base_branch: str, credentials: vws.GitCredentials | None,
               guard: gd.Guard | None = None) -> str | None:
    """``git ls-remote`` the base branch: None when it exists (or the server is only unreachable for now)."""
    pins = gd.GitPins()
    if guard is not None:
        try:
            pins = guard.git_pins(url, "spec.repository.url")
        except gd.Refused as e:
            if e.decision.rule == "no-address":
                return (f"spec.repository.url: {vws.normalise_url(url)} is not a reachable git repository (its host "
                        "does not resolve); fix the URL (editing the spec resumes the build)")
            return str(e)
    with tempfile.TemporaryDirectory(prefix="longshot-preflight-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LONGSHOT_GIT_"))}
        env.update(GIT_CONFIG_NOSYSTEM="1", HOME=tmp, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        env.update((credentials or vws.GitCredentials()).environment(Path(tmp) / "private"))
        env = pins.env(env)
        try:
            proc = subprocess.run(["git", *vws.GIT_OPTIONS, *pins.args(), "ls-remote", "--heads", url,
                                   f"refs/heads/{base_branch}"],
                                  capture_output=True, env=env, timeout=LS_REMOTE_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return None
    secrets = (credentials or vws.GitCredentials()).secrets
    err = vws.redact(proc.stderr.decode(errors="replace").strip(), secrets)
    shown = vws.normalise_url(url)
    if proc.returncode == 0:
        if proc.stdout.strip():
            return None
        return (f"spec.repository.baseBranch: branch {base_branch!r} does not exist in {shown}; create it or fix "
                "the name")
    low = err.lower()
    if re.search(r"authentication failed|could not read username|permission denied|401|403|invalid credentials",
                 low):
        return (f"spec.repository.credentialsSecret: {shown} refused the credentials ({_last(err)}); fix the "
                "Secret or its name")
    if re.search(r"could not resolve host|name or service not known|no such host|does not appear to be a git "
                 r"repository|repository .* not found|not found|unsupported protocol|invalid url|no such file", low):
        return (f"spec.repository.url: {shown} is not a reachable git repository ({_last(err)}); fix the URL "
                "(editing the spec resumes the build)")
    return None


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
