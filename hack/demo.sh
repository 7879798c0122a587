#!/usr/bin/env bash
# `make demo`: a whole Longshot build on a real cluster, with the scripted agent backend (no API key).
#
#   1. a cluster: the local one (hack/local-cluster.sh, root), or kind (LONGSHOT_CLUSTER=kind, or when `kind`
#      is on PATH and a Docker engine answers; hack/kind.sh), or the current kube context with
#      LONGSHOT_USE_CURRENT_CONTEXT=1;
#   2. the chart, with the locally built images;
#   3. a sample repository (SPEC.md, a tiny Python calculator, `make test`) on a git forge that needs a
#      credential (the local cluster's; its account becomes the `git-token` Secret, which only the operator
#      and longshot-gateway read: agent Pods clone and push through the gateway);
#   4. the scripted backend's script (a ConfigMap) and examples/buildrequest-demo.yaml;
#   5. live progress until the BuildRequest's `Finalized` condition is True.
#
# When `Finalized` does not become True (it is False, or nothing changes for $LONGSHOT_DEMO_STALL_SECONDS,
# or $LONGSHOT_DEMO_TIMEOUT_SECONDS pass) the demo prints where it stopped (conditions, tasks, merge
# jobs, Pods, events, operator logs) and exits 1. It never reports a build it did not see finish.
#
# Environment:
#   LONGSHOT_CLUSTER=local|kind      which cluster to make (default: local, or kind when `kind` and Docker are there)
#   LONGSHOT_USE_CURRENT_CONTEXT=1   use the current kube context (then LONGSHOT_DEMO_GIT_URL and
#                                    LONGSHOT_DEMO_GIT_PUSH_URL: a git server the Pods reach and you can push to;
#                                    LONGSHOT_DEMO_GIT_USERNAME/_PASSWORD: its credential, if it needs one)
#   LONGSHOT_DEMO_NAMESPACE          namespace of the build (default longshot-demo)
#   LONGSHOT_DEMO_TIMEOUT_SECONDS    overall limit of the build (default 900)
#   LONGSHOT_DEMO_STALL_SECONDS      give up when nothing changes for this long (default 240)
#   LONGSHOT_DEMO_KEEP=1             keep the namespace and BuildRequest of a previous run (default: recreate)
#   LONGSHOT_DEMO_REPLICAS           operator replicas (default 1; the chart default is 2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NS="${LONGSHOT_DEMO_NAMESPACE:-longshot-demo}"
SYSTEM_NS=longshot-system
TIMEOUT="${LONGSHOT_DEMO_TIMEOUT_SECONDS:-900}"
STALL="${LONGSHOT_DEMO_STALL_SECONDS:-240}"
BR=demo

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
log() { printf '[demo] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

BIN=$(bash "$ROOT/hack/k8s-binaries.sh")
KUBECTL="$BIN/kubectl"
HELM="$BIN/helm"
export HELM_CACHE_HOME="${HELM_CACHE_HOME:-$HOME/.cache/longshot/helm}"

# --- 1. the cluster ---------------------------------------------------------------------------------
mode=local
if [[ "${LONGSHOT_USE_CURRENT_CONTEXT:-}" == 1 ]]; then
  mode=current
elif [[ -n "${LONGSHOT_CLUSTER:-}" ]]; then
  mode=$LONGSHOT_CLUSTER
  [[ "$mode" == local || "$mode" == kind ]] || die "LONGSHOT_CLUSTER=$mode: expected local or kind"
elif command -v kind >/dev/null && docker info >/dev/null 2>&1; then
  mode=kind
fi
say "cluster: $mode"
pull_policy=Never
case "$mode" in
  local)
    [[ $(id -u) -eq 0 ]] || die "the local cluster needs root (or use LONGSHOT_USE_CURRENT_CONTEXT=1)"
    bash "$ROOT/hack/local-cluster.sh" up
    WORKDIR="${LONGSHOT_CLUSTER_DIR:-/var/tmp/longshot-cluster}"
    export KUBECONFIG="$WORKDIR/cp/admin.kubeconfig"
    GIT_ROOT="$WORKDIR/git"
    # the cluster DNS resolves git-server.longshot-system.svc to the forge on the bridge
    GIT_URL="http://git-server.longshot-system.svc:3000/demo.git"
    GIT_PUSH_URL="$GIT_ROOT/demo.git"
    IFS=: read -r GIT_USERNAME GIT_PASSWORD <"$WORKDIR/forge/credentials"
    ;;
  kind)
    # kind built from the Go module proxy, a node image built locally, the images of hack/images.sh loaded
    # with `kind load image-archive` (hack/kind.sh; nothing is pulled from a registry)
    KUBECONFIG=$(bash "$ROOT/hack/kind.sh" up longshot)
    export KUBECONFIG
    # a git daemon in a container of the agent image on kind's network, reachable by Pods at its IP
    docker load -i "$(bash "$ROOT/hack/images.sh" path agent)" >/dev/null
    GIT_ROOT="${LONGSHOT_KIND_DIR:-/var/tmp/longshot-kind}/demo-git"
    mkdir -p "$GIT_ROOT"
    docker rm -f longshot-git >/dev/null 2>&1 || true
    docker run -d --name longshot-git --network kind --user 0:0 -v "$GIT_ROOT:/git" --entrypoint git \
      "$(bash "$ROOT/hack/images.sh" ref agent)" \
      daemon --base-path=/git --export-all --enable=receive-pack --reuseaddr /git >/dev/null
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' longshot-git)
    GIT_URL="git://$ip/demo.git"
    GIT_PUSH_URL="$GIT_ROOT/demo.git"
    ;;
  current)
    GIT_URL="${LONGSHOT_DEMO_GIT_URL:?LONGSHOT_DEMO_GIT_URL: the demo repository URL as Pods see it}"
    GIT_PUSH_URL="${LONGSHOT_DEMO_GIT_PUSH_URL:-$GIT_URL}"
    GIT_USERNAME="${LONGSHOT_DEMO_GIT_USERNAME:-}"
    GIT_PASSWORD="${LONGSHOT_DEMO_GIT_PASSWORD:-}"
    pull_policy=IfNotPresent
    ;;
