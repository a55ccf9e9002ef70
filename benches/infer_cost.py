"""What `serve --infer-schemas` costs when it has nothing to infer (the usual case: every
name known), side by side in one run: two servers, one with the flag, take the same events
through POST /v1/events and Segment's /v1/batch, alternating server (which goes first) and route for ROUNDS
rounds: events of the seed's types, and events of a studio's own type (`boss_defeated`),
which the server with the flag inferred from the first request and the other has
registered by hand with the same columns (an inferred type's events are parsed once more
to look for new properties). Prints events/s per server, route and round, the medians,
and the ratio with/without.

usage: python3 benches/infer_cost.py QUESTLOG_BIN [EVENTS] [BATCH] [CONCURRENCY] [ROUNDS]
       (defaults: 100000 events, batches of 100, 4 connections, 3 rounds)
"""

import http.client
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdk_ingest import bodies, post_all, start  # noqa: E402


SCHEMA = {"$schema": "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#",
          "self": {"vendor": "com.example.game", "name": "boss_defeated", "format": "jsonschema", "version": "1-0-0"},
          "type": "object", "properties": {"boss": {"type": ["string", "null"]}, "damage": {"type": ["integer", "null"]},
                                           "crit": {"type": ["boolean", "null"]}}}


def own_type(n, batch, round_no):
    events = [{"event_type": "boss_defeated", "boss": ["dragon", "lich", "imp"][i % 3], "damage": i % 5000, "crit": i % 7 == 0,
               "player_id": f"p-{i % 1000}", "event_id": f"own-{round_no}-{i}"} for i in range(n)]
    return [(json.dumps(events[i:i + batch]).encode(), {}) for i in range(0, n, batch)]


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    work = tempfile.mkdtemp()
    servers = {"plain": start(binary, os.path.join(work, "plain")),
               "--infer-schemas": start(binary, os.path.join(work, "infer"), ("--infer-schemas",))}
    routes = {"/v1/events": "/v1/events", "segment": "/v1/batch", "/v1/events, own type": "/v1/events"}
    rates = {(s, r): [] for s in servers for r in routes}
    conn = http.client.HTTPConnection("127.0.0.1", servers["plain"][1], timeout=30)
    conn.request("POST", "/v1/schemas", json.dumps(SCHEMA), {"Content-Type": "application/json"})
    if conn.getresponse().status != 201:
        sys.exit("registering boss_defeated on the plain server failed")
    try:
        for rnd in range(rounds):
            for k, route in enumerate(routes):
                prepared = own_type(n, batch, rnd * 10 + k) if "own" in route else bodies(route, n, batch, rnd * 10 + k)
                # Which server goes first alternates: each projects in the background while
                # the other takes its load.
                order = list(servers.items())
                for name, (_, port) in (order if (rnd + k) % 2 == 0 else order[::-1]):
                    secs, failures = post_all(port, routes[route], prepared, concurrency)
                    if failures:
                        sys.exit(f"{name} {route}: {len(failures)} requests failed: {failures[:5]}")
                    rates[(name, route)].append(n / secs)
                    print(f"| {name} | {route} | {rnd + 1} | {n / secs:,.0f} |")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    for route in routes:
        plain = statistics.median(rates[("plain", route)])
        infer = statistics.median(rates[("--infer-schemas", route)])
        print(f"median {route}: plain {plain:,.0f} events/s, --infer-schemas {infer:,.0f} events/s ({infer / plain:.2f}x)")


if __name__ == "__main__":
    main()
