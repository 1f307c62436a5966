#!/usr/bin/env bash
# Fuzzing: every contract parser (GPT, verity superblock, bundle header, machine config, services,
# channel index, policies, kernel command line, boot entries) on mutated seeds for SECONDS each
# (default 600), release build with overflow checks on. Prints executions per target; a crash
# leaves its input in target/fuzz-crashes/ and fails. CI runs 1 s per target (contract/tests/fuzz.rs).
#
#   benches/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH_FUZZ_SECONDS=${1:-600}
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
cargo test -q --release -p berth-contract --test fuzz -- --nocapture --test-threads=1 2>&1 |
  grep -E '^fuzz |panicked|test result'
