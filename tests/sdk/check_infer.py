"""`serve --infer-schemas` (docs/CONTRACT.md 13.8) with two real SDKs from PyPI, unmodified but
for their host and key: segment-analytics-python and posthog send events of names questlog
has never seen, with no schema registered. Each name becomes a type (vendor
questlog.inferred) typed from its first values and a Delta table; a property that appears
later is an ADDITION (a new nullable column, null in the rows before it); a value of another
type than the first is rejected `wrong_type` and listed by GET /v1/rejected with its message
id. deltalake reads every table.

Usage: check_infer.py QUESTLOG_BINARY WORKDIR
"""

import json
import os
import sys

import deltalake
from posthog import Posthog
from segment.analytics.client import Client

import common
from common import READ_KEY, WRITE_KEY, fail

BOSSES = ["dragon", "lich", "imp"]


def run(addr, data):
    errors = []
    on_error = lambda e, batch: errors.append((repr(e), len(batch)))
    segment = Client(WRITE_KEY, host=addr, upload_size=100, max_retries=5, on_error=on_error)
    posthog = Posthog(WRITE_KEY, host=addr, flush_at=100, flush_interval=0.5, max_retries=5, on_error=on_error)
    valid = {"boss_defeated": set(), "chest_opened": set()}
    invalid = {}
    with_phase = set()

    # A name never seen: its first values give the types.
    for i in range(1000):
        _, m = segment.track(user_id=f"player-{i % 50}", event="Boss Defeated",
                             properties={"boss": BOSSES[i % 3], "damage": 100 + i, "crit": i % 5 == 0})
        valid["boss_defeated"].add(m["messageId"])
        valid["chest_opened"].add(posthog.capture("Chest Opened", distinct_id=f"player-{i % 50}",
                                                  properties={"chest": f"c{i % 9}", "gold": i % 70}))
    segment.flush()
    posthog.flush()
    # A property the type has not seen: an ADDITION.
    for i in range(500):
        _, m = segment.track(user_id=f"player-{i % 50}", event="Boss Defeated",
                             properties={"boss": BOSSES[i % 3], "damage": 7, "phase": i % 3 + 1})
        valid["boss_defeated"].add(m["messageId"])
        with_phase.add(m["messageId"])
    # Values of another type than the first: wrong_type.
    for i in range(10):
        _, m = segment.track(user_id="player-x", event="Boss Defeated", properties={"boss": "imp", "damage": "lots"})
        invalid[m["messageId"]] = "wrong_type"
        invalid[posthog.capture("Chest Opened", distinct_id="player-x", properties={"chest": "c1", "gold": 2.5})] = "wrong_type"
    for c in (segment, posthog):
        c.flush()
        c.shutdown()
    if errors:
        fail(f"the SDKs reported errors: {errors[:3]}")

    status, body = common.call("GET", addr + "/v1/schemas", key=READ_KEY)
    uris = [s["uri"] for s in json.loads(body)["registered"]]
    expected = ["iglu:questlog.inferred/boss_defeated/jsonschema/1-0-0", "iglu:questlog.inferred/chest_opened/jsonschema/1-0-0",
                "iglu:questlog.inferred/boss_defeated/jsonschema/1-0-1"]
    if sorted(uris) != sorted(expected) or uris[-1] != expected[-1]:
        fail(f"GET /v1/schemas lists {uris}, expected {expected} (the ADDITION last)")
    common.check_tables(addr, data, valid)
    rows = deltalake.DeltaTable(os.path.join(data, "delta", "boss_defeated")).to_pyarrow_table(
        columns=["event_id", "boss", "damage", "crit", "phase"]).to_pylist()
    wrong = [r for r in rows if (r["phase"] is not None) != (r["event_id"] in with_phase) or not isinstance(r["damage"], int)]
    if wrong:
        fail(f"{len(wrong)} boss_defeated rows with the wrong phase or damage, e.g. {wrong[:2]}")
    gold = deltalake.DeltaTable(os.path.join(data, "delta", "chest_opened")).to_pyarrow_table(columns=["gold"]).column("gold").type
    if str(gold) != "int64":
        fail(f"chest_opened.gold is {gold}, expected int64 (BIGINT, from the first values)")
    common.check_rejected(addr, invalid)
    print(f"ok: infer: segment-analytics-python and posthog sent {sum(len(v) for v in valid.values())} events of two names "
          f"never registered; serve --infer-schemas made {', '.join(expected)}; the tables hold each once "
          f"(deltalake; phase null in the {len(valid['boss_defeated']) - len(with_phase)} rows before the ADDITION); "
          f"{len(invalid)} values of another type listed by /v1/rejected as wrong_type with their message ids")


if __name__ == "__main__":
    common.CHECK = "infer"
    binary, work = sys.argv[1], sys.argv[2]
    proc, addr, data = common.serve(binary, work, None, extra=("--infer-schemas",))
    try:
        run(addr, data)
    finally:
        common.stop(proc)
