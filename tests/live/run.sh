#!/usr/bin/env bash
# The live page in a real browser (run by .ci/run): Playwright (playwright-core, pinned in
# package.json and installed from the npm registry) drives Debian's Chromium, headless,
# against the real binary under seeded load; with API keys too. Saves a screenshot.
# Usage: tests/live/run.sh [path/to/questlog]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../target/release/questlog}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
artifacts="${QUESTLOG_ARTIFACTS_DIR:-/tmp/questlog-artifacts}"
mkdir -p "$artifacts"
(cd "$here" && npm ci --no-audit --no-fund --silent)
node "$here/check_live.mjs" "$bin" "$work" "$artifacts"
