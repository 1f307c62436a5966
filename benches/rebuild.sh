#!/usr/bin/env bash
# Benchmark: warm rebuilds. For this berth (and OTHER_BERTH, another berth executable, e.g. one
# built from an earlier commit, in the same run): a build of PROFILE to warm the cache, a
# no-change rebuild (the cached result), then RUNS rebuilds each with one more `[[files]]`
# entry (a new inode, a new root hash, everything after the package read made again);
# medians, the ratio, and the stages of the last one-change rebuild (build-metrics.json).
#
#   benches/rebuild.sh [RUNS] [PROFILE] [OTHER_BERTH]     (default 5, test)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
prof=${2:-test}
other=${3:-}
cargo build --release -q -p berth
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ws"
cp -r profiles overlays kernel-config "$work/ws/"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
since() { echo "$(date +%s.%N) - $1" | bc -l; }

# measure LABEL BERTH: prints "one-change-median no-change" on stdout.
measure() {
  local label=$1 berth=$2 t0 nochange changed=()
  "$berth" build -q "$work/ws/profiles/$prof.toml" --out "$work/o-$label" >/dev/null
  t0=$(date +%s.%N)
  "$berth" build -q "$work/ws/profiles/$prof.toml" --out "$work/o-$label" >/dev/null
  nochange=$(since "$t0")
  for i in $(seq "$runs"); do
    printf 'schema = 1\nextends = "%s.toml"\n[[files]]\npath = "/etc/bench-%s-%s"\ncontent = "change %s %s\\n"\n' \
      "$prof" "$label" "$i" "$i" "$RANDOM" >"$work/ws/profiles/one-change.toml"
    cp "$work/ws/profiles/$prof.lock" "$work/ws/profiles/one-change.lock"
    t0=$(date +%s.%N)
    "$berth" build -q "$work/ws/profiles/one-change.toml" --out "$work/o1-$label" >/dev/null
    changed+=("$(since "$t0")")
  done
  echo "$(printf '%s\n' "${changed[@]}" | median) $nochange"
}

read -r one none < <(measure this target/release/berth)
printf '%-44s %8.2f s   (target <= 5 s)\n' "one-change rebuild, this berth (median of $runs)" "$one"
printf '%-44s %8.2f s\n' "no-change rebuild, this berth" "$none"
if [ -n "$other" ]; then
  read -r one_o none_o < <(measure other "$other")
  printf '%-44s %8.2f s\n' "one-change rebuild, $other" "$one_o"
  printf '%-44s %8.2f s\n' "no-change rebuild, $other" "$none_o"
  printf '%-44s %8.2f\n' "ratio one-change (this / other)" "$(echo "$one / $one_o" | bc -l)"
fi
echo "stages of this berth's last one-change rebuild:"
python3 -c 'import json,sys; [print("  %-28s %7.2fs" % (s["stage"], s["seconds"])) for s in json.load(open(sys.argv[1]))["stages"]]' \
  "$work/o1-this/build-metrics.json"
