# orderd: the flash-sale order processor.
#
#   make run     start PostgreSQL and Redis if needed (scripts/deps.sh), then
#                run `orderd serve --dev` with an embedded NATS server on
#                127.0.0.1:8080
#   make test    start PostgreSQL and Redis if needed, then run every test,
#                then make chaos-ci (the fault schedule, about 3 minutes)
#
# `make help` lists the other targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO ?= go

# The Go toolchain every target builds with: 1.26.10 fixes vulnerabilities
# of the 1.26.8 standard library that govulncheck reports. The go command
# fetches it once through the module proxy (about 76 MB) and caches it. An
# exported GOTOOLCHAIN wins over `go env` (GOTOOLCHAIN=local on these
# machines). go.mod's go line asks for the same release, so that a plain
# `go build` with an older local Go fails instead of building with it; raise
# it, this line and deploy/Dockerfile's golang image together.
export GOTOOLCHAIN := go1.26.10

# A development secret, used only when JWT_SECRET is not set in the
# environment. Never use it anywhere else.
JWT_SECRET ?= dev-only-secret-change-me-0123456789abcdef
export JWT_SECRET
# The same for the payment webhook's signatures (make run, make pay).
PAYMENT_WEBHOOK_SECRET ?= dev-only-webhook-secret-change-me
export PAYMENT_WEBHOOK_SECRET

# Tool versions known to work with Go 1.26.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK := golang.org/x/vuln/cmd/govulncheck@v1.9.0
# govulncheck's database. The public one (vuln.go.dev) cannot be reached from
# every machine, so lint builds a local copy from the golang.org/x/vulndb
# module, which the Go module proxy serves: it is as fresh as this version.
# Bump it to refresh; set GOVULNDB=https://vuln.go.dev to use the live one.
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
VULNDB_DIR := data/vulndb
GOVULNDB ?= file://$(CURDIR)/$(VULNDB_DIR)

# make token SUB=alice ADMIN=1 TTL=1h
SUB ?= u1
ADMIN ?=
TTL ?= 24h

# make fuzz FUZZTIME=30s
FUZZTIME ?= 10s

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

.PHONY: deps
deps: ## install (as root) and start PostgreSQL and Redis where they are not running
	bash scripts/deps.sh

.PHONY: run
# make run listens on the loopback interface only, in development mode
# (--dev), which alone accepts the development secrets above.
run: deps ## run orderd serve (ingress + workers + embedded NATS) on 127.0.0.1:8080 in development mode (dev secrets)
	@echo "orderd: JWT_SECRET=$(JWT_SECRET) (development only)"
	@echo "orderd: mint a token in another shell:  make token SUB=u1   (admin: make token SUB=admin ADMIN=1)"
	@echo "orderd: then:  curl -H \"Authorization: Bearer \$$TOKEN\" localhost:8080/v1/skus    (Ctrl-C stops it gracefully)"
	HTTP_ADDR=127.0.0.1:8080 $(GO) run ./cmd/orderd serve --dev

.PHONY: test
test: deps ## run every test, with the race detector, against the local PostgreSQL and Redis; then make chaos-ci
	$(GO) test -race -count=1 -timeout 15m ./...
	@# After the Go tests, never beside them: chaos restarts the shared
	@# PostgreSQL and Redis.
	$(MAKE) --no-print-directory chaos-ci

.PHONY: lint
lint: $(VULNDB_DIR)/.version ## gofmt, go vet, staticcheck, govulncheck
	@unformatted=$$(gofmt -l $$($(GO) list -f '{{.Dir}}' ./...)); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(GOVULNCHECK) -db $(GOVULNDB) ./...

# The local vulnerability database, rebuilt when VULNDB_VERSION changes.
$(VULNDB_DIR)/.version: Makefile
	@echo "lint: building the vulnerability database $(VULNDB_VERSION) in $(VULNDB_DIR)"
	rm -rf $(VULNDB_DIR)
	src=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	$(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) -vulns "$$src/data/osv" -out $(VULNDB_DIR)
	echo $(VULNDB_VERSION) > $@

.PHONY: migrate
migrate: deps ## apply the database migrations (orderd migrate up)
	$(GO) run ./cmd/orderd migrate up

.PHONY: build
build: ## build bin/orderd (and bin/flashbench)
	$(GO) build -trimpath -o bin/orderd ./cmd/orderd
	@if [ -d cmd/flashbench ]; then echo "$(GO) build -trimpath -o bin/flashbench ./cmd/flashbench"; $(GO) build -trimpath -o bin/flashbench ./cmd/flashbench; fi

.PHONY: token
token: ## print a JWT signed with JWT_SECRET: make token SUB=u1 [ADMIN=1] [TTL=24h]
	@$(GO) run ./cmd/orderd token --sub "$(SUB)" --ttl "$(TTL)" $(if $(ADMIN),--admin)

# make pay ORDER=<order id> [URL=http://127.0.0.1:8080] [AMOUNT=... CURRENCY=...] [REF=...]
.PHONY: pay
pay: ## pay an order through the signed payment webhook: make pay ORDER=<id> (amount from DATABASE_URL)
	@$(GO) run ./cmd/orderd pay --order "$(ORDER)" $(if $(URL),--url "$(URL)") $(if $(AMOUNT),--amount "$(AMOUNT)") $(if $(CURRENCY),--currency "$(CURRENCY)") $(if $(REF),--provider-ref "$(REF)")

