# aftershock: the two commands are `make dev` (run it) and `make test` (prove it).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TESTBED := hack/testbed
export AFTERSHOCK_CACHE ?= $(HOME)/.cache/aftershock
KUBECONFIG_LOCAL := $(AFTERSHOCK_CACHE)/cluster/kubeconfig

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# pip's and setuptools' own output (deprecation warnings and all) goes to $(VENV)/install.log.
$(VENV)/.installed: pyproject.toml
	@echo "Python environment in $(VENV) (pip's output: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[dev]'; } \
	  >$(VENV)/install.log 2>&1 || { tail -n 30 $(VENV)/install.log; exit 1; }
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Python environment with the package and its dev tools

.PHONY: build
build: ## build the test bed's binaries (Kubernetes, etcd, kwok) into the cache
	$(TESTBED)/build.sh >/dev/null

.PHONY: cluster
cluster: ## start the local cluster (real control plane + kwok nodes); safe to run twice
	$(TESTBED)/cluster.sh up >/dev/null
	@echo "export KUBECONFIG=$(KUBECONFIG_LOCAL)"

.PHONY: cluster-down
cluster-down: ## stop and remove the local cluster
	$(TESTBED)/cluster.sh down

.PHONY: dev
dev: venv ## local cluster (real node) + operator image in-cluster + TiKV stand-ins + example campaign; watch it
	hack/dev/run.sh

.PHONY: dev-local
dev-local: venv ## the fast loop: operator as a host process, TiKV simulated on kwok nodes
	AFTERSHOCK_DEV_MODE=local hack/dev/run.sh

.PHONY: dev-down
dev-down: ## remove what make dev deployed (operator, TiKV stand-ins, example campaign); the cluster stays
	hack/dev/down.sh

.PHONY: images
images: ## build the operator and subject images (cached) and import them into the real node
	hack/testbed/images.sh all

.PHONY: crd
crd: venv ## write the chart's and the package's CRD copies from manifests/crd (kinds from the subject registry)
	$(PY) hack/crd/generate.py
	$(PY) hack/admission/generate.py

.PHONY: verify-crd
verify-crd: venv ## fail when a CRD copy (or the subject.kind enum) drifted from its source
	$(PY) hack/crd/generate.py --check
	$(PY) hack/admission/generate.py --check

.PHONY: lint
lint: venv verify-crd ## ruff, mypy --strict, import-linter (layer rules), CRD copies in step
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy --strict
	$(VENV)/bin/lint-imports

.PHONY: test-unit
test-unit: venv ## unit tests only (no cluster)
	$(VENV)/bin/pytest tests/unit -q

# pytest-xdist workers for `make test` (tests run one namespace each; the real-node tests, which
# share one kubelet and containerd, run one after another on one worker: --dist loadgroup).
# Long units keep a worker to themselves (the kind test ~5 min, the real-node group ~15, the audit
# webhook group: tests/scheduling.py). Four workers ran the suite in 14 min (pytest, warm), but
# the real-node group's timing bounds then failed once (an etcd election stamped 0.32 s late,
# bound 0.3, beside the kind test and two kwok workers): three until those run apart.
TEST_WORKERS ?= 3

# The kind test's node image (hack/kind/node/build.sh; minutes cold, nothing warm) is started in
# the background first, where the machine can host kind (the real node's conditions), so that it
# builds during lint and the first e2e tests; the test's `make kind-up` waits for it (flock).
KIND_PREBUILD_LOG := $(AFTERSHOCK_CACHE)/logs/kind-node-build.log

