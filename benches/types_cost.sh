#!/usr/bin/env bash
# What making event types data (issue 28) costs the seed's types: two questlog binaries
# side by side, alternating, in one run (the machine's noise falls on both alike). For
# each, on the same logs:
#   - `generate` of EVENTS seed events into an empty log,
#   - `replay --from 0 > /dev/null` of an EVENTS-event log,
#   - `project --rebuild` of it,
#   - batched ingest: `serve` taking EVENTS events from `generate --url --batch 500
#     --concurrency 4` (the NEW binary's client for both servers).
# Then, with NEW only, the same stages for a registered type of 12 properties
# (benches/schemas/match_stats-1-0-0.json; `generate --schema … --custom-share 100`),
# its table projected by the rebuild.
# Wall seconds with GNU time's peak RSS; events/s = events / seconds.
#
# usage: benches/types_cost.sh OLD_BIN NEW_BIN [ROUNDS] [EVENTS]   (defaults: 3, 1000000)
# Needs GNU time (/usr/bin/time). Prints a Markdown table.
set -euo pipefail
old="$1"; new="$2"; rounds="${3:-3}"; events="${4:-1000000}"
here="$(cd "$(dirname "$0")" && pwd)"
schema="$here/schemas/match_stats-1-0-0.json"
[ -x /usr/bin/time ] || { echo "missing GNU time (apt-get install time)" >&2; exit 1; }
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
"$new" --data-dir "$work/log" generate --seed 7 --events "$events" >/dev/null
"$new" --data-dir "$work/custom" generate --seed 7 --events "$events" --schema "$schema" --custom-share 100 >/dev/null

. "$here/ab.sh"  # measure, rate

# ingest BIN DIR [serve args…] : events/s of batched ingest into a new server on DIR.
ingest() {
  local bin="$1" dir="$2"; shift 2
  local client_args=()
  [ "${1:-}" = --schemas ] && client_args=(--schema "$schema" --custom-share 100)
  rm -rf "$dir"
  "$bin" --data-dir "$dir" serve --listen 127.0.0.1:0 "$@" >"$dir.out" 2>"$dir.err" &
  pid=$!
  local addr=""
  for _ in $(seq 1 300); do
    addr=$(grep -o 'http://[0-9.:]*' "$dir.out" 2>/dev/null | head -n 1 || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "serve did not start: $(cat "$dir.err")" >&2; exit 1; }
  python3 "$here/../tests/external/wait_healthy.py" "$addr"
  "$new" generate --seed 99 --events "$events" --url "$addr" --batch 500 --concurrency 4 "${client_args[@]}" >"$work/load.txt" 2>&1 \
    || { cat "$work/load.txt" >&2; exit 1; }
  kill -TERM "$pid"; wait "$pid" || true; pid=""
  awk '/^throughput/ {print $2}' "$work/load.txt"
}

echo "| binary | round | generate (events/s, RSS) | replay (events/s, RSS) | rebuild (events/s, RSS) | batched ingest (events/s) |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin="$old"; [ "$which" = new ] && bin="$new"
    stages=$(seed_stages "$bin")
    ib=$(ingest "$bin" "$work/s")
    echo "| $which | $round | $stages | $ib |"
  done
done
rm -rf "$work/g"
read -r sg mg < <(measure "$new" --data-dir "$work/g" generate --seed 7 --events "$events" --schema "$schema" --custom-share 100)
read -r sr mr < <(measure sh -c "'$new' --data-dir '$work/custom' replay --from 0 > /dev/null")
read -r sb mb < <(measure "$new" --data-dir "$work/custom" project --rebuild)
ib=$(ingest "$new" "$work/s" --schemas "$here/schemas")
echo "| new, match_stats (12 properties) | 1 | $(rate "$sg") ($mg MiB) | $(rate "$sr") ($mr MiB) | $(rate "$sb") ($mb MiB) | $ib |"
