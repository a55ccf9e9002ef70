"""The seed's Hive DDL, as `questlog ddl` prints it, run in Spark with Hive support: each
table's count equals the log's count of its event type, each event once. Spark reads the
plain-directory view (no Delta jars can be installed here); run with the python that has
pyspark (benches/requirements.txt). Registered types' tables (contract 13.4) too: every
event of such a type is a row of one of its tables, and a column an ADDITION added (whose
older files lack it) reads as null in the older rows and as sent in the newer.

usage: check_spark_hive.py QUESTLOG_BIN DATA_DIR WORK_DIR
"""
import collections
import json
import os
import subprocess
import sys

from pyspark.sql import SparkSession

BIN, DATA, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
TABLES = {"guild_joins": "join_guild", "enemy_kills": "kill_enemy", "quests": "accept_quest",
          "take_damage": "take_damage", "transactions": "buy_asset"}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    counts = collections.Counter()
    lines = []
    replay = subprocess.run([BIN, "--data-dir", DATA, "replay"], capture_output=True, text=True, check=True).stdout
    for line in replay.splitlines():
        lines.append(json.loads(line))
        counts[lines[-1]["event_type"]] += 1
    ddl = subprocess.run([BIN, "--data-dir", DATA, "ddl"], capture_output=True, text=True, check=True).stdout
    hive = ddl.split("-- Spark with Delta Lake")[0]
    statements = [s.strip() for s in hive.split(";") if "create external table" in s]
    names = [s.split("default.", 1)[1].split(" ", 1)[0] for s in statements]
    registered = [n for n in names if n not in TABLES]
    if names[:5] != list(TABLES):
        fail(f"ddl printed Hive statements for {names}:\n{ddl}")
    # Loopback only, and the metastore (Derby) and its log in the work dir, not the cwd.
    os.makedirs(WORK, exist_ok=True)
    os.chdir(WORK)
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    spark = (SparkSession.builder.master("local[1]").appName("questlog-hive-ddl")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.warehouse.dir", WORK + "/warehouse")
             .config("spark.hadoop.javax.jdo.option.ConnectionURL", f"jdbc:derby:;databaseName={WORK}/metastore;create=true")
             .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={WORK}")
             .config("spark.ui.enabled", "false")
             .enableHiveSupport().getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    for s in statements:
        spark.sql(s)
    for table, event_type in TABLES.items():
        n, distinct = spark.sql(f"select count(*), count(distinct log_offset) from default.{table}").collect()[0]
        if n != counts[event_type] or distinct != n:
            fail(f"Spark over the Hive DDL counts {n} rows ({distinct} distinct) in {table}; "
                 f"the log has {counts[event_type]}")
    by_type = collections.Counter()
    for table in registered:
        for event_type, n, distinct in spark.sql(
                f"select event_type, count(*), count(distinct log_offset) from default.{table} group by event_type").collect():
            if distinct != n:
                fail(f"Spark over the Hive DDL counts {n} rows but {distinct} offsets in {table}")
            by_type[event_type] += n
        columns = [r[0] for r in spark.sql(f"describe default.{table}").collect()]
        if "zone" in columns:
            got = {r[0]: r[1] for r in spark.sql(f"select log_offset, zone from default.{table}").collect()}
            sent = {l["log_offset"]: l.get("zone") for l in lines if l["event_type"] == table}
            if got != sent:
                wrong = [o for o in sent if got.get(o, "missing") != sent[o]][:5]
                fail(f"Spark over the Hive DDL reads {table}.zone other than sent at offsets {wrong}")
    for event_type in by_type.keys() | {t for t in counts if t not in TABLES.values()}:
        if by_type[event_type] != counts[event_type]:
            fail(f"Spark over the Hive DDL counts {by_type[event_type]} {event_type} rows in {registered}; "
                 f"the log has {counts[event_type]}")
    spark.stop()
    extra = f" and {len(registered)} registered types' tables {registered}" if registered else ""
    print(f"ok: the Hive DDL in Spark counts the five local tables{extra} exactly ({sum(counts.values())} events)")


if __name__ == "__main__":
    main()
