"""questlog's tables as Delta Lake, local and on an S3-protocol server (moto), read back by
clients questlog did not write: Python `deltalake` (delta-rs's Python binding), DuckDB's
`delta_scan` (the `delta` and `httpfs` extensions from their wheels), DuckDB and pyarrow
globs over the plain-directory view.

usage: check_delta.py QUESTLOG_BIN WORK_DIR S3_ENDPOINT [section ...]
sections: s3 crash two rebuild retry cache readers custom (default: all)

Each check asserts behaviour; timings are printed for information only.
"""
import collections
import glob
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import signal
import site
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import deltalake
import duckdb
import pyarrow.dataset as pads

BIN, WORK, ENDPOINT = sys.argv[1], sys.argv[2], sys.argv[3]
SECTIONS = sys.argv[4:] or ["s3", "crash", "two", "rebuild", "retry", "cache", "readers", "custom"]
BUCKET = "questlog-test"
S3_ENV = {
    "AWS_ENDPOINT_URL": ENDPOINT,
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}
STORAGE = dict(S3_ENV)
# (table, location, event_type)
TABLES = [
    ("guild_joins", "guild_joins", "join_guild"),
    ("enemy_kills", "enemies_killed", "kill_enemy"),
    ("quests", "quest_accept", "accept_quest"),
    ("take_damage", "damage_taken", "take_damage"),
    ("transactions", "transactions", "buy_asset"),
]
COMMON_HEAD = [("raw_event", "string"), ("timestamp", "string"), ("accept", "string"), ("host", "string"),
               ("user_agent", "string"), ("event_type", "string")]
COMMON_TAIL = [("log_offset", "int64"), ("event_id", "string"), ("player_id", "string"), ("session_id", "string"),
               ("event_time", "timestamp[us, tz=UTC]")]
