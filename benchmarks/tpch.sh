#!/usr/bin/env bash
# TPC-H on Grove against DataFusion, in one run: tpchgen data at scale SF (default 1)
# as Parquet, ingested into Grove with Druid specs, then the 22 queries on
# `grove start --historicals 2` (a broker and two historicals exchanging fragments
# over loopback Flight; HTTP SQL, result cache off) and on DataFusion over the same
# Parquet files. Prints best and median per query; writes JSON to WORK/tpch-sfSF.json.
#
#   benchmarks/tpch.sh [SF] [RUNS] [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grove-target}"
scale="${1:-1}"
runs="${2:-3}"
work="${3:-$HOME/.cache/grove-bench}"
cargo build --quiet --release --bin grove --bin grove-bench
"$CARGO_TARGET_DIR/release/grove-bench" tpch --scale "$scale" --runs "$runs" --work "$work"
