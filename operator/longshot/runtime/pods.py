"""Pure builders of agent Pod manifests (dicts), tested without a cluster.

``build_agent_pod(task, build, settings, attempt)`` takes the AgentTask and BuildRequest as the API server
returns them (camelCase dicts) and returns the Pod of one attempt. The Pod passes Pod Security Admission
``restricted``: non-root (65532), no privilege escalation, read-only root filesystem, every capability
dropped, seccomp ``RuntimeDefault``, no service-account token. Its only writable paths are the bounded
``/workspace`` scratch volume and a small ``/tmp``.

What the agent needs arrives as files, never as Secret values in the manifest: the
:class:`~longshot.api.handoff.TaskInput` JSON in the ``longshot.dev/task-input`` annotation, exposed by a
downward-API volume at ``TASK_INPUT_PATH``; the scripted backend's ConfigMap, the prompt ConfigMap, each skill's
ConfigMap (at ``SKILLS_DIR/<name>``) and the instructions' key (at ``INSTRUCTIONS_DIR/AGENTS.md``) mounted read-only
when the build names them; the runner copies skills and instructions into the checkout (``longshot.agent.skills``).

**No credential is mounted.** The Pod reaches git and the model through ``longshot-gateway``
(``settings.gateway_url``, given to the agent as ``LONGSHOT_GATEWAY_URL``), which injects the build's
``spec.repository.credentialsSecret`` and ``spec.agent.credentialsSecret`` upstream. The Pod proves who it
is with a projected ServiceAccount token (audience ``longshot-gateway``) bound to the Pod, at
``GATEWAY_TOKEN_PATH``: the API server rejects it (wrong audience) and the gateway accepts it only while
this Pod runs. It lives as long as the attempt may (``activeDeadlineSeconds`` plus a margin, at least
600 s), so a CLI agent given it once as its key keeps working; the kubelet rotates the file at 80 % of
that. ``automountServiceAccountToken`` stays false: the Pod holds no API token.
"""

from __future__ import annotations

import json
import posixpath
import typing
from collections.abc import Mapping
from typing import Any, Final

from longshot import tracing
from longshot.api import buildrequest, keys, sanitize
from longshot.api import handoff as ho
from longshot.api.common import API_VERSION
from longshot.config import Settings
from longshot.core import admission, binding, delegation, fanout, gates, mcpcalls, names, personas, plan, warmpool
from longshot.core.failures import AGENT_CONTAINER

AGENT_UID: Final = 65532
DNS_OPTIONS: Final = ({"name": "timeout", "value": "1"}, {"name": "attempts", "value": "5"})
"""resolv.conf options of agent Pods: a lookup that gets no answer is sent again after 1 s (glibc's default is 5 s),
up to 5 times."""
"""The ``nonroot`` user and group of distroless-style images."""
SECRET_MODE: Final = 0o440
TMP_SIZE: Final = "64Mi"
DEFAULT_TIMEOUT_SECONDS: Final = 1800
HOME_DIR: Final = f"{ho.WORKSPACE_DIR}/home"
COMMAND: Final = ("python", "-m", "longshot", "agent")

TASK_LABEL: Final = keys.TASK
BUILD_LABEL: Final = keys.BUILD
ATTEMPT_LABEL: Final = keys.ATTEMPT
ROLE_LABEL: Final = keys.ROLE
GATEWAY_AUDIENCE: Final = "longshot-gateway"
GATEWAY_TOKEN_DIR: Final = "/var/run/secrets/longshot.dev/gateway"
GATEWAY_TOKEN_PATH: Final = f"{GATEWAY_TOKEN_DIR}/token"
MIN_TOKEN_SECONDS: Final = 600
"""The API server's floor for a projected token's ``expirationSeconds``."""
TOKEN_MARGIN_SECONDS: Final = 600
TEST_COMMAND_ANNOTATION: Final = keys.TEST_COMMAND
"""On a tester AgentTask: the command it runs (quality gates and sweeps set it)."""


def pod_name(task_name: str, attempt: int) -> str:
    """The deterministic Pod name of ``attempt`` (from 1) of ``task_name``: ``<task>-a<N>``."""
    return names.pod_name(task_name, attempt)


