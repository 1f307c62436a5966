#!/usr/bin/env bash
# The full power-cut set: QEMU killed (SIGKILL) once at each named step of `berthctl update
# apply` and at N random moments (default 20) spread over the apply (a random fraction, up to
# 1.1, of the time the same bundle took uncut; the first apply of each bundle runs to its end
# to measure it), each cut followed by a boot that must reach a good slot. Prints every cut and
# the count of cuts, of cuts while the apply ran, and of good boots. CI cuts at two steps only,
# one on each side of the commit point (vm-tests/tests/powercut.rs). BERTH_POWERCUT_SEED
# repeats a run.
#
#   benches/powercut.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
BERTH_POWERCUT_STEPS=all BERTH_POWERCUT_RANDOM=${1:-20} cargo test -q -p berth-vm-tests --test powercut -- --nocapture 2>&1 |
  grep -E '^(power cuts|cut [0-9]|test result)|panicked'