esac
k() { "$KUBECTL" "$@"; }
# the demo's git server is on a private address, which the egress policy refuses unless listed: an egress.allow
# entry for git on its port only (docs/security.md; LONGSHOT_DEMO_EGRESS_ALLOW replaces it, as JSON)
demo_git_allow() {
  case "$mode" in
    local) echo '[{"cidr": "10.244.0.1/32", "purposes": ["git"], "ports": [3000]}]' ;;
    kind) echo "[{\"cidr\": \"$ip/32\", \"purposes\": [\"git\"], \"ports\": [9418]}]" ;;
    *) echo "[]" ;;
  esac
}

# the local cluster's API server listens on a port of its own on the bridge (the Service kubernetes is DNATed to it):
# the operator's and the gateway's NetworkPolicies must let them reach it (kind's is 6443, in the chart's defaults)
api_server_ports() {
  local port
  port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("apiserverPort") or "")' \
    "${LONGSHOT_CLUSTER_DIR:-/var/tmp/longshot-cluster}/cluster.json" 2>/dev/null || true)
  echo "[443,6443${port:+,$port}]"
}

# --- 2. the namespaces and the chart ----------------------------------------------------------------
say "installing the chart into $SYSTEM_NS"
if [[ "${LONGSHOT_DEMO_KEEP:-}" != 1 ]] && k get namespace "$NS" >/dev/null 2>&1; then
  log "deleting the previous demo namespace $NS"
  k delete namespace "$NS" --wait=true --timeout=180s >/dev/null
fi
for ns in "$SYSTEM_NS" "$NS"; do
  k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null 2>&1
  k label --overwrite namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
