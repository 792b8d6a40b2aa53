#!/usr/bin/env bash
# Witness throughput: a fresh release witness for LOGS logs, driven by `reprolog bench witness`
# (each log advancing one entry per add-checkpoint, the logs in parallel).
#   LOGS=8 REQUESTS=20000 scripts/bench-witness.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=${LOGS:-8} REQUESTS=${REQUESTS:-20000} PORT=${PORT:-18401}
cargo build --release -q -p reprolog-witness -p reprolog-cli
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
target/release/reprolog bench witness-policy --logs "$LOGS" > "$dir/policy"
target/release/reprolog-witness serve --data "$dir" --listen "127.0.0.1:$PORT" > "$dir/out" 2> "$dir/err" &
pid=$!
sleep 1
target/release/reprolog bench witness --witness "http://127.0.0.1:$PORT" --logs "$LOGS" --requests "$REQUESTS"
