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

# seed_stages BIN : generate of $events events into $work/g (emptied first), replay and
# `project --rebuild` of the log in $work/log; prints the three table cells
# "events/s (RSS MiB) | … | …".
seed_stages() {
  local bin="$1" sg mg sr mr sb mb
  rm -rf "$work/g"
  read -r sg mg < <(measure "$bin" --data-dir "$work/g" generate --seed 7 --events "$events")
  read -r sr mr < <(measure sh -c "'$bin' --data-dir '$work/log' replay --from 0 > /dev/null")
  read -r sb mb < <(measure "$bin" --data-dir "$work/log" project --rebuild)
  echo "$(rate "$sg") ($mg MiB) | $(rate "$sr") ($mr MiB) | $(rate "$sb") ($mb MiB)"
}
