"""Ingest through the SDK protocols' routes beside POST /v1/events, in one run.

Starts `questlog serve` (its own data dir, loopback, no keys), builds the same events three
ways — JSON arrays for /v1/events, Segment batches for /v1/batch (`track` messages of the
same types and fields, one message id each), and those Segment batches gzipped — and posts
each set with CONCURRENCY keep-alive connections, alternating the routes for ROUNDS rounds
(the machine's noise falls on all alike), and the same events as PostHog batches to
/batch/ (capture v0) and /i/v1/analytics/events (v1), and as Snowplow payload_data batches
(self-describing events of the built-in schemas, `ue_pr`) to /com.snowplowanalytics.snowplow/tp2. Prints events/s per route and round, and the
median of each.

usage: python3 benches/sdk_ingest.py QUESTLOG_BIN [EVENTS] [BATCH] [CONCURRENCY] [ROUNDS]
       (defaults: 200000 events, batches of 100, 4 connections, 3 rounds)
"""

import gzip
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid


def start(binary, data, extra=()):
    proc = subprocess.Popen([binary, "--data-dir", data, "serve", "--listen", "127.0.0.1:0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:([0-9]+)", line or "")
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, int(m.group(1))
        if not line:
            break
    proc.kill()
    sys.exit("serve did not start")


def events(n, round_no):
    for i in range(n):
        if i % 2:
            yield "Join Guild", {"guild_id": i % 500, "name": f"guild {i % 500}"}, f"p-{i % 1000}", f"r{round_no}-{i}"
        else:
            yield "Take Damage", {"enemy_id": i % 300, "name": "orc", "damage": i % 90 + 1}, f"p-{i % 1000}", f"r{round_no}-{i}"


def bodies(route, n, batch, round_no):
    out, chunk = [], []
    for name, props, player, mid in events(n, round_no):
        if route == "/v1/events":
            chunk.append(dict(event_type=name.lower().replace(" ", "_"), **props, player_id=player, event_id=mid))
        elif route == "snowplow":
            ue = {"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                  "data": {"schema": f"iglu:io.questlog/{name.lower().replace(' ', '_')}/jsonschema/1-0-0", "data": props}}
            chunk.append({"e": "ue", "ue_pr": json.dumps(ue), "eid": mid, "uid": player, "sid": "s-1",
                          "dtm": "1796436646760", "tv": "py-1.1.0", "tna": "bench", "aid": "game", "p": "srv"})
        elif route.startswith("posthog"):
            chunk.append({"event": name, "distinct_id": player, "uuid": mid, "timestamp": "2026-12-05T02:00:00+00:00",
                          "properties": dict(props, **{"$lib": "bench", "$session_id": "s-1"})})
        else:
            chunk.append({"type": "track", "event": name, "properties": props, "userId": player, "messageId": mid,
                          "timestamp": "2026-12-05T02:00:00+00:00", "context": {"library": {"name": "bench"}}})
        if len(chunk) == batch:
            out.append(chunk)
            chunk = []
    if chunk:
        out.append(chunk)
    if route == "/v1/events":
        return [(json.dumps(c).encode(), {}) for c in out]
    if route == "snowplow":
        return [(json.dumps({"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4", "data": c}).encode(), {})
                for c in out]
    if route.startswith("posthog"):
        return [(json.dumps({"batch": c, "api_key": "bench", "sent_at": "2026-12-05T02:00:00+00:00"}).encode(), {}) for c in out]
    raw = [json.dumps({"batch": c, "sentAt": "2026-12-05T02:00:00+00:00"}).encode() for c in out]
    if route == "segment+gzip":
        return [(gzip.compress(b, 1), {"Content-Encoding": "gzip"}) for b in raw]
    return [(b, {}) for b in raw]


def post_all(port, path, prepared, concurrency):
    failures = []
    def worker(part):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for body, extra in part:
            conn.request("POST", path, body, {"Content-Type": "application/json", **extra})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                failures.append(r.status)
    parts = [prepared[i::concurrency] for i in range(concurrency)]
    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.time() - t0, failures


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    work = tempfile.mkdtemp()
    proc, port = start(binary, os.path.join(work, "data"))
    routes = ["/v1/events", "segment", "segment+gzip", "posthog v0", "posthog v1", "snowplow"]
    paths = {"/v1/events": "/v1/events", "segment": "/v1/batch", "segment+gzip": "/v1/batch", "posthog v0": "/batch/",
             "posthog v1": "/i/v1/analytics/events", "snowplow": "/com.snowplowanalytics.snowplow/tp2"}
    rates = {r: [] for r in routes}
    try:
        for rnd in range(rounds):
            for k, route in enumerate(routes):
                prepared = bodies(route, n, batch, rnd * 10 + k)
                path = paths[route]
                secs, failures = post_all(port, path, prepared, concurrency)
                if failures:
                    sys.exit(f"{route}: {len(failures)} requests failed: {failures[:5]}")
                rates[route].append(n / secs)
                print(f"| {route} | {rnd + 1} | {n / secs:,.0f} | {secs:.2f} s |")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        end = json.loads(conn.getresponse().read()).get("log_end_offset")
        if end != n * rounds * len(routes):
            sys.exit(f"the log holds {end} events, not the {n * rounds * len(routes)} sent: some were refused")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for route in routes:
        print(f"median {route}: {statistics.median(rates[route]):,.0f} events/s "
              f"({statistics.median(rates[route]) / statistics.median(rates['/v1/events']):.2f}x /v1/events)")


if __name__ == "__main__":
    main()
