# `helm test` for Longshot (templates/tests/test-pod.yaml runs it with the operator image's Python):
# 1. the operator answers /healthz (LONGSHOT_TEST_HEALTH_URL, its metrics Service) with 200: its controllers and
#    its Lease are healthy;
# 2. the API server serves the three CRDs of longshot.dev/v1alpha1 (discovery, allowed to any ServiceAccount).
# Prints one line per check and exits 1 on the first failure. tests/integration/test_chart_helm_test.py runs this
# very file against a real API server.
import os
import sys
import urllib.error
import urllib.request

import kubernetes

WANTED = {"buildrequests", "agenttasks", "mergejobs"}


def fail(message: str) -> None:
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


url = os.environ.get("LONGSHOT_TEST_HEALTH_URL", "")
if url:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read(200).decode(errors="replace").strip()
    except urllib.error.HTTPError as e:
        fail(f"{url} answered {e.code}: {e.read(200).decode(errors='replace').strip()} (see the operator's log)")
    except OSError as e:
        fail(f"{url} did not answer: {e}")
    print(f"ok   the operator is healthy ({url}: {body})", flush=True)

if os.environ.get("KUBECONFIG"):
    kubernetes.config.load_kube_config()
else:
    kubernetes.config.load_incluster_config()
try:
    listed = kubernetes.client.CustomObjectsApi().get_api_resources("longshot.dev", "v1alpha1")
except kubernetes.client.ApiException as e:
    fail(f"the API server does not serve longshot.dev/v1alpha1 ({e.status} {e.reason}): install the CRDs "
         "(the chart's crds/ directory)")
served = {r.name for r in listed.resources}
missing = sorted(WANTED - served)
if missing:
    fail(f"CRDs not served: {', '.join(missing)} (install the chart's crds/)")
print(f"ok   the CRDs are served: {', '.join(sorted(WANTED))}", flush=True)
