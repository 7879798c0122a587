#!/usr/bin/env bash
# `make demo-llm`: the demo build with a small real model instead of the script, on the local cluster:
#
#   1. the local cluster (hack/local-cluster.sh, root) and the chart, as in `make demo`;
#   2. the model server in namespace longshot-llm: examples/model-server.yaml with the image
#      `hack/images.sh build model-server` makes (hack/model_server.py on llama.cpp prebuilt in the cyllama
#      wheel, and Gemma 3 270M, both from PyPI: nothing compiled);
#   3. a sample repository served by the cluster's git daemon, and examples/buildrequest-llm.yaml with
#      `agent.baseUrl` pointed at the server;
#   4. live progress until the build settles (Finalized True or False, or Stalled), then what each task did:
#      its outcome, the tokens the server reported, the branch it pushed.
#
# A 270M model does poor work: the demo shows the loop (plan, work, review, merge queue) and the protocol, not
# good code. Exit 0 when the build settled with every attempt's outcome recorded; 1 on a stall or timeout.
#
# Environment:
#   LONGSHOT_DEMO_LLM_BASE_URL      use this OpenAI-compatible server (as agent Pods reach it) instead of
#                                   deploying one; LONGSHOT_DEMO_LLM_MODEL names its model
#   LONGSHOT_DEMO_TIMEOUT_SECONDS   overall limit (default 2400)
#   LONGSHOT_DEMO_STALL_SECONDS     give up when nothing changes for this long (default 900)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NS=longshot-demo-llm
MODEL_NS=longshot-llm
SYSTEM_NS=longshot-system
BR=hello-llm
TIMEOUT="${LONGSHOT_DEMO_TIMEOUT_SECONDS:-2400}"
STALL="${LONGSHOT_DEMO_STALL_SECONDS:-900}"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
log() { printf '[demo-llm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "the local cluster needs root"
BIN=$(bash "$ROOT/hack/k8s-binaries.sh")
KUBECTL="$BIN/kubectl"
HELM="$BIN/helm"
export HELM_CACHE_HOME="${HELM_CACHE_HOME:-$HOME/.cache/longshot/helm}"
WORKDIR="${LONGSHOT_CLUSTER_DIR:-/var/tmp/longshot-cluster}"
k() { "$KUBECTL" "$@"; }
t0=$(date +%s)

# --- 1. the cluster and the chart -------------------------------------------------------------------
say "local cluster"
bash "$ROOT/hack/local-cluster.sh" up
export KUBECONFIG="$WORKDIR/cp/admin.kubeconfig"
say "installing the chart into $SYSTEM_NS"
k get namespace "$NS" >/dev/null 2>&1 && k delete namespace "$NS" --wait=true --timeout=180s >/dev/null
for ns in "$SYSTEM_NS" "$NS" "$MODEL_NS"; do
  k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
  k label --overwrite namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
done
"$HELM" upgrade --install longshot "$ROOT/charts/longshot" --namespace "$SYSTEM_NS" \
  --set operator.image.repository=docker.io/library/longshot-operator \
  --set operator.image.tag=dev --set operator.image.pullPolicy=Never \
  --set agent.image.repository=docker.io/library/longshot-agent \
  --set agent.image.tag=dev --set agent.image.pullPolicy=Never \
  --set "prompts.namespaces={$NS}" --set networkPolicy.enabled=false \
  --set-json "egress.networkPolicy.apiServerPorts=[443,6443,$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["apiserverPort"])' "$WORKDIR/cluster.json")]" \
  --set-json 'egress.allow=[{"cidr": "10.244.0.1/32", "purposes": ["git"], "ports": [9418]}, {"cidr": "10.244.0.0/16", "purposes": ["model"], "ports": [8000]}]' \
  --set operator.replicas=1 --set podDisruptionBudget.enabled=false --wait --timeout 5m >/dev/null
k -n "$SYSTEM_NS" rollout restart deployment/longshot >/dev/null
k -n "$SYSTEM_NS" rollout status deployment/longshot --timeout=180s >&2

# --- 2. the model server ----------------------------------------------------------------------------
if [[ -n "${LONGSHOT_DEMO_LLM_BASE_URL:-}" ]]; then
  BASE_URL=$LONGSHOT_DEMO_LLM_BASE_URL
  MODEL=${LONGSHOT_DEMO_LLM_MODEL:?LONGSHOT_DEMO_LLM_MODEL: the model name the server expects}
else
  say "model server (llama.cpp + Gemma 3 270M) in $MODEL_NS"
  s=$(date +%s)
  bash "$ROOT/hack/images.sh" import "$WORKDIR/containerd/containerd.sock" model-server
  log "model-server image ready in $(( $(date +%s) - s ))s"
  k -n "$MODEL_NS" apply -f "$ROOT/examples/model-server.yaml" >/dev/null
  k -n "$MODEL_NS" rollout restart deployment/model-server >/dev/null
  k -n "$MODEL_NS" rollout status deployment/model-server --timeout=300s >&2
  pod_ip=""
  for _ in $(seq 1 60); do
    pod_ip=$(k -n "$MODEL_NS" get pods -l app.kubernetes.io/name=model-server \
               -o jsonpath='{range .items[?(@.status.podIP)]}{.metadata.deletionTimestamp}{"|"}{.status.podIP}{"\n"}{end}' \
             | awk -F'|' '$1 == "" {print $2; exit}')
    [[ -n "$pod_ip" ]] && break
    sleep 2
  done
  [[ -n "$pod_ip" ]] || die "the model server Pod has no address"
  BASE_URL="http://$pod_ip:8000/v1"   # no kube-proxy on the local cluster: the Pod's address
  MODEL=gemma-3-270m
  log "model server ready at $BASE_URL ($(( $(date +%s) - s ))s)"
fi

# --- 3. the repository and the BuildRequest ---------------------------------------------------------
say "sample repository and BuildRequest $NS/$BR (openai backend, model $MODEL)"
bare="$WORKDIR/git/demo-llm.git"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
printf '# hello\n\nA repository for the real-model demo.\n' >"$src/README.md"
git -C "$src" init -q -b main
git -C "$src" -c user.name=demo -c user.email=demo@localhost add -A
git -C "$src" -c user.name=demo -c user.email=demo@localhost commit -q -m "README"
rm -rf "$bare"
git init -q --bare -b main "$bare"
touch "$bare/git-daemon-export-ok"
git -C "$src" push -q "$bare" main
sed -e "s#baseUrl: .*#baseUrl: $BASE_URL#" -e "s#model: gemma-3-270m#model: $MODEL#" \
  "$ROOT/examples/buildrequest-llm.yaml" | k -n "$NS" apply -f - >/dev/null
begin=$(date +%s)

# --- 4. progress ------------------------------------------------------------------------------------
say "progress (until Finalized or Stalled; timeout ${TIMEOUT}s, stall ${STALL}s)"
cond() { k -n "$NS" get br "$BR" -o "jsonpath={.status.conditions[?(@.type==\"$1\")].$2}" 2>/dev/null || true; }
snapshot() {
  k -n "$NS" get br "$BR" --no-headers 2>/dev/null || true
  k -n "$NS" get agenttasks,mergejobs --no-headers 2>/dev/null || true
}
previous="" last_change=$begin
while :; do
  now=$(date +%s)
  current=$(snapshot)
  if [[ "$current" != "$previous" ]]; then
    printf '\n[%4ds]\n%s\n' $(( now - begin )) "$current" >&2
    previous=$current last_change=$now
  fi
  finalized=$(cond Finalized status) stalled=$(cond Stalled status)
  [[ "$finalized" == True || "$stalled" == True ]] && break
  [[ "$finalized" == False && "$(cond Finalized reason)" != InProgress ]] && break
  (( now - begin > TIMEOUT )) && die "the build did not settle within ${TIMEOUT}s"
  (( now - last_change > STALL )) && die "nothing changed for ${STALL}s"
  sleep 5
done

say "settled in $(( $(date +%s) - begin ))s (whole demo $(( $(date +%s) - t0 ))s)"
k -n "$NS" get br "$BR" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
echo "--- tasks: role, phase, tokens per attempt, failure, branch" >&2
k -n "$NS" get agenttasks -o jsonpath='{range .items[*]}{.metadata.name} {.spec.role} {.status.phase} tokens={.status.attempts[*].tokens} {.status.attempts[*].failureClass} {.status.handoff.branch}{"\n"}{end}' >&2
echo "--- tokens recorded on the BuildRequest: $(k -n "$NS" get br "$BR" -o jsonpath='{.status.usage.tokens}')" >&2
echo "--- branches in the repository" >&2
git -C "$bare" for-each-ref --format='%(refname:short) %(objectname:short) %(subject)' refs/heads >&2