done
start=$(date +%s)
# Helm installs a chart's CRDs once and never upgrades them: on a cluster kept from an earlier run, apply them
k apply --server-side --force-conflicts -f "$ROOT/charts/longshot/crds/" >/dev/null
"$HELM" upgrade --install longshot "$ROOT/charts/longshot" --namespace "$SYSTEM_NS" \
  --set operator.image.repository=docker.io/library/longshot-operator \
  --set operator.image.tag=dev --set "operator.image.pullPolicy=$pull_policy" \
  --set agent.image.repository=docker.io/library/longshot-agent \
  --set agent.image.tag=dev --set "agent.image.pullPolicy=$pull_policy" \
  --set "prompts.namespaces={$NS}" --set "networkPolicy.namespaces={$NS}" --set "rbac.secrets.namespaces={$NS}" \
  --set "gateway.replicas=${LONGSHOT_DEMO_GATEWAY_REPLICAS:-1}" --set gateway.podDisruptionBudget.enabled=false \
  $(if [[ "$mode" == local ]]; then echo "--set networkPolicy.dns.peers[0].ipBlock.cidr=10.244.0.1/32"; fi) \
  $(if [[ "$mode" == local ]]; then echo "--set-json egress.networkPolicy.apiServerPorts=$(api_server_ports)"; fi) \
  --set-json "egress.allow=${LONGSHOT_DEMO_EGRESS_ALLOW:-$(demo_git_allow)}" \
  --set "operator.replicas=${LONGSHOT_DEMO_REPLICAS:-1}" --set podDisruptionBudget.enabled=false \
  --wait --timeout 5m >/dev/null
# a new image under the same tag is not a new spec: restart so the operator runs what was just built
k -n "$SYSTEM_NS" rollout restart deployment/longshot deployment/longshot-gateway >/dev/null
k -n "$SYSTEM_NS" rollout status deployment/longshot --timeout=180s >&2
k -n "$SYSTEM_NS" rollout status deployment/longshot-gateway --timeout=180s >&2
log "chart installed and operator ready in $(( $(date +%s) - start ))s"

# --- 3. the sample repository -----------------------------------------------------------------------
say "sample repository $GIT_URL"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
mkdir -p "$src/calc" "$src/tests"
cat >"$src/SPEC.md" <<'EOF'
# Calculator

A tiny calculator package, `calc`:

* `calc/add.py` defines `add(a, b)`, the sum of two numbers;
* `calc/multiply.py` defines `multiply(a, b)`, their product.

Each function comes with its tests in `tests/test_<name>.py`. `make test` runs the suite and must pass.
EOF
printf '"""A tiny calculator (see SPEC.md)."""\n' >"$src/calc/__init__.py"
cat >"$src/tests/test_package.py" <<'EOF'
import unittest


class PackageTest(unittest.TestCase):
    def test_imports(self):
        import calc

        self.assertTrue(calc.__doc__)


if __name__ == "__main__":
    unittest.main()
