#!/usr/bin/env python3
"""What a data engineer would use instead of questlog, timed on the same events
(benches/run.sh runs this beside `project --rebuild` and `report`).

usage:
  peers.py duckdb-project EVENTS.ndjson OUT_DIR   DuckDB: read_json -> five SNAPPY Parquet files
  peers.py polars-project EVENTS.ndjson OUT_DIR   Polars: scan_ndjson -> sink_parquet, five files
  peers.py duckdb-report TABLES_DIR               DuckDB: the report's headline queries over
                                                  questlog's own Parquet tables

EVENTS.ndjson is `questlog replay` of the log: one JSON line per event, every column of its
table at the top level. Each command prints `seconds S` (the work alone, the interpreter's
start-up excluded) and `rows N` (rows written or events counted), for run.sh to check
against the log.
"""
import os
import sys
import time

# The five tables: (file, event type, the type's own columns), as questlog projects them.
TABLES = [
    ("guild_joins", "join_guild", ["guild_id", "name"]),
    ("enemies_killed", "kill_enemy", ["enemy_id", "name", "level"]),
    ("quest_accept", "accept_quest", ["quest_id", "name", "contact"]),
    ("damage_taken", "take_damage", ["enemy_id", "name", "damage"]),
    ("transactions", "buy_asset", ["store_id", "item_name", "inventory_id", "total_cost", "category", "on_hand_qty"]),
]
COMMON = ["raw_event", "timestamp", "accept", "host", "user_agent", "event_type"]
TRAILING = ["log_offset", "event_id", "player_id", "session_id", "event_time"]
# Every member of a replay line, typed as questlog's tables type them: given, not
# inferred, so that neither peer pays for (or guesses wrong in) schema inference.
DUCKDB_TYPES = {
    "log_offset": "BIGINT", "event_type": "VARCHAR", "guild_id": "BIGINT", "name": "VARCHAR",
    "enemy_id": "BIGINT", "level": "SMALLINT", "quest_id": "BIGINT", "contact": "VARCHAR",
    "damage": "SMALLINT", "store_id": "BIGINT", "item_name": "VARCHAR", "inventory_id": "BIGINT",
    "total_cost": "FLOAT", "category": "VARCHAR", "on_hand_qty": "SMALLINT", "event_id": "VARCHAR",
    "player_id": "VARCHAR", "session_id": "VARCHAR", "event_time": "TIMESTAMPTZ", "timestamp": "VARCHAR",
    "accept": "VARCHAR", "host": "VARCHAR", "user_agent": "VARCHAR", "app": "VARCHAR", "raw_event": "VARCHAR",
}


def columns(fields):
    return COMMON + fields + TRAILING


def duckdb_project(events, out):
    import duckdb

    os.makedirs(out, exist_ok=True)
    con = duckdb.connect()
    started = time.monotonic()
    cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in DUCKDB_TYPES.items()) + "}"
    # Read once into DuckDB's own storage, then one COPY per table: what a user would write.
    con.execute(f"CREATE TABLE ev AS SELECT * FROM read_json('{events}', format = 'newline_delimited', columns = {cols})")
    rows = 0
    for name, event_type, fields in TABLES:
        select = ", ".join(f'"{c}"' for c in columns(fields))
        path = os.path.join(out, f"{name}.parquet")
        con.execute(f"COPY (SELECT {select} FROM ev WHERE event_type = '{event_type}' ORDER BY log_offset) TO '{path}' (FORMAT parquet, COMPRESSION snappy)")
        rows += con.execute(f"SELECT count(*) FROM '{path}'").fetchone()[0]
    print(f"seconds {time.monotonic() - started:.3f}")
    print(f"rows {rows}")


