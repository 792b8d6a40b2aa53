#!/usr/bin/env bash
# Fuzzes every parser a stranger's bytes reach (fuzz/: cargo-fuzz and libFuzzer on the nightly
# toolchain), each target seeded from the reference vectors in ../shared/testdata and real
# narinfos. Prints each target's executions; a crash stops with the input that caused it
# (under fuzz/artifacts/).
#   scripts/fuzz.sh                          # every target, SECONDS_EACH (10) seconds each
#   RUNS=10000000 scripts/fuzz.sh narinfo     # one target, ten million executions
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${SECONDS_EACH:-10} RUNS=${RUNS:-}
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
if [ $# -gt 0 ]; then targets=("$@"); else
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//'); fi

# Seeds: real narinfos and their store paths; every note, checkpoint and request of the
# signed-note vectors, and their signature lines; tile paths of each kind; a policy and a
# trust file.
shared=../shared/testdata corpus=fuzz/corpus
for t in narinfo store_path note note_signature add_checkpoint tiles policy; do mkdir -p "$corpus/$t"; done
cp "$shared"/nix/lix/*.narinfo "$corpus/narinfo/"
sed -n 's/^StorePath: //p' "$shared"/nix/lix/*.narinfo | while read -r p; do
  printf '%s' "$p" > "$corpus/store_path/$(basename "$p" | cut -c1-32)"; done
awk -v dir="$corpus" '/^-----8<-----$/ { n++; next }
  n % 2 == 1 { f = dir "/note/vector-" (n + 1) / 2; print > f; g = dir "/add_checkpoint/vector-" (n + 1) / 2; print > g }' \
  "$shared/note/vectors.txt"
grep '^— ' "$shared/note/vectors.txt" | sed 's/^— //; s/^/— /' | awk -v dir="$corpus" '{ printf "%s", $0 > (dir "/note_signature/line-" NR) }'
for p in tile/0/000 tile/1/x001/234 tile/entries/000.p/17 tile/entries/x123/x456/789; do
  printf '%s' "$p" > "$corpus/tiles/$(echo "$p" | tr '/.' '__')"; done
printf 'log example.com/testlog+ca03476d+AVuumIqgFwnHdv9I6KkreuFxx0AKgBhAkl5CwPqpL9/E https://log.example\nwitness w example.com/witness1+77a4f4b8+BJtK0BlVU69MIup/Hjht8BPynQx/iXQ9y61hHpri6Llk\nquorum w\n' > "$corpus/policy/policy"
printf 'builder one cache.lix.systems:aBnZUw8zA7H35Cz2RyKFVs3H4PlGTLawyY5KRbvJR8o=\nquorum 1\n' > "$corpus/policy/trust"

cd fuzz
for t in "${targets[@]}"; do
  limit=("-max_total_time=$SECONDS_EACH")
  [ -n "$RUNS" ] && limit=("-runs=$RUNS")
  out=$(cargo +nightly fuzz run -O "$t" -- "${limit[@]}" -print_final_stats=1 2>&1) || {
    echo "$out" | tail -40; echo "fuzz target $t FAILED"; exit 1; }
  runs=$(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p' | tail -1)
  echo "fuzz $t: $runs executions, no crash"
done
