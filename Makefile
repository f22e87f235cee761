# kvpn: the two commands a fresh machine needs are `make demo` and
# `make test`, as root (see README.md).
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
FUZZTIME ?= 4s

.PHONY: all build deps test demo fuzz clean

all: build

# CGO_ENABLED=0: vpnd's run-as-user keeps CAP_NET_ADMIN on every thread
# with syscall.AllThreadsSyscall, which cgo binaries lack (docs/security.md).
build:
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/vpnd ./cmd/vpnc ./cmd/kvpnload

deps:
	./scripts/install-deps.sh

test: deps
	./scripts/test.sh

# Every fuzz target in the tree, FUZZTIME each (4s as in `make test`);
# e.g. `make fuzz FUZZTIME=5m`. Failing inputs stay in testdata/fuzz.
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

demo: deps build
	./scripts/demo.sh

# Benchmark in network namespaces (root): kvpn vs raw veth vs ocserv +
# openconnect; prints the tables and rewrites the generated section of
# docs/performance.md. Knobs: BENCH_TIME (s per run, 5), BENCH_REPS (3),
# BENCH_CASES (comma list), BENCH_QUICK=1 (smoke test), BENCH_OUT, BENCH_BIN;
# e.g. `make bench BENCH_QUICK=1` (as root). See bench/cmd/kvpnbench.
.PHONY: bench
bench: deps build
	$(GO) build -o bin/kvpnbench ./bench/cmd/kvpnbench
	./bin/kvpnbench

clean:
	rm -rf bin

# The long soak (opt-in, not part of `make test`): 1000 sessions that keep
# logging in, sending and disconnecting for 10 minutes against one vpnd,
# then the leak and counter checks of e2e TestSoak (as root).
.PHONY: soak
soak: deps
	KVPN_SOAK_SESSIONS=$${KVPN_SOAK_SESSIONS:-1000} KVPN_SOAK_TIME=$${KVPN_SOAK_TIME:-10m} \
		$(GO) test -count=1 -v -timeout 30m -run '^TestSoak$$' ./e2e/
