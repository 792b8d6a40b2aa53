#!/usr/bin/env bash
# Log server benchmarks: durable ingest over HTTP, memory and disk as the log grows, and
# inclusion proofs served. Starts a release server on a fresh data directory, registers a
# builder key made by Nix, then runs ROUNDS rounds of `reprolog bench ingest` (COUNT entries
# each). After each round it prints the server's RSS and bytes per entry on disk, and at the
# sizes in PROOFS_AT (and at the end) it runs `reprolog bench proofs`, and wrk when installed
# (apt-get install wrk). Needs nix-bin. With SKIP_INGEST=1 and BENCH_DIR, it only serves
# proofs from an existing data directory.
#   COUNT=1000000 ROUNDS=10 PROOFS_AT="1000000" scripts/bench-server.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-200000} ROUNDS=${ROUNDS:-1} BATCH=${BATCH:-256} CONCURRENCY=${CONCURRENCY:-4}
PORT=${PORT:-18400} PROOFS_AT=${PROOFS_AT:-} PROOF_REQUESTS=${PROOF_REQUESTS:-200000}
cargo build --release -q -p reprolog-server -p reprolog-cli
dir=${BENCH_DIR:-$(mktemp -d)}
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -z "${BENCH_DIR:-}" ] && rm -rf "$dir"' EXIT
nix="nix --extra-experimental-features nix-command"
if [ ! -f "$dir/bench.sec" ]; then
  $nix key generate-secret --key-name bench-builder > "$dir/bench.sec"
  mkdir -p "$dir/data"
  $nix key convert-secret-to-public < "$dir/bench.sec" > "$dir/data/builders"
fi
target/release/reprolog-server serve --data "$dir/data" --listen "127.0.0.1:$PORT" --cache-mb "${CACHE_MB:-16}" \
  > "$dir/server.out" 2> "$dir/server.err" &
pid=$!
url="http://127.0.0.1:$PORT"
# A large store takes a while to open.
for _ in $(seq 1 600); do curl -sf "$url/checkpoint" > /dev/null && break; sleep 0.5; done
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
proofs() {
  target/release/reprolog bench proofs --log "$url" --log-key "$(cat "$dir/data/log.vkey")" \
    --requests "$PROOF_REQUESTS" --concurrency "$CONCURRENCY"
  # The same load from wrk, a client that costs the shared cores far less.
  if command -v wrk > /dev/null; then
    SIZE=$(metric reprolog_checkpoint_size) wrk -t2 -c16 -d10s -s scripts/proofs.lua "$url" | grep -E "Requests/sec|Latency"
  fi
}
[ "${SKIP_INGEST:-}" = 1 ] && ROUNDS=0
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS"
  target/release/reprolog bench ingest --log "$url" --key-file "$dir/bench.sec" \
    --count "$COUNT" --batch "$BATCH" --concurrency "$CONCURRENCY"
  sleep 1
  size=$(metric reprolog_tree_size); disk=$(metric reprolog_store_bytes)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "size $size: RSS $rss KiB; disk $disk bytes = $(( disk / size )) bytes/entry"
  for at in $PROOFS_AT; do [ "$size" -eq "$at" ] && proofs; done
done
if [ "$ROUNDS" -gt 0 ]; then
  bundle=$(curl -s "$url/tile/entries/000" | wc -c)
  echo "raw entry ≈ $(( (bundle - 2 * 256) / 256 )) bytes (mean of the first 256)"
  echo "batches: $(metric reprolog_batch_entries_count), mean commit $(awk "BEGIN {print $(metric reprolog_commit_seconds_sum) / $(metric reprolog_commit_seconds_count) * 1000}") ms"
fi
sleep 1
proofs
