#!/usr/bin/env bash
# The tables as Delta Lake, local and on a real S3-protocol server, read back by clients
# questlog did not write (run by .ci/run). Starts moto's S3 server on a free loopback port,
# in a virtualenv of its own (tests/delta/requirements.txt), then runs check_delta.py.
# Usage: tests/delta/run.sh [path/to/questlog] [section ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../target/release/questlog}"
shift || true
. "$here/../venv.sh"
venv_with "${QUESTLOG_DELTA_VENV:-/var/cache/questlog-delta-venv}" "$here/requirements.txt" moto deltalake duckdb boto3
work="$(mktemp -d)"
moto=""
cleanup() { [ -n "$moto" ] && kill "$moto" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
for _ in $(seq 1 100); do  # bounded: 20 s
  "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null && break
  kill -0 "$moto" 2>/dev/null || { cat "$work/moto.log"; echo "FAIL: moto_server exited" >&2; exit 1; }
  sleep 0.2
done
"$venv/bin/python" "$here/check_delta.py" "$bin" "$work/w" "http://127.0.0.1:$port" "$@"
if [ $# -eq 0 ]; then
  # The seed's Hive DDL in Spark over local tables that were projected in steps, crashed
  # and compacted (the crash section's data dir), with the python that has pyspark.
  python3 "$here/check_spark_hive.py" "$bin" "$work/w/crash-local" "$work/spark"
  # And over registered types' tables, one widened by an ADDITION (the custom section's).
  python3 "$here/check_spark_hive.py" "$bin" "$work/w/custom-local" "$work/spark-custom"
fi
