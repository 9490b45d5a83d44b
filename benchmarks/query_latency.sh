#!/usr/bin/env bash
# Broker overhead for small queries: `grove start` (release build) on the sample
# dataset (N rows, default 1M), then each query sent R times (default 200) over HTTP
# to the broker, which runs it on the historical over Arrow Flight. Prints p50, p90
# and p99 of the client-observed latency per query. A distinct, always-true filter
# per request keeps answers out of the broker's result cache, so every request
# reaches the historical; a second set of runs measures cached answers.
#
#   benchmarks/query_latency.sh [ROWS] [REPEATS]
#
# GROVE=/path/to/grove measures that binary instead of building this tree (to compare
# two builds on the same machine).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grove-target}"
rows="${1:-1000000}"
repeats="${2:-200}"
if [ -z "${GROVE:-}" ]; then
  cargo build --quiet --release --bin grove
fi
grove="${GROVE:-$CARGO_TARGET_DIR/release/grove}"
work="$(mktemp -d)"
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

"$grove" sample-data --out "$work/sample" --rows "$rows" >/dev/null
"$grove" ingest "$work/sample/events-spec.json" --data-dir "$work/data" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$grove" start --data-dir "$work/data" --http-addr "127.0.0.1:$port" --pg-addr 127.0.0.1:0 --flight-addr 127.0.0.1:0 2>"$work/start.log" &
server=$!
url="http://127.0.0.1:$port/druid/v2/sql"
for _ in $(seq 100); do
  n=$(curl -s "$url" -d '{"query":"SELECT COUNT(*) AS n FROM sys.segments WHERE is_available = 1"}' | tr -dc 0-9)
  [ "$n" = 7 ] && break
  sleep 0.1
done

measure() { # label, query template with {i}
  local label="$1" template="$2" times=()
  for i in $(seq "$repeats"); do
    local query="${template//\{i\}/$i}"
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "$url" -d "{\"query\":\"$query\"}")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v label="$label" '
    { t[NR] = $1 * 1000 }
    END { printf "%-48s p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  (n=%d)\n", label,
          t[int(NR*0.5)+1], t[int(NR*0.9)+1], t[int(NR*0.99)+1], NR }'
}

hour="__time >= TIMESTAMP '2024-06-05T10:00:00' AND __time < TIMESTAMP '2024-06-05T11:00:00'"
measure "COUNT(*) in one hour, uncached" \
  "SELECT COUNT(*) AS n FROM events WHERE $hour AND country <> 'none-{i}'"
measure "COUNT(*) in one hour, cached" \
  "SELECT COUNT(*) AS n FROM events WHERE $hour AND country <> 'none'"
measure "top 5 countries over all rows, uncached" \
  "SELECT country, COUNT(*) AS n FROM events WHERE country <> 'none-{i}' GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
measure "top 5 countries over all rows, cached" \
  "SELECT country, COUNT(*) AS n FROM events WHERE country <> 'none' GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
