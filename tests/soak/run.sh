#!/usr/bin/env bash
# Soak: `serve` under steady HTTP load at a fraction of its measured maximum for a while,
# sampling its memory, open files and projection lag. Then: no request may have failed,
# RSS and open files must be flat (after a third of warm-up: the last part's lowest RSS
# sample within 10% of the highest of the part a third before it, and its median open
# files within 8),
# the tables must catch up, and `verify` must pass. RELIABILITY.md quotes a 10-minute run.
#
# usage: tests/soak/run.sh [--minutes 10] [--fraction 0.7] [--batch 100] [--concurrency 4]
#   --minutes may be fractional (CI runs a short one: --minutes 1)
# Needs a release build (cargo build --release).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${QUESTLOG_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/questlog}"
minutes=10 fraction=0.7 batch=100 concurrency=4
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift ;;
    --fraction) fraction="$2"; shift ;;
    --batch) batch="$2"; shift ;;
    --concurrency) concurrency="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin" ] || { echo "no questlog binary at $bin: cargo build --release first" >&2; exit 1; }

work="$(mktemp -d)"
serve_pid=""
cleanup() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 200); do grep -q "serving on" "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
addr="$(grep -o 'http://[0-9.:]*' "$work/serve.out" | head -1)"
[ -n "$addr" ] || { echo "serve did not start:"; cat "$work/serve.err"; exit 1; }
health() { curl -sf "$addr/healthz" || true; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1] or '{}').get(sys.argv[2], 0))" "$1" "$2"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$serve_pid/status"; }
fds() { ls "/proc/$serve_pid/fd" | wc -l; }

# 1. The maximum: an unpaced run of the same shape.
probe_seconds=15
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 2 else 1)" "$minutes" || probe_seconds=3
probe_events=$(( probe_seconds * 150000 ))
# At least a dedup window's worth (log::DEDUP_WINDOW_EVENTS, 1,000,000 ids, ~48 MiB), so
# the soak starts with the server's bounded structures full (the window, sled's 64 MiB
# cache): filling them is growth that stops, not a leak, and in a short soak it fell
# between the first third and the last.
[ "$probe_events" -ge 1100000 ] || probe_events=1100000
"$bin" generate --url "$addr" --seed 1 --events "$probe_events" --batch "$batch" --concurrency "$concurrency" >"$work/probe.txt"
max_rate="$(grep -o 'throughput [0-9]*' "$work/probe.txt" | awk '{print $2}')"
rate="$(python3 -c "import sys; print(int(float(sys.argv[1]) * float(sys.argv[2])))" "$max_rate" "$fraction")"
seconds="$(python3 -c "import sys; print(int(float(sys.argv[1]) * 60))" "$minutes")"
events=$(( rate * seconds ))
echo "soak: maximum $max_rate events/s (batch $batch, concurrency $concurrency); soaking at $rate events/s ($fraction) for $seconds s: $events events"

# 2. The soak, sampled every thirtieth of the run (at least every 10 s, at most every 1 s).
"$bin" generate --url "$addr" --seed 2 --events "$events" --rate "$rate" --batch "$batch" --concurrency "$concurrency" >"$work/soak.txt" 2>"$work/soak.err" &
gen_pid=$!
interval="$(python3 -c "import sys; print(max(1.0, min(10.0, float(sys.argv[1]) / 30)))" "$seconds")"
samples="$work/samples.tsv"
printf 't_s\trss_mib\topen_files\tlog_end\tprojected\tlag_events\tloaded\n' | tee "$samples"
t0=$(date +%s.%N)
while kill -0 "$gen_pid" 2>/dev/null; do
  sleep "$interval"
  # A sample taken once the load has ended is kept for the table but not judged: it
  # catches the projector's final catch-up, not the steady state.
  kill -0 "$gen_pid" 2>/dev/null && loaded=1 || loaded=0
  h="$(health)"
  end="$(field "$h" log_end_offset)"; proj="$(field "$h" projected_offset)"
  printf '%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\n' "$(python3 -c "import time,sys; print(time.time() - float(sys.argv[1]))" "$t0")" \
    "$(( $(rss_kib) / 1024 ))" "$(fds)" "$end" "$proj" "$(( end - proj ))" "$loaded" | tee -a "$samples"
