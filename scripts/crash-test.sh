#!/usr/bin/env bash
# The long crash test: SIGKILLs the log server while submissions stream in, CYCLES times
# (default 200), checking after each restart that nothing acknowledged was lost and that
# every checkpoint seen is extended by the next. CI runs the same test with 20 cycles.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-features
REPROLOG_CRASH_CYCLES="${1:-200}" cargo test -p reprolog-tests --test log_server \
  crash_while_ingesting_loses_nothing_acknowledged -- --nocapture
