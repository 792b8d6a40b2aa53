#!/usr/bin/env bash
# Explorer benchmarks: how fast it follows a log against the same run's strict-verification
# ceiling (it verifies every entry), what each API query costs at that size, a 10,000-path
# report, and disk per claim. Starts a release log server, ingests COUNT entries with
# `reprolog bench ingest` (which prints the ceiling), then times `reprolog-explorer` from an
# empty index to the log's size, over SQLite, or over PostgreSQL with PG_URL set.
#   COUNT=1000000 scripts/bench-explorer.sh
# PERF=FILE records a profile of the explorer with perf (its CPU figure is then perf's).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-200000} PORT=${PORT:-18410} EPORT=${EPORT:-18413} QUERIES=${QUERIES:-200}
cargo build --release -q -p reprolog-server -p reprolog-cli -p reprolog-explorer
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
nix="nix --extra-experimental-features nix-command"
$nix key generate-secret --key-name bench-builder > "$dir/bench.sec"
mkdir -p "$dir/data"
$nix key convert-secret-to-public < "$dir/bench.sec" > "$dir/data/builders"
target/release/reprolog-server serve --data "$dir/data" --listen "127.0.0.1:$PORT" \
  > "$dir/server.out" 2> "$dir/server.err" &
pids+=($!)
url="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do curl -sf "$url/checkpoint" > /dev/null && break; sleep 0.2; done
target/release/reprolog bench ingest --log "$url" --key-file "$dir/bench.sec" --count "$COUNT" \
  | tee "$dir/ingest.out" | grep -E "thread|throughput"
size=$(( COUNT + 1 ))
until [ "$(curl -s "$url/checkpoint" | sed -n 2p)" = "$size" ]; do sleep 0.2; done
ceiling=$(awk '/2 threads:/ {print $3}' "$dir/ingest.out")
printf 'log %s %s\nquorum none\n' "$(cat "$dir/data/log.vkey")" "$url" > "$dir/policy"

db=${PG_URL:-sqlite://$dir/explorer.db}
start=$(date +%s.%N)
${PERF:+perf record -F 499 --call-graph dwarf,16384 -o "$PERF" --} \
  target/release/reprolog-explorer serve --policy "$dir/policy" --db "$db" \
  --listen "127.0.0.1:$EPORT" --interval-ms 50 > "$dir/explorer.out" 2> "$dir/explorer.err" &
epid=$!
pids+=($epid)
api="http://127.0.0.1:$EPORT/api/v1"
for _ in $(seq 1 100); do curl -sf "$api/status" > /dev/null && break; sleep 0.1; done
cpu0=$(awk '{print $14 + $15}' "/proc/$epid/stat")
until curl -s "$api/status" | grep -q "\"verified_size\":$size"; do sleep 0.05; done
end=$(date +%s.%N)
cpu1=$(awk '{print $14 + $15}' "/proc/$epid/stat")
awk -v n="$COUNT" -v s="$start" -v e="$end" -v c="$ceiling" -v t="$(( cpu1 - cpu0 ))" -v hz="$(getconf CLK_TCK)" 'BEGIN {
  r = n / (e - s);
  printf "follow: %d entries in %.2f s = %.0f entries/s, %.0f%% of the 2-thread strict-verify ceiling (%s/s); explorer CPU %.0f µs/entry\n", n, e - s, r, 100 * r / c, c, 1e6 * t / hz / n }'

# Query latencies, each endpoint QUERIES times, sequentially.
{ curl -s "$api/export" || true; } | head -n "$QUERIES" | sed -n 's/.*"store_path":"\([^"]*\)".*/\1/p' > "$dir/paths"
latency() { # name, then one URL per line on stdin
  while read -r u; do curl -s -o /dev/null -w '%{time_total}\n' "$u"; done | sort -n \
    | awk -v name="$1" '{ t[NR] = $1 } END {
        p50 = int(NR * 0.5) + 1; p99 = int(NR * 0.99) + 1; if (p99 > NR) p99 = NR
        printf "%-14s p50 %.1f ms, p99 %.1f ms (%d queries)\n", name, 1000 * t[p50], 1000 * t[p99], NR }'
}
sed "s|.*/\(.\{32\}\).*|$api/paths/\1|" "$dir/paths" | latency paths
sed "s|.*/.\{33\}\(.*\)|$api/search?q=\1|" "$dir/paths" | latency search
for endpoint in builders agreement disagreements "timeseries?bucket=hour" status; do
  for _ in $(seq 20); do echo "$api/$endpoint"; done | latency "${endpoint%%\?*}"
done
# A report over 10,000 paths of the log.
{ curl -s "$api/export" || true; } | head -n 10000 | sed -n 's/.*"store_path":"\([^"]*\)".*/\1/p' > "$dir/report"
curl -s -o /dev/null -w "report of $(wc -l < "$dir/report") paths: %{time_total} s\n" \
  --data-binary @"$dir/report" "$api/report"
if [ -z "${PG_URL:-}" ]; then
  bytes=$(du -cb "$dir"/explorer.db* | tail -1 | cut -f1)
  echo "disk: $bytes bytes = $(( bytes / COUNT )) bytes/claim (SQLite, with WAL)"
fi
