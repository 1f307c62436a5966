#!/usr/bin/env bash
# Benchmark: berth's ext4 + dm-verity writers against mkfs.ext4 -d + veritysetup format, on the
# same tree (the default profile's root), in the same run. Prints medians of N runs and ratios,
# and the wall time of a warm (no-change) `berth build`.
#
#   benches/rootfs.sh [RUNS]      (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
runs=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p berth
berth=target/release/berth

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

# One build to fill the package cache and get the tree.
$berth build -q --out "$work/ref" >/dev/null
size=$(stat -c %s "$work/ref/root.ext4")
tree="$work/tree"
mkdir "$tree"
debugfs -R "rdump / $tree" "$work/ref/root.ext4" 2>/dev/null
rm -rf "$tree/lost+found"

berth_ext4=(); berth_verity=(); mkfs_t=(); vsetup_t=()
for i in $(seq "$runs"); do
  # berth: a full (uncached) build; the step lines give the writers' own times.
  log=$($berth build --no-cache --out "$work/b$i" 2>&1 >/dev/null)
  berth_ext4+=("$(awk '/write root.ext4/ {sub("s","",$3); print $3}' <<<"$log")")
  berth_verity+=("$(awk '/dm-verity/ {sub("s","",$2); print $2}' <<<"$log")")
  rm -rf "$work/b$i"
  # The obvious alternative on the same tree and size.
  t0=$(now)
  # mke2fs needs more room than berth's tightly packed image for the same tree: give it 25% more.
  mkfs.ext4 -q -F -b 4096 -m 0 -O ^has_journal -d "$tree" "$work/m.img" "$((size * 5 / 4 / 1024))k"
  t1=$(now)
  veritysetup format "$work/m.img" "$work/m.verity" >/dev/null
  t2=$(now)
  mkfs_t+=("$(echo "$t1 - $t0" | bc -l)")
  vsetup_t+=("$(echo "$t2 - $t1" | bc -l)")
  rm -f "$work/m.img" "$work/m.verity"
done

be=$(printf '%s\n' "${berth_ext4[@]}" | median)
bv=$(printf '%s\n' "${berth_verity[@]}" | median)
me=$(printf '%s\n' "${mkfs_t[@]}" | median)
mv=$(printf '%s\n' "${vsetup_t[@]}" | median)

# Warm rebuild: nothing changed, the cached result is reused.
warm=()
for i in $(seq "$runs"); do
  t0=$(now); $berth build -q --out "$work/warm" >/dev/null; t1=$(now)
  warm+=("$(echo "$t1 - $t0" | bc -l)")
done
w=$(printf '%s\n' "${warm[@]}" | median)

printf 'root filesystem: %d MiB, %d files\n' "$((size >> 20))" "$(find "$tree" | wc -l)"
printf '%-34s %8.2fs\n' "berth ext4 writer" "$be" "mkfs.ext4 -d" "$me" \
  "berth dm-verity" "$bv" "veritysetup format" "$mv"
printf '%-34s %8.2fs\n' "berth ext4+verity" "$(echo "$be + $bv" | bc -l)" \
  "mkfs.ext4 -d + veritysetup format" "$(echo "$me + $mv" | bc -l)"
printf 'ratio berth / (mkfs + veritysetup): %.2f  (<= 1.0 means berth is at most as slow)\n' \
  "$(echo "($be + $bv) / ($me + $mv)" | bc -l)"
printf 'warm no-change rebuild (median of %d): %.2fs\n' "$runs" "$w"
