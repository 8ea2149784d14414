# Parley developer entry points. `make run` and `make test` install what is
# missing (venv, Go-built tools, redis-server, Java 17, the Cassandra jars),
# start Redis and Cassandra if they are not running, and need nothing else.
#
#   make run      the whole stack on 127.0.0.1:50051-50055 (Ctrl-C stops it);
#                 TOPOLOGY=cluster: a Cassandra ring and two of each service behind nginx
#   make test     unit + integration + end-to-end tests (PYTEST_ARGS=... passes options)
#   make test-cluster  the cluster topology's suite (tests/cluster: the ring, nginx, failover)
#   make lint     ruff, ruff format --check, mypy --strict, buf lint, buf breaking, gofmt + go vet, helm lint
#   make loadgen  the Go load generator (build/parley-loadgen) that `make bench` drives
#   make chaos    the fault suite (several minutes; chaos-short is CI's form); SEED=... replays a run
#   make chaos-cluster  the fault suite on the cluster topology (Redis Cluster, the ring, nginx; ~5 min)
#   make kotlin   build the Kotlin/JVM SDK (clients/kotlin); make kotlin-test runs its tests on a stack
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

# Python >= 3.11: python3.11 if there is one, else python3 (looked up once,
# before the venv is put on PATH below).
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3)
endif
VENV := .venv
PY := $(VENV)/bin/python
# Everything the local stack writes (git-ignored); another folder (and other
# ports, below) gives a checkout infrastructure of its own.
# A symlinked .state (a git worktree sharing the main checkout's) is resolved:
# the Redis and Cassandra configs embed this path, and a different spelling of
# the same folder made `infra-up` restart the shared Redis and Cassandra.
PARLEY_STATE_DIR ?= $(or $(realpath $(CURDIR)/.state),$(CURDIR)/.state)
STATE := $(PARLEY_STATE_DIR)
export PARLEY_STATE_DIR
export PATH := $(STATE)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_ROOT_USER_ACTION := ignore

# Local infrastructure ports; the services, devstack and tests follow them.
PARLEY_REDIS_PORT ?= 6380
PARLEY_CASSANDRA_PORT ?= 9042
export PARLEY_REDIS_PORT PARLEY_CASSANDRA_PORT
export PARLEY_REDIS_URL ?= redis://127.0.0.1:$(PARLEY_REDIS_PORT)/0
export PARLEY_TEST_REDIS_URL ?= $(PARLEY_REDIS_URL)
export PARLEY_TEST_CASSANDRA_PORT ?= $(PARLEY_CASSANDRA_PORT)
# Redis with ACL users and Cassandra with password authentication (deploy/local;
# passwords under $(STATE), read by the devstack and the tests through
# parley.localstate). false turns either off; infra-up restarts a running one
# whose setting changed, keeping its data.
export PARLEY_REDIS_ACL ?= true
export PARLEY_CASSANDRA_AUTH ?= true

# Tools the tests drive (grpcurl, buf, helm and buf's Go plugins from the Go module proxy; Debian's
# chromium, prometheus and node).
TEST_TOOLS := grpcurl buf helm protoc-gen-go protoc-gen-go-grpc chromium prometheus node nginx mmdebstrap podman buildah
LOADGEN := build/parley-loadgen
PYTEST := $(PY) -m pytest --import-mode=importlib

.PHONY: all venv tools test-tools proto proto-check proto-release proto-gen infra-up infra-down infra-status run \
	test test-unit test-integration test-e2e test-cluster ring-up ring-down ring-status test-loadgen lint lint-proto loadgen bench streammem chaos chaos-short chaos-cluster clean \
	kotlin kotlin-test typescript web proto-ts image

all: test

# The venv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: Python >= 3.11 is required (set PYTHON=...)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); Parley needs >= 3.11 (set PYTHON=...)" >&2; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null \
	  || { echo "error: $(PYTHON) cannot create a venv with pip (on Debian: apt-get install python3-venv)" >&2; exit 1; }
	@echo "==> creating $(VENV) with $(PYTHON) and installing parley-client and parley[dev]"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./clients/python -e '.[dev]'
	@# Upgrading a venv whose parley still owned the `parley` script: removing that old
	@# parley took the script parley-client had just installed with it.
	@[ -x $(VENV)/bin/parley ] || $(PY) -m pip install -q --no-deps --force-reinstall -e ./clients/python
	touch $@

venv: $(VENV)/.installed

tools:
	@deploy/local/tools.sh

test-tools:
	@deploy/local/tools.sh $(TEST_TOOLS)
	@deploy/local/codegen-tools.sh

# The TypeScript SDK (clients/typescript) and the web chat bundled from it into
# services/gateway/web/app.js (what the gateway serves, package data of the wheel): npm ci from the registry by
# package-lock.json, tsc, esbuild. Rebuilt when a source changes.
TS := clients/typescript
TS_SOURCES := $(shell find $(TS)/src $(TS)/scripts clients/web/src -type f 2>/dev/null) \
	$(TS)/tsconfig.json clients/web/tsconfig.json
