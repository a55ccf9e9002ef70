"""Segment's Python SDK (segment-analytics-python, from PyPI, unmodified but for its host and
write key) against `questlog serve` (docs/CONTRACT.md 3.9.1).

Two clients (one gzips its batches) send `track` events of a registered type (`level_up`,
registered through POST /v1/schemas) and of a seed type (`Join Guild` -> join_guild), some
`identify` and `page` calls, and invalid events, through their own queues, batching and
retries. A proxy in front of questlog answers one batch 503 after questlog took it, so the
SDK sends that batch again. Then: no batch was dropped by the SDK, every valid event is in
the Delta tables once (read with deltalake), the invalid ones are listed by GET
/v1/rejected with their message ids and reasons, and the other calls are counted.

Usage: check_segment.py QUESTLOG_BINARY LEVEL_UP_SCHEMA WORKDIR
"""

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from segment.analytics.client import Client
import deltalake

WRITE_KEY = "qk_segment_write_0123456789"
READ_KEY = "qk_segment_read_0123456789"
ADMIN_KEY = "qk_segment_admin_0123456789"
CLASSES = ["warrior", "mage", "rogue"]


def fail(msg):
    print(f"FAIL: segment: {msg}")
    sys.exit(1)


def call(method, url, body=None, key=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start_serve(binary, data, keys):
    proc = subprocess.Popen(
        [binary, "--data-dir", data, "serve", "--listen", "127.0.0.1:0", "--api-keys", keys],
        stdout=subprocess.PIPE, stderr=open(os.path.join(os.path.dirname(data), "serve.err"), "w"), text=True,
    )
    deadline = time.time() + 30
    addr = None
    while time.time() < deadline and addr is None:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"http://[0-9.]+:[0-9]+", line)
        if m and "serving on" in line:
            addr = m.group(0)
    if addr is None:
        proc.kill()
        fail("serve did not say where it listens")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    while time.time() < deadline:
        try:
            if call("GET", addr + "/healthz")[0] == 200:
                return proc, addr
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    fail("serve did not become healthy within 30 s")


