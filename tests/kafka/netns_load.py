"""The load host of tests/kafka/netns.py, run inside its network namespace: threads post
batches of fresh events to the nodes in turn (a batch that fails is sent again, to the
next node, as a client would) until STOP_FILE exists; then writes the ids it sent and
the ids acknowledged (a 200 counting every event) as JSON to OUT_FILE.

usage: netns_load.py OUT_FILE STOP_FILE BASE_URL [BASE_URL ...]
"""
import collections
import json
import os
import random
import sys
import threading
import time
import urllib.request

OUT, STOP, BASES = sys.argv[1], sys.argv[2], sys.argv[3:]
KINDS = [{"event_type": "take_damage", "enemy_id": 3, "name": "Orc", "damage": 5},
         {"event_type": "join_guild", "guild_id": 4, "name": "Knights"},
         {"event_type": "buy_asset", "store_id": 1, "item_name": "sword", "inventory_id": 9, "total_cost": 2.5,
          "category": "weapon", "on_hand_qty": 3}]
sent, acked, lock = set(), set(), threading.Lock()
counts = {"ok": 0, "failed": 0}
errors = collections.Counter()


def worker(w):
    n, attempt, batch = 0, w, None
    while not os.path.exists(STOP):
        if batch is None:
            batch = [dict(KINDS[(n + i) % 3], player_id=f"p{random.randrange(500)}", event_id=f"n{w}-{n + i}") for i in range(50)]
            n += 50
            with lock:
                sent.update(e["event_id"] for e in batch)
        base = BASES[attempt % len(BASES)]
        ok = False
        try:
            req = urllib.request.Request(base + "/v1/events", data=json.dumps(batch).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=20) as r:
                body = json.loads(r.read())
                ok = r.status == 200 and body.get("accepted") == len(batch)
                if not ok:
                    errors[f"{r.status} {str(body)[:200]}"] += 1
        except Exception as e:
            ok = False
            errors[f"{type(e).__name__}: {str(e)[:200]}"] += 1
        with lock:
            if ok:
                acked.update(e["event_id"] for e in batch)
                counts["ok"] += 1
                batch = None
            else:
                counts["failed"] += 1
                attempt += 1
        if batch is not None:
            time.sleep(0.2)


threads = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(OUT, "w") as f:
    json.dump({"sent": sorted(sent), "acked": sorted(acked), "counts": counts, "errors": errors.most_common(5)}, f)