EOF
touch "$src/tests/__init__.py"
printf 'test:\n\tpython3 -m unittest discover -v -s tests -t .\n.PHONY: test\n' >"$src/Makefile"
printf '__pycache__/\n' >"$src/.gitignore"
(
  cd "$src"
  git init -q -b main
  git -c user.name=demo -c user.email=demo@localhost add -A
  git -c user.name=demo -c user.email=demo@localhost commit -q -m "Calculator spec and tests"
)
if [[ "$GIT_PUSH_URL" == /* ]]; then
  rm -rf "$GIT_PUSH_URL"
  git init -q --bare -b main "$GIT_PUSH_URL"
  git -C "$GIT_PUSH_URL" config receive.denyNonFastForwards false
  touch "$GIT_PUSH_URL/git-daemon-export-ok"
fi
git -C "$src" push -q --force "$GIT_PUSH_URL" main
log "pushed main ($(git -C "$src" rev-parse --short HEAD)): SPEC.md, calc/, tests/, Makefile (nothing implemented yet)"

# --- 4. the script and the BuildRequest --------------------------------------------------------------
say "BuildRequest $NS/$BR (scripted backend)"
# the repository credential: read by the operator's merge queue and by longshot-gateway, never by agents
k -n "$NS" create secret generic git-token --from-literal="username=${GIT_USERNAME:-x}" \
  --from-literal="password=${GIT_PASSWORD:-x}" --dry-run=client -o yaml | k -n "$NS" apply -f - >/dev/null
k -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: demo-script
data:
  script.yaml: |
    roles:
      planner:
        - read: {path: SPEC.md}
        - finish:
            summary: "Two tasks from SPEC.md"
            tasks:
              - {name: add, description: "Implement add(a, b) in calc/add.py with tests",
                 scope: ["calc/add.py", "tests/test_add.py"], priority: 7}
              - {name: multiply, description: "Implement multiply(a, b) in calc/multiply.py with tests",
                 scope: ["calc/multiply.py", "tests/test_multiply.py"], depends_on: [add]}
      reviewer:
        - finish: {summary: "Looks fine", verdict: approved}
    tasks:
      add:
        - write: {path: calc/add.py, content: "def add(a, b):\n    return a + b\n"}
        - write:
            path: tests/test_add.py
            content: |
              import unittest

              from calc.add import add


              class AddTest(unittest.TestCase):
                  def test_add(self):
                      self.assertEqual(add(2, 3), 5)
        - finish: {summary: "Implement add"}
      multiply:
        - write: {path: calc/multiply.py, content: "def multiply(a, b):\n    return a * b\n"}
        - write:
            path: tests/test_multiply.py
            content: |
              import unittest

              from calc.multiply import multiply


              class MultiplyTest(unittest.TestCase):
                  def test_multiply(self):
                      self.assertEqual(multiply(4, 5), 20)
        - run: {command: "make test", timeout: 120}
        - finish: {summary: "Implement multiply"}
    steps:
      - finish: {summary: "nothing to do"}
EOF
sed "s#url: http://git-server.longshot-system.svc:3000/demo.git#url: $GIT_URL#" "$ROOT/examples/buildrequest-demo.yaml" \
  | k -n "$NS" apply -f - >/dev/null
log "applied examples/buildrequest-demo.yaml (repository $GIT_URL)"

# --- 5. progress ------------------------------------------------------------------------------------
say "progress (until condition Finalized; timeout ${TIMEOUT}s, stall ${STALL}s)"
cond() { k -n "$NS" get br "$BR" -o "jsonpath={.status.conditions[?(@.type==\"$1\")].$2}" 2>/dev/null || true; }
snapshot() {
  k -n "$NS" get br "$BR" --no-headers 2>/dev/null || true
  k -n "$NS" get agenttasks,mergejobs --no-headers 2>/dev/null || true
  k -n "$NS" get pods --no-headers -o custom-columns=POD:.metadata.name,PHASE:.status.phase 2>/dev/null || true
}
where_it_stopped() {
  say "where it stopped"
  echo "--- BuildRequest conditions" >&2
  k -n "$NS" get br "$BR" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
  echo "--- AgentTasks" >&2
  k -n "$NS" get agenttasks -o wide >&2 || true
  k -n "$NS" get agenttasks -o jsonpath='{range .items[*]}{.metadata.name}:{range .status.conditions[*]} {.type}={.status}/{.reason}{end}{"\n"}{end}' >&2 || true
  echo "--- MergeJobs" >&2
  k -n "$NS" get mergejobs -o wide >&2 || true
  echo "--- Pods" >&2
  k -n "$NS" get pods -o wide >&2 || true
  echo "--- Events" >&2
  k -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
  echo "--- operator log (last 30 lines)" >&2
  k -n "$SYSTEM_NS" logs deployment/longshot --tail=30 2>/dev/null | grep -v '/healthz' >&2 || true
}
begin=$(date +%s)
last_change=$begin
previous=""
while :; do
  now=$(date +%s)
  current=$(snapshot)
  if [[ "$current" != "$previous" ]]; then
    printf '\n[%4ds]\n%s\n' $(( now - begin )) "$current" >&2
    previous=$current
    last_change=$now
  fi
  status=$(cond Finalized status)
  if [[ "$status" == True ]]; then
    break
  fi
  if [[ "$status" == False && "$(cond Finalized reason)" != InProgress ]]; then
    where_it_stopped
    die "Finalized=False ($(cond Finalized reason): $(cond Finalized message))"
  fi
  if (( now - begin > TIMEOUT )); then
    where_it_stopped
    die "Finalized not True after ${TIMEOUT}s (Finalized=${status:-absent} $(cond Finalized reason))"
  fi
  if (( now - last_change > STALL )); then
    where_it_stopped
    die "nothing changed for ${STALL}s; Finalized=${status:-absent} ($(cond Finalized reason): $(cond Finalized message))"
  fi
  sleep 3
done
k -n "$NS" wait "br/$BR" --for=condition=Finalized --timeout=10s >&2

say "finalized in $(( $(date +%s) - begin ))s"
if [[ "$GIT_PUSH_URL" == /* ]]; then
  check=$(mktemp -d)
  git clone -q "$GIT_PUSH_URL" "$check/repo"
  git -C "$check/repo" log --oneline main >&2
  (cd "$check/repo" && make test) >&2
  rm -rf "$check"
  log "main has the work and \`make test\` passes"
fi
