#!/usr/bin/env bash
# Build-attestation benchmarks: the post-build hook's time per build (p50, p99) with the log up
# and with it down, and the log's attestation ingest rate against the strict-verification
# ceiling. Needs nix-bin; runs as root like the tests.
#   BUILDS=50 COUNT=100000 scripts/bench-hook.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILDS=${BUILDS:-50} COUNT=${COUNT:-100000} PORT=${PORT:-18600}
cargo build --release -q -p reprolog-server -p reprolog-cli
bin=$PWD/target/release
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
nix="nix --extra-experimental-features nix-command"
(umask 077; $nix key generate-secret --key-name bench-hook > "$dir/key.sec")
mkdir -p "$dir/data"
$nix key convert-secret-to-public < "$dir/key.sec" > "$dir/data/builders"
"$bin/reprolog-server" serve --data "$dir/data" --listen "127.0.0.1:$PORT" > "$dir/server.out" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/checkpoint" > /dev/null && break; sleep 0.1; done

# Outputs built here (ultimate in the Nix database), one derivation each.
tag=$(date +%s%N)
drvs=()
for i in $(seq 1 "$BUILDS"); do
  echo "derivation { name = \"bench-hook-$tag-$i\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo $tag $i > \$out\" ]; }" > "$dir/d$i.nix"
  drvs+=("$(nix-instantiate "$dir/d$i.nix" 2>/dev/null)")
done
nix-build "$dir"/d*.nix --no-out-link --option substituters '' --option sandbox false > /dev/null 2>&1

printf 'log http://127.0.0.1:%s\nkey-file %s\nspool %s\n' "$PORT" "$dir/key.sec" "$dir/spool-up" > "$dir/up.conf"
# Down: a port nothing listens on.
printf 'log http://127.0.0.1:1\nkey-file %s\nspool %s\n' "$dir/key.sec" "$dir/spool-down" > "$dir/down.conf"
time_hook() {
  python3 - "$bin/reprolog" "$1" "${drvs[@]}" <<'PY'
import os, subprocess, sys, time
reprolog, conf, drvs = sys.argv[1], sys.argv[2], sys.argv[3:]
times = []
for drv in drvs:
    env = dict(os.environ, REPROLOG_HOOK_CONFIG=conf, DRV_PATH=drv, OUT_PATHS="")
    t = time.perf_counter()
    subprocess.run([reprolog, "hook"], env=env, check=True, stderr=subprocess.DEVNULL)
    times.append((time.perf_counter() - t) * 1000)
times.sort()
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print(f"{len(times)} builds: p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {times[-1]:.1f} ms")
PY
}
echo "hook time per build, log up:";   time_hook "$dir/up.conf"
echo "hook time per build, log down:"; time_hook "$dir/down.conf"
echo "attestations logged: $(curl -s "http://127.0.0.1:$PORT/metrics" | awk '$1 == "reprolog_tree_size" {print $2}')"
"$bin/reprolog" bench ingest --attestations --log "http://127.0.0.1:$PORT" --key-file "$dir/key.sec" --count "$COUNT"