done
gen_status=0; wait "$gen_pid" || gen_status=$?
cat "$work/soak.txt"

# 3. The tables catch up.
caught_up=0
for _ in $(seq 600); do
  h="$(health)"
  if [ "$(field "$h" log_end_offset)" = "$(field "$h" projected_offset)" ]; then caught_up=1; break; fi
  sleep 0.2
done

# 4. Verdicts.
python3 - "$samples" <<'PY' || verdict=1
import sys, csv
from statistics import median
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
lag_max = max((int(r["lag_events"]) for r in rows), default=0)
rows = [r for r in rows if r["loaded"] == "1"]
if len(rows) < 12:
    print("soak: too few samples"); sys.exit(1)
# The first third is warm-up: in runs without a leak RSS rose through it and then held
# (a 60-s run at 35% of the maximum: 227 -> ~280 MiB over the first 30 s, 257-318 MiB
# after) while the tables' merges reach their larger levels; judged against it, a 30-s
# CI run failed at +11% (2026-12-05). Of the rest, the first third ("middle") is compared
# with the last ("late"), a third apart: a leak lifts the whole late part above the
# middle one, while the working set moves by ~100-150 MiB within a part (a projection
# step or merge in flight; catch-up steps after a merge held the projector up). Adjacent
# parts are not enough: a leak planted in the ingest handler (8 KiB a request) passed
# at +5.9% (the middle part's own growth reached into the late one's range).
judged = rows[len(rows) // 3:]
part = len(judged) // 3
mid, late = judged[:part], judged[-part:]
rss = lambda part: [float(r["rss_mib"]) for r in part]
floor_mid, floor_late = min(rss(mid)), min(rss(late))
peak_mid = max(rss(mid))
# Open files likewise, by the median: a merge in flight holds its inputs open for a moment
# (one sample of 45 against 22-26 around it), a leak raises every later sample.
fd_mid = median(int(r["open_files"]) for r in mid); fd_late = median(int(r["open_files"]) for r in late)
print(f"soak: RSS middle {floor_mid:.0f}-{peak_mid:.0f} MiB (median {median(rss(mid)):.0f}), late {floor_late:.0f}-{max(rss(late)):.0f} MiB "
      f"(median {median(rss(late)):.0f}): the late lowest {(floor_late / peak_mid - 1) * 100:+.1f}% against the middle highest; "
      f"open files (median) {fd_mid:.0f} middle, {fd_late:.0f} late, peaks {max(int(r['open_files']) for r in mid)} and {max(int(r['open_files']) for r in late)}; largest projection lag {lag_max} events")
ok = floor_late <= peak_mid * 1.1 and fd_late <= fd_mid + 8
print("soak: RSS and open files flat" if ok else "soak: RSS or open files grew")
sys.exit(0 if ok else 1)
PY
verdict=${verdict:-0}
kill -TERM "$serve_pid"; wait "$serve_pid" || true; serve_pid=""
verify_status=0; "$bin" --data-dir "$work/data" verify || verify_status=$?
failed="$(grep -o '[0-9]* failed requests' "$work/soak.txt" | awk '{print $1}')"
echo "soak: generate exit $gen_status, failed requests ${failed:-?}, tables caught up: $caught_up, verify exit $verify_status"
[ "$gen_status" = 0 ] && [ "${failed:-1}" = 0 ] && [ "$caught_up" = 1 ] && [ "$verdict" = 0 ] && [ "$verify_status" = 0 ] \
  && echo "soak: PASSED" || { echo "soak: FAILED"; exit 1; }