FIELDS = {
    "guild_joins": [("guild_id", "int64"), ("name", "string")],
    "enemy_kills": [("enemy_id", "int64"), ("name", "string"), ("level", "int16")],
    "quests": [("quest_id", "int64"), ("name", "string"), ("contact", "string")],
    "take_damage": [("enemy_id", "int64"), ("name", "string"), ("damage", "int16")],
    "transactions": [("store_id", "int64"), ("item_name", "string"), ("inventory_id", "int64"), ("total_cost", "float"),
                     ("category", "string"), ("on_hand_qty", "int16")],
}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def ql(data_dir, *args, tables=None, env=None, check=True, timeout=600):
    cmd = [BIN, "--data-dir", data_dir]
    if tables:
        cmd += ["--tables", tables]
    cmd += list(args)
    full_env = {**os.environ, **S3_ENV, **(env or {})}
    p = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        fail(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def log_counts(data_dir):
    counts = collections.Counter()
    out = ql(data_dir, "replay").stdout
    for line in out.splitlines():
        counts[json.loads(line)["event_type"]] += 1
    return counts


def duck():
    ext = os.path.join(site.getsitepackages()[0], "duckdb_ext", "extensions")
    con = duckdb.connect(config={"extension_directory": ext, "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.execute("LOAD httpfs; LOAD delta;")
    host = ENDPOINT.split("://", 1)[1]
    con.execute(f"CREATE SECRET (TYPE S3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', ENDPOINT '{host}', "
                "URL_STYLE 'path', USE_SSL false)")
    return con


def table_url(root, location):
    return f"{root.rstrip('/')}/{location}"


def check_delta_tables(root, counts, what, storage=None):
    """deltalake and DuckDB delta_scan: contract types, rows = log counts, each offset once."""
    con = duck()
    for table, location, event_type in TABLES:
        url = table_url(root, location)
        dt = deltalake.DeltaTable(url, storage_options=storage)
        t = dt.to_pyarrow_table()
        want = COMMON_HEAD + FIELDS[table] + COMMON_TAIL
        got = [(f.name, str(f.type).replace("large_string", "string").replace("string_view", "string")) for f in t.schema]
        if got != want:
            fail(f"{what}: deltalake reads {table} with columns {got}, the contract says {want}")
        offsets = t.column("log_offset").to_pylist()
        if len(offsets) != counts[event_type] or len(set(offsets)) != len(offsets):
            fail(f"{what}: deltalake: {table} has {len(offsets)} rows ({len(set(offsets))} distinct offsets); "
                 f"the log has {counts[event_type]} {event_type} events")
        n, distinct = con.execute(f"select count(*), count(distinct log_offset) from delta_scan('{url}')").fetchone()
        if n != counts[event_type] or distinct != n:
            fail(f"{what}: DuckDB delta_scan: {table} has {n} rows ({distinct} distinct); the log has {counts[event_type]}")
    print(f"ok: {what}: deltalake and DuckDB delta_scan read all five tables, types as the contract, rows = log")


def reset_bucket():
    s3 = boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return s3


def fresh_log(name, seed, events):
    """An empty bucket and a new data dir WORK/name with `events` events of `seed`: the S3
    client, the data dir, the log's counts per event type, and the tables' place s3://…/name."""
    s3 = reset_bucket()
    d = os.path.join(WORK, name)
    ql(d, "generate", "--seed", str(seed), "--events", str(events))
    return s3, d, log_counts(d), f"s3://{BUCKET}/{name}"


def section_s3():
    s3, d, counts, root = fresh_log("s3", 21, 30000)
    t0 = time.time()
    ql(d, "project", "--step-events", "2000", tables=root)
    print(f"   project of 30000 events to S3 in {time.time() - t0:.1f} s (15 steps, with compaction)")
    check_delta_tables(root, counts, "project to S3", STORAGE)
    # questlog's own readers against the same S3 tables.
    got = ql(d, "sql", "select count(*) as n from transactions", "--format", "csv", tables=root).stdout.split()
    if got[-1] != str(counts["buy_asset"]):
        fail(f"sql over S3 counted {got} transactions; the log has {counts['buy_asset']}")
    out = ql(d, "verify", tables=root).stdout
    if "tables at offset 30000" not in out:
        fail(f"verify over S3 said: {out}")
    ql(d, "report", tables=root)
    # The DuckDB statements `ddl` prints register the tables.
    ddl = ql(d, "ddl", tables=root).stdout
    con = duck()
    duck_lines = [l for l in ddl.splitlines() if "delta_scan" in l]
    if len(duck_lines) != 5:
        fail(f"ddl printed {len(duck_lines)} DuckDB statements:\n{ddl}")
    for l in duck_lines:
        con.execute(l)
    n = con.execute("select count(*) from transactions").fetchone()[0]
    if n != counts["buy_asset"]:
        fail(f"the DuckDB view from ddl counts {n} transactions, the log has {counts['buy_asset']}")
    if f"using delta location 's3://{BUCKET}/s3/guild_joins'" not in ddl or "register_table" not in ddl:
        fail(f"ddl lacks the Spark or Trino statements:\n{ddl}")
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix="s3/guild_joins/_delta_log/")["KeyCount"]
    print(f"ok: sql, verify, report and ddl's DuckDB views over S3; guild_joins has {objects} log objects")

    # The golden scenario, its tables on S3: the same digests as on a local disk.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = ql(d, "check", os.path.join(repo, "replay", "smoke.toml"), tables=f"s3://{BUCKET}/checks").stdout
    if "8 of 8 digests match" not in out:
        fail(f"check replay/smoke.toml with S3 tables:\n{out}")
    print("ok: check replay/smoke.toml with its tables on S3: 8 of 8 digests match")

    # Time travel into S3: the tables as of offset 12345, beside the live ones.
    ql(d, "project", "--rebuild", "--to", "12345", "--out", f"s3://{BUCKET}/asof")
    replay = ql(d, "replay", "--to", "12345").stdout.splitlines()
    asof = collections.Counter(json.loads(l)["event_type"] for l in replay)
    check_delta_tables(f"s3://{BUCKET}/asof", asof, "time travel to S3 (--to 12345 --out s3://…)", STORAGE)
    if ql(d, "project", "--rebuild", "--to", "10", "--out", f"s3://{BUCKET}/asof", check=False).returncode == 0:
        fail("project --out onto existing S3 tables did not refuse")

    # serve's continuous projection into S3.
    d2 = os.path.join(WORK, "s3-serve")
    out_path, err_path = os.path.join(WORK, "s3-serve.out"), os.path.join(WORK, "s3-serve.err")
    serve = subprocess.Popen([BIN, "--data-dir", d2, "--tables", f"s3://{BUCKET}/served", "serve", "--listen",
                              "127.0.0.1:0", "--project-interval-ms", "100"], env=dict(os.environ, **S3_ENV),
                             stdout=open(out_path, "w"), stderr=open(err_path, "w"), stdin=subprocess.DEVNULL)
    try:
        addr = wait_for_address(serve, out_path, err_path)
        subprocess.run([BIN, "generate", "--url", addr, "--seed", "27", "--events", "20000"], check=True,
                       capture_output=True)
        wait_caught_up(addr)
    finally:
        stop(serve)
    check_delta_tables(f"s3://{BUCKET}/served", log_counts(d2), "serve projecting continuously into S3", STORAGE)


def reader_counts(root, counts, what, storage=None):
    """After a crash: every event at most once in every reader; returns rows per table."""
    con = duck()
    rows = {}
    for table, location, event_type in TABLES:
        url = table_url(root, location)
        try:
            t = deltalake.DeltaTable(url, storage_options=storage).to_pyarrow_table(columns=["log_offset"])
        except deltalake.exceptions.TableNotFoundError:
            rows[table] = 0  # killed before the tables were created
            continue
        offsets = t.column("log_offset").to_pylist()
        if len(set(offsets)) != len(offsets):
            fail(f"{what}: deltalake sees {len(offsets) - len(set(offsets))} events twice in {table}")
        if len(offsets) > counts[event_type]:
            fail(f"{what}: deltalake sees {len(offsets)} rows in {table}, more than the log's {counts[event_type]}")
        n, distinct = con.execute(f"select count(*), count(distinct log_offset) from delta_scan('{url}')").fetchone()
        if n != len(offsets) or distinct != n:
            fail(f"{what}: DuckDB sees {n} rows ({distinct} distinct) in {table}; deltalake {len(offsets)}")
        rows[table] = n
    return rows


def section_crash():
    """SIGKILL (a real one at a random moment, and failpoints that abort the process at
    each point of the commit protocol) during steps and compaction commits, many times."""
    for kind in ["local", "s3"]:
        reset_bucket()
        d = os.path.join(WORK, f"crash-{kind}")
        ql(d, "generate", "--seed", "22", "--events", "12000")
        counts = log_counts(d)
        root = f"s3://{BUCKET}/crash" if kind == "s3" else None
        read_root = root or os.path.join(d, "delta")
        storage = STORAGE if kind == "s3" else None
        rng = random.Random(7)
        kills = aborts = 0
        points = ["publish.before_commit", "publish.after_commit", "compact.publish", "stage.finished",
                  "publish.before_view"]
        for i in range(16):
            if i % 2 == 0:
                point = points[(i // 2) % len(points)]
                skip = rng.randrange(0, 12)
                p = ql(d, "project", "--step-events", "300", tables=root,
                       env={"QUESTLOG_FAILPOINTS": f"{point}={skip}*off->return"}, check=False)
                if p.returncode == 0:
                    continue  # the point was not reached that often: the run finished
                aborts += 1
            else:
                cmd = [BIN, "--data-dir", d] + (["--tables", root] if root else []) + ["project", "--step-events", "300"]
                proc = subprocess.Popen(cmd, env=dict(os.environ, **S3_ENV), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
                time.sleep(rng.uniform(0.05, 0.6))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            reader_counts(read_root, counts, f"{kind} after crash {i}", storage)
            sql = ql(d, "sql", "select count(*) - count(distinct log_offset) as dup from take_damage", "--format", "csv",
                     tables=root).stdout.split()[-1]
            if sql != "0":
                fail(f"{kind}: after crash {i}, `sql` sees {sql} duplicate take_damage rows")
        # The rest in steps of 300 too: the 12,000 events then reach the tables in at least 40
        # commits however far the killed runs got (a last project in one step left the
        # checkpoint below to the timing of the kills; it failed once under load).
        ql(d, "project", "--step-events", "300", tables=root)
        check_delta_tables(read_root, counts, f"{kind}: after {kills} SIGKILLs and {aborts} aborts, then project", storage)
        out = ql(d, "verify", tables=root).stdout
        if "tables at offset 12000" not in out:
            fail(f"{kind}: verify after the crashes said: {out}")
        if kind == "local":
            # At least 40 steps (see above): the Delta log has checkpoints (every 20 commits),
            # so a reader replays few commits.
            if not os.path.exists(os.path.join(read_root, "transactions", "_delta_log", "_last_checkpoint")):
                fail("no checkpoint in a Delta log of over 40 commits")
        print(f"ok: {kind}: {kills} SIGKILLs and {aborts} failpoint aborts; every reader saw each event at most once, "
              "all of them after a last project; verify passed")


def section_two():
    """Two projectors (two machines: two data dirs with the same log) on one set of tables."""
    for kind in ["local", "s3"]:
        reset_bucket()
        a, b = os.path.join(WORK, f"two-{kind}-a"), os.path.join(WORK, f"two-{kind}-b")
        for d in (a, b):
            ql(d, "generate", "--seed", "23", "--events", "20000")
        counts = log_counts(a)
        root = f"s3://{BUCKET}/two" if kind == "s3" else os.path.join(WORK, f"two-{kind}-tables")
        procs = [subprocess.Popen([BIN, "--data-dir", d, "--tables", root, "project", "--step-events", "150"],
                                  env=dict(os.environ, **S3_ENV), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, stdin=subprocess.DEVNULL) for d in (a, b)]
        results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
        losers = [r for r in results if r[0] != 0]
        if not losers:
            fail(f"{kind}: both projectors finished without meeting; make the steps smaller")
        for code, out, err in losers:
            if "changed by another writer" not in err:
                fail(f"{kind}: a projector failed without saying why (exit {code}):\n{err}")
        storage = STORAGE if kind == "s3" else None
        reader_counts(root, counts, f"{kind}: two projectors", storage)
        ql(a, "project", tables=root)
        check_delta_tables(root, counts, f"{kind}: two projectors, then one more project", storage)
        reason = losers[0][2].strip().splitlines()[-1]
        print(f"ok: {kind}: {len(losers)} of 2 projectors stopped, saying: {reason[:160]}…")


def active_files(root, storage=None):
    files = {}
    for table, location, _ in TABLES:
        dt = deltalake.DeltaTable(table_url(root, location), storage_options=storage)
        for f in dt.file_uris():
            files[f"{location}/{f.rsplit('/', 1)[-1]}"] = f
    return files


def s3_bytes(s3, uri):
    key = uri.split(f"s3://{BUCKET}/", 1)[1]
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def section_rebuild():
    s3, d, counts, root = fresh_log("rebuild", 24, 25000)
    digests = []
    for i in range(2):
        ql(d, "project", "--rebuild", tables=root)
        files = active_files(root, STORAGE)
        digests.append({k: hashlib.sha256(s3_bytes(s3, v)).hexdigest() for k, v in files.items()})
    if digests[0] != digests[1]:
        fail(f"two rebuilds to S3 differ: {sorted(set(digests[0].items()) ^ set(digests[1].items()))}")
    # A rebuild of the local tables writes the same files, byte for byte.
    ql(d, "project", "--rebuild")
    local = {k: hashlib.sha256(open(v.removeprefix("file://"), "rb").read()).hexdigest()
             for k, v in active_files(os.path.join(d, "delta")).items()}
    if local != digests[0]:
        fail("a local rebuild's files differ from the S3 rebuild's")
    check_delta_tables(root, counts, "rebuilt twice on S3", STORAGE)
    print(f"ok: two rebuilds to S3 and one local wrote the same {len(local)} files byte for byte")


def wait_for_address(proc, out_path, err_path):
    for _ in range(300):  # bounded: 30 s
        text = open(out_path).read()
        if "http://" in text:
            return "http://" + text.split("http://", 1)[1].split()[0]
        if proc.poll() is not None:
            fail("serve exited: " + open(err_path).read())
        time.sleep(0.1)
    fail("serve printed no address within 30 s")


def health(addr):
    with urllib.request.urlopen(addr + "/healthz", timeout=10) as r:
        return json.load(r)


def wait_caught_up(addr, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        h = health(addr)
        if h["projected_offset"] == h["log_end_offset"]:
            return h
        time.sleep(0.1)
    fail(f"the tables did not catch up within {seconds} s: {health(addr)}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail("serve did not stop within 60 s of SIGTERM")


def section_readers():
    """Readers poll the tables while `serve` projects under load: counts never go down,
    never exceed the log's end, and no file goes missing under a reader."""
    d = os.path.join(WORK, "readers")
    out = open(os.path.join(WORK, "readers-serve.out"), "w")
    err = open(os.path.join(WORK, "readers-serve.err"), "w")
    serve = subprocess.Popen([BIN, "--data-dir", d, "serve", "--listen", "127.0.0.1:0", "--project-interval-ms", "20"],
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        addr = wait_for_address(serve, os.path.join(WORK, "readers-serve.out"), os.path.join(WORK, "readers-serve.err"))

        def log_end():
            return health(addr)["log_end_offset"]

        delta_root = os.path.join(d, "delta")
        plain = os.path.join(d, "tables")
        done = threading.Event()
        problems, reads = [], collections.Counter()

        def poll(name, count):
            last = {}
            while not done.is_set():
                try:
                    got = count()
                except Exception as e:  # a reader that fails is a finding, not a crash of the check
                    if not last and ("No files found" in str(e) or "no such file" in str(e).lower()):
                        continue  # the tables do not exist yet
                    problems.append(f"{name}: {type(e).__name__}: {e}")
                    continue
                end = log_end()
                total = sum(got.values())
                if total > end:
                    problems.append(f"{name}: counted {total} rows, the log ends at {end}")
                for k, v in got.items():
                    if v < last.get(k, 0):
                        problems.append(f"{name}: {k} went down from {last[k]} to {v}")
                last = got
                reads[name] += 1

        def deltalake_count():
            return {t: deltalake.DeltaTable(table_url(delta_root, loc)).to_pyarrow_dataset().count_rows()
                    for t, loc, _ in TABLES}

        dcon = duck()

        def duck_delta_count():
            c = dcon.cursor()
            return {t: c.execute(f"select count(*) from delta_scan('{table_url(delta_root, loc)}')").fetchone()[0]
                    for t, loc, _ in TABLES}

        gcon = duckdb.connect()

        # A directory reader resolves DATA_DIR/tables once (the contract's recipe, 5.4): the
        # generation it lands in stays whole for a minute after it is superseded.
        def duck_glob_count():
            c = gcon.cursor()
            gen = os.path.realpath(plain)
            return {"all": c.execute(f"select count(*) from read_parquet('{gen}/*/*.parquet')").fetchone()[0]}

        def pyarrow_glob_count():
            gen = os.path.realpath(plain)
            return {"all": pads.dataset(gen + "/", format="parquet", exclude_invalid_files=False).count_rows()}

        # Wait for the first tables, then start the readers and the load.
        subprocess.run([BIN, "generate", "--url", addr, "--seed", "25", "--events", "2000"], check=True,
                       capture_output=True)
        for _ in range(300):
            if os.path.islink(plain) and log_end() == 2000:
                break
            time.sleep(0.1)
        threads = [threading.Thread(target=poll, args=(n, f), daemon=True) for n, f in [
            ("deltalake", deltalake_count), ("duckdb delta_scan", duck_delta_count),
            ("duckdb glob", duck_glob_count), ("pyarrow glob", pyarrow_glob_count)]]
        for t in threads:
            t.start()
        t0 = time.time()
        load = subprocess.run([BIN, "generate", "--url", addr, "--seed", "26", "--events", "1200000", "--rate", "60000",
                               "--concurrency", "4", "--batch", "500"], capture_output=True, text=True)
        if load.returncode != 0:
            fail("load failed: " + load.stderr)
        seconds = time.time() - t0
        # Let the projector catch up, still polling.
        wait_caught_up(addr)
        time.sleep(1)
        done.set()
        for t in threads:
            t.join(timeout=60)
        if problems:
            fail(f"{len(problems)} inconsistent reads, first: " + "; ".join(problems[:5]))
        if min(reads.values(), default=0) < 5:
            fail(f"too few reads to mean anything: {dict(reads)}")
        print(f"ok: while serve projected 1200000 events at 60000/s sent in {seconds:.1f} s, {dict(reads)} reads: "
              "no count went down or past the log's end, no file went missing")
    finally:
        stop(serve)


class FaultyProxy:
    """An S3 proxy in front of moto that, once, stores a conditional PUT of a Delta log entry
    (`If-None-Match: *` on `_delta_log/<version>.json`, version > 0) and then answers 500,
    as a server or load balancer can after the write went through. object_store retries the
    PUT; moto answers the retry 412: the commit landed and was reported refused."""

    ENTRY = re.compile(r"/_delta_log/(\d{20})\.json$")

    def __init__(self, upstream):
        self.upstream = upstream.split("://", 1)[1]
        self.faults = 0
        self.refused_after_fault = 0
        self.upstream_errors = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle(self):
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a client that hung up between requests

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                try:
                    status, headers, data = self.upstream(body)
                except Exception as e:  # the upstream failed: say so, as a real proxy would
                    proxy.upstream_errors.append(repr(e))
                    status, headers, data = 502, [("Content-Length", "0")], b""
                try:
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client hung up

            def upstream(self, body):
                """The upstream's answer, or the injected fault, as (status, headers, body)."""
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                m = proxy.ENTRY.search(self.path.split("?", 1)[0])
                conditional = self.command == "PUT" and self.headers.get("If-None-Match") == "*" and m
                with proxy.lock:
                    if conditional and int(m.group(1)) > 0 and resp.status == 200 and proxy.faults == 0:
                        proxy.faults += 1
                        err = b"<Error><Code>InternalError</Code><Message>injected after the write</Message></Error>"
                        return 500, [("Content-Type", "application/xml"), ("Content-Length", str(len(err)))], err
                    if conditional and resp.status == 412 and proxy.faults:
                        proxy.refused_after_fault += 1
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "connection", "content-length")]
                # A HEAD's length is the object's (its body is empty).
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                out.append(("Content-Length", length or str(len(data))))
                return resp.status, out, data

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        class Server(http.server.ThreadingHTTPServer):
            # object_store opens several connections at once (five tables commit together):
            # the default backlog of 5 refused some.
            request_queue_size = 128
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def section_retry():
    """A commit that landed but was answered 5xx, then refused on object_store's retry, is
    the projector's own commit: `project` goes on (it used to stop, calling it another
    writer's), and the tables hold every event once."""
    s3, d, counts, root = fresh_log("retry", 31, 6000)
    proxy = FaultyProxy(ENDPOINT)
    try:
        p = ql(d, "project", "--step-events", "500", tables=root, env={"AWS_ENDPOINT_URL": proxy.url}, check=False)
    finally:
        proxy.close()
    if proxy.faults != 1 or proxy.refused_after_fault < 1:
        fail(f"the fault was not exercised: {proxy.faults} faults, {proxy.refused_after_fault} refused retries")
    if p.returncode != 0 or "another writer" in p.stderr:
        fail(f"project stopped on its own commit (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")
    check_delta_tables(root, counts, "a commit answered 500 after it landed, then refused on retry", STORAGE)
    out = ql(d, "verify", tables=root).stdout
    if "tables at offset 6000" not in out:
        fail(f"verify after the retried commit said: {out}")
    print("ok: a landed commit refused on retry is taken as done; verify passes")


def section_cache():
    """S3 tables read through local copies: a torn copy is fetched again (it used to stall
    compaction for good), and a young file no commit names is left for its writer."""
    s3, d, counts, root = fresh_log("cache", 32, 4500)
    ql(d, "project", "--step-events", "500", tables=root)
    cached = sorted(glob.glob(os.path.join(d, ".tables-cache", "guild_joins", "part-*.parquet")))
    if len(cached) < 5:
        fail(f"expected cached copies of guild_joins' files, found {cached}")
    torn = cached[len(cached) // 2]
    size = os.path.getsize(torn)
    with open(torn, "r+b") as f:
        f.truncate(size // 2)
    # A file named like a table file that no commit names, young: another projector's
    # upload waiting for its commit, which must not be deleted.
    young = "part-000000999990-000000999999-0-0000000000000000.parquet"
    s3.put_object(Bucket=BUCKET, Key=f"cache/guild_joins/{young}", Body=b"PAR1 waiting for a commit PAR1")
    # More events: the next steps make the tenth level-0 file, and the merge reads them all.
    ql(d, "generate", "--seed", "33", "--events", "1500")
    counts = log_counts(d)
    ql(d, "project", "--step-events", "500", tables=root)
    check_delta_tables(root, counts, "after a torn cached copy and a compaction", STORAGE)
    got = ql(d, "sql", "select count(*) as n from guild_joins", "--format", "csv", tables=root).stdout.split()
    if got[-1] != str(counts["join_guild"]):
        fail(f"sql counted {got} guild joins; the log has {counts['join_guild']}")
    out = ql(d, "verify", tables=root).stdout
    if "tables at offset 6000" not in out:
        fail(f"verify said: {out}")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="cache/guild_joins/")["Contents"]]
    if f"cache/guild_joins/{young}" not in keys:
        fail("a young file no commit names was deleted")
    print("ok: a torn cached copy was fetched again, compaction and readers went on; a young uncommitted file stayed")


SCHEMAS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "replay", "schemas")
# level_up 1-0-0 as the contract maps it (13.2), then 1-0-1's ADDITION.
LEVEL_UP = [("level", "int16"), ("class", "string"), ("reached_at", "timestamp[us, tz=UTC]"), ("won_boss", "bool"),
            ("loadout", "string")]
LEVEL_UP_ADDED = [("zone", "string")]


def arrow_types(schema):
    return [(f.name, str(f.type).replace("large_string", "string").replace("string_view", "string")) for f in schema]


def section_custom():
    """A registered type's table (contract 13.4), local and on S3, read by deltalake and
    DuckDB before and after an ADDITION: the table without the column, then with it, null
    in the older rows (whose files lack it), the values sent in the newer; the plain view
    by DuckDB's glob. The data dir stays for check_spark_hive.py (custom-local)."""
    reset_bucket()
    d = os.path.join(WORK, "custom-local")
    s3_root = f"s3://{BUCKET}/custom"
    level = [os.path.join(SCHEMAS, f) for f in ("level_up-1-0-0.json", "level_up-1-0-1.json")]
    match_end = os.path.join(SCHEMAS, "match_end-1-0-0.json")
    ql(d, "generate", "--seed", "31", "--events", "6000", "--schema", level[0], "--schema", match_end)
    ql(d, "project")
    ql(d, "project", tables=s3_root)
    added = ql(d, "schema", "add", level[1]).stdout
    addition_at = int(re.search(r"in force from log offset (\d+)", added).group(1))
    ql(d, "generate", "--seed", "32", "--events", "4000", "--schema", level[1], "--schema", match_end)
    ql(d, "project", "--step-events", "1500")
    ql(d, "project", "--step-events", "1500", tables=s3_root)
    lines = [json.loads(l) for l in ql(d, "replay").stdout.splitlines()]
    sent = {l["log_offset"]: l.get("zone") for l in lines if l["event_type"] == "level_up"}
    if not any(v is not None for o, v in sent.items() if o >= addition_at):
        fail("the traffic after the ADDITION sent no zone")
    con = duck()
    for where, root, storage in [("local", os.path.join(d, "delta"), None), ("S3", s3_root, STORAGE)]:
        url = table_url(root, "level_up")
        dt = deltalake.DeltaTable(url, storage_options=storage)
        # The newest version: every row once, `zone` after the first version's properties.
        t = dt.to_pyarrow_table()
        want = COMMON_HEAD + LEVEL_UP + LEVEL_UP_ADDED + COMMON_TAIL
        if arrow_types(t.schema) != want:
            fail(f"{where}: deltalake reads level_up with {arrow_types(t.schema)}, the contract says {want}")
        got = dict(zip(t.column("log_offset").to_pylist(), t.column("zone").to_pylist()))
        if got != sent:
            wrong = [o for o in sent if got.get(o, "missing") != sent[o]][:5]
            fail(f"{where}: deltalake's level_up rows differ from the log's at offsets {wrong} ({len(got)} rows, {len(sent)} sent)")
        # The versions before the ADDITION's commit: the table without the column.
        history = sorted(h["version"] for h in dt.history())
        before = [v for v in history if "zone" not in
                  [f.name for f in deltalake.DeltaTable(url, version=v, storage_options=storage).schema().fields]]
        if not before or before[-1] + 1 not in history:
            fail(f"{where}: no version of level_up without zone before the ADDITION (versions {history})")
        old = deltalake.DeltaTable(url, version=before[-1], storage_options=storage).to_pyarrow_table()
        if arrow_types(old.schema) != COMMON_HEAD + LEVEL_UP + COMMON_TAIL or max(old.column("log_offset").to_pylist()) >= addition_at:
            fail(f"{where}: level_up at version {before[-1]} reads as {arrow_types(old.schema)}")
        # DuckDB's delta_scan: the same rows, nulls before the ADDITION, its types.
        n, zoned_before, zoned = con.execute(
            f"select count(*), count(zone) filter (where log_offset < {addition_at}), count(zone) from delta_scan('{url}')").fetchone()
        if n != len(sent) or zoned_before != 0 or zoned != sum(v is not None for v in sent.values()):
            fail(f"{where}: DuckDB delta_scan counts {n} rows, {zoned_before} zones before offset {addition_at}, {zoned} in all")
        types = dict((r[0], r[1]) for r in con.execute(f"describe select * from delta_scan('{url}')").fetchall())
        if (types.get("level"), types.get("won_boss"), types.get("zone"), types.get("reached_at")) != \
                ("SMALLINT", "BOOLEAN", "VARCHAR", "TIMESTAMP WITH TIME ZONE"):
            fail(f"{where}: DuckDB delta_scan types {types}")
        print(f"ok: {where}: deltalake and DuckDB read level_up before the ADDITION (version {before[-1]}, no zone) and after "
              f"({n} rows, zone null before offset {addition_at}, {zoned} values after)")
    # The plain-directory view, by DuckDB's glob over files of both schemas.
    n, zoned_before = duckdb.connect().execute(
        f"select count(*), count(zone) filter (where log_offset < {addition_at}) "
        f"from read_parquet('{d}/tables/level_up/*.parquet', union_by_name = true)").fetchone()
    if n != len(sent) or zoned_before != 0:
        fail(f"DuckDB's glob over tables/level_up counts {n} rows ({zoned_before} zones before the ADDITION)")
    out = ql(d, "verify").stdout
    if not out.startswith("ok:"):
        fail(f"verify: {out}")
    print(f"ok: the plain view's level_up by DuckDB's glob ({n} rows); verify: {out.strip()}")


def main():
    os.makedirs(WORK, exist_ok=True)
    for s in SECTIONS:
        print(f"-- {s}", flush=True)
        globals()[f"section_{s}"]()


if __name__ == "__main__":
    main()
