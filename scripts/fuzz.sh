#!/usr/bin/env bash
# Runs every fuzz target in the tree for FUZZTIME each (default 4s).
#
# Targets are discovered, not listed: every package with a "func Fuzz" in
# a _test.go file is asked for its targets with `go test -list`, so a
# target someone adds is fuzzed without touching this script. Each target
# runs on its own (go test -fuzz takes exactly one). The run fails if any
# target fails; the input that failed is printed, and is left under the
# package's testdata/fuzz/FuzzXxx/, where plain `go test` replays it.
#
#   scripts/fuzz.sh                  # all targets, 4s each (scripts/test.sh)
#   FUZZTIME=5m scripts/fuzz.sh      # longer, by hand (make fuzz FUZZTIME=5m)
#   scripts/fuzz.sh ./ktlsbridge/    # only these packages
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
fuzztime=${FUZZTIME:-4s}

if [ $# -gt 0 ]; then
  pkgs=("$@")
else
  # Directories with a fuzz target, as ./dir patterns (the e2e suites hold
  # none and are never run here).
  mapfile -t pkgs < <(grep -rlE '^func Fuzz[A-Z0-9_]' --include='*_test.go' . |
    xargs -r -n1 dirname | sort -u | grep -v -e '^./e2e' | sed 's|$|/|')
fi
if [ ${#pkgs[@]} -eq 0 ]; then
  echo "no fuzz targets found"; exit 1
fi

# `go test -list` prints each package's matching names, then "ok  pkg".
# It compiles the packages' tests, which the unit tests have already cached.
targets=()
list=$(go test -list '^Fuzz' "${pkgs[@]}")
names=()
while read -r line; do
  case "$line" in
    Fuzz*) names+=("$line") ;;
    ok*)
      pkg=$(awk '{print $2}' <<<"$line")
      for n in "${names[@]}"; do targets+=("$pkg $n"); done
      names=()
      ;;
  esac
done <<<"$list"
echo "== fuzzing ${#targets[@]} targets for $fuzztime each"

failed=()
start=$SECONDS
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  out=$(mktemp)
  t0=$SECONDS
  ok=0
  for try in 1 2 3; do
    if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$pkg" >"$out" 2>&1; then
      ok=1; break
    fi
    # Go 1.26's fuzz coordinator can report its own -fuzztime deadline as
    # a failure when a worker is mid-call as time runs out (golang/go#75804,
    # fixed in Go 1.27): "context deadline exceeded" and no input written.
    # That says nothing about the target, so it runs again (twice at most);
    # any other failure, or a written input, fails at once.
    if grep -q 'Failing input written' "$out" || ! grep -qx '    context deadline exceeded' "$out"; then
      break
    fi
    echo "     $pkg $name: the fuzz coordinator's deadline race (golang/go#75804), no input written; running again"
  done
  if [ "$ok" = 1 ]; then
    echo "ok   $pkg $name ($((SECONDS - t0))s)"
  else
    echo "FAIL $pkg $name ($((SECONDS - t0))s)"
    cat "$out"
    # go test prints "Failing input written to testdata/fuzz/FuzzXxx/<hash>",
    # relative to the package directory.
    dir=$(go list -f '{{.Dir}}' "$pkg")
    grep -o 'testdata/fuzz/[^ ]*' "$out" | sort -u | while read -r f; do
      echo "failing input: ${dir#"$PWD/"}/$f"
    done
    failed+=("$pkg $name")
  fi
  rm -f "$out"
done
echo "fuzzing took $((SECONDS - start))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: ${#failed[@]} fuzz target(s) failed:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
