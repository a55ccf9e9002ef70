"""Segment's Python SDK (segment-analytics-python, from PyPI, unmodified but for its host and
write key) against `questlog serve` (docs/CONTRACT.md 3.9.1).

Two clients (one gzips its batches) send `track` events of a registered type (`level_up`,
registered through POST /v1/schemas) and of a seed type (`Join Guild` -> join_guild), some
`identify` and `page` calls, and invalid events, through their own queues, batching and
retries. A proxy in front of questlog answers one batch 503 after questlog took it, so the
SDK sends that batch again. Then: no batch was dropped by the SDK, every valid event is in
the Delta tables once (read with deltalake), the invalid ones are listed by GET
/v1/rejected with their message ids and reasons, and the other calls are counted. Then by
hand: /v1/track with Basic auth, and the protocol's limits.

Usage: check_segment.py QUESTLOG_BINARY LEVEL_UP_SCHEMA WORKDIR
"""

import base64
import json
import urllib.error
import urllib.request

from segment.analytics.client import Client

import common
from common import WRITE_KEY, fail

CLASSES = ["warrior", "mage", "rogue"]


def run(addr, data):
    proxy, host = common.proxy_to(addr, forced=3)
    errors = []
    on_error = lambda e, batch: errors.append((repr(e), len(batch)))
    clients = [Client(WRITE_KEY, host=host, gzip=gz, upload_size=100, max_retries=5, on_error=on_error) for gz in (True, False)]

    valid = {"level_up": set(), "guild_joins": set()}
    invalid = {}  # message id -> expected reason
    for i in range(3000):
        c = clients[i % 2]
        user = f"player-{i % 97}"
        if i % 3 == 0:
            ok, msg = c.track(user_id=user, event="Join Guild", properties={"guild_id": i % 40, "name": f"guild {i % 40}"})
            valid["guild_joins"].add(msg["messageId"])
        else:
            ok, msg = c.track(anonymous_id=user, event="Level Up", properties={"level": i % 100 + 1, "class": CLASSES[i % 3]})
            valid["level_up"].add(msg["messageId"])
        if not ok:
            fail(f"the SDK refused to queue event {i}")
    for i in range(20):
        clients[i % 2].identify(user_id=f"player-{i}", traits={"plan": "free"})
    for i in range(10):
        clients[i % 2].page(user_id=f"player-{i}", name="Shop")
    for i in range(15):
        _, m = clients[0].track(user_id="p", event="Level Up", properties={"level": "high", "class": "mage"})
        invalid[m["messageId"]] = "wrong_type"
        _, m = clients[1].track(user_id="p", event="Summon Dragon", properties={"size": 3})
        invalid[m["messageId"]] = "unknown_event_type"
    for i in range(10):
        _, m = clients[0].track(user_id="p", event="Join Guild", properties={"guild_id": 1, "name": "x", "player_id": "someone"})
        invalid[m["messageId"]] = "server_owned_field"
    for c in clients:
        c.flush()
        c.shutdown()
    proxy.shutdown()
    if errors:
        fail(f"the SDK gave up on batches: {errors[:3]}")
    forced = common.check_forced_retry(proxy)
    sent = sum(len(v) for v in valid.values())

    # By hand, as the protocol allows: /v1/track with Basic auth; the limits.
    basic = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    def post(path, payload):
        req = urllib.request.Request(addr + path, data=payload, method="POST",
                                     headers={"Authorization": basic, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
    one = {"event": "Level Up", "userId": "player-x", "messageId": "by-hand-1", "properties": {"level": 3, "class": "rogue"}}
    status, answer = post("/v1/track", json.dumps(one).encode())
    if status != 200 or answer.get("accepted") != 1 or answer.get("success") is not True:
        fail(f"/v1/track answered {status} {answer}")
    valid["level_up"].add("by-hand-1")
    big = {"type": "track", "event": "Level Up", "userId": "player-x", "messageId": "by-hand-big",
           "properties": {"level": 3, "class": "rogue", "note": "x" * (33 * 1024)}}
    fine = dict(one, type="track", messageId="by-hand-2")
    status, answer = post("/v1/batch", json.dumps({"batch": [big, fine]}).encode())
    if status != 200 or answer.get("accepted") != 1 or [r["reason"] for r in answer.get("rejected", [])] != ["too_large"]:
        fail(f"a batch with a message over 32 KiB answered {status} {answer}")
    valid["level_up"].add("by-hand-2")
    invalid["by-hand-big"] = "too_large"
    status, answer = post("/v1/batch", json.dumps({"batch": [dict(fine, messageId=f"m{i}") for i in range(6000)]}).encode())
    if status != 413:
        fail(f"a batch over 500 KiB answered {status} {answer}")
    # Without a key, or with a wrong one, every SDK route answers 401 and stores nothing
    # (the tables' exact counts below would show anything stored).
    for path, method in [("/v1/batch", "POST"), ("/v1/track", "POST"), ("/batch/", "POST"), ("/i/v1/analytics/events", "POST"),
                         ("/com.snowplowanalytics.snowplow/tp2", "POST"), ("/i?e=pv&url=x", "GET")]:
        for headers in ({}, {"X-API-Key": "not-a-key"}):
            req = urllib.request.Request(addr + path, data=json.dumps({"batch": [dict(fine, messageId="nokey")]}).encode()
                                         if method == "POST" else None, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            if code != 401:
                fail(f"{method} {path} with {headers or 'no key'} answered {code}, not 401")

    common.check_tables(addr, data, valid)
    common.check_rejected(addr, invalid)
    counted = common.counted(addr, "segment")
    if counted.get("identify") != 20 or counted.get("page") != 10:
        fail(f"identify and page calls counted as {counted}, expected 20 and 10")
    print(f"ok: segment: segment-analytics-python (2 clients, one gzipping) sent {sent} valid track events in "
          f"{proxy.posts} posts; one answered 503 after questlog took it ({forced} events) was sent again and "
          f"dropped as {forced} duplicates; the tables hold each valid event once "
          f"({len(valid['level_up'])} level_up, {len(valid['guild_joins'])} guild_joins, read with deltalake); "
          f"{len(invalid)} invalid events listed by /v1/rejected with their message ids and reasons; identify 20 and page 10 counted; "
          f"/v1/track with Basic auth, a message over 32 KiB rejected in its batch, a batch over 500 KiB answered 413; every SDK route 401 without a key")


if __name__ == "__main__":
    common.main("segment", run)
