#!/usr/bin/env bash
# Fuzzing: every parser that reads bytes a user or a network controls, on mutated seeds, for
# SECONDS each (default 600), release build with overflow checks on:
#   contract (contract/tests/fuzz.rs): GPT, verity superblock, bundle header, machine config,
#     services, channel index, policies, kernel command line, boot entries, etcd answers;
#   builder (builder/tests/fuzz.rs): ELF, .modinfo, .deb files, control stanzas, Debian
#     versions, docker-save archives, profiles;
#   init (rootfs/init/src/fuzz.rs): DHCP replies, HTTP responses, metadata-service replies,
#     config-drive superblocks.
# Prints executions per target and the total; a crash leaves its input in target/fuzz-crashes/
# and fails. CI runs 1 s per target (the same tests under `cargo test`).
#
#   benches/fuzz.sh [SECONDS] [TARGET,...]
#   JOBS=2 benches/fuzz.sh     # the three suites two at a time (one core each)
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH_FUZZ_SECONDS=${1:-600}
[ -n "${2:-}" ] && export BERTH_FUZZ_TARGETS=$2
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
jobs=${JOBS:-1}
out=target/fuzz-logs
mkdir -p "$out"

suites=(contract builder init)
declare -A cmd=(
  [contract]="-p berth-contract --test fuzz"
  [builder]="-p berth --test fuzz"
  [init]="-p berth-init --bin berth-init fuzz::"
)
# Build everything first, so that the time budgets are spent fuzzing.
for s in "${suites[@]}"; do
  # shellcheck disable=SC2086
  cargo test -q --release --locked ${cmd[$s]} --no-run
done
echo "fuzz: ${BERTH_FUZZ_SECONDS} s per target${BERTH_FUZZ_TARGETS:+ (only $BERTH_FUZZ_TARGETS)}, $jobs at a time; logs in $out/"

run() {
  # shellcheck disable=SC2086
  local rc=0
  cargo test -q --release --locked ${cmd[$1]} -- --nocapture --test-threads=1 > "$out/$1.log" 2>&1 || rc=$?
  echo "$rc" > "$out/$1.rc"
}
rm -f "$out"/*.rc
for s in "${suites[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  run "$s" &
done
wait

logs=("$out"/contract.log "$out"/builder.log "$out"/init.log)
grep -hoE 'fuzz [a-z0-9-]+: [0-9]+ executions.*' "${logs[@]}" | sort
grep -hE 'panicked|a panic on input' "${logs[@]}" || true
grep -hoE 'fuzz [a-z0-9-]+: [0-9]+ executions' "${logs[@]}" |
  awk '{n += $3; t++} END {printf "fuzz: %d targets, %.0f executions in all\n", t, n}'
failed=0
for s in "${suites[@]}"; do
  [ "$(cat "$out/$s.rc" 2>/dev/null)" = 0 ] || { echo "fuzz: the $s suite failed (see $out/$s.log)"; failed=1; }
done
exit "$failed"
