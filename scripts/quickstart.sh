#!/usr/bin/env bash
# Builds Grove, generates a week of sample events (1M rows), ingests them into
# ./grove-data, starts a coordinator, a broker and a historical in one process on
# them, and opens the SQL shell. Needs a Rust toolchain; installs protoc from
# Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grove-target}"

cargo build --release --bin grove
exec "$CARGO_TARGET_DIR/release/grove" quickstart --data-dir "${GROVE_DATA_DIR:-grove-data}" "$@"
