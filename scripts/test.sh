#!/usr/bin/env bash
# Runs every check reprolog has: formatting, clippy and all tests, after installing what the
# tests need (Debian's nix-bin, used as the real Nix client; Debian's postgresql, a real
# PostgreSQL server for the explorer; Debian's chromium and chromium-driver, a real headless
# browser for the explorer's dashboard; Debian's nginx, a caching proxy in front of the log;
# Python's securesystemslib, an independent DSSE implementation). Run as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix >/dev/null 2>&1; then
  echo "== installing nix-bin (real Nix for the end-to-end tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin >/dev/null
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing postgresql (a real PostgreSQL server for the explorer's tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver (a real headless browser for the dashboard's tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if ! [ -x /usr/sbin/nginx ]; then
  echo "== installing nginx (a standard caching HTTP proxy in front of the log, for the tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi

if ! python3 -c "import securesystemslib.dsse, cryptography" >/dev/null 2>&1; then
  echo "== installing securesystemslib (an independent DSSE implementation for the tests)"
  python3 -m pip install --quiet "securesystemslib[crypto]"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo build (the end-to-end tests run the real binaries)"
cargo build --workspace --all-features
echo "== cargo test"
cargo test --workspace --all-features --no-fail-fast
echo "== fuzz targets, a few seconds each (scripts/fuzz.sh; the long runs are in docs/robustness.md)"
# libFuzzer needs a nightly toolchain; this machine kind has one.
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || true
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  SECONDS_EACH=${FUZZ_SECONDS:-5} scripts/fuzz.sh
else
  echo "!! no nightly toolchain, and none could be installed: the fuzz targets did not run" >&2
fi
