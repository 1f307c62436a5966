#!/usr/bin/env bash
# Benchmark: time from QEMU start to "berth: ready" under this machine's accelerator (TCG here),
# for direct kernel boot and for UEFI (OVMF + systemd-boot), medians of N boots each, with the
# median time at which each boot phase's console line appeared; a first boot (images imported
# into containerd) against a later boot of the same disk (images found unchanged, not imported
# again); plus the sizes of the disk image, the root filesystem and the compressed disk.
#
#   benches/boot.sh [RUNS] [PROFILE]      (defaults: 5, profiles/test.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
profile=${2:-profiles/test.toml}
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release -q -p berth
berth=$PWD/target/release/berth
out="$work/out"
$berth build -q "$profile" --out "$out" >/dev/null

# The console lines that end each phase, in boot order (see rootfs/init/README.md).
phases=("initrd: modules loaded" "berth: root " "containerd serving" "berth: imported" "berth: service " "berth: ready")
labels=("kernel + initrd modules" "root mounted, main stage" "containerd serving" "images imported" "oneshot container done" "ready")

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Boots once; appends "phase seconds" lines to $work/phases.<mode> and prints the seconds until
# the ready line (or fails after 300 s).
boot_once() {
  local mode=$1; shift
  local log="$work/console.log"
  : >"$log"
  local t0 now seen=()
  t0=$(date +%s.%N)
  local img="$out"
  if [ $# -gt 0 ] && [ "${1#/}" != "$1" ]; then img=$1; shift; fi
  "$berth" run "$img" "$@" --no-reboot --console-log "$log" </dev/null >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 6000); do
    now=$(date +%s.%N)
    for i in "${!phases[@]}"; do
      if [ -z "${seen[$i]:-}" ] && grep -aqF "${phases[$i]}" "$log" 2>/dev/null; then
        seen[$i]=$(echo "$now - $t0" | bc -l)
        echo "$i ${seen[$i]}" >>"$work/phases.$mode"
      fi
    done
    if [ -n "${seen[5]:-}" ]; then
      kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
      echo "${seen[5]}"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill "$pid" 2>/dev/null || true
  echo "boot did not reach ready; console tail:" >&2
  tail -20 "$log" >&2
  return 1
}

direct=(); uefi=()
for _ in $(seq "$runs"); do direct+=("$(boot_once direct --direct)"); done
for _ in $(seq "$runs"); do uefi+=("$(boot_once uefi)"); done
# First boot vs a later boot of the same (persistent) disk: the later one imports nothing.
first=(); later=()
for _ in $(seq "$runs"); do
  rm -rf "$work/p"; cp -r --sparse=always "$out" "$work/p"
  first+=("$(boot_once first "$work/p" --direct --persist)")
  later+=("$(boot_once later "$work/p" --direct --persist)")
  # (An image without container images imports nothing on either boot.)
  if grep -aq "berth: imported " "$work/console.log"; then echo "the later boot imported again" >&2; exit 1; fi
done
f=$(printf '%s\n' "${first[@]}" | median)
l=$(printf '%s\n' "${later[@]}" | median)
d=$(printf '%s\n' "${direct[@]}" | median)
u=$(printf '%s\n' "${uefi[@]}" | median)

accel=TCG
grep -qE '\b(vmx|svm)\b' /proc/cpuinfo && [ -w /dev/kvm ] && accel=KVM
disk=$(stat -c %s "$out/disk.raw")
alloc=$(( $(stat -c %b "$out/disk.raw") * $(stat -c %B "$out/disk.raw") ))
root=$(stat -c %s "$out/root.ext4")
zst=$(zstd -q -T0 -3 -c "$out/disk.raw" | wc -c)
printf 'accelerator: %s, %d boots each, %d host CPUs\n' "$accel" "$runs" "$(nproc)"
printf '%-40s %7.2fs   (target <= 8 s)   runs: %s\n' "direct boot to 'berth: ready' (median)" "$d" "$(printf '%.1f ' "${direct[@]}")"
printf '%-40s %7.2fs   (target <= 25 s)  runs: %s\n' "UEFI boot to 'berth: ready' (median)" "$u" "$(printf '%.1f ' "${uefi[@]}")"
printf '%-40s %8s %8s\n' "phase ends (median s from QEMU start)" direct UEFI
for i in "${!phases[@]}"; do
  pd=$(awk -v i="$i" '$1 == i {print $2}' "$work/phases.direct" | median)
  pu=$(awk -v i="$i" '$1 == i {print $2}' "$work/phases.uefi" | median)
  # A phase the console never showed (no images to import, say) prints "-", not 0.00.
  [ -n "$pd" ] && pd=$(printf '%.2f' "$pd") || pd=-
  [ -n "$pu" ] && pu=$(printf '%.2f' "$pu") || pu=-
  printf '  %-38s %8s %8s\n' "${labels[$i]}" "$pd" "$pu"
done
printf '%-40s %7.2f\n' "UEFI / direct (firmware + loader cost)" "$(echo "$u / $d" | bc -l)"
printf '%-40s %7.2fs   runs: %s\n' "first boot, direct (imports images)" "$f" "$(printf '%.1f ' "${first[@]}")"
printf '%-40s %7.2fs   runs: %s\n' "later boot, same disk (no imports)" "$l" "$(printf '%.1f ' "${later[@]}")"
printf '%-40s %7.2f\n' "later / first" "$(echo "$l / $f" | bc -l)"
printf '%-40s %7d MiB (allocated %d MiB)\n' "disk.raw" "$((disk >> 20))" "$((alloc >> 20))"
printf '%-40s %7d MiB\n' "root filesystem (root.ext4)" "$((root >> 20))"
printf '%-40s %7d MiB\n' "disk.raw compressed (zstd -3)" "$((zst >> 20))"
