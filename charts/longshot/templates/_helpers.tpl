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

{{/* The egress policy's settings as environment variables (core.egress); the prefix is LONGSHOT_ (operator) or
LONGSHOT_GATEWAY_ (gateway). An empty list is "none" (an empty variable would mean the built-in default). */}}
{{- define "longshot.egressEnv" -}}
{{- $eg := .root.Values.egress -}}
{{- if $eg.allowedCIDRs }}
{{- fail (printf "egress.allowedCIDRs %v: a range must say what it is for and on which ports; move each one to egress.allow as {cidr: <range>, purposes: [git], ports: [<port>]} (purposes: git, model, tracker, forge, mcp, proxy; docs/security.md)" $eg.allowedCIDRs) }}
{{- end }}
- name: {{ .prefix }}EGRESS_ALLOW
  value: {{ toJson ($eg.allow | default list) | quote }}
- name: {{ .prefix }}EGRESS_ALLOWED_HOSTS
  value: {{ join "," $eg.allowedHosts | default "none" | quote }}
- name: {{ .prefix }}EGRESS_ALLOWED_CIDRS
  value: "none"
- name: {{ .prefix }}EGRESS_DENIED_CIDRS
  value: {{ join "," $eg.deniedCIDRs | default "none" | quote }}
- name: {{ .prefix }}EGRESS_CLUSTER_CIDRS
  value: {{ join "," $eg.clusterCIDRs | default "none" | quote }}
{{- $proxy := $eg.proxy | default dict }}
{{- if $proxy.url }}
{{- if not (include "longshot.proxyPort" $proxy.url) }}
{{- fail (printf "egress.proxy.url %s: give it as http://host:port, with its port" $proxy.url) }}
{{- end }}
{{- if contains "@" $proxy.url }}
{{- fail "egress.proxy.url: credentials in the proxy URL (user:password@) are not supported; let the proxy admit the operator's and the gateway's Pods by their address (docs/security.md, \"Egress through a proxy\")" }}
{{- end }}
{{- $allowed := false }}
{{- range $e := ($eg.allow | default list) }}{{- if has "proxy" $e.purposes }}{{- $allowed = true }}{{- end }}{{- end }}
{{- if not $allowed }}
{{- fail (printf "egress.proxy.url %s: the proxy must be in the allowlist explicitly: add an egress.allow entry {host: <its name>, purposes: [proxy], ports: [<its port>]} or {cidr: <its address>/32, purposes: [proxy], ports: [<its port>]} (docs/security.md, \"Egress through a proxy\")" $proxy.url) }}
{{- end }}
{{- end }}
# egress through a proxy (core.proxy): the URL, and what goes direct; the standard HTTPS_PROXY/NO_PROXY are not set
- name: {{ .prefix }}EGRESS_PROXY_URL
  value: {{ $proxy.url | default "none" | quote }}
- name: {{ .prefix }}EGRESS_NO_PROXY
  value: {{ join "," ($proxy.noProxy | default list) | default "none" | quote }}
{{- end -}}

{{/* The port of a proxy URL (http://host:port), or "" when it names none. */}}
{{- define "longshot.proxyPort" -}}
{{- regexFind "[0-9]+$" (regexFind ":[0-9]+/?$" .) -}}
{{- end -}}

{{/* The ranges core.egress never connects to (ALWAYS_DENIED there; a test compares the two lists). */}}
{{- define "longshot.egressAlwaysDenied" -}}
{{- toJson (list "0.0.0.0/8" "127.0.0.0/8" "169.254.0.0/16" "100.100.100.200/32" "192.0.0.0/24" "224.0.0.0/4" "240.0.0.0/4" "::/128" "::1/128" "fe80::/10" "fec0::/10" "fd00:ec2::254/128" "100::/64" "ff00::/8") -}}
{{- end -}}

{{/* The IPv4 (family "4") or IPv6 ("6") ranges an egress NetworkPolicy excepts from "anywhere": the always-denied
ranges of core.egress, egress.deniedCIDRs and egress.clusterCIDRs. */}}
{{- define "longshot.egressExcept" -}}
{{- $out := list -}}
{{- range (concat (include "longshot.egressAlwaysDenied" . | fromJsonArray) (.root.Values.egress.deniedCIDRs | default list) (.root.Values.egress.clusterCIDRs | default list)) -}}
{{- if eq (contains ":" .) (eq $.family "6") -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $out) -}}
{{- end -}}

{{/* The egress allowlist as rules "purpose|port|pattern" (port "*": every port), the form the admission policy's
CEL matches (core.egress.Policy.entries): {"hosts": [...], "cidrs": [...]}. egress.allow entries serve what they
list; a legacy egress.allowedHosts entry serves every purpose, an exact name on 80, 443, 22 and 9418, a wildcard
on every port. */}}
{{- define "longshot.egressRules" -}}
{{- $eg := .Values.egress -}}
{{- $hosts := list -}}
{{- $cidrs := list -}}
{{- range $e := ($eg.allow | default list) -}}
{{- range $p := $e.purposes -}}
{{- range $port := $e.ports -}}
{{- if $e.host -}}
{{- $hosts = append $hosts (printf "%s|%v|%s" $p $port (lower (trimSuffix "." $e.host))) -}}
{{- else -}}
{{- $cidrs = append $cidrs (printf "%s|%v|%s" $p $port $e.cidr) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $h := ($eg.allowedHosts | default list) -}}
{{- range $p := list "git" "model" "tracker" "forge" "mcp" -}}
{{- if hasPrefix "*" $h -}}
{{- $hosts = append $hosts (printf "%s|*|%s" $p (lower (trimSuffix "." $h))) -}}
{{- else -}}
{{- range $port := list 80 443 22 9418 -}}
{{- $hosts = append $hosts (printf "%s|%v|%s" $p $port (lower (trimSuffix "." $h))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "hosts" (uniq $hosts) "cidrs" (uniq $cidrs)) -}}
{{- end -}}