.PHONY: test
test: ## lint, unit and end-to-end tests, the kind path's included (starts the local cluster if none runs)
	@if $(TESTBED)/realnode.sh can >/dev/null 2>&1; then mkdir -p $(dir $(KIND_PREBUILD_LOG)); \
	  echo "building the kind node image in the background (log: $(KIND_PREBUILD_LOG))"; \
	  { nice -n 10 hack/kind/node/build.sh node >$(KIND_PREBUILD_LOG) 2>&1 & }; fi
	@$(MAKE) --no-print-directory venv lint
	$(TESTBED)/build.sh >/dev/null
	$(TESTBED)/monitoring.sh >/dev/null
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium missing (apt-get install -y chromium): the HTML report's browser test will fail"; }
	@rc=0; $(VENV)/bin/pytest tests -q -ra -n $(TEST_WORKERS) --dist loadgroup || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

.PHONY: test-kind
test-kind: venv ## only the kind path's test (kind-up, tikv-up, image, deploy, a Campaign, kind-down; part of make test)
	@rc=0; $(VENV)/bin/pytest tests/e2e/test_kind.py -m kind -q -ra -s || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

.PHONY: reliability
reliability: venv ## faults, load, hostile input on a cluster of its own (~20 min; docs/guarantees.md)
	$(TESTBED)/build.sh >/dev/null
	@command -v faketime >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq faketime libfaketime >/dev/null; } || \
	  echo "libfaketime missing (apt-get install -y faketime libfaketime): the wall-clock step will fail"; }
	@rc=0; $(VENV)/bin/pytest tests/reliability -m reliability -q -ra --durations=15 || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

# Benchmarks print tables and write bench/results/; never part of `make test` (timings don't gate).
BENCH_TRIALS ?= 20
SCALE_CAMPAIGNS ?= 100
SCALE_TRIALS ?= 10
SCALE_TIMEOUT ?= 600
BENCH_TOOLS ?= aftershock,aftershock-pods,aftershock-short,chaostoolkit,chaostoolkit-ssh,krkn
REAL_TOOLS ?= aftershock,aftershock-pods,chaostoolkit,krkn
BOUND_CAMPAIGNS ?= 1000
BOUND ?= 20
# 1,000 Campaigns of 10 trials with the default 15 s settle window, 20 at a time, take hours:
# the bounded run is 3 trials, settleSeconds 0, on kwok nodes raised to 1,200 pods each.
BOUND_TRIALS ?= 3
BOUND_SETTLE ?= 0
BOUND_NODE_PODS ?= 1200
BOUND_TIMEOUT ?= 2400
.PHONY: bench
bench: venv ## the comparison on kwok and on the real node (tables + PNG charts), then the scale runs (docs/performance.md)
	$(TESTBED)/build.sh >/dev/null
	bench/peers.sh >/dev/null
	$(PY) -m bench.compare --trials $(BENCH_TRIALS) --tools $(BENCH_TOOLS)
	$(PY) -m bench.compare --real-node --trials $(BENCH_TRIALS) --tools $(REAL_TOOLS)
	$(PY) -m bench.scale --campaigns $(SCALE_CAMPAIGNS) --trials $(SCALE_TRIALS) --timeout $(SCALE_TIMEOUT)
	$(PY) -m bench.scale --campaigns $(BOUND_CAMPAIGNS) --trials $(BOUND_TRIALS) --max-concurrent $(BOUND) \
	  --settle-seconds $(BOUND_SETTLE) --node-pods $(BOUND_NODE_PODS) --timeout $(BOUND_TIMEOUT)

# --- TiKV on kind: real TiKV with Docker and internet; without them, on parts built here -----
.PHONY: kind-up kind-down tikv-up image deploy
kind-up: ## kind cluster: 1 control plane, 3 workers in 3 zones (no Docker of your own: node image built here)
	hack/kind/kind-up.sh
kind-down: ## delete the kind cluster
	hack/kind/kind-down.sh
tikv-up: ## PD + 3 TiKV on the kind cluster
	hack/kind/tikv-up.sh
image: ## build the operator image and load it into kind
	hack/kind/image.sh
deploy: ## CRD, RBAC, operator Deployment + PVC on the current cluster
	hack/kind/deploy.sh
