#!/usr/bin/env bash
# What the Delta Lake tables cost against the manifest they replaced (and arrow-rs 60 → 59,
# taken to share deltalake's): two questlog binaries side by side, alternating, in one run.
# For each, on the same generated log:
#   - `project --rebuild` (one commit per table),
#   - `project --step-events S` from empty (many steps: five commits each, compaction),
#   - `verify` (reads every table file back and compares with a rebuild).
# Wall seconds with GNU time's peak RSS; events/s = events / seconds.
#
# usage: benches/delta_cost.sh OLD_BIN NEW_BIN [ROUNDS] [EVENTS] [STEP_EVENTS]
#   defaults: 3 rounds, 1,000,000 events, steps of 20,000 (50 steps)
# Needs GNU time (/usr/bin/time). Prints a Markdown table.
set -euo pipefail
old="$1"; new="$2"; rounds="${3:-3}"; events="${4:-1000000}"; step="${5:-20000}"
[ -x /usr/bin/time ] || { echo "missing GNU time (apt-get install time)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$new" --data-dir "$work/log" generate --seed 7 --events "$events" >/dev/null

. "$(dirname "$0")/ab.sh"  # measure, rate

echo "| binary | round | rebuild (events/s, RSS) | $((events / step)) steps (events/s, RSS) | verify (s) |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin="$old"; [ "$which" = new ] && bin="$new"
    for kind in rebuild steps; do
      rm -rf "$work/d"; mkdir -p "$work/d"; cp -r "$work/log/log" "$work/d/log"
      if [ "$kind" = rebuild ]; then
        read -r s1 m1 < <(measure "$bin" --data-dir "$work/d" project --rebuild)
      else
        read -r s2 m2 < <(measure "$bin" --data-dir "$work/d" project --step-events "$step")
        read -r s3 _ < <(measure "$bin" --data-dir "$work/d" verify)
      fi
    done
    echo "| $which | $round | $(rate "$s1") ($m1 MiB) | $(rate "$s2") ($m2 MiB) | $s3 |"
  done
done
