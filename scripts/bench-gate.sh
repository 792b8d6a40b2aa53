#!/usr/bin/env bash
# The gate's benchmark (docs/benchmarks.md): a release log with PATHS synthetic paths signed
# by two builders, a release gate with quorum 2 over a file:// and an http:// upstream, and
# in the same run the references: the upstream's files over plain HTTP, the gate's HTTP floor
# (/nix-cache-info), and the 1 GiB NAR read directly. Prints cold and warm narinfo latency,
# warm narinfo answers per second, NAR throughput and the gate's RSS and CPU while streaming.
#   PATHS=2000 SECONDS=5 THREADS=4 RUNS=3 scripts/bench-gate.sh
# Needs curl, and about 2 GiB free in $TMPDIR (the 1 GiB NAR and the log).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --workspace --all-features
cargo test --release -q -p reprolog-tests --test gate_bench -- --ignored --nocapture 2>&1 |
  grep -v '^running\|^test \|^$\|test result'