$(TS)/node_modules/.installed: $(TS)/package-lock.json
	@deploy/local/tools.sh node
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(TS)/dist/index.js services/gateway/web/app.js &: $(TS)/node_modules/.installed $(TS_SOURCES)
	cd $(TS) && npm run --silent build && npm run --silent build:web

typescript: $(TS)/dist/index.js services/gateway/web/app.js

web: services/gateway/web/app.js

# The container image (Dockerfile) with podman, daemonless, with the web page in it.
# IMAGE=name:tag; PYTHON_IMAGE=... builds on another base, e.g. the one
# deploy/image/base.sh makes from Debian's packages where no registry is reachable.
IMAGE ?= parley:dev
image: web
	@deploy/local/tools.sh podman
	podman build --isolation chroot --network host $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) -t $(IMAGE) .

# Regenerates the TypeScript types (clients/typescript/src/gen) from protos/parley/v1.
proto-ts: $(TS)/node_modules/.installed
	@deploy/local/tools.sh buf
	cd $(TS) && npm run --silent generate

# Regenerates Python code and type stubs from protos/: parley.v1 into clients/python
# (parley-client ships it), parley.internal.v1 into services; and the Go stubs of the
# public API into bench/loadgen/pb (the Go plugins of buf.gen.yaml).
proto: venv
	@scripts/gen-protos.sh
	@scripts/gen-go-protos.sh bench/loadgen/pb

# Every language of buf.gen.yaml: Python into services/ (the same bytes as
# `make proto`), Go into bench/loadgen/pb, Java, Kotlin and TypeScript into gen/ (not committed).
proto-gen: venv
	@deploy/local/tools.sh buf protoc-gen-go protoc-gen-go-grpc
	@deploy/local/codegen-tools.sh
	buf generate

# Fails when the checked-in generated code (Python and Go) is older than protos/.
proto-check: venv
	$(PYTEST) -q tests/unit/test_protos_fresh.py

# buf lint, and buf breaking against the released contract (protos-released/,
# committed: CI clones main without tags).
lint-proto: venv
	@deploy/local/tools.sh buf
	buf lint
	buf breaking --against protos-released

# Cuts a release of the protos: the current protos become the contract that
# `buf breaking` holds later changes to. Only for a deliberate release.
proto-release:
	@deploy/local/tools.sh buf
	buf build
	rm -rf protos-released/protos protos-released/buf.yaml
	cp -r buf.yaml protos protos-released/
	@echo "protos-released/ now holds this contract: update the version in protos-released/README.md and commit"

# Runs every linter, then fails if any did (one run shows all problems).
lint: venv
	@deploy/local/tools.sh buf
	@rc=0; \
	echo "==> ruff check"; $(VENV)/bin/ruff check . || rc=1; \
	echo "==> ruff format --check"; $(VENV)/bin/ruff format --check . || rc=1; \
	echo "==> mypy (strict)"; $(VENV)/bin/mypy || rc=1; \
	echo "==> buf lint"; buf lint && echo "buf lint: no problems" || rc=1; \
	echo "==> gofmt, go vet (bench/loadgen)"; \
	unformatted="$$(gofmt -l bench/loadgen)"; [ -z "$$unformatted" ] || { echo "gofmt: $$unformatted"; rc=1; }; \
	(cd bench/loadgen && GOFLAGS=-buildvcs=false go vet ./...) && echo "go vet: no problems" || rc=1; \
	echo "==> buf breaking (against protos-released/)"; \
	  buf breaking --against protos-released && echo "buf breaking: compatible" || rc=1; \
	if [ -n "$$(find deploy -name Chart.yaml 2>/dev/null)" ]; then \
	  deploy/local/tools.sh helm; \
	  for chart in $$(find deploy -name Chart.yaml -exec dirname {} \;); do \
	    echo "==> helm lint $$chart"; helm lint "$$chart" || rc=1; done; \
	fi; \
	if [ $$rc -ne 0 ]; then echo "lint: FAILED (see above)" >&2; fi; \
	exit $$rc

infra-up:
	@deploy/local/infra.sh up

infra-down:
	@deploy/local/infra.sh down

infra-status:
	@deploy/local/infra.sh status

# The Cassandra ring of the cluster topology (deploy/local/cassandra-ring.sh: three
# nodes on 127.0.0.1-3, CQL port 9044, DC dc1), beside infra-up's single node.
ring-up:
	@deploy/local/cassandra-ring.sh up

ring-down:
	@deploy/local/cassandra-ring.sh down

ring-status:
	@deploy/local/cassandra-ring.sh status

