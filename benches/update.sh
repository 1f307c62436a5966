#!/usr/bin/env bash
# Benchmark: A/B updates under this machine's accelerator (TCG here), in one run: bundle bytes
# full vs delta for a one-package change; `berthctl update apply` of the full bundle vs `dd` of
# the same root+verity bytes through the same SSH pipe, and of the delta bundle; seconds from
# the apply to `berth: ready slot=b` and to blessed. (vm-tests/tests/update_bench.rs does the work.)
#
#   benches/update.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
cargo test -q -p berth-vm-tests --test update_bench -- --ignored --nocapture 2>&1 |
  grep -E '^(bundle bytes|apply of|from the start|test result)'
