"""What the SDK checks share: a `questlog serve` with API keys, a proxy that answers one
POST 503 after questlog took it (so the SDK sends that batch again), and the checks of the
tables (deltalake) and of `rejected`."""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import deltalake

WRITE_KEY = "qk_segment_write_0123456789"
READ_KEY = "qk_segment_read_0123456789"
ADMIN_KEY = "qk_segment_admin_0123456789"
CLASSES = ["warrior", "mage", "rogue"]


CHECK = "sdk"


def fail(msg):
    print(f"FAIL: {CHECK}: {msg}")
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


def start_serve(binary, data, keys, extra=()):
    proc = subprocess.Popen(
        [binary, "--data-dir", data, "serve", "--listen", "127.0.0.1:0", "--api-keys", keys, *extra],
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
        for h in ("Authorization", "X-API-Key", "Content-Type", "Content-Encoding", "User-Agent"):
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
                self.server.forced_at = len(self.server.answers) - 1
        if force:
            status, answer = 503, b'{"error":"forced by the test: send again"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def serve(binary, work, schema_path, extra=()):
    """Starts `serve` (with `extra` arguments) with three keys (write, read, admin) in `work`
    and registers the schema at `schema_path` (if any). Returns (process, address, data dir)."""
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    keys = os.path.join(work, "keys.toml")
    with open(keys, "w") as f:
        f.write(f'[[key]]\napp = "game"\nkey = "{WRITE_KEY}"\n\n'
                f'[[key]]\napp = "dashboard"\nkey = "{READ_KEY}"\nscopes = ["read"]\n\n'
                f'[[key]]\napp = "ops"\nkey = "{ADMIN_KEY}"\nscopes = ["admin", "read"]\n')
    proc, addr = start_serve(binary, data, keys, extra)
    if schema_path is None:
        return proc, addr, data
    with open(schema_path, "rb") as f:
        status, body = call("POST", addr + "/v1/schemas", f.read(), key=ADMIN_KEY)
    if status != 201:
        proc.kill()
        fail(f"registering {schema_path} answered {status}: {body[:300]!r}")
    return proc, addr, data


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def proxy_to(addr, forced):
    proxy = Proxy(addr, forced)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy, f"http://127.0.0.1:{proxy.server_address[1]}"


def check_forced_retry(proxy, alone=True):
    """One POST was answered 503 after questlog took it; the batch sent again was answered
    as that many duplicates (`alone`: in a post of its own, as Segment's and PostHog's SDKs
    resend a batch; Snowplow's tracker puts the events back in its buffer, so they come
    back beside others). Returns how many events the forced batch held."""
    if not proxy.forced_bodies:
        fail(f"no batch was answered 503 by the proxy ({proxy.posts} posts)")
    if any(s != 200 for s in proxy.statuses):
        fail(f"questlog answered {proxy.statuses} to the SDK's posts (all 200 expected; the proxy turned one into a 503)")
    forced = proxy.forced_bodies[0]
    if not forced.get("accepted"):
        fail(f"the batch answered 503 had no accepted events ({forced}): it shows no retry")
    # The answers after the forced one (the batch sent again is among them).
    again = [json.loads(a) for a in proxy.answers[proxy.forced_at + 1:] if a.startswith(b"{")]
    if not any((a.get("accepted") == 0 or not alone) and a.get("duplicates") == forced["accepted"] for a in again):
        fail(f"the batch sent again was not answered as {forced['accepted']} duplicates")
    return forced["accepted"]


def check_tables(addr, data, valid):
    """The projector catches up to the valid events; each is in its table once."""
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
            fail(f"{table}: a row without the SDK's user id as player_id")
    return n_valid


def check_rejected(addr, invalid):
    """Each invalid event listed by GET /v1/rejected with its message id and reason."""
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


def counted(addr, protocol):
    metrics = call("GET", addr + "/metrics", key=READ_KEY)[1].decode()
    return {k: int(v) for k, v in re.findall(r'questlog_sdk_messages_total\{protocol="' + protocol + r'",type="(\w+)"\} (\d+)', metrics)}


def main(check, run):
    """`check_X.py QUESTLOG_BINARY SCHEMA WORKDIR`: serve (with SCHEMA registered), then
    `run(address, data dir)`, then stop serve."""
    global CHECK
    CHECK = check
    binary, schema_path, work = sys.argv[1], sys.argv[2], sys.argv[3]
    proc, addr, data = serve(binary, work, schema_path)
    try:
        run(addr, data)
    finally:
        stop(proc)
