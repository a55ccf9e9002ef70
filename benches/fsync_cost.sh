#!/usr/bin/env bash
# What the fdatasync after sled's flush costs: two questlog binaries side by side,
# alternating, in one run — one without it (sled 0.34's flush alone, which ends in
# sync_file_range) and one with it. For each: one event per request (wrk, 64 connections),
# and batched ingest (`generate --url`, 8 connections of 1,000-event requests); then the
# server's own figures from /metrics: group commits, mean flush time, mean fsync time.
#
# usage: benches/fsync_cost.sh OLD_BIN NEW_BIN [ROUNDS] [SECONDS] [EVENTS]
#   defaults: 3 rounds, 10 s of wrk, 1,000,000 batched events
# Needs wrk. Prints a Markdown table.
set -euo pipefail
old="$1"; new="$2"; rounds="${3:-3}"; seconds="${4:-10}"; events="${5:-1000000}"
command -v wrk >/dev/null || { echo "missing wrk (apt-get install wrk)" >&2; exit 1; }
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

metric() { awk -v m="$1" '$1 == m {print $2}' "$work/metrics.txt"; }

echo "| binary | round | one event per request (wrk, 64 conns) | p99 | batched ingest (events/s) | group commits | mean flush | mean fsync after it |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin="$old"; [ "$which" = new ] && bin="$new"
    data="$work/data-$which-$round"
    "$bin" --data-dir "$data" serve --listen 127.0.0.1:0 --project-interval-ms 1000 >"$work/serve.out" 2>"$work/serve.err" &
    pid=$!
    for _ in $(seq 1 300); do grep -q "http://" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
    addr=$(grep -o "http://[0-9.:]*" "$work/serve.out" | head -1)
    wrk -t2 -c64 -d"${seconds}s" --latency "$addr/join_guild?guild_id=7&name=Knights" >"$work/wrk.txt" 2>&1
    rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
    "$bin" --data-dir "$work/gen-$which-$round" generate --seed 7 --events "$events" --url "$addr" --concurrency 8 --batch 1000 >"$work/gen.txt" 2>&1
    batched=$(grep -o "[0-9,]* events/s" "$work/gen.txt" | head -1 | tr -d ', events/s')
    curl -s "$addr/metrics" >"$work/metrics.txt"
    flushes=$(metric questlog_log_flushes_total)
    flush_s=$(metric questlog_log_flush_seconds_total)
    fsync_s=$(metric questlog_log_fsync_seconds_total)
    kill -TERM "$pid"; wait "$pid" || true; pid=""
    python3 - "$which" "$round" "$rps" "$p99" "$batched" "$flushes" "$flush_s" "${fsync_s:-}" <<'EOF'
import sys
which, rnd, rps, p99, batched, flushes, flush_s, fsync_s = sys.argv[1:]
n = max(int(float(flushes)), 1)
fsync = f"{float(fsync_s) / n * 1e3:.2f} ms" if fsync_s else "none (not measured)"
print(f"| {which} | {rnd} | {float(rps):,.0f}/s | {p99} | {int(batched or 0):,} | {n:,} | {float(flush_s) / n * 1e3:.2f} ms | {fsync} |")
EOF
    rm -rf "$data" "$work/gen-$which-$round"
  done
done
