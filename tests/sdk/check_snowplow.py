"""Snowplow's Python tracker (snowplow-tracker, from PyPI, unmodified but for its collector
and a requests session that sends questlog's key; the tracker has no key of its own)
against `questlog serve` (docs/CONTRACT.md 3.9.3), in both methods: POST
(`/com.snowplowanalytics.snowplow/tp2`, batches of 10, `ue_px` base64) and GET (`/i`, one
event a request, `ue_pr` plain JSON).

Self-describing events of the registered `level_up` schema and of the built-in
`join_guild` (`iglu:io.questlog/join_guild/…`), page views (counted), and invalid events
(an unregistered schema, a wrong type); a proxy answers one POST 503 after questlog took it,
so the tracker sends that batch again. Then: every valid event once in the tables
(deltalake), the invalid ones in `rejected` with their event ids and reasons, page views
counted.

Usage: check_snowplow.py QUESTLOG_BINARY LEVEL_UP_SCHEMA WORKDIR
"""

import time

import requests
from snowplow_tracker import Emitter, PageView, SelfDescribing, SelfDescribingJson, Subject, Tracker

import common
from common import WRITE_KEY, fail

CLASSES = ["warrior", "mage", "rogue"]
LEVEL_UP = "iglu:com.example.game/level_up/jsonschema/1-0-0"
JOIN_GUILD = "iglu:io.questlog/join_guild/jsonschema/1-0-0"


def drain(tracker, emitter, deadline_s=60):
    """Flushes until the tracker's buffer is empty (a batch answered 503 waits for its retry
    timer; `flush` returns at once meanwhile)."""
    deadline = time.time() + deadline_s
    while True:
        if not emitter.retry_timer.is_active():
            tracker.flush()
        if emitter.event_store.size() == 0 and not emitter.retry_timer.is_active():
            return
        if time.time() > deadline:
            fail(f"the tracker still held {emitter.event_store.size()} events after {deadline_s} s")
        time.sleep(0.1)


def run(addr, data):
    valid = {"level_up": set(), "guild_joins": set()}
    invalid = {}
    summary = []
    for method, base64 in (("post", True), ("get", False)):
        proxy, host = common.proxy_to(addr, forced=2) if method == "post" else (None, addr)
        session = requests.Session()
        session.headers["X-API-Key"] = WRITE_KEY
        failures = []
        emitter = Emitter(host, method=method, batch_size=10, request_timeout=10, session=session,
                          on_failure=lambda n_ok, failed: failures.append(len(failed)))
        n = 600 if method == "post" else 150
        for i in range(n):
            subject = Subject().set_user_id(f"player-{i % 97}").set_domain_session_id(f"s-{i % 7}")
            tracker = Tracker(namespace="qs", emitters=emitter, app_id="game", subject=subject, encode_base64=base64)
            if i % 3 == 0:
                eid = tracker.track(SelfDescribing(SelfDescribingJson(JOIN_GUILD, {"guild_id": i % 40, "name": f"guild {i % 40}"})))
                valid["guild_joins"].add(eid)
            else:
                eid = tracker.track(SelfDescribing(SelfDescribingJson(LEVEL_UP, {"level": i % 100 + 1, "class": CLASSES[i % 3]})))
                valid["level_up"].add(eid)
        tracker = Tracker(namespace="qs", emitters=emitter, app_id="game", subject=Subject().set_user_id("player-bad"), encode_base64=base64)
        for i in range(5):
            invalid[tracker.track(SelfDescribing(SelfDescribingJson("iglu:com.other/level_up/jsonschema/1-0-0", {"level": 1})))] = "unknown_event_type"
            invalid[tracker.track(SelfDescribing(SelfDescribingJson(LEVEL_UP, {"level": "high", "class": "mage"})))] = "wrong_type"
        for i in range(10):
            tracker.track(PageView(page_url=f"http://game.example/shop/{i}"))
        drain(tracker, emitter)
        # The tracker calls on_failure for a batch it will send again too (the forced 503):
        # whether anything was dropped is told by the tables below, every valid event once.
        if proxy:
            proxy.shutdown()
            forced = common.check_forced_retry(proxy, alone=False)
            summary.append(f"POST: {proxy.posts} posts, one forced retry of {forced} events answered as duplicates "
                           f"(on_failure saw {sum(failures)} events, sent again)")
        else:
            summary.append(f"GET /i: {n + 20} requests")
    common.check_tables(addr, data, valid)
    common.check_rejected(addr, invalid)
    counted = common.counted(addr, "snowplow")
    if counted.get("page") != 20:
        fail(f"page views counted as {counted}, expected 20")
    print(f"ok: snowplow: snowplow-tracker (Python) sent {sum(len(v) for v in valid.values())} valid self-describing events "
          f"({'; '.join(summary)}); the tables hold each once ({len(valid['level_up'])} level_up, {len(valid['guild_joins'])} "
          f"guild_joins, read with deltalake); {len(invalid)} invalid events in /v1/rejected with their event ids and reasons; "
          f"20 page views counted")


if __name__ == "__main__":
    common.main("snowplow", run)
