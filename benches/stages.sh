#!/usr/bin/env bash
# Benchmark: the per-stage times of a cold `berth build --no-cache` of the default profile
# (medians of N runs), for this checkout's berth and, side by side, another berth executable
# (e.g. one built from an earlier commit) measured in the same run.
#
#   benches/stages.sh [RUNS] [OTHER_BERTH]      (default 3 runs; no comparison without OTHER)
#
# Both share one package cache (filled by a first build), so the figures are the pipeline's
# own work: reading packages, writing ext4 and verity, the initramfs, the disk, hashing.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
other=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p berth
this=target/release/berth
cache="$work/cache"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# name -> list of seconds, per executable; a step line is "  <name>   <secs>s  <detail>".
declare -A times
measure() {
  local label=$1 exe=$2 i log total t0 t1
  for i in $(seq "$runs"); do
    t0=$(date +%s.%N)
    log=$("$exe" build --no-cache --cache-dir "$cache" --out "$work/$label-$i" 2>&1 >/dev/null)
    t1=$(date +%s.%N)
    rm -rf "$work/$label-$i"
    while read -r name secs; do
      times["$label|$name"]+="$secs "
    done < <(awk '/^  [a-zA-Z].* [0-9.]+s( |$)/ {
        for (f = 2; f <= NF; f++) if ($f ~ /^[0-9.]+s$/) { n = ""; for (g = 1; g < f; g++) n = n (g > 1 ? "_" : "") $g; sub("s$", "", $f); print n, $f; break } }' <<<"$log")
    total=$(echo "$t1 - $t0" | bc -l)
    times["$label|TOTAL"]+="$total "
  done
}

"$this" build -q --cache-dir "$cache" --out "$work/warmup" >/dev/null
rm -rf "$work/warmup"
measure this "$this"
[ -n "$other" ] && measure other "$other"

printf '%-26s %10s %10s %8s\n' stage this other ratio
stages=$(for k in "${!times[@]}"; do echo "${k#*|}"; done | sort -u)
for s in $stages; do
  a=$(tr ' ' '\n' <<<"${times[this|$s]:-}" | grep . | median || true)
  b=$(tr ' ' '\n' <<<"${times[other|$s]:-}" | grep . | median || true)
  r="-"
  if [ -n "$a" ] && [ -n "$b" ] && [ "$(echo "$b > 0" | bc -l)" = 1 ]; then
    r=$(printf '%.2f' "$(echo "$a / $b" | bc -l)")
  fi
  printf '%-26s %10s %10s %8s\n' "$s" "${a:--}" "${b:--}" "$r"
done
