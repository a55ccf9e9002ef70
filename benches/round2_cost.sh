#!/usr/bin/env bash
# What the performance round of issue 17 changed: two questlog binaries side by side,
# alternating, in one run, so that the machine's noise (±20% on a stage between runs
# minutes apart) falls on both alike. For each, on the same logs:
#   - `generate` of EVENTS events into an empty log,
#   - `replay --from 0 > /dev/null` of the EVENTS-event log,
#   - `project --rebuild` of it,
#   - `report` over tables of REPORT_EVENTS events (rebuilt once, read by both).
# Wall seconds with GNU time's peak RSS; events/s = events / seconds. The outputs are the
# same bytes (the golden scenarios check that); this measures time and memory only.
#
# usage: benches/round2_cost.sh OLD_BIN NEW_BIN [ROUNDS] [EVENTS] [REPORT_EVENTS]
#   defaults: 3 rounds, 1,000,000 events, a report over 10,000,000 events
# Needs GNU time (/usr/bin/time). Prints a Markdown table.
set -euo pipefail
old="$1"; new="$2"; rounds="${3:-3}"; events="${4:-1000000}"; report_events="${5:-10000000}"
[ -x /usr/bin/time ] || { echo "missing GNU time (apt-get install time)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$new" --data-dir "$work/log" generate --seed 7 --events "$events" >/dev/null
"$new" --data-dir "$work/big" generate --seed 8 --events "$report_events" >/dev/null
"$new" --data-dir "$work/big" project --rebuild >/dev/null

. "$(dirname "$0")/ab.sh"  # measure, rate

echo "| binary | round | generate (events/s, RSS) | replay (events/s, RSS) | rebuild (events/s, RSS) | report of $report_events events (s, RSS) |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin="$old"; [ "$which" = new ] && bin="$new"
    stages=$(seed_stages "$bin")
    read -r sp mp < <(measure "$bin" --data-dir "$work/big" report --out "$work/report")
    echo "| $which | $round | $stages | $sp ($mp MiB) |"
  done
done
