#!/usr/bin/env bash
# Checks with real outside clients against the real binary (run by .ci/run):
#  1. Apache Bench, as in the seed: `ab -n 2000 -c 8` on a seed-style route → 0 failed
#     requests and exactly 2000 new events in the log.
#  2. pyarrow and DuckDB read all five tables: row counts equal the log's counts per
#     event type; column names and Parquet physical/logical types match the contract.
#  3. quickstart --exit, and headless Chromium renders the report's charts.
#  4. schemathesis, driven by GET /openapi.json of a server with two registered event
#     types, finds no mismatch with any of its checks (--checks all; three rules of the
#     contract OpenAPI cannot state are in tests/external/schemathesis.toml).
#  5. A store catalogue made by hand with the sqlite3 tool: serve --catalog accepts and
#     rejects purchases as documented and fills in the seed's GET /buy_asset; generated
#     traffic from the same catalogue is all accepted; `sql`'s join of purchases with the
#     catalogue equals DuckDB's over the same Parquet files and the same SQLite file.
#  6. The jsonschema package reads questlog's event type schemas: the built-in five are
#     valid JSON Schema, generated events valid against them, refused values invalid.
# Usage: tests/external/run.sh [path/to/questlog]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../target/release/questlog}"
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
passed=0

# Starts `serve` on an ephemeral port in data dir $1 (more serve arguments after it);
# sets $pid and $addr.
start_server() {
  local dir="$1"; shift
  "$bin" --data-dir "$dir" serve --listen 127.0.0.1:0 "$@" >"$work/serve.out" 2>"$work/serve.err" &
  pid=$!
  addr=""
  for _ in $(seq 1 300); do  # bounded: 30 s
    addr=$(grep -o 'http://[0-9.:]*' "$work/serve.out" | head -n 1 || true)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || fail "serve exited: $(cat "$work/serve.err")"
    sleep 0.1
  done
  [ -n "$addr" ] || fail "serve did not print its address"
  python3 "$here/wait_healthy.py" "$addr" || fail "serve not healthy"
}

stop_server() {
  kill -TERM "$pid"
  wait "$pid" || fail "serve did not exit cleanly"
  pid=""
}

echo "-- ab -n 2000 -c 8 against a seed-style route"
start_server "$work/ab"
before=$("$bin" --data-dir "$work/ab" replay | wc -l)
ab -q -n 2000 -c 8 "$addr/join_guild?guild_id=7&name=Knights" >"$work/ab.out" 2>&1 || { cat "$work/ab.out"; fail "ab failed"; }
grep -E '^(Complete|Failed) requests|^Requests per second|^Non-2xx' "$work/ab.out"
grep -Eq '^Complete requests: +2000$' "$work/ab.out" || fail "ab did not complete 2000 requests"
grep -Eq '^Failed requests: +0$' "$work/ab.out" || fail "ab saw failed requests"
if grep -q '^Non-2xx' "$work/ab.out"; then fail "ab saw non-2xx responses"; fi
stop_server
after=$("$bin" --data-dir "$work/ab" replay | wc -l)
[ $((after - before)) -eq 2000 ] || fail "expected 2000 new events in the log, found $((after - before))"
echo "ok: 2000 requests, 0 failed, 2000 new events in the log"
passed=$((passed + 1))

echo "-- pyarrow and DuckDB read the five tables"
"$bin" --data-dir "$work/t" generate --seed 11 --events 30000 >/dev/null
"$bin" --data-dir "$work/t" project >/dev/null
"$bin" --data-dir "$work/t" replay >"$work/replay.jsonl"
python3 "$here/check_tables.py" "$work/t" "$work/replay.jsonl"
passed=$((passed + 1))

echo "-- quickstart --exit, then the HTML report in headless Chromium"
(cd "$work" && "$bin" --data-dir "$work/qs" quickstart --exit --listen 127.0.0.1:0 >"$work/qs.out" 2>"$work/qs.err") \
  || { cat "$work/qs.err"; fail "quickstart failed"; }
