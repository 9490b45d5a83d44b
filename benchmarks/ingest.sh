#!/usr/bin/env bash
# Ingestion throughput: the sample dataset (N rows, default 1M) as CSV, newline-
# delimited JSON and Parquet, each ingested with a release build of grove. Prints
# rows/s per format and per core (ingestion runs on one core).
#
#   benchmarks/ingest.sh [ROWS]
#
# GROVE_BIN=path times that grove binary instead of this tree's (a before/after
# comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grove-target}"
rows="${1:-1000000}"
cargo build --quiet --release --bin grove --bin grove-bench
grove="${GROVE_BIN:-$CARGO_TARGET_DIR/release/grove}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$grove" sample-data --out "$work/sample" --rows "$rows"
# JSON and Parquet copies of the same rows, written by DataFusion from the CSV.
for format in json parquet; do
  "$CARGO_TARGET_DIR/release/grove-bench" convert "$work/sample/events.csv" "$work/sample/events.$format"
done

spec_for() { # format -> spec path
  local format="$1" spec="$work/sample/spec-$1.json"
  case "$format" in
    csv) cp "$work/sample/events-spec.json" "$spec" ;;
    *) sed -e "s/\"events.csv\"/\"events.$format\"/" \
           -e "s/{ \"type\": \"csv\", \"findColumnsFromHeader\": true }/{ \"type\": \"$format\" }/" \
           -e 's/"column": "timestamp", "format": "iso"/"column": "timestamp", "format": "auto"/' \
           "$work/sample/events-spec.json" > "$spec" ;;
  esac
  echo "$spec"
}

printf '%-8s %12s %10s %14s\n' format rows seconds rows/s
for format in csv json parquet; do
  spec="$(spec_for "$format")"
  start=$(date +%s.%N)
  "$grove" ingest "$spec" --data-dir "$work/data-$format" >/dev/null
  end=$(date +%s.%N)
  awk -v f="$format" -v r="$rows" -v s="$start" -v e="$end" \
    'BEGIN { t = e - s; printf "%-8s %12d %10.2f %14.0f\n", f, r, t, r / t }'
done
