# Longshot — run `make help` for the targets. The README and CI call these targets, nothing else.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,lint]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv in .venv with the package and test tools

.PHONY: binaries
binaries: ## Provide the pinned Kubernetes binaries in ~/.cache/longshot (build them on a cold cache)
	@bash hack/k8s-binaries.sh >/dev/null

.PHONY: test
test: venv binaries ## Run the unit and integration tiers (the README's test command)
	$(PYTEST) tests/unit tests/integration $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Run the unit tier (pure code, seconds)
	$(PYTEST) tests/unit $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: venv binaries ## Run the integration tier (real etcd + kube-apiserver + controller-manager)
	$(PYTEST) tests/integration $(PYTEST_ARGS)

.PHONY: crds
crds: venv ## Render crds/*.yaml from the pydantic models
	$(PY) -m longshot crds --output crds

.PHONY: crds-check
crds-check: venv ## Fail when crds/ differs from the generator's output
	$(PY) -m longshot crds --output crds --check

.PHONY: lint
lint: venv ## ruff, the import layering contract and the CRD drift check
	$(VENV)/bin/ruff check operator tests hack
	$(VENV)/bin/lint-imports
	$(PY) -m longshot crds --output crds --check

.PHONY: bench-dispatch
bench-dispatch: venv binaries ## Benchmark: 1,000 AgentTasks -> Pods vs the Job controller; RSS at 10,000 tasks
	$(PY) hack/bench_dispatch.py

.PHONY: bench-merge
bench-merge: venv ## Benchmark: 200 branches through the merge code vs plain git
	$(PY) hack/bench_merge.py

.PHONY: bench-scheduler
bench-scheduler: venv ## Benchmark: one scheduling decision over 10,000 candidate tasks
	$(PY) hack/bench_scheduler.py

.PHONY: operator
operator: venv ## Run the operator against the current kube context
	$(PY) -m longshot operator

.PHONY: clean
clean: ## Remove the virtualenv and test artifacts (not the binaries cache)
	rm -rf $(VENV) _artifacts .pytest_cache .ruff_cache