{{/* The allow entries' cidrs whose purposes include one of .purposes, with their ports, as NetworkPolicy egress
rules (a JSON list). */}}
{{- define "longshot.egressCidrRules" -}}
{{- $out := list -}}
{{- range $e := (.root.Values.egress.allow | default list) -}}
{{- if $e.cidr -}}
{{- $serves := false -}}
{{- range $p := $e.purposes -}}{{- if has $p $.purposes -}}{{- $serves = true -}}{{- end -}}{{- end -}}
{{- if $serves -}}
{{- $ports := list -}}
{{- range $port := $e.ports -}}{{- $ports = append $ports (dict "protocol" "TCP" "port" (int $port)) -}}{{- end -}}
{{- $out = append $out (dict "to" (list (dict "ipBlock" (dict "cidr" $e.cidr))) "ports" $ports) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* CEL: whether the host in variable `.var` (lower case, no trailing dot; '' for a file:// URL, '!' when the URL
does not parse), on the port in variable `.port` (a string), is allowed for `.purpose` by the egress policy
(core.egress.Policy.check, the part an admission can decide). variables.hostRules and variables.cidrRules hold
the rules of longshot.egressRules. */}}
{{- define "longshot.celHostAllowed" -}}
{{- $h := printf "variables.%s" .var -}}
{{- $any := printf "'%s|*|'" .purpose -}}
{{- $on := printf "'%s|' + variables.%s + '|'" .purpose .port -}}
({{ $h }} == '' ? variables.allowFile :
 {{ $h }} == '!' ? false :
 isIP({{ $h }}) ? (variables.cidrRules.exists(r, (r.startsWith({{ $on }}) || r.startsWith({{ $any }}))
                                              && cidr(r.substring(r.lastIndexOf('|') + 1)).containsIP({{ $h }}))
   || (!variables.hardDenied.exists(c, cidr(c).containsIP({{ $h }}))
       && (variables.hostRules.exists(r, r == {{ $on }} + {{ $h }} || r == {{ $any }} + {{ $h }})
           || (variables.hostRules.exists(r, r == {{ $on }} + '*' || r == {{ $any }} + '*')
               && !variables.denied.exists(c, cidr(c).containsIP({{ $h }}))))))
 : (!{{ $h }}.contains(':') && !{{ $h }}.matches('(^|[.])(0x[0-9a-f]*|[0-9]+)$')
    && variables.hostRules.exists(r, (r.startsWith({{ $on }}) || r.startsWith({{ $any }}))
         && (r.endsWith('|*') || r.endsWith('|' + {{ $h }})
             || (r.substring(r.lastIndexOf('|') + 1).startsWith('*.')
                 && {{ $h }}.endsWith(r.substring(r.lastIndexOf('|') + 2)))))))
{{- end -}}

{{/* CEL: the port of the URL in variable `.var`, as a string: the URL's own, else its scheme's default (an scp-like
"host:path" is ssh, 22). */}}
{{- define "longshot.celPortOf" -}}
{{- $u := printf "variables.%s" .var -}}
({{ $u }}.matches('^[A-Za-z][A-Za-z0-9+.-]*://')
 ? (isURL({{ $u }}) && url({{ $u }}).getPort() != '' ? url({{ $u }}).getPort()
    : {{ $u }}.lowerAscii().startsWith('https://') ? '443' : {{ $u }}.lowerAscii().startsWith('http://') ? '80'
    : {{ $u }}.lowerAscii().startsWith('git://') ? '9418' : '22')
 : '22')
{{- end -}}

{{/* CEL: the normalised host of the URL in variable `.var` (see longshot.celHostAllowed). */}}
{{- define "longshot.celHostOf" -}}
{{- $u := printf "variables.%s" .var -}}
{{- $raw := printf "(%s.startsWith('file://') ? '' : %s.matches('^[A-Za-z][A-Za-z0-9+.-]*://') ? (isURL(%s) ? url(%s).getHostname() : '!') : %s.split(':')[0].split('@')[%s.split(':')[0].split('@').size() - 1]).lowerAscii()" $u $u $u $u $u $u -}}
({{ $raw }}.endsWith('.') ? {{ $raw }}.substring(0, {{ $raw }}.size() - 1) : {{ $raw }})
{{- end -}}

{{/* longshot-console (console.enabled): names and labels. */}}
{{- define "longshot.consoleName" -}}
{{- printf "%s-console" (include "longshot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "longshot.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "longshot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
{{- end -}}

{{- define "longshot.consoleLabels" -}}
{{ include "longshot.consoleSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: longshot
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
