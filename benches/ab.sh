# Helpers of the side-by-side scripts (delta_cost.sh, round2_cost.sh), sourced after they
# set $work (a scratch directory) and $events (the events each measured command handles).

# measure CMD... : runs CMD after a sync (earlier writeback must not stall it); prints
# "seconds rss_mib" (wall time and GNU time's peak RSS).
measure() {
  sync
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || { cat "$work/err.txt" >&2; exit 1; }
  awk '{printf "%s %d\n", $1, $2 / 1024}' "$work/time.txt"
}

# rate SECONDS : $events per second.
rate() { awk -v e="$events" -v s="$1" 'BEGIN { printf "%.0f", e / s }'; }
