#!/usr/bin/env bash
# Benchmark: the Debian cloud kernel (profiles/test.toml) against the kernel built from source
# (profiles/test-minimal.toml: the same image otherwise), measured in one run: boot to ready
# direct and through UEFI with the phases (benches/boot.sh, medians of N boots), root size,
# allocated disk, zstd-compressed disk; then rebuild times of the source-kernel profile with a
# warm cache: no change (the cached result), and one changed [[files]] entry.
#
#   benches/kernels.sh [RUNS]      (default 3)
#
# Uses berth's default cache, so a kernel built before is reused (the first run compiles it).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p berth
berth=$PWD/target/release/berth

for p in test test-minimal; do
  echo "== profiles/$p.toml" >&2
  benches/boot.sh "$runs" "profiles/$p.toml" | tee "$work/$p.txt" >&2
done

# A figure from boot.sh's output: the first number on the line starting with $2.
fig() { awk -v l="$2" 'index($0, l) == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+s?$/) { sub("s$", "", $i); print $i; exit } }' "$work/$1.txt"; }
row() {
  local label=$1 a b
  a=$(fig test "$label"); b=$(fig test-minimal "$label")
  printf '%-42s %10s %10s %8.2f\n' "$label" "$a" "$b" "$(echo "$b / $a" | bc -l)"
}
printf '\n%-42s %10s %10s %8s\n' "" debian source ratio
row "direct boot to 'berth: ready' (median)"
row "UEFI boot to 'berth: ready' (median)"
for ph in "kernel + initrd modules" "root mounted, main stage" "containerd serving" "ready"; do
  a=$(awk -v l="  $ph" 'index($0, l) == 1 {print $(NF-1)}' "$work/test.txt")
  b=$(awk -v l="  $ph" 'index($0, l) == 1 {print $(NF-1)}' "$work/test-minimal.txt")
  printf '  %-40s %10s %10s %8.2f   (direct, s from QEMU start)\n' "$ph" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done
row "root filesystem (root.ext4)"
row "disk.raw compressed (zstd -3)"

# Rebuilds with a warm cache: the same profile again (cached result), then one change.
mkdir -p "$work/ws"
cp -r profiles overlays kernel-config "$work/ws/"
[ -f profiles/test-minimal.lock ] && cp profiles/test-minimal.lock "$work/ws/profiles/"
"$berth" build -q "$work/ws/profiles/test-minimal.toml" --out "$work/o" >/dev/null
t0=$(date +%s.%N)
"$berth" build -q "$work/ws/profiles/test-minimal.toml" --out "$work/o" >/dev/null
nochange=$(echo "$(date +%s.%N) - $t0" | bc -l)
changed=()
for i in $(seq "$runs"); do
  cat >"$work/ws/profiles/one-change.toml" <<EOF
schema = 1
extends = "test-minimal.toml"
[[files]]
path = "/etc/bench-$i"
content = "change $i $RANDOM\n"
EOF
  cp "$work/ws/profiles/test-minimal.lock" "$work/ws/profiles/one-change.lock"
  t0=$(date +%s.%N)
  "$berth" build -q "$work/ws/profiles/one-change.toml" --out "$work/o1" >/dev/null
  changed+=("$(echo "$(date +%s.%N) - $t0" | bc -l)")
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-42s %9.2fs   (target <= 5 s)\n' "warm one-change rebuild (median)" "$(printf '%s\n' "${changed[@]}" | median)"
printf '%-42s %9.2fs\n' "no-change rebuild (cached result)" "$nochange"
echo "stages of the last one-change rebuild (build-metrics.json):"
python3 -c 'import json,sys; [print("  %-28s %7.2fs" % (s["stage"], s["seconds"])) for s in json.load(open(sys.argv[1]))["stages"]]' "$work/o1/build-metrics.json"