def polars_project(events, out):
    import polars as pl

    os.makedirs(out, exist_ok=True)
    # Polars' NDJSON reader takes 64-bit numbers and text only: narrower types and the
    # timestamp are cast after reading.
    read_as = {"BIGINT": pl.Int64, "SMALLINT": pl.Int64, "FLOAT": pl.Float64, "VARCHAR": pl.String, "TIMESTAMPTZ": pl.String}
    schema = {k: read_as[v] for k, v in DUCKDB_TYPES.items()}
    casts = [pl.col(k).cast(pl.Int16) for k, v in DUCKDB_TYPES.items() if v == "SMALLINT"]
    casts += [pl.col(k).cast(pl.Float32) for k, v in DUCKDB_TYPES.items() if v == "FLOAT"]
    casts.append(pl.col("event_time").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC", time_unit="us"))
    started = time.monotonic()
    scan = pl.scan_ndjson(events, schema=schema)
    # One streaming sink per table, each scanning the file: memory stays bounded (1.3 GB
    # at 10^6 events). One plan for the five sinks (`pl.collect_all`) scanned once and
    # was ~10% faster, but held 4.4 GB at 10^6 events, which 10^7 would not fit.
    for name, event_type, fields in TABLES:
        frame = scan.filter(pl.col("event_type") == event_type).with_columns(casts).select(columns(fields))
        frame.sink_parquet(os.path.join(out, f"{name}.parquet"), compression="snappy")
    rows = sum(pl.scan_parquet(os.path.join(out, f"{n}.parquet")).select(pl.len()).collect().item() for n, _, _ in TABLES)
    print(f"seconds {time.monotonic() - started:.3f}")
    print(f"rows {rows}")


# The report's summary, one query per headline (fixtures/report-seed42-20000.md, "Summary of
# Findings"), over questlog's tables as any engine reads them.
REPORT_QUERIES = {
    "overview": """
        WITH e AS (SELECT player_id, session_id, coalesce(event_time, CAST("timestamp" AS TIMESTAMPTZ)) AS t FROM all_events)
        SELECT count(*), count(DISTINCT player_id), count(DISTINCT session_id), min(t), max(t) FROM e""",
    "revenue by category": "SELECT category, sum(total_cost) AS revenue, count(*) FROM transactions GROUP BY category ORDER BY revenue DESC",
    "best-selling item": "SELECT store_id, item_name, sum(total_cost) AS revenue, count(*) FROM transactions GROUP BY ALL ORDER BY revenue DESC LIMIT 10",
    "stock": "SELECT store_id, item_name, min(on_hand_qty) AS lowest, count(*) FROM transactions GROUP BY ALL ORDER BY lowest",
    "largest guild": "SELECT name, count(DISTINCT player_id) AS members, count(*) AS joins FROM guild_joins GROUP BY name ORDER BY members DESC",
    "most killed enemy": "SELECT name, count(*) AS kills, avg(level) FROM enemy_kills GROUP BY name ORDER BY kills DESC",
    "hardest hitter": "SELECT name, quantile_disc(damage, 0.9) AS p90, max(damage), count(*) FROM take_damage GROUP BY name ORDER BY p90 DESC",
    "top quest contact": "SELECT contact, count(*) AS quests FROM quests GROUP BY contact ORDER BY quests DESC",
    "funnel": "SELECT count(*) FILTER (WHERE types = 5), count(*) FROM (SELECT player_id, count(DISTINCT event_type) AS types FROM all_events GROUP BY player_id)",
}


def duckdb_report(tables):
    import duckdb

    # Resolve DATA_DIR/tables once: the generation it names stays whole while read.
    tables = os.path.realpath(tables)
    con = duckdb.connect()
    started = time.monotonic()
    views = {"guild_joins": "guild_joins", "enemy_kills": "enemies_killed", "quests": "quest_accept", "take_damage": "damage_taken", "transactions": "transactions"}
    for view, location in views.items():
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{tables}/{location}/*.parquet')")
    union = " UNION ALL ".join(f'SELECT player_id, session_id, event_time, "timestamp", event_type FROM {v}' for v in views)
    con.execute(f"CREATE VIEW all_events AS {union}")
    events = 0
    for name, sql in REPORT_QUERIES.items():
        result = con.execute(sql).fetchall()
        if name == "overview":
            events = result[0][0]
    print(f"seconds {time.monotonic() - started:.3f}")
    print(f"rows {events}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    command, args = sys.argv[1], sys.argv[2:]
    if command == "duckdb-project" and len(args) == 2:
        duckdb_project(*args)
    elif command == "polars-project" and len(args) == 2:
        polars_project(*args)
    elif command == "duckdb-report" and len(args) == 1:
        duckdb_report(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
