#!/usr/bin/env bash
# The chart's README (charts/longshot/README.md), written by helm-docs from its template README.md.gotmpl (the
# hand-written text and the layout of the values reference) and the `# --` comments of values.yaml. helm-docs is
# built from the Go module proxy at its pin by hack/go-tools.sh (cached in ~/.cache/longshot/tools).
#
#   hack/chart-docs.sh [--chart DIR]           rewrite DIR/README.md (default charts/longshot; make chart-docs)
#   hack/chart-docs.sh --check [--chart DIR]   exit 1, with the diff, when README.md is not what helm-docs writes,
#                                              or when a value has no `# --` description (make lint)
#
# HELM_DOCS: a helm-docs binary to use instead of hack/go-tools.sh's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
check=false
chart="$ROOT/charts/longshot"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --check) check=true; shift ;;
    --chart) chart=$(cd "${2:?--chart DIR}" && pwd); shift 2 ;;
    *) echo "usage: $0 [--check] [--chart DIR]" >&2; exit 2 ;;
  esac
done
helm_docs=${HELM_DOCS:-$(bash "$ROOT/hack/go-tools.sh" helm-docs)}

# one chart: its own directory is the search root; the values in the file's order; no version footer (a helm-docs
# upgrade alone does not change the README)
render() {
  "$helm_docs" --chart-search-root "$chart" --template-files README.md.gotmpl --sort-values-order file \
    --skip-version-footer --log-level warning "$@"
}

if ! $check; then
  render
  echo "wrote $chart/README.md" >&2
  exit 0
fi

new=$(mktemp)
trap 'rm -f "$new"' EXIT
render --dry-run >"$new"
status=0
if ! diff -u --label "$chart/README.md" --label "helm-docs" "$chart/README.md" "$new"; then
  echo "$chart/README.md is out of date: run make chart-docs" >&2
  status=1
fi
# helm-docs lists a value without a `# --` description with an empty description cell
undocumented=$(sed -n 's/^| `\([^`]*\)` | .* |  |$/\1/p' "$new")
if [[ -n "$undocumented" ]]; then
  echo "values without a \`# --\` description in $chart/values.yaml: $(echo "$undocumented" | paste -sd' ')" >&2
  status=1
fi
exit $status
