"""The store catalogue against outside tools (run by tests/external/run.sh).

  check_catalog.py serve ADDR
      A server started with `--catalog` on the catalogue run.sh made with the sqlite3
      tool: purchases that agree with it are accepted, the others rejected with the
      documented reason and field; the seed's `GET /buy_asset?store_id=…&inventory_id=…`
      is filled in from it.
  check_catalog.py compare DATA_DIR CATALOG.sqlite QUESTLOG.csv
      `questlog sql`'s join of purchases with `catalog_items` (QUESTLOG.csv) equals
      DuckDB's over the same Parquet files (the plain view) and the same SQLite file,
      read with Python's sqlite3 module into DuckDB.
"""
import csv
import json
import os
import sqlite3
import sys
import urllib.error
import urllib.request

import duckdb
import pyarrow as pa


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def request(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def buy(store, inv, name, category, cost, eid):
    return {"event_type": "buy_asset", "store_id": store, "inventory_id": inv, "item_name": name, "category": category,
            "total_cost": cost, "on_hand_qty": 5, "event_id": eid}


def serve(addr):
    cases = [
        (buy(10, 501, "Rope (50 ft)", "gear", 1.5, "x1"), None),
        (buy(10, 501, "Rope (50 ft)", "gear", 1.0, "x2"), None),  # a discount is fine
        (buy(30, 501, "Rope (50 ft)", "gear", 1.5, "x3"), ("unknown_store", "store_id")),
        (buy(10, 777, "Rope (50 ft)", "gear", 1.5, "x4"), ("unknown_item", "inventory_id")),
        (buy(10, 501, "Rope", "gear", 1.5, "x5"), ("catalog_mismatch", "item_name")),
        (buy(10, 501, "Rope (50 ft)", "tools", 1.5, "x6"), ("catalog_mismatch", "category")),
    ]
    status, v = request("POST", f"{addr}/v1/events", json.dumps([c for c, _ in cases]).encode())
    if status != 200 or v["accepted"] != 2:
        fail(f"POST: {status} {v}")
    want = [(i, r, f) for i, (_, e) in enumerate(cases) if e for r, f in [e]]
    got = [(r["index"], r["reason"], r["field"]) for r in v["rejected"]]
    if got != want:
        fail(f"rejections {got}, expected {want}")
    status, v = request("GET", f"{addr}/buy_asset?store_id=20&inventory_id=902&quantity=3")
    if status != 200 or v["accepted"] != 1:
        fail(f"GET /buy_asset: {status} {v}")
    status, v = request("GET", f"{addr}/buy_asset?store_id=20&inventory_id=999")
    if status != 400 or v["rejected"][0]["reason"] != "unknown_item":
        fail(f"GET /buy_asset of an unknown item: {status} {v}")
    with urllib.request.urlopen(f"{addr}/v1/replay?from=2&to=3", timeout=30) as r:
        line = json.loads(r.read().decode().splitlines()[0])
    raw = json.loads(line["raw_event"])
    if (raw["item_name"], raw["category"], raw["total_cost"], raw["on_hand_qty"]) != ("Lantern Oil", "consumable", 7.5, 37):
        fail(f"the seed-style purchase was not filled in from the catalogue: {raw}")
    print("ok: 2 purchases accepted, 4 rejected with reason and field; GET /buy_asset filled in "
          f"({raw['item_name']}, {raw['category']}, {raw['total_cost']}, on hand {raw['on_hand_qty']})")


QUERY_DUCKDB = """
select c.store_name, c.category, count(*) as purchases,
       sum(cast(round(t.total_cost * 100) as bigint)) as revenue_cents,
       sum(c.unit_price_cents) as list_cents_per_unit
from transactions t join catalog_items c using (store_id, inventory_id)
group by c.store_name, c.category order by 1, 2
"""


def compare(data_dir, catalog, questlog_csv):
    gen = os.path.realpath(os.path.join(data_dir, "tables"))
    con = duckdb.connect()
    con.execute(f"create view transactions as select * from read_parquet('{gen}/transactions/*.parquet')")
    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    for table in ("stores", "items"):
        cur = db.execute(f"select * from {table}")
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
        con.register(f"sqlite_{table}", pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}))
    con.execute("create view catalog_items as select s.name as store_name, i.* from sqlite_items i join sqlite_stores s using (store_id)")
    duck = [tuple(str(x) for x in row) for row in con.execute(QUERY_DUCKDB).fetchall()]
    with open(questlog_csv, newline="") as f:
        ours = [tuple(row) for row in csv.reader(f)][1:]
    if not duck:
        fail("DuckDB found no purchases")
    if ours != duck:
        fail(f"questlog sql and DuckDB disagree:\n questlog: {ours}\n duckdb:   {duck}")
    print(f"ok: questlog sql and DuckDB (Parquet + the SQLite file) agree on {len(duck)} groups, "
          f"{sum(int(r[2]) for r in duck)} purchases")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
