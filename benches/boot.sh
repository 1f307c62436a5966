#!/usr/bin/env bash
# Benchmark: time from QEMU start to "berth: ready" under this machine's accelerator (TCG here),
# for direct kernel boot and for UEFI (OVMF + systemd-boot), medians of N boots each; plus the
# sizes of the disk image, the root filesystem and the compressed disk.
#
#   benches/boot.sh [RUNS] [PROFILE]      (defaults: 3, profiles/test.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
profile=${2:-profiles/test.toml}
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release -q -p berth
berth=$PWD/target/release/berth
out="$work/out"
$berth build -q "$profile" --out "$out" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Boots once; prints seconds until the ready line (or fails after 300 s).
boot_once() {
  local log="$work/console.log"
  : >"$log"
  local t0 t1
  t0=$(date +%s.%N)
  "$berth" run "$out" "$@" --no-reboot --console-log "$log" </dev/null >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 3000); do
    if grep -aq "berth: ready" "$log" 2>/dev/null; then
      t1=$(date +%s.%N)
      kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
      echo "$t1 - $t0" | bc -l
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  echo "boot did not reach ready; console tail:" >&2
  tail -20 "$log" >&2
  return 1
}

direct=(); uefi=()
for _ in $(seq "$runs"); do direct+=("$(boot_once --direct)"); done
for _ in $(seq "$runs"); do uefi+=("$(boot_once)"); done
d=$(printf '%s\n' "${direct[@]}" | median)
u=$(printf '%s\n' "${uefi[@]}" | median)

accel=TCG
grep -qE '\b(vmx|svm)\b' /proc/cpuinfo && [ -w /dev/kvm ] && accel=KVM
disk=$(stat -c %s "$out/disk.raw")
alloc=$(( $(stat -c %b "$out/disk.raw") * $(stat -c %B "$out/disk.raw") ))
root=$(stat -c %s "$out/root.ext4")
zst=$(zstd -q -T0 -3 -c "$out/disk.raw" | wc -c)
printf 'accelerator: %s, %d boots each\n' "$accel" "$runs"
printf '%-40s %7.2fs   (target <= 8 s)\n' "direct boot to 'berth: ready' (median)" "$d"
printf '%-40s %7.2fs   (target <= 25 s)\n' "UEFI boot to 'berth: ready' (median)" "$u"
printf '%-40s %7d MiB (allocated %d MiB)\n' "disk.raw" "$((disk >> 20))" "$((alloc >> 20))"
printf '%-40s %7d MiB\n' "root filesystem (root.ext4)" "$((root >> 20))"
printf '%-40s %7d MiB\n' "disk.raw compressed (zstd -3)" "$((zst >> 20))"
