#!/usr/bin/env bash
# Stability check for the emulator's fidelity tests: build the test binaries once, then run the
# whole set RUNS times (default 20), stopping at the first failure or at a test binary that runs
# longer than PER_RUN_TIMEOUT seconds (default 300; a hang fails the soak instead of blocking it).
# The set includes the official-SDK suites (tests/sdk_python.rs, tests/sdk_js.rs), which need
# BUSWAY_SB_PYTHON and BUSWAY_SB_NODE_MODULES (scripts/test exports them), and the stable fuzz
# smoke run, here at BUSWAY_FUZZ_SECONDS=1 per target unless set.
#
#   crates/busway-sb-emulator/scripts/soak.sh [RUNS]
#
# Honours CARGO_TARGET_DIR like any cargo command.
set -euo pipefail

RUNS="${1:-20}"
PER_RUN_TIMEOUT="${PER_RUN_TIMEOUT:-300}"
export BUSWAY_FUZZ_SECONDS="${BUSWAY_FUZZ_SECONDS:-1}"
for var in BUSWAY_SB_PYTHON BUSWAY_SB_NODE_MODULES; do
    if [ -z "${!var:-}" ]; then
        echo "$var is not set: the official-SDK tests will fail. Run scripts/test, or" >&2
        echo "eval \"\$(scripts/test services)\" first." >&2
        exit 1
    fi
done
soak_start=$(date +%s)
CRATE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$CRATE_DIR"

echo "building test binaries of busway-sb-emulator..."
mapfile -t BINARIES < <(
    cargo test -p busway-sb-emulator --tests --no-run --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*"' \
        | sed 's/"executable":"\(.*\)"/\1/' \
        | grep '/deps/' | grep -v '/busway_sb_emulator-' || true
)
# Unit tests of the library and binary too (the grep above keeps only integration tests).
mapfile -t UNIT < <(
    cargo test -p busway-sb-emulator --lib --no-run --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*"' \
        | sed 's/"executable":"\(.*\)"/\1/' \
        | grep '/deps/' || true
)
BINARIES+=("${UNIT[@]}")
if [ "${#BINARIES[@]}" -eq 0 ]; then
    echo "no test binaries found (does 'cargo test -p busway-sb-emulator --no-run' build?)" >&2
    exit 1
fi
printf '  %s\n' "${BINARIES[@]}"

for run in $(seq 1 "$RUNS"); do
    start=$(date +%s)
    for binary in "${BINARIES[@]}"; do
        log="$(mktemp)"
        status=0
        # The SDK cases mostly wait on the emulator's timers: a few more threads than cores.
        timeout "$PER_RUN_TIMEOUT" "$binary" --quiet --test-threads="${SOAK_TEST_THREADS:-3}" \
            >"$log" 2>&1 || status=$?
        if [ "$status" -ne 0 ]; then
            cat "$log"
            rm -f "$log"
            if [ "$status" -eq 124 ]; then
                echo "run $run: $(basename "$binary") timed out after ${PER_RUN_TIMEOUT}s" >&2
            else
                echo "run $run: $(basename "$binary") failed (exit $status)" >&2
            fi
            exit 1
        fi
        rm -f "$log"
    done
    echo "run $run/$RUNS passed in $(( $(date +%s) - start ))s"
done
echo "all $RUNS runs passed in $(( $(date +%s) - soak_start ))s"
