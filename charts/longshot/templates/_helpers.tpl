{{/* Names, labels and images. */}}
{{- define "longshot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "longshot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "longshot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "longshot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "longshot.labels" -}}
{{ include "longshot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: longshot
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "longshot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "longshot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "longshot.operatorImage" -}}
{{- $i := .Values.operator.image -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}
{{- end -}}

{{- define "longshot.agentImage" -}}
{{- printf "%s:%s" .Values.agent.image.repository (default .Chart.AppVersion .Values.agent.image.tag) -}}
{{- end -}}

{{/* Namespaces of agent Pods for namespaced objects (NetworkPolicy, prompts): a list, default the release's. */}}
{{- define "longshot.namespacesOr" -}}
{{- $list := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $list -}}{{- toJson $list -}}{{- else -}}{{- toJson (list $root.Release.Namespace) -}}{{- end -}}
{{- end -}}

{{/* longshot-gateway: names and labels (its Pods are selected by the agents' NetworkPolicy on
     app.kubernetes.io/component=gateway and app.kubernetes.io/part-of=longshot). */}}
{{- define "longshot.gatewayName" -}}
{{- printf "%s-gateway" (include "longshot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "longshot.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "longshot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "longshot.gatewayLabels" -}}
{{ include "longshot.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: longshot
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "longshot.gatewayServiceAccountName" -}}
{{- default (include "longshot.gatewayName" .) .Values.gateway.serviceAccount.name -}}
{{- end -}}

{{/* The gateway's URL as agent Pods reach it (the operator passes it on as LONGSHOT_GATEWAY_URL). */}}
{{- define "longshot.gatewayURL" -}}
{{- printf "http://%s.%s.svc:%v" (include "longshot.gatewayName" .) .Release.Namespace .Values.gateway.port -}}
{{- end -}}

{{/* DNS servers of agent Pods as a JSON list of NetworkPolicy peers (networkPolicy.dns), [] when off. */}}
{{- define "longshot.dnsPeers" -}}
{{- $dns := .Values.networkPolicy.dns -}}
{{- if not $dns.enabled -}}
[]
{{- else if $dns.peers -}}
{{- toJson $dns.peers -}}
{{- else -}}
{{- $peer := dict -}}
{{- if $dns.namespaceSelector -}}{{- $_ := set $peer "namespaceSelector" (dict "matchLabels" $dns.namespaceSelector) -}}
{{- else -}}{{- $_ := set $peer "namespaceSelector" (dict) -}}{{- end -}}
{{- with $dns.podSelector -}}{{- $_ := set $peer "podSelector" (dict "matchLabels" .) -}}{{- end -}}
{{- toJson (list $peer) -}}
{{- end -}}
{{- end -}}
