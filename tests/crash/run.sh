#!/usr/bin/env bash
# The long crash run: 500 SIGKILLs of `serve` under concurrent load (CI runs 30), then the
# tally: kills, sent, acknowledged, in the log, lost, duplicated. RELIABILITY.md quotes it.
# usage: tests/crash/run.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/../.."
export QUESTLOG_CRASH_KILLS="${1:-500}" QUESTLOG_CRASH_SEED="${2:-1}"
cargo test --release --test crash_harness -- --nocapture 2>&1 | grep -E '^crash harness:|^test result|panicked|FAILED'
