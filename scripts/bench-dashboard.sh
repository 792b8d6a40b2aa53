#!/usr/bin/env bash
# The dashboard's benchmark (docs/benchmarks.md): time to first render of the overview and of a
# path's page, on the server and in a headless Chromium, over an index of CLAIMS synthetic
# claims by 10 builders (made with `reprolog-explorer bench` into INDEX when it is not there
# yet; 10^7 claims take about 15 minutes and 6 GB).
#   INDEX=/var/tmp/explorer-1e7.db CLAIMS=10000000 scripts/bench-dashboard.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLAIMS=${CLAIMS:-10000000} INDEX=${INDEX:-/var/tmp/explorer-$CLAIMS.db} PORT=${PORT:-18420}
cargo build --release -q --workspace --all-features
if [ ! -e "$INDEX" ]; then
  target/release/reprolog-explorer bench --db "sqlite://$INDEX" --claims "$CLAIMS" \
    --builders 10 --queries 10
fi
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
# The explorer needs a policy; a fresh, empty log gives it one.
mkdir -p "$dir/data"
target/release/reprolog-server serve --data "$dir/data" --listen "127.0.0.1:$PORT" \
  > "$dir/server.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$dir/data/log.vkey" ] && break; sleep 0.1; done
printf 'log %s http://127.0.0.1:%s\nquorum none\n' "$(cat "$dir/data/log.vkey")" "$PORT" > "$dir/policy"
target/release/reprolog-explorer serve --policy "$dir/policy" --db "sqlite://$INDEX" \
  --listen "127.0.0.1:$((PORT + 3))" > "$dir/explorer.out" 2>&1 &
pids+=($!)
url="http://127.0.0.1:$((PORT + 3))"
for _ in $(seq 1 100); do curl -sf "$url/api/v1/status" > /dev/null && break; sleep 0.1; done
EXPLORER_URL=$url cargo test --release -q -p reprolog-tests --test dashboard_bench -- \
  --ignored --nocapture 2>&1 | grep -v '^running\|^test \|^$\|test result'
