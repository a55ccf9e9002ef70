"""Reads questlog's five Parquet tables with pyarrow and DuckDB and checks them against
the log (a `questlog replay` JSONL file) and the contract's columns and types.

usage: check_tables.py DATA_DIR REPLAY_JSONL
"""
import collections
import glob
import json
import os
import sys

import duckdb
import pyarrow.parquet as pq

COMMON_HEAD = ["raw_event", "timestamp", "accept", "host", "user_agent", "event_type"]
COMMON_TAIL = ["log_offset", "event_id", "player_id", "session_id", "event_time"]
# table, location, event_type, [(column, physical type, logical/converted annotation)]
TABLES = [
    ("guild_joins", "guild_joins", "join_guild", [("guild_id", "INT64", None), ("name", "BYTE_ARRAY", "String")]),
    ("enemy_kills", "enemies_killed", "kill_enemy",
     [("enemy_id", "INT64", None), ("name", "BYTE_ARRAY", "String"), ("level", "INT32", "INT_16")]),
    ("quests", "quest_accept", "accept_quest",
     [("quest_id", "INT64", None), ("name", "BYTE_ARRAY", "String"), ("contact", "BYTE_ARRAY", "String")]),
    ("take_damage", "damage_taken", "take_damage",
     [("enemy_id", "INT64", None), ("name", "BYTE_ARRAY", "String"), ("damage", "INT32", "INT_16")]),
    ("transactions", "transactions", "buy_asset",
     [("store_id", "INT64", None), ("item_name", "BYTE_ARRAY", "String"), ("inventory_id", "INT64", None),
      ("total_cost", "FLOAT", None), ("category", "BYTE_ARRAY", "String"), ("on_hand_qty", "INT32", "INT_16")]),
]


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    data_dir, replay = sys.argv[1], sys.argv[2]
    counts = collections.Counter()
    with open(replay, encoding="utf-8") as f:
        for line in f:
            counts[json.loads(line)["event_type"]] += 1
    con = duckdb.connect()
    for table, location, event_type, fields in TABLES:
        files = sorted(glob.glob(os.path.join(data_dir, "tables", location, "*.parquet")))
        if not files:
            fail(f"{table}: no Parquet files in tables/{location}")
        rows = 0
        for path in files:
            pf = pq.ParquetFile(path)
            rows += pf.metadata.num_rows
            names = [c.name for c in pf.schema]
            expected = COMMON_HEAD + [n for n, _, _ in fields] + COMMON_TAIL
            if names != expected:
                fail(f"{path}: columns {names}, expected {expected}")
            for i, col in enumerate(pf.schema):
                if pf.metadata.row_group(0).column(i).compression != "SNAPPY":
                    fail(f"{path}: column {col.name} is not SNAPPY")
            for name, physical, annotation in fields:
                col = pf.schema.column(names.index(name))
                if col.physical_type != physical:
                    fail(f"{table}.{name}: physical {col.physical_type}, expected {physical}")
                if annotation == "INT_16":
                    if col.converted_type != "INT_16" or str(col.logical_type) != "Int(bitWidth=16, isSigned=true)":
                        fail(f"{table}.{name}: {col.converted_type} {col.logical_type}, expected INT_16")
                if annotation == "String" and str(col.logical_type) != "String":
                    fail(f"{table}.{name}: logical {col.logical_type}, expected String")
            for name in COMMON_HEAD:
                col = pf.schema.column(names.index(name))
                if col.physical_type != "BYTE_ARRAY" or str(col.logical_type) != "String":
                    fail(f"{table}.{name}: {col.physical_type} {col.logical_type}, expected UTF8 string")
            off = pf.schema.column(names.index("log_offset"))
            if off.physical_type != "INT64":
                fail(f"{table}.log_offset: {off.physical_type}")
            et = pf.schema.column(names.index("event_time"))
            if et.physical_type != "INT64" or not (
                    "isAdjustedToUTC=true" in str(et.logical_type) and "timeUnit=microseconds" in str(et.logical_type)):
                fail(f"{table}.event_time: {et.physical_type} {et.logical_type}, expected TIMESTAMP(MICROS, UTC)")
        if rows != counts[event_type]:
            fail(f"{table}: pyarrow reads {rows} rows, the log has {counts[event_type]} {event_type} events")
        glob_path = os.path.join(data_dir, "tables", location, "*.parquet")
        (n,) = con.execute(f"SELECT count(*) FROM read_parquet('{glob_path}')").fetchone()
        if n != counts[event_type]:
            fail(f"{table}: DuckDB reads {n} rows, the log has {counts[event_type]}")
        (bad,) = con.execute(
            f"SELECT count(*) FROM read_parquet('{glob_path}') WHERE event_type <> '{event_type}'").fetchone()
        if bad:
            fail(f"{table}: {bad} rows of another event type")
        print(f"ok: {table:<13} {rows:>6} rows in {len(files)} file(s), pyarrow = DuckDB = log")


if __name__ == "__main__":
    main()
