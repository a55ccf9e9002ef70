"""The seed's Hive DDL, as `questlog ddl` prints it, run in Spark with Hive support: each
table's count equals the log's count of its event type, each event once. Spark reads the
plain-directory view (no Delta jars can be installed here); run with the python that has
pyspark (benches/requirements.txt).

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
    replay = subprocess.run([BIN, "--data-dir", DATA, "replay"], capture_output=True, text=True, check=True).stdout
    for line in replay.splitlines():
        counts[json.loads(line)["event_type"]] += 1
    ddl = subprocess.run([BIN, "--data-dir", DATA, "ddl"], capture_output=True, text=True, check=True).stdout
    hive = ddl.split("-- Spark with Delta Lake")[0]
    statements = [s.strip() for s in hive.split(";") if "create external table" in s]
    if len(statements) != 5:
        fail(f"ddl printed {len(statements)} Hive statements:\n{ddl}")
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
    spark.stop()
    print(f"ok: the seed's Hive DDL in Spark counts the five local tables exactly ({sum(counts.values())} events)")


if __name__ == "__main__":
    main()