# TOPOLOGY=single (default): one gateway, router and history, two presence replicas,
# Redis and the single Cassandra node. TOPOLOGY=cluster: two of each service behind
# nginx on the same public ports, history on the Cassandra ring (RF 3, LOCAL_QUORUM).
# Redis comes from PARLEY_REDIS_URL either way (a redis+cluster:// URL for Redis Cluster).
TOPOLOGY ?= single
RING_HOSTS := 127.0.0.1,127.0.0.2,127.0.0.3
RING_PORT ?= 9044
# Redis Cluster of deploy/local/redis-cluster.sh (3 masters on 7101-7103, replicas on 7104-7106; 7004 is the ring's storage port):
# a redis+cluster:// URL turns on the cluster client and WAIT for one replica before each ack.
REDIS_CLUSTER_URL ?= redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
CLUSTER_ENV := PARLEY_CASSANDRA_HOSTS=$(RING_HOSTS) PARLEY_CASSANDRA_PORT=$(RING_PORT) \
	PARLEY_CASSANDRA_LOCAL_DC=dc1 PARLEY_DEVSTACK_TOPOLOGY=cluster PARLEY_REDIS_URL=$(REDIS_CLUSTER_URL)

# Starts Redis, Cassandra and the four services; Ctrl-C stops everything.
# grpcurl is what its banner suggests trying.
run: venv infra-up web
	@deploy/local/tools.sh grpcurl
ifeq ($(TOPOLOGY),cluster)
	@deploy/local/tools.sh nginx
	@deploy/local/redis-cluster.sh up
	@deploy/local/cassandra-ring.sh up
	$(CLUSTER_ENV) $(PY) -m tools.localstack
else ifeq ($(TOPOLOGY),single)
	$(PY) -m tools.localstack
else
	@echo "error: TOPOLOGY must be single or cluster, got '$(TOPOLOGY)'" >&2; exit 2
endif

# Unit, integration and end-to-end tests against the real local
# infrastructure. pytest exits 5 when it ran no test: that is a failure too.
# The cluster suite has its own target (test-cluster): it needs the Cassandra ring.
test: venv test-tools infra-up test-loadgen kotlin typescript
	@$(PYTEST) --ignore=tests/cluster $(PYTEST_ARGS) || { rc=$$?; [ $$rc -ne 5 ] || echo "error: pytest collected no tests" >&2; exit $$rc; }

# The load generator's own unit tests (accounting, schedule, workload, histogram encoding).
test-loadgen:
	cd bench/loadgen && GOFLAGS=-buildvcs=false go test -count=1 ./...

# The Kotlin/JVM SDK (clients/kotlin): compiled and packaged with Maven on Java 17 (both
# installed from Debian when missing; its dependencies come from Maven Central into ~/.m2).
# Its JUnit tests run against a stack of their own in tests/e2e/test_kotlin_sdk.py (make test).
kotlin:
	@clients/kotlin/build.sh

kotlin-test: venv infra-up kotlin
	$(PYTEST) tests/e2e/test_kotlin_sdk.py $(PYTEST_ARGS)

# The cluster topology's suite (tests/cluster, marked `cluster`): starts the Cassandra
# ring once (left running, like infra-up's node), then one stack of two gateways,
# routers, history writers and presence replicas behind nginx for the whole session.
test-cluster: venv test-tools infra-up
	@deploy/local/cassandra-ring.sh up
	$(PYTEST) -m cluster tests/cluster $(PYTEST_ARGS)

test-unit: venv
	@deploy/local/tools.sh prometheus
	$(PYTEST) tests/unit $(PYTEST_ARGS)

test-integration: venv infra-up
	$(PYTEST) tests/integration $(PYTEST_ARGS)

test-e2e: venv test-tools infra-up typescript
	$(PYTEST) tests/e2e $(PYTEST_ARGS)

# The load generator (bench/loadgen, Go; modules from the Go module proxy). The runner builds it
# too when it is missing or older than its sources.
loadgen:
	cd bench/loadgen && GOFLAGS=-buildvcs=false go build -trimpath -o $(CURDIR)/$(LOADGEN) .

# The gateway's memory per open session stream (bench/streammem.py): router, presence and
# gateway as processes on the shared Redis, STREAMS streams with one message each; RSS per
# stream, and with TRACEMALLOC=1 the Python-side bytes per stream by allocation site and type.
STREAMS ?= 3000
streammem: venv infra-up
	$(PY) -m bench.streammem --streams $(STREAMS) $(if $(TRACEMALLOC),--tracemalloc) $(if $(YOUNG_AFTER),--young-after $(YOUNG_AFTER))

SCENARIO ?= smoke
bench: venv infra-up loadgen
	$(PY) -m bench $(SCENARIO) $(BENCH_ARGS)

# The fault suite (tests/chaos/README.md): its own Redis (6390) and Cassandra
# (9142/7100), the services under devstack, a nemesis killing them under a
# steady workload, and a checker; fails when any count is not zero. infra-up
# installs what it needs (redis-server, Java, the Cassandra jars it reuses).
SEED ?=
CHAOS_ARGS ?=
chaos: venv infra-up
	$(PY) -m tests.chaos --profile full $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

chaos-short: venv infra-up
	$(PY) -m tests.chaos --profile short $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

# The same suite on the cluster topology: its own Redis Cluster (7301-7306, WAIT for a
# replica), the Cassandra ring of ring-up (left as it was found), two of each service
# behind nginx; kills a Redis master, a ring node and a gateway at one moment.
chaos-cluster: venv infra-up
	@deploy/local/tools.sh nginx
	$(PY) -m tests.chaos --topology cluster $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
