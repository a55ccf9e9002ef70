"""The seed's Spark job, as a baseline: read the API's JSON lines, split them by
event_type into the five tables with the seed's columns, write Parquet (SNAPPY), then
compute findings with Spark SQL. Local mode, as many cores as the machine has.

usage: spark-submit spark_job.py EVENTS_JSONL OUT_DIR   (or: python3 spark_job.py ...)
Prints one line per phase: "<phase> <seconds>".
"""
import sys
import time

from pyspark.sql import SparkSession, functions as F

TABLES = {
    "guild_joins": ("join_guild", ["guild_id:bigint", "name:string"]),
    "enemies_killed": ("kill_enemy", ["enemy_id:bigint", "name:string", "level:smallint"]),
    "quest_accept": ("accept_quest", ["quest_id:bigint", "name:string", "contact:string"]),
    "damage_taken": ("take_damage", ["enemy_id:bigint", "name:string", "damage:smallint"]),
    "transactions": ("buy_asset", ["store_id:bigint", "item_name:string", "inventory_id:bigint",
                                   "total_cost:float", "category:string", "on_hand_qty:smallint"]),
}


def main():
    src, out = sys.argv[1], sys.argv[2]
    spark = (SparkSession.builder.master("local[*]").appName("questlog-baseline")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.parquet.compression.codec", "snappy")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")

    t = time.time()
    raw = spark.read.text(src).withColumnRenamed("value", "raw_event")
    for location, (event_type, fields) in TABLES.items():
        schema = ", ".join(f"{n} {t}" for n, t in (f.split(":") for f in fields))
        df = (raw.where(F.get_json_object("raw_event", "$.event_type") == event_type)
              .select("raw_event", F.from_json("raw_event", "event_type string, timestamp string, Accept string, "
                                               "Host string, `User-Agent` string, " + schema).alias("e"))
              .select("raw_event", "e.timestamp", F.col("e.Accept").alias("accept"), F.col("e.Host").alias("host"),
                      F.col("e.`User-Agent`").alias("user_agent"), "e.event_type",
                      *[F.col("e." + f.split(":")[0]) for f in fields]))
        df.write.mode("overwrite").parquet(f"{out}/{location}")
    print(f"project {time.time() - t:.3f}", flush=True)

    t = time.time()
    for location in TABLES:
        spark.read.parquet(f"{out}/{location}").createOrReplaceTempView(location)
    queries = [
        "SELECT category, count(*) AS units, round(sum(total_cost), 2) AS revenue FROM transactions GROUP BY category ORDER BY revenue DESC",
        "SELECT item_name, store_id, round(sum(total_cost), 2) AS revenue FROM transactions GROUP BY item_name, store_id ORDER BY revenue DESC LIMIT 10",
        "SELECT name, count(*) AS joins FROM guild_joins GROUP BY name ORDER BY joins DESC",
        "SELECT name, count(*) AS kills, avg(level) AS mean_level FROM enemies_killed GROUP BY name ORDER BY kills DESC",
        "SELECT name, count(*) AS hits, percentile_approx(damage, 0.5) AS p50, percentile_approx(damage, 0.9) AS p90, max(damage) AS max FROM damage_taken GROUP BY name",
        "SELECT contact, count(*) AS accepted FROM quest_accept GROUP BY contact ORDER BY accepted DESC",
    ]
    for q in queries:
        spark.sql(q).collect()
    print(f"report {time.time() - t:.3f}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
