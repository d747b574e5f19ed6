#!/usr/bin/env bash
# Crash soak: ROUNDS (100) SIGKILL cycles of a release build under 8 concurrent writers of small
# and large records; after each restart every acknowledged write must be there, byte for byte.
# Prints the acknowledged writes and the restart times (start to listening).
# Usage: bash benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TABLECAST_SOAK_ROUNDS=${ROUNDS:-100} cargo test --release --quiet --test integration \
  acknowledged_writes_survive_sigkill -- --nocapture 2>&1 | grep -E "^soak:|test result|panicked"
