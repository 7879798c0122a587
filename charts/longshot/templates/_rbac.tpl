{{/* RBAC rules shared by the ClusterRole (cluster-wide mode) and the per-namespace Roles (watchNamespaces). */}}
{{- define "longshot.buildRules" -}}
- apiGroups: [longshot.dev]
  # patch on buildrequests includes metadata: the clean-up finalizer and its retry annotations (docs/cleanup.md)
  resources: [buildrequests, agenttasks, mergejobs, buildrequests/status, agenttasks/status, mergejobs/status]
  verbs: [get, list, watch, create, patch, update, delete]
# ownerReferences with blockOwnerDeletion (agent Pods owned by AgentTasks, tasks by builds) need
# update on the owner's finalizers where the OwnerReferencesPermissionEnforcement plugin is on
- apiGroups: [longshot.dev]
  resources: [buildrequests/finalizers, agenttasks/finalizers, mergejobs/finalizers]
  verbs: [update]
# BuildSchedules (docs/schedules.md): read and watched, their status written (controllers/schedules.py); the
# operator never creates, changes or deletes a schedule. `update` on their finalizers: a child build's
# ownerReference to its schedule has blockOwnerDeletion (OwnerReferencesPermissionEnforcement)
- apiGroups: [longshot.dev]
  resources: [buildschedules]
  verbs: [get, list, watch]
- apiGroups: [longshot.dev]
  resources: [buildschedules/status]
  verbs: [patch]
- apiGroups: [longshot.dev]
  resources: [buildschedules/finalizers]
  verbs: [update]
# `deletecollection`: a build's finished Pods beyond spec.retention.finishedPods go in one request per attempt
# number, by the labels the operator set on them (build, task, attempt). `patch`: the claim of a warm sandbox
# (docs/warm-pools.md), one merge patch fenced on its resourceVersion that gives the operator's own warm Pod its
# attempt's controller, labels, task input and a shorter deadline (the -writes and -agent-pods policies hold it to
# Pods labelled as the operator's)
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, delete, deletecollection]
# `list` (by field selector, never watched): a Pod stuck in ContainerCreating is explained by its FailedMount
# Events (a Secret or ConfigMap that is missing), which stop the task as Configuration
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch, list]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# `get`: before any Pod the operator checks that the ConfigMaps a BuildRequest names (spec.agent.script,
# spec.agent.prompts) exist and have their keys. The attempt ledger (docs/ledger.md): `create`/`patch` write an
# attempt's result into its entry `<pod>-ledger` (created when the gateway wrote no transcript), `list` (metadata
# only, by the label longshot.dev/ledger, every few minutes per build, never watched) and `delete` enforce
# spec.retention.ledger (`deletecollection`: the entries of one attempt number in one request, by their labels)
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, create, patch, delete, deletecollection]
{{- end -}}

{{- define "longshot.secretRule" -}}
# only `get`: the operator reads the Secret a BuildRequest names, it never lists or watches Secrets
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}
