#!/usr/bin/env bash
# Builds Grove, generates a week of sample events (1M rows), ingests them into
# ./grove-data and opens the SQL shell on them. Needs only a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grove-target}"

cargo build --release --bin grove
exec "$CARGO_TARGET_DIR/release/grove" quickstart --data-dir "${GROVE_DATA_DIR:-grove-data}" "$@"