class Proxy(http.server.ThreadingHTTPServer):
    """Forwards every POST to questlog; answers the `forced`-th one 503 after questlog
    answered it, so the SDK sends that batch again."""

    daemon_threads = True

    def __init__(self, upstream, forced):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream, self.forced = upstream, forced
        self.lock = threading.Lock()
        self.posts, self.statuses, self.answers, self.forced_bodies = 0, [], [], []


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = urllib.request.Request(self.server.upstream + self.path, data=body, method="POST")
        for h in ("Authorization", "Content-Type", "Content-Encoding", "User-Agent"):
            if self.headers.get(h):
                req.add_header(h, self.headers[h])
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, answer = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, answer = e.code, e.read()
        with self.server.lock:
            self.server.posts += 1
            self.server.statuses.append(status)
            self.server.answers.append(answer)
            force = self.server.posts == self.server.forced and status == 200
            if force:
                self.server.forced_bodies.append(json.loads(answer))
        if force:
            status, answer = 503, b'{"error":"forced by the test: send again"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def main():
    binary, schema_path, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    keys = os.path.join(work, "keys.toml")
    with open(keys, "w") as f:
        f.write(f'[[key]]\napp = "game"\nkey = "{WRITE_KEY}"\n\n'
                f'[[key]]\napp = "dashboard"\nkey = "{READ_KEY}"\nscopes = ["read"]\n\n'
                f'[[key]]\napp = "ops"\nkey = "{ADMIN_KEY}"\nscopes = ["admin", "read"]\n')
    proc, addr = start_serve(binary, data, keys)
    try:
        run(addr, schema_path, data)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(addr, schema_path, data):
    with open(schema_path, "rb") as f:
        status, body = call("POST", addr + "/v1/schemas", f.read(), key=ADMIN_KEY)
    if status != 201:
        fail(f"registering level_up answered {status}: {body[:300]!r}")

    proxy = Proxy(addr, forced=3)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{proxy.server_address[1]}"
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
    if not proxy.forced_bodies:
        fail(f"no batch was answered 503 by the proxy ({proxy.posts} posts)")
    if any(s != 200 for s in proxy.statuses):
        fail(f"questlog answered {proxy.statuses} to the SDK's posts (all 200 expected; the proxy turned one into a 503)")
    forced = proxy.forced_bodies[0]
    again = [json.loads(a) for a in proxy.answers if a.startswith(b"{")]
    if not any(a.get("accepted") == 0 and a.get("duplicates") == forced["accepted"] for a in again):
        fail(f"the batch sent again was not answered as {forced['accepted']} duplicates")

    # By hand, as the protocol allows: /v1/track with Basic auth; the limits.
    basic = "Basic " + __import__("base64").b64encode(f"{WRITE_KEY}:".encode()).decode()
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

    # The projector catches up; then every valid event is in its table once.
    n_valid = sum(len(v) for v in valid.values())
    deadline = time.time() + 60
    while True:
        h = json.loads(call("GET", addr + "/healthz", key=READ_KEY)[1])
        if h.get("log_end_offset") == n_valid and h.get("projected_offset") == n_valid:
            break
        if time.time() > deadline:
            fail(f"the log or tables did not reach the {n_valid} valid events within 60 s: {h}")
        time.sleep(0.2)
    for table, ids in valid.items():
        rows = deltalake.DeltaTable(os.path.join(data, "delta", table)).to_pyarrow_table(columns=["event_id", "player_id"]).to_pylist()
        got = [r["event_id"] for r in rows]
        if len(got) != len(set(got)):
            fail(f"{table}: {len(got) - len(set(got))} event ids twice")
        if set(got) != ids:
            fail(f"{table}: {len(ids - set(got))} sent events missing, {len(set(got) - ids)} unexpected")
        if any(not r["player_id"] or not r["player_id"].startswith("player-") for r in rows):
            fail(f"{table}: a row without the SDK's user or anonymous id as player_id")

    # The invalid ones, with their message ids and reasons.
    status, body = call("GET", addr + "/v1/rejected?limit=1000", key=READ_KEY)
    if status != 200:
        fail(f"GET /v1/rejected answered {status}")
    listed = {}
    for line in body.decode().splitlines():
        r = json.loads(line)
        for mid in invalid:
            if mid in r.get("raw", ""):
                listed[mid] = r.get("reason")
    wrong = {m: (listed.get(m), why) for m, why in invalid.items() if listed.get(m) != why}
    if wrong:
        fail(f"{len(wrong)} invalid events not listed with their reason, e.g. {list(wrong.items())[:3]}")

    metrics = call("GET", addr + "/metrics", key=READ_KEY)[1].decode()
    counted = {k: int(v) for k, v in re.findall(r'questlog_sdk_messages_total\{protocol="segment",type="(\w+)"\} (\d+)', metrics)}
    if counted.get("identify") != 20 or counted.get("page") != 10:
        fail(f"identify and page calls counted as {counted}, expected 20 and 10")
    print(f"ok: segment: segment-analytics-python (2 clients, one gzipping) sent {n_valid} valid track events in "
          f"{proxy.posts} posts; one answered 503 after questlog took it ({forced['accepted']} events) was sent again and "
          f"dropped as {forced['accepted']} duplicates; the tables hold each valid event once "
          f"({len(valid['level_up'])} level_up, {len(valid['guild_joins'])} guild_joins, read with deltalake); "
          f"{len(invalid)} invalid events listed by /v1/rejected with their message ids and reasons; identify 20 and page 10 counted; "
          f"/v1/track with Basic auth, a message over 32 KiB rejected in its batch, a batch over 500 KiB answered 413")


if __name__ == "__main__":
    main()