grep -q "== Findings (100000 events) ==" "$work/qs.out" || fail "quickstart printed no findings"
grep -q "Revenue:" "$work/qs.out" || fail "quickstart findings lack revenue"
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/chromium" --dump-dom "file://$work/qs/report/report.html" \
  >"$work/dom.html" 2>"$work/chromium.err" || { tail -5 "$work/chromium.err"; fail "chromium could not open the report"; }
python3 "$here/check_html.py" "$work/dom.html" "$work/qs/report/report.html"
passed=$((passed + 1))

echo "-- schemathesis --checks all against GET /openapi.json, with two registered types (tests/external/schemas)"
start_server "$work/st" --schemas "$here/schemas"
(cd "$work" && schemathesis --config-file "$here/schemathesis.toml" run "$addr/openapi.json" --checks all --max-examples 50 --seed 1 >"$work/st.out" 2>&1) \
  || { grep -E "^(___|- ST|\[[0-9]{3}\])" "$work/st.out" | cut -c1-300 | head -40; tail -20 "$work/st.out" | cut -c1-300; fail "schemathesis found mismatches between /openapi.json and the server"; }
grep -E "Test cases|generated" "$work/st.out" | tail -n 1
stop_server
passed=$((passed + 1))

echo "-- a store catalogue made with the sqlite3 tool: serve --catalog, GET /buy_asset, sql against DuckDB"
"$bin" catalog schema | sqlite3 "$work/shop.sqlite"
sqlite3 "$work/shop.sqlite" <<'SQL'
INSERT INTO stores (store_id, name, traffic_weight, restock_interval_hours) VALUES
  (10, 'Harbour Chandlery', 2.0, 3),
  (20, 'Night Market', 1.0, 0);
INSERT INTO items (store_id, inventory_id, name, category, unit_price_cents, starting_stock, restock_qty, min_level) VALUES
  (10, 501, 'Rope (50 ft)', 'gear', 150, 900, 300, 1),
  (10, 502, 'Grappling Hook', 'gear', 1200, 200, 60, 1),
  (10, 503, 'Sea Chart', 'map', 3500, 80, 20, 3),
  (20, 901, 'Smoke Bomb', 'consumable', 400, 300, 0, 1),
  (20, 902, 'Lantern Oil', 'consumable', 250, 40, 0, 1),
  (20, 903, 'Masked Cloak', 'cosmetic', 9900, 12, 0, 2);
SQL
# (sed reads it all: with `head`, questlog may still be printing when head exits.)
"$bin" catalog show "$work/shop.sqlite" | sed -n 1p
start_server "$work/cat" --catalog "$work/shop.sqlite"
python3 "$here/check_catalog.py" serve "$addr"
"$bin" --data-dir "$work/cat" generate --url "$addr" --catalog "$work/shop.sqlite" --seed 4 --events 5000 --players 100 >"$work/gen.out" \
  || { cat "$work/gen.out"; fail "generated traffic from the catalogue failed"; }
grep -q " 5000 accepted, 0 rejected" "$work/gen.out" || { cat "$work/gen.out"; fail "the server rejected traffic generated from its own catalogue"; }
stop_server
"$bin" --data-dir "$work/cat" project >/dev/null
"$bin" --data-dir "$work/cat" sql "select c.store_name, c.category, count(*) as purchases, sum(cast(round(t.total_cost * 100) as bigint)) as revenue_cents, sum(c.unit_price_cents) as list_cents_per_unit from transactions t join catalog_items c using (store_id, inventory_id) group by c.store_name, c.category order by 1, 2" --format csv >"$work/questlog.csv"
python3 "$here/check_catalog.py" compare "$work/cat" "$work/shop.sqlite" "$work/questlog.csv"
passed=$((passed + 1))

echo "-- event type schemas read by the jsonschema package"
"$bin" --data-dir "$work/schemas" generate --seed 9 --events 3000 >/dev/null
python3 "$here/check_schemas.py" "$bin" "$work/schemas"
passed=$((passed + 1))

echo "$passed passed, 0 failed"