def token_seconds(timeout: int) -> int:
    """Lifetime of the gateway token of an attempt that may run ``timeout`` seconds."""
    return max(MIN_TOKEN_SECONDS, timeout + TOKEN_MARGIN_SECONDS)


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _override(task: Mapping[str, Any]) -> Mapping[str, Any]:
    """The task's ``spec.agent`` (per-task backend, model, prompt addendum, timeout, resources, hooks), or {}."""
    return _spec(task).get("agent") or {}


def _backend(annotations: Mapping[str, Any], choice: personas.Choice) -> Any:
    """The attempt's backend: a best-of-N candidate's (its annotation, written by the operator; an unknown value
    is ignored, whoever wrote it), else the task's ``spec.agent``, else the chosen named model's, else the build's
    (``core.personas.choose``)."""
    candidate = annotations.get(fanout.BACKEND_ANNOTATION)
    if candidate in typing.get_args(buildrequest.Backend):
        return candidate
    return choice.backend


def _resources(task: Mapping[str, Any], build: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Requests and limits, each key taken from the task's ``spec.agent``, else its ``spec.resources``, else the
    build, else the operator defaults."""
    layers = [
        (_override(task).get("resources") or {}),
        (_spec(task).get("resources") or {}),
        ((_spec(build).get("agent") or {}).get("resources") or {}),
        {
            "requests": {"cpu": settings.default_cpu_request, "memory": settings.default_memory_request},
            "limits": {"cpu": settings.default_cpu_limit, "memory": settings.default_memory_limit},
        },
    ]
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        merged: dict[str, Any] = {}
        for layer in reversed(layers):
            for key, value in (layer.get(kind) or {}).items():
                if value is not None:
                    merged[key] = value
        out[kind] = {k: str(v) for k, v in sorted(merged.items())}
    return out


def timeout_of(task: Mapping[str, Any], build: Mapping[str, Any]) -> int:
    """The attempt's wall-clock limit: the task's ``spec.agent.timeoutSeconds``, else its ``spec.timeoutSeconds``,
    else the build's ``spec.agent.timeoutSeconds``, else the default."""
    agent = _spec(build).get("agent") or {}
    return int(_override(task).get("timeoutSeconds") or _spec(task).get("timeoutSeconds")
               or agent.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)


def hooks_of(task: Mapping[str, Any], build: Mapping[str, Any]) -> dict[str, Any]:
    """The attempt's workspace hooks (wire form): each key of the task's ``spec.agent.hooks`` that is set wins over
    the build's ``spec.agent.hooks``."""
    merged = {k: v for k, v in ((_spec(build).get("agent") or {}).get("hooks") or {}).items() if v is not None}
    merged.update({k: v for k, v in (_override(task).get("hooks") or {}).items() if v is not None})
    return merged


def gate_steps_of(tspec: Mapping[str, Any], annotations: Mapping[str, Any], gate: Mapping[str, Any],
                  reconciler: Mapping[str, Any]) -> tuple[buildrequest.GateStep, ...]:
    """A tester's named gate steps: the build's, when the command its AgentTask was made to run is the build's gate
    (``core.gates.steps_for_command``); none otherwise (a sweep's own command, a gate edited since)."""
    if tspec.get("role") != "tester":
        return ()
    try:
        steps = gates.steps_of(buildrequest.QualityGate.model_validate(gate), reconciler.get("command") or "make test")
    except ValueError:
        return ()
    return gates.steps_for_command(steps, annotations.get(TEST_COMMAND_ANNOTATION))


def task_input(task: Mapping[str, Any], build: Mapping[str, Any], attempt: int,
               extra: Mapping[str, Any] | None = None, model: str | None = None) -> ho.TaskInput:
    """What the agent is told about its task (no credentials). ``extra`` holds the fields the operator derives
    from other objects (``core.taskinput``: previous iteration, dependencies, last failure, question and answer,
    candidates), in wire form.

    The backend and model are ``core.personas.choose``'s (a person's ``spec.agent`` on the task, the task's chosen
    named model, its persona's, its role's, the build's); ``model``, when given, is the model the operator chose for
    this attempt (``core.tasks.next_model``: a fallback after the model API failed). A candidate
    of a best-of-N task runs with its own model (annotation ``longshot.dev/model``); the build's top-level planner
    gets its iteration (label ``longshot.dev/iteration``) and ``spec.planner.maxIterations``."""
    tspec, bspec = _spec(task), _spec(build)
    tmeta, bmeta = task.get("metadata") or {}, build.get("metadata") or {}
    agent = bspec.get("agent") or {}
    repo = bspec.get("repository") or {}
    planner = bspec.get("planner") or {}
    gate = bspec.get("qualityGate") or {}
    reconciler = bspec.get("reconciler") or {}
    build_name, task_name = bmeta["name"], tmeta["name"]
    annotations = tmeta.get("annotations") or {}
    override = _override(task)
    catalog = personas.Catalog.from_build(build)
    choice = personas.choose_for(task, build, catalog)
    model = annotations.get(fanout.MODEL_ANNOTATION) or model or choice.model
    role = tspec.get("role", "worker")
    delegate = delegation.may_delegate(role, bspec.get("delegation") or {}, delegation.depth_of(annotations))
    iteration, max_iterations = 1, 1
    if tspec.get("role") == "planner" and plan.PLAN_NAME_ANNOTATION not in annotations:
        iteration = max(1, plan.iteration_of(tmeta))
        max_iterations = max(iteration, int(planner.get("maxIterations", 3)))
    namespace = tmeta.get("namespace") or bmeta.get("namespace") or "default"
    steps = gate_steps_of(tspec, annotations, gate, reconciler)
    base = ho.TaskInput(
        task=task_name,
        build=build_name,
        namespace=namespace,
        attempt=attempt,
        role=tspec.get("role", "worker"),
        description=tspec.get("description", ""),
        request=bspec.get("request", ""),
        scope=list(tspec.get("scope") or []),
        scope_enforced=(bspec.get("scope") or {}).get("enforce") is True,
        repository_url=sanitize.strip_userinfo(str(repo.get("url", ""))),
        base_branch=repo.get("baseBranch", "main"),
        branch=binding.task_branch(tspec.get("branch"), namespace, build_name, task_name),
        commit=tspec.get("commit"),
        backend=ho.BackendInput(
            name=_backend(annotations, choice),
            model=model,
            base_url=agent.get("baseUrl"),
            command=agent.get("command"),
            max_turns=int(agent.get("maxTurns", 50)),
        ),
        # a tester with named steps runs them instead (the same gate), and its input does not carry the gate twice
        test_command=None if steps else ((tmeta.get("annotations") or {}).get(TEST_COMMAND_ANNOTATION)
                                         or gate.get("testCommand") or reconciler.get("command")),
        max_tasks=int(planner.get("maxTasks", 50)),
        depth=int(tspec.get("depth", 0)),
        max_depth=int(planner.get("maxDepth", 2)),
        iteration=iteration,
        max_iterations=max_iterations,
        instructions=override.get("promptAddendum"),
        hooks=buildrequest.Hooks.model_validate(hooks_of(task, build)),
        gate_steps=list(steps),
        delegate=delegate,
        ask=agent.get("allowQuestions", True) is not False,
        skills=[ho.SkillInput(name=sk["name"], path=sk.get("path")) for sk in skills_of(build, task)],
        agents_md=instructions_of(build) is not None,
        mcp_servers=[s.name for s in mcpcalls.for_role(agent, str(tspec.get("role", "worker")))],
        models=[ho.ModelOption.model_validate(m) for m in personas.menu(catalog)] if role == "planner" or delegate
        else [],
        personas=[ho.PersonaOption.model_validate(p) for p in personas.persona_menu(catalog)] if role == "planner"
        else [],
        persona=_persona(catalog, choice.persona),
    )
    if not extra:
        return base
    return ho.TaskInput.model_validate({**base.to_wire(), **extra})


def skills_of(build: Mapping[str, Any], task: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The skills (wire form) the build's agent Pods get: every entry of ``spec.agent.skills`` with a name and a
    ConfigMap, at most ``MAX_SKILLS``; given ``task``, only those its persona lists when it lists some
    (``core.personas.persona_skills``)."""
    listed = (_spec(build).get("agent") or {}).get("skills") or []
    if task is not None:
        catalog = personas.Catalog.from_build(build)
        only = personas.persona_skills(catalog, personas.choose_for(task, build, catalog).persona)
        if only is not None:
            listed = [s for s in listed if s.get("name") in only]
    return [s for s in listed if s.get("name") and (s.get("configMap") or {}).get("name")][:buildrequest.MAX_SKILLS]


def instructions_of(build: Mapping[str, Any]) -> dict[str, Any] | None:
    """The build's ``spec.agent.instructions`` (wire form) when it names a ConfigMap, else None."""
    found = (_spec(build).get("agent") or {}).get("instructions") or {}
    return found if (found.get("configMap") or {}).get("name") else None


def _persona(catalog: personas.Catalog, name: str | None) -> ho.PersonaInput | None:
    wire = personas.persona_input(catalog, name)
    return None if wire is None else ho.PersonaInput.model_validate(wire)


def _labels(task: Mapping[str, Any], build_name: str, attempt: int) -> dict[str, str]:
    purpose = ((task.get("metadata") or {}).get("labels") or {}).get(keys.PURPOSE)
    return {
        keys.NAME: "longshot",
        keys.INSTANCE: names.fit(build_name),
        keys.COMPONENT: "agent",
        keys.MANAGED_BY: keys.OPERATOR,
        BUILD_LABEL: names.fit(build_name),
        TASK_LABEL: names.fit(task["metadata"]["name"]),
        ATTEMPT_LABEL: str(attempt),
        ROLE_LABEL: _spec(task).get("role", "worker"),
        # a delivery task's Pod says what the queue or finalization waits on it for (`-l longshot.dev/purpose=gate`)
        **({keys.PURPOSE: purpose} if purpose in DELIVERY_PURPOSES else {}),
    }


def build_agent_pod(task: Mapping[str, Any], build: Mapping[str, Any], settings: Settings,
                    attempt: int, extra: Mapping[str, Any] | None = None, *,
                    model: str | None = None) -> dict[str, Any]:
    """The Pod of ``attempt`` of ``task`` (an AgentTask dict) of ``build`` (a BuildRequest dict); ``extra`` and
    ``model``: see :func:`task_input`. The task's ``spec.agent`` wins over the build's for the backend, model,
    timeout and resources."""
    tmeta, bmeta = task["metadata"], build["metadata"]
    bspec = _spec(build)
    agent = bspec.get("agent") or {}
    name = pod_name(tmeta["name"], attempt)
    timeout = timeout_of(task, build)
    task_input_json = json.dumps(task_input(task, build, attempt, extra, model).to_wire(), sort_keys=True,
                                 separators=(",", ":"))

    volumes: list[dict[str, Any]] = [
        {"name": "workspace", "emptyDir": {"sizeLimit": settings.scratch_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
        {"name": "task-input", "downwardAPI": {
            "defaultMode": SECRET_MODE,
            "items": [{"path": posixpath.basename(ho.TASK_INPUT_PATH),
                       "fieldRef": {"fieldPath": f"metadata.annotations['{ho.TASK_INPUT_ANNOTATION}']"}}],
        }},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "workspace", "mountPath": ho.WORKSPACE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "task-input", "mountPath": posixpath.dirname(ho.TASK_INPUT_PATH), "readOnly": True},
    ]

    def mount(vol: str, path: str, source: dict[str, Any]) -> None:
        volumes.append({"name": vol, **source})
        mounts.append({"name": vol, "mountPath": path, "readOnly": True})

    # spec.repository.credentialsSecret and spec.agent.credentialsSecret are read by the gateway, never mounted
    if settings.gateway_url:
        mount("gateway-token", GATEWAY_TOKEN_DIR, {"projected": {"defaultMode": SECRET_MODE, "sources": [
            {"serviceAccountToken": {"audience": GATEWAY_AUDIENCE, "path": posixpath.basename(GATEWAY_TOKEN_PATH),
                                     "expirationSeconds": token_seconds(int(timeout))}}]}})
    if (agent.get("script") or {}).get("name"):
        mount("script", ho.SCRIPT_DIR,
              {"configMap": {"name": agent["script"]["name"], "defaultMode": SECRET_MODE}})
    if (agent.get("prompts") or {}).get("name"):
        mount("prompts", ho.PROMPTS_DIR,
              {"configMap": {"name": agent["prompts"]["name"], "defaultMode": SECRET_MODE}})
    for i, skill in enumerate(skills_of(build, task)):
        mount(f"skill-{i}", f"{ho.SKILLS_DIR}/{skill['name']}",
              {"configMap": {"name": skill["configMap"]["name"], "defaultMode": SECRET_MODE}})
    if (instructions := instructions_of(build)) is not None:
        mount("instructions", ho.INSTRUCTIONS_DIR,
              {"configMap": {"name": instructions["configMap"]["name"], "defaultMode": SECRET_MODE,
                             "items": [{"key": instructions.get("key") or ho.INSTRUCTIONS_FILE,
                                        "path": ho.INSTRUCTIONS_FILE}]}})

    env = [{"name": "HOME", "value": HOME_DIR}]
    env += [{"name": e["name"], "value": str(e.get("value", ""))}
            for e in agent.get("env") or [] if e.get("name") and e["name"] != "HOME"
            and not e["name"].startswith("LONGSHOT_GATEWAY_")]
    if settings.gateway_url:
        env += [{"name": "LONGSHOT_GATEWAY_URL", "value": settings.gateway_url},
                {"name": "LONGSHOT_GATEWAY_TOKEN_FILE", "value": GATEWAY_TOKEN_PATH}]
    if settings.tracing_endpoint and tmeta.get("uid") and bmeta.get("uid"):
        # tracing: the agent's spans are children of this attempt's span (its IDs derive from the UIDs); it sends
        # them to the gateway's /traces, the only place it may reach
        env = [e for e in env if e["name"] != tracing.TRACEPARENT_ENV]
        env.append({"name": tracing.TRACEPARENT_ENV,
                    "value": tracing.traceparent(str(bmeta["uid"]), str(tmeta["uid"]), attempt)})

    container = {
        "name": AGENT_CONTAINER,
        "image": agent.get("image") or settings.agent_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(COMMAND),
        "workingDir": ho.WORKSPACE_DIR,
        "env": env,
        "resources": _resources(task, build, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": ho.TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": tmeta.get("namespace") or bmeta.get("namespace"),
            "labels": _labels(task, bmeta["name"], attempt),
            "annotations": {ho.TASK_INPUT_ANNOTATION: task_input_json},
            "ownerReferences": [{
                "apiVersion": API_VERSION,
                "kind": "AgentTask",
                "name": tmeta["name"],
                "uid": tmeta.get("uid", ""),
                "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": int(timeout),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            # the resolver's default is 5 s per try: a Pod's first lookup, sent before an isolate-first CNI has
            # programmed it (Calico, Cilium, the local cluster's enforcer), cost every lone agent Pod 5 s
            "dnsConfig": {"options": [dict(o) for o in DNS_OPTIONS]},
            "terminationGracePeriodSeconds": 30,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": AGENT_UID,
                "runAsGroup": AGENT_UID,
                "fsGroup": AGENT_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            **({"runtimeClassName": runtime_class} if (runtime_class := agent.get("runtimeClassName")
                                                         or settings.agent_runtime_class) else {}),
            "containers": [container],
            "volumes": volumes,
            **_placement(task, settings),
        },
    }


DELIVERY_PURPOSES: Final = frozenset({"gate", "review", "sweep", "final"})
"""``longshot.dev/purpose`` values of the tasks the merge queue and finalization wait for: their Pods get
``Settings.delivery_priority_class``."""


def _placement(task: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The Pod's node selector, tolerations and PriorityClass from the operator's settings (the chart's
    ``agents.nodeSelector``, ``agents.tolerations``, ``agents.priorityClassName`` and
    ``agents.deliveryPriorityClassName``)."""
    out: dict[str, Any] = {}
    selector = settings.node_selector()
    if selector:
        out["nodeSelector"] = dict(selector)
    tolerations = settings.tolerations()
    if tolerations:
        out["tolerations"] = [admission.toleration_manifest(t) for t in tolerations]
    purpose = ((task.get("metadata") or {}).get("labels") or {}).get(keys.PURPOSE)
    priority_class = (settings.delivery_priority_class if purpose in DELIVERY_PURPOSES else "") \
        or settings.agent_priority_class
    if priority_class:
        out["priorityClassName"] = priority_class
    return out


# --- warm sandboxes (core.warmpool) ----------------------------------------------------------------------

WARM_MARGIN_SECONDS: Final = 600
"""A warm Pod's deadline is its attempt's plus this (and its pool's idle time): the claim lowers it to the Pod's age
plus the attempt's timeout (a Pod's ``activeDeadlineSeconds`` may only go down)."""
WARM_TASK: Final = "warm"
"""The stand-in task a build's warm template is built for: a worker without a name of its own."""


def _template_task(build: Mapping[str, Any]) -> dict[str, Any]:
    bmeta = build["metadata"]
    return {"metadata": {"name": WARM_TASK, "namespace": bmeta.get("namespace")}, "spec": {"role": "worker"}}


def warm_spec(build: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The Pod spec of the build's worker template (:func:`build_warm_pod`'s); ``core.warmpool.template_hash`` of it
    is what its warm Pods carry."""
    spec: dict[str, Any] = build_agent_pod(_template_task(build), build, settings, 1)["spec"]
    return spec


def attempt_template(pod: Mapping[str, Any]) -> str:
    """The template hash of an attempt's cold Pod manifest (:func:`build_agent_pod`): a warm Pod with the same one
    may run the attempt instead."""
    return warmpool.template_hash(pod.get("spec") or {})


def warm_deadline(build: Mapping[str, Any], idle_seconds: int) -> int:
    """A warm Pod's ``activeDeadlineSeconds``: the build's attempt timeout, its pool's idle time and a margin. A
    claim may only lower it, so an attempt whose timeout does not fit in what is left does not claim that Pod."""
    return timeout_of(_template_task(build), build) + idle_seconds + WARM_MARGIN_SECONDS


def build_warm_pod(build: Mapping[str, Any], settings: Settings, name: str, idle_seconds: int, *,
                   lifetime: int | None = None) -> dict[str, Any]:
    """A warm sandbox of ``build``: the Pod :func:`build_agent_pod` makes for a worker of the build, less everything
    task-specific (no task or attempt labels, no task input annotation, so its task-input file is empty and its
    runner waits for a claim at the gateway), controlled by the BuildRequest until an attempt claims it. Its deadline
    is ``lifetime`` (a pool shared by builds: the longest of theirs), else :func:`warm_deadline` of the build."""
    bmeta = build["metadata"]
    pod = build_agent_pod(_template_task(build), build, settings, 1)
    template = warmpool.template_hash(pod["spec"])
    labels = {k: v for k, v in pod["metadata"]["labels"].items() if k not in (TASK_LABEL, ATTEMPT_LABEL, ROLE_LABEL)}
    labels[keys.WARM_TEMPLATE] = template
    lifetime = warm_deadline(build, idle_seconds) if lifetime is None else lifetime
    pod["spec"]["activeDeadlineSeconds"] = lifetime
    for volume in pod["spec"]["volumes"]:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "serviceAccountToken" in source:
                source["serviceAccountToken"]["expirationSeconds"] = token_seconds(lifetime)
    pod["metadata"] = {
        "name": name,
        "namespace": bmeta.get("namespace"),
        "labels": labels,
        "ownerReferences": [{"apiVersion": API_VERSION, "kind": "BuildRequest", "name": bmeta["name"],
                             "uid": bmeta.get("uid", ""), "controller": True, "blockOwnerDeletion": True}],
    }
    return pod


def claim_patch(cold: Mapping[str, Any], resource_version: str, deadline: int) -> dict[str, Any]:
    """The one write that claims a warm Pod for the attempt whose cold Pod would be ``cold``
    (:func:`build_agent_pod`): fenced on the warm Pod's ``resource_version``, it makes the AgentTask its controller,
    gives it the attempt's labels (and ``longshot.dev/warm-claim``: the cold Pod's name, by which the operator finds
    it) and task input, and lowers its deadline to ``deadline``."""
    meta = cold["metadata"]
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {**meta["labels"], keys.WARM_CLAIM: meta["name"]},
            "annotations": dict(meta.get("annotations") or {}),
            "ownerReferences": [dict(o) for o in meta["ownerReferences"]],
        },
        "spec": {"activeDeadlineSeconds": int(deadline)},
    }
