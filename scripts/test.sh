#!/usr/bin/env bash
# Runs every test: formatting, vet, unit tests (with the race detector),
# fuzz seed corpora, every fuzz target for FUZZTIME (4s) each
# (scripts/fuzz.sh), and the end-to-end tests in network namespaces.
#
# Tests that need root or an outside tool skip loudly when it is missing.
# With KVPN_STRICT=1 (set automatically when CI is set) such a test fails
# instead, and any "--- SKIP" in the output fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
if [ -n "${CI:-}" ] && [ -z "${KVPN_STRICT:-}" ]; then
  export KVPN_STRICT=1
fi

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then
  echo "gofmt needed on:"; echo "$bad"; exit 1
fi

echo "== go vet"
go vet ./...

log=$(mktemp)
trap 'rm -f "$log"' EXIT

units=$(go list ./... | grep -v -e '^kvpn/e2e$' -e '^kvpn/e2e/ktlsvm$')
# Unit tests run with -v into the log, so that the KVPN_STRICT check below
# sees their skips too; the terminal gets the package lines, and the
# output around every failure when one fails.
run_units() {
  local out st=0
  out=$(mktemp)
  go test -count=1 -v "$@" $units >"$out" 2>&1 || st=$?
  cat "$out" >>"$log"
  grep -E '^(ok|FAIL|--- FAIL|--- SKIP|panic:)' "$out" || true
  if [ "$st" -ne 0 ]; then
    echo "unit tests failed; output around the failures:"
    grep -E -B3 -A40 '^(--- FAIL|FAIL|panic:|WARNING: DATA RACE)' "$out" | head -600
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
}
echo "== unit tests (allocation counts asserted here)"
run_units
echo "== unit tests again under the race detector"
run_units -race

# Every fuzz target, found by scripts/fuzz.sh itself, briefly: new inputs
# beyond the seed corpora that the unit tests already ran.
./scripts/fuzz.sh

echo "== end-to-end tests"
go test -count=1 -v -timeout 20m ./e2e/ 2>&1 | tee -a "$log" | grep -E '^(=== RUN|--- |    --- |PASS|FAIL|ok )|Gbit|SKIP' || true
if ! grep -q '^ok' <(tail -n 5 "$log"); then
  echo "end-to-end tests failed; full output:"; cat "$log"; exit 1
fi

echo "== kernel TLS in a VM (Debian's kernel under QEMU; slow: software emulation), the e2e subset included"
go test -count=1 -v -timeout 45m ./e2e/ktlsvm/ 2>&1 | tee -a "$log" | grep -E '^(=== RUN|--- |    --- |PASS|FAIL|ok )|took|tls_stat|over kernel TLS in|SKIP' || true
if ! grep -q '^ok' <(tail -n 5 "$log"); then
  echo "kernel TLS VM tests failed; full output:"; cat "$log"; exit 1
fi

if [ "${KVPN_STRICT:-}" = 1 ] && grep -q -- '--- SKIP' "$log"; then
  echo "FAIL: tests were skipped under KVPN_STRICT=1:"
  grep -A2 -- '--- SKIP' "$log"
  exit 1
fi
pass=$(grep -c -- '--- PASS' "$log" || true)
echo "all tests passed ($pass named tests and subtests reported PASS, unit tests twice)"
