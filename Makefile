# mailroom: the two commands a newcomer needs are `make demo` and `make test`.

SHELL := /bin/bash
CARGO ?= cargo
TOOLS_BIN := .cache/tools/bin
KUBECTL := $(TOOLS_BIN)/kubectl

.PHONY: all build tools test-python crds check-crds lint test chaos bench bench-smoke image demo dev-up dev-down clean

all: build

## build: compile the operator (debug)
build:
	$(CARGO) build

## tools: build kube-apiserver, etcd, kubectl and mailpit from their pinned Go modules (cached)
tools:
	hack/build-tools.sh

CRD_COPIES := crds/mailroom.dev.yaml deploy/crds/mailroom.dev.yaml charts/mailroom/crds/mailroom.dev.yaml

## crds: regenerate crds/ (and its copies in deploy/ and the Helm chart) from the Rust types
crds:
	$(CARGO) run -q -- crds > crds/mailroom.dev.yaml
	cp crds/mailroom.dev.yaml deploy/crds/mailroom.dev.yaml
	cp crds/mailroom.dev.yaml charts/mailroom/crds/mailroom.dev.yaml

## check-crds: fail when crds/ or a copy differs from what the Rust types generate
check-crds:
	@mkdir -p .cache
	@$(CARGO) run -q -- crds > .cache/crds.yaml
	@for f in $(CRD_COPIES); do diff -u $$f .cache/crds.yaml >/dev/null \
	  || { echo "$$f is stale: run 'make crds' and commit the result" >&2; exit 1; }; done

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test-python: the Python environment with the tests' independent checkers (dkimpy, PyNaCl)
test-python:
	hack/test-python.sh

## test: unit and integration tests on a real control plane and mailpit
test: tools test-python check-crds
	$(CARGO) test --workspace

## chaos: fault tests (SIGKILL, SMTP outage, 429 window, apiserver restart, two replicas, a stalled tenant, failover, a leader killed mid-registration), one at a time
chaos: tools check-crds
	$(CARGO) test --test chaos -- --ignored --test-threads=1 --nocapture

## bench: throughput, latency, memory and apiserver cost at N=1000 and 10000 over SMTP and an API
##        fake, against the control plane's own limit (BENCH_ARGS="--sizes 30000" and so on)
BENCH_ARGS ?=
bench: tools
	$(CARGO) build --release -p mailroom -p mailroom-bench
	target/release/mailroom-bench $(BENCH_ARGS)

## bench-smoke: the benchmark at N=200, printing its figures (no threshold), as CI runs it
bench-smoke: tools
	$(CARGO) build --release -p mailroom -p mailroom-bench
	target/release/mailroom-bench --sizes 200 --shape-secrets 200 --shape-config-maps 200 \
	  --history-sizes 200,1000 --history-in-flight 200 --history-events-per-message 5 --unsubscribe-posts 1000 --latency-n 200 --bulk-recipients 2000 --out target/bench-smoke

## image: build the controller's OCI image without a container engine, and check it
image: tools
	hack/build-image.sh

## demo: a local control plane and mailpit, the operator, example messages sent
demo: tools
	hack/demo.sh

## dev-up / dev-down: start or stop a local control plane and mailpit
dev-up: tools
	hack/dev-up.sh

dev-down:
	hack/dev-down.sh

clean:
	hack/dev-down.sh >/dev/null 2>&1 || true
	$(CARGO) clean
	rm -rf .cache/dev