.PHONY: fuzz
fuzz: deps ## run every Fuzz* test for FUZZTIME (default 10s) each
	@found=0; \
	for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' "$$pkg"); \
	  for fn in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]*' "$$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do \
	    found=$$((found+1)); \
	    echo "fuzz: $$pkg $$fn ($(FUZZTIME))"; \
	    $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) "$$pkg"; \
	  done; \
	done; \
	echo "fuzz: $$found fuzz tests run"

# make bench [S=5000 N=20000 C=256 RUNS=3 SCENARIO=hot-sku]: the flash-sale benchmark (see
# scripts/bench.sh; about 75 s a run on a 2-core machine); results and
# medians in BENCH_DIR.
S ?= 5000
N ?= 20000
C ?= 256
RUNS ?= 3
SCENARIO ?= hot-sku
BENCH_DIR ?= /tmp/orderd-bench
PEER_DIR ?= $(CURDIR)/../shared/peers/django-seed

.PHONY: bench
bench: deps ## hot-sku (or SCENARIO=cart-mix|sold-out) against orderd serve (durable defaults) RUNS times on fresh state, medians: make bench S=5000 N=20000 C=256
	S=$(S) N=$(N) C=$(C) RUNS=$(RUNS) SCENARIO=$(SCENARIO) BENCH_DIR=$(BENCH_DIR) bash scripts/bench.sh

.PHONY: bench-limits
bench-limits: deps ## the ceilings: bare HTTP, orderd accept path, JetStream durable writes, PostgreSQL batched transaction
	S=$(S) N=$(N) C=$(C) BENCH_DIR=$(BENCH_DIR) bash scripts/bench-limits.sh

# make bench-durability [RUNS=3]: JetStream durable command writes per second
# for one server and a three-node cluster (R3), sync_interval always and the
# lazy default, one command per message and group-committed; medians of RUNS
# (docs/durability.md; under a minute on a 2-core machine).
.PHONY: bench-durability
bench-durability: ## JetStream command writes/s: R1 and R3, sync_interval always and lazy (medians of RUNS)
	@mkdir -p $(BENCH_DIR)
	$(GO) build -trimpath -o bin/benchlimits ./cmd/benchlimits
	@echo "bench-durability: $$(nproc) cores; $$(uptime)" >&2
	bin/benchlimits durability --runs $(RUNS) --json $(BENCH_DIR)/durability.json
	@echo "bench-durability: $$(uptime)" >&2

.PHONY: bench-peer
bench-peer: ## the django-seed peer (PEER_DIR) with the same S N C; its JSON goes to BENCH_DIR/peer.json
	@mkdir -p $(BENCH_DIR)
	@echo "bench-peer: $$(uptime)" >&2
	line=$$($(PEER_DIR)/run.sh $(S) $(N) $(C) | tail -1); \
	echo "$$line" | jq -c --argjson S $(S) --argjson N $(N) --argjson C $(C) '{S: $$S, N: $$N, C: $$C} + .' > $(BENCH_DIR)/peer.json; \
	cat $(BENCH_DIR)/peer.json

# make chaos / make chaos-ci: flashbench's hot-sku then cart-mix against
# `orderd api`, two `orderd worker` processes and a nats-server, on a fresh
# database, NATS store and Redis prefix, while cmd/chaos kills, stops and
# restarts each of them, PostgreSQL and Redis (as root: it runs
# pg_ctlcluster and restarts Redis through scripts/deps.sh). It prints a
# JSON report and exits non-zero on any loss. Logs: CHAOS_DIR/<run>/.
CHAOS_DIR ?= /tmp/orderd-chaos

.PHONY: chaos-build
chaos-build:
	$(GO) build -trimpath -o bin/orderd ./cmd/orderd
	$(GO) build -trimpath -o bin/flashbench ./cmd/flashbench
	$(GO) build -trimpath -o bin/nats-server github.com/nats-io/nats-server/v2
	$(GO) build -trimpath -o bin/chaos ./cmd/chaos

.PHONY: chaos
chaos: deps chaos-build ## the fault schedule under load: hot-sku S=5000 N=20000 then cart-mix, every fault kind, several worker kills (about 5 min)
	bin/chaos -profile full -hot-stock $(S) -hot-buyers $(N) -out $(CHAOS_DIR)

.PHONY: chaos-ci
chaos-ci: deps chaos-build ## the same, small: every fault kind once (about 3 min; part of make test)
	bin/chaos -profile ci -out $(CHAOS_DIR)

# make overload [CAPACITY=<decided/s from make bench>] [HIGH_S=60 LOW_S=30]:
# see scripts/overload.sh (about 5 minutes here).
CAPACITY ?=
HIGH_S ?= 60
LOW_S ?= 30

.PHONY: overload
overload: deps ## 2x capacity for 60 s, then half for 30 s: shed share and latency, RSS, drain, recovery, verified
	CAPACITY=$(CAPACITY) HIGH_S=$(HIGH_S) LOW_S=$(LOW_S) BENCH_DIR=$(BENCH_DIR) bash scripts/overload.sh

.PHONY: clean
clean: ## remove bin/ and the embedded NATS store (data/)
	rm -rf bin data
