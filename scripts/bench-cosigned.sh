#!/usr/bin/env bash
# Submission → cosigned checkpoint (design §8: p99 ≤ 1.5 s). Starts a release log server
# and two release witnesses on loopback, writes a client policy that requires both
# cosignatures, and runs `reprolog bench cosigned`, which submits one narinfo at a time and
# waits for a checkpoint covering it that satisfies the policy. With LOAD=1 a
# `reprolog bench ingest` of LOAD_COUNT entries runs alongside. Needs nix-bin.
#   COUNT=200 scripts/bench-cosigned.sh;  LOAD=1 COUNT=100 scripts/bench-cosigned.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-200} PORT=${PORT:-18500} LOAD_COUNT=${LOAD_COUNT:-1000000}
cargo build --release -q -p reprolog-server -p reprolog-witness -p reprolog-cli
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
nix="nix --extra-experimental-features nix-command"
$nix key generate-secret --key-name bench-builder > "$dir/bench.sec"
mkdir -p "$dir/log"
$nix key convert-secret-to-public < "$dir/bench.sec" > "$dir/log/builders"
url="http://127.0.0.1:$PORT"
up() { for _ in $(seq 1 200); do curl -sf "$1" > /dev/null && return; sleep 0.05; done; exit 1; }

# The log's key comes first, so that the witnesses can be told about it.
target/release/reprolog-server serve --data "$dir/log" --listen "127.0.0.1:$PORT" > /dev/null 2>&1 &
first=$!
up "$url/checkpoint"
kill "$first"; wait "$first" 2>/dev/null || true
log_vkey=$(cat "$dir/log/log.vkey")
printf 'log %s\n' "$log_vkey" > "$dir/client-policy"
: > "$dir/log-policy"
for i in 0 1; do
  w="$dir/w$i"; wport=$((PORT + 1 + i))
  mkdir -p "$w"; printf 'log %s\n' "$log_vkey" > "$w/policy"
  target/release/reprolog-witness serve --data "$w" --listen "127.0.0.1:$wport" \
    --name "example.com/w$i" > "$w/out" 2> "$w/err" &
  pids+=($!)
  for _ in $(seq 1 100); do [ -s "$w/witness.vkey" ] && break; sleep 0.05; done
  wkey=$(cat "$w/witness.vkey")
  printf 'witness w%s %s http://127.0.0.1:%s\n' "$i" "$wkey" "$wport" >> "$dir/log-policy"
  printf 'witness w%s %s\n' "$i" "$wkey" >> "$dir/client-policy"
done
printf 'group both all w0 w1\nquorum both\n' >> "$dir/client-policy"
target/release/reprolog-server serve --data "$dir/log" --listen "127.0.0.1:$PORT" \
  --policy "$dir/log-policy" > "$dir/log.out" 2> "$dir/log.err" &
pids+=($!)
up "$url/checkpoint"

if [ "${LOAD:-}" = 1 ]; then
  target/release/reprolog bench ingest --log "$url" --key-file "$dir/bench.sec" \
    --count "$LOAD_COUNT" > "$dir/load.out" 2>&1 &
  pids+=($!)
  # Wait until the load is flowing (it measures the ceiling and pre-signs first).
  until curl -s "$url/metrics" | awk '$1 == "reprolog_tree_size" && $2 > 10000 {ok=1} END {exit !ok}'; do
    sleep 0.5
  done
  echo "under load: reprolog bench ingest of $LOAD_COUNT entries running alongside"
fi
target/release/reprolog bench cosigned --log "$url" --key-file "$dir/bench.sec" \
  --policy "$dir/client-policy" --count "$COUNT"
if [ "${LOAD:-}" = 1 ]; then
  echo "load still running at the end: $(curl -s "$url/metrics" | awk '$1 == "reprolog_tree_size" {print $2}') entries logged"
fi
