#!/usr/bin/env bash
# The benchmark suite in one run: TPC-H (tpchgen data at scale SF as Parquet, the 22
# queries in their standard text) and Druid's benchmark queries on lineitem, on Grove
# (`grove start --historicals 2`, over Flight SQL), DataFusion over the Parquet files,
# DuckDB and ClickHouse (chDB) over the Parquet files and on their own tables. Every
# answer is checked against DataFusion's. Writes benchmarks/results/DATE-sfSF/
# (results.json, results.md, chart.png). Data and tables are kept in WORK
# ($GROVE_BENCH_WORK, default ~/.cache/grove-bench) and made once per scale.
#
#   benchmarks/run.sh [SF] [RUNS]      # or: make bench SF=1
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grove-target}"
scale="${1:-1}"
runs="${2:-3}"
work="${GROVE_BENCH_WORK:-$HOME/.cache/grove-bench}"
venv="${GROVE_BENCH_VENV:-$HOME/.cache/grove-bench-venv}"
requirements=benchmarks/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
  echo "Installing DuckDB, chDB and matplotlib into $venv ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
cargo build --quiet --release --bin grove --bin grove-bench
"$CARGO_TARGET_DIR/release/grove-bench" suite --scale "$scale" --runs "$runs" \
  --work "$work" --python "$venv/bin/python"
