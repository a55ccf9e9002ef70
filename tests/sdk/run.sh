#!/usr/bin/env bash
# Analytics SDKs against the real binary (docs/CONTRACT.md 3.9): each SDK, installed from
# its registry (PyPI, npm) and unmodified but for its host and key, sends events of registered types
# through its own batching and retries; the tables must then hold every valid event once
# and `rejected` every invalid one with its message id.
#
# Usage: tests/sdk/run.sh [path/to/questlog]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$here/../../target}/release/questlog}"
[ -x "$bin" ] || { echo "no questlog binary at $bin: cargo build --release first" >&2; exit 1; }
. "$here/../venv.sh"
venv_with "${QUESTLOG_SDK_VENV:-/var/cache/questlog-sdk-venv}" "$here/requirements.txt" segment.analytics posthog snowplow_tracker deltalake pyarrow
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" "$here/check_segment.py" "$bin" "$here/../external/schemas/level_up-1-0-0.json" "$work/segment"
"$venv/bin/python" "$here/check_posthog.py" "$bin" "$here/../external/schemas/level_up-1-0-0.json" "$work/posthog"
"$venv/bin/python" "$here/check_snowplow.py" "$bin" "$here/../external/schemas/level_up-1-0-0.json" "$work/snowplow"
"$venv/bin/python" "$here/check_infer.py" "$bin" "$work/infer"
"$venv/bin/python" "$here/check_readme.py" "$bin" "$here/../external/schemas/level_up-1-0-0.json" "$work/readme"
(cd "$here" && npm ci --no-audit --no-fund --silent)
"$venv/bin/python" "$here/check_segment_node.py" "$bin" "$here/../external/schemas/level_up-1-0-0.json" "$work/segment-node"
