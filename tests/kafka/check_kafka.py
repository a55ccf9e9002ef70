"""questlog's log on a real Kafka-protocol broker (Tansu, in memory, on loopback), read
back by clients questlog did not write: confluent-kafka (librdkafka, as kcat would) and
kafka-python (pure Python).

usage: check_kafka.py QUESTLOG_BIN TANSU_BIN NISSHI_BIN WORK_DIR [section ...]
sections: readme nodes kill memory broker tables two crash seed restart … catalog (default: all)

- readme: the README's "Running on Kafka" recipe, its shell block and its Python snippet
          taken from README.md and run as written (with `questlog`, `python` and `pip` on
          the PATH, in an empty directory, on the recipe's own ports): every command
          succeeds, verify passes, and the snippet reads the topic's 100,000 records.

- nodes:  two `serve` nodes on one topic of 3 partitions take seeded load over HTTP at the
          same time; the topic then holds every accepted event once, as JSON that both
          clients read, keyed by player (a player's events in one partition, in order);
          `questlog replay` reads the same records at the same positions; a rejected
          event stays on the node that refused it.
- kill:   SIGKILL of a serve node under load, several times, each while the broker is
          stopped (SIGSTOP) so that requests are in flight: no request is answered 200
          while the broker cannot acknowledge, and every event the node acknowledged is
          in the topic afterwards.
- memory: with the broker stopped, 200 concurrent requests of 1,000 events each (more than
          the 100,000 records a node lets wait for the brokers): the ones past the limit
          are answered 503 "busy" at once, and the node's peak RSS stays bounded.
- broker: with the broker gone, an append answers 503 with Retry-After, and nothing is
          acknowledged; `serve` on a topic that does not exist fails with a clear error.
- tables: two `serve` nodes take seeded load while `project --follow` turns the topic into
          the five Delta tables; read back with the `deltalake` package, the tables hold
          every acknowledged event exactly once (re-sent copies dropped), `verify` passes,
          two `project --rebuild`s write the same files byte for byte, and the
          incrementally projected rows equal the rebuilt ones.
- two:    two `project --follow` on one set of tables (`--tables`): one is refused by the
          commit check and says why; nothing is committed twice.
- crash:  SIGKILL of serve nodes and of the projector, several times each, under load
          whose clients re-send a batch that failed: 0 acknowledged events lost, 0 rows
          twice, `verify` passes.
- seed:   messages in the seed's own format (its Flask API's JSON, the request's headers
          merged in), produced by kafka-python to the topic `events`, land in the tables
          with `project --log-format seed`; the invalid ones are listed by `rejected` with
          their reason, partition and offset.
- restart: on Nisshi with its SQLite storage (a broker that keeps the topic across
          restarts), the broker is killed and restarted under load with a projector
          following: every acknowledged event lands in the tables exactly once.
- catalog: the store catalogue on a topic (side topic records): the same seeded
          `generate --catalog` on sled and on a topic gives the same stock; two `serve
          --catalog` nodes follow each other's newest catalogue; a rebuild's stock equals
          the serving node's (see section_catalog).

Each check asserts behaviour; timings are printed for information only.
"""
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import kafka
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BIN, TANSU, NISSHI, WORK = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
SECTIONS = sys.argv[5:] or ["readme", "nodes", "kill", "memory", "broker", "tables", "big", "two", "crash", "seed", "restart", "deleted", "same", "retry",
                            "group", "serve", "schemas", "catalog"]
TOPIC = "events"
PARTITIONS = 3


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """A Tansu broker with in-memory storage on a free loopback port."""

    binary, name, listen_s = TANSU, "tansu", 20

    def __init__(self):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = open(os.path.join(WORK, f"tansu-{self.port}.log"), "w")
        self.start()

    def storage(self):
        return "memory://tansu/"

    def start(self):
        """Starts the broker (again, for one that keeps its storage) and waits until it listens."""
        url = f"tcp://{self.addr}"
        self.proc = subprocess.Popen([self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                      "--storage-engine", self.storage(), "--cluster-id", "questlog-test"],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=WORK)
        deadline = time.time() + self.listen_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        fail(f"{self.name} did not listen within {self.listen_s} s")

    def create_topic(self, name=TOPIC, partitions=PARTITIONS):
        admin = AdminClient({"bootstrap.servers": self.addr})
        for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            f.result(timeout=30)

    def url(self, topic=TOPIC):
        return f"kafka://{self.addr}/{topic}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Nisshi(Broker):
    """A Nisshi broker with SQLite storage in WORK: the topic survives a restart."""
    binary, name, listen_s = NISSHI, "nisshi", 30

    def __init__(self, name="nisshi"):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.db = f"{name}.db"  # in WORK, its working directory: sqlite://NAME is relative
        self.log = open(os.path.join(WORK, f"{name}.log"), "a")
        self.start()

    def storage(self):
        return f"sqlite://{self.db}"


class Follower:
    """`questlog project --follow` from the topic into a data dir's tables."""

    def __init__(self, broker, data, *extra):
        self.broker, self.data, self.extra = broker, data, list(extra)
        self.start()

    def start(self):
        self.out = open(self.data + ".project.out", "a")
        self.proc = subprocess.Popen([BIN, "--data-dir", self.data, "--log", self.broker.url(), *self.extra, "project", "--follow",
                                      "--interval-ms", "200", "--step-events", "3000"],
                                     stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)
        if self.proc.returncode != 0:
            fail(f"project --follow exited {self.proc.returncode}; see {self.out.name}")


def read_tables(data, extra=()):
    """Every table's rows as the deltalake package reads the Delta snapshot: a dict of
    table name -> list of row dicts. `extra`: registered types' tables, (name, location)."""
    from deltalake import DeltaTable
    out = {}
    for name, location in TABLES + list(extra):
        path = os.path.join(data, "delta", location)
        out[name] = DeltaTable(path).to_pyarrow_table().to_pylist() if os.path.isdir(os.path.join(path, "_delta_log")) else []
    return out


def table_files(data):
    """(table, file name, sha256) of every file the Delta snapshots name."""
    import hashlib
    from deltalake import DeltaTable
    out = []
    for _, location in TABLES:
        t = DeltaTable(os.path.join(data, "delta", location))
        for f in t.file_uris():
            out.append((location, os.path.basename(f), hashlib.sha256(open(f.removeprefix("file://"), "rb").read()).hexdigest()))
    return sorted(out)


TABLES = [("guild_joins", "guild_joins"), ("enemy_kills", "enemies_killed"), ("quests", "quest_accept"),
          ("take_damage", "damage_taken"), ("transactions", "transactions")]


def check_exactly_once(data, acked, what, extra=()):
    """The tables of `data` (and `extra` registered types' tables) hold each event id once,
    and every id of `acked`."""
    rows = [r for t in read_tables(data, extra).values() for r in t]
    ids = [r["event_id"] for r in rows]
    dup = len(ids) - len(set(ids))
    if dup:
        fail(f"{what}: {dup} rows are second copies of an event")
    missing = set(acked) - set(ids)
    if missing:
        fail(f"{what}: {len(missing)} acknowledged events are not in the tables, e.g. {sorted(missing)[:3]}")
    located = {(r["log_partition"], r["log_offset"]) for r in rows}
    if len(located) != len(rows):
        fail(f"{what}: two rows have the same (log_partition, log_offset)")
    return rows


class Load:
    """Threads posting batches of fresh events to some nodes; a batch that fails (an error
    answer, a timeout, a node killed) is sent again, as a client would, to the next node."""

    def __init__(self, nodes, workers=3, batch=100, prefix="w", kinds=()):
        """`kinds`: events of registered types to send besides the seed's."""
        self.nodes, self.acked, self.stop_flag, self.extra_kinds = nodes, set(), threading.Event(), list(kinds)
        self.counts, self.lock = {"ok": 0, "failed": 0}, threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(w, f"{prefix}{w}", batch)) for w in range(workers)]
        for t in self.threads:
            t.start()

    def run(self, w, worker, size):
        n, attempt, batch = 0, w, None
        kinds = [{"event_type": "take_damage", "enemy_id": 3, "name": "Orc", "damage": 5},
                 {"event_type": "join_guild", "guild_id": 4, "name": "Knights"},
                 {"event_type": "buy_asset", "store_id": 1, "item_name": "sword", "inventory_id": 9, "total_cost": 2.5,
                  "category": "weapon", "on_hand_qty": 3}] + self.extra_kinds
        while not self.stop_flag.is_set():
            if batch is None:
                batch = [dict(kinds[(n + i) % len(kinds)], player_id=f"p{random.randrange(300)}", event_id=f"{worker}-{n + i}") for i in range(size)]
                n += size
            node = self.nodes[attempt % len(self.nodes)]
            try:
                status, body, _ = post(node.base, batch, timeout=20)
            except OSError:
                status, body = None, None
            with self.lock:
                if status == 200 and body["accepted"] == len(batch):
                    self.acked.update(e["event_id"] for e in batch)
                    self.counts["ok"] += 1
                    batch = None
                else:
                    self.counts["failed"] += 1
                    attempt += 1
            if batch is not None:
                time.sleep(0.05)

    def finish(self):
        """Stops sending (a batch whose last attempt failed is not sent again)."""
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=180)
        return self.acked


class Node:
    """A `questlog serve --log kafka://…` on a free port, in its own data dir."""

    def __init__(self, broker, name, *serve_args, topic=TOPIC):
        """`serve_args`: say `--api-only` for a node that only takes events (most sections
        check the API; section `serve` checks nodes that project)."""
        self.broker, self.data, self.serve_args, self.topic = broker, os.path.join(WORK, name), list(serve_args), topic
        self.start()

    def start(self):
        self.err = open(self.data + ".stderr", "a")
        self.proc = subprocess.Popen([BIN, "--data-dir", self.data, "--log", self.broker.url(self.topic), "serve", "--listen", "127.0.0.1:0",
                                      *self.serve_args],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        if "serving on http://" not in line:
            fail(f"serve did not start: {line!r}; see {self.err.name}")
        self.base = line.split("serving on ", 1)[1].split()[0]
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        fail("serve did not answer /healthz within 20 s")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


@contextlib.contextmanager
def broker_with_topic():
    """A fresh broker with the topic `events` of PARTITIONS partitions, stopped at the end."""
    broker = Broker()
    try:
        broker.create_topic()
        yield broker
    finally:
        broker.stop()


def post(base, events, timeout=30):
    """POSTs a JSON array; returns (status, body dict or None, headers)."""
    req = urllib.request.Request(base + "/v1/events", data=json.dumps(events).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body), e.headers
        except ValueError:
            return e.code, None, e.headers


def read_topic_confluent(broker, topic=TOPIC):
    """Every record of the topic, with confluent-kafka: assigned partitions, no group
    commits, read to each partition's end."""
    c = Consumer({"bootstrap.servers": broker.addr, "group.id": "check-confluent", "enable.auto.commit": False,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    meta = c.list_topics(topic, timeout=10)
    parts = sorted(meta.topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    records, done = [], set()
    deadline = time.time() + 120
    while len(done) < len(parts):
        if time.time() > deadline:
            fail(f"confluent-kafka did not reach the end of {topic} within 120 s")
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                done.add(m.partition())
                continue
            fail(f"confluent-kafka: {m.error()}")
        records.append(m)
    c.close()
    return records


def read_topic_kafka_python(broker, expected, topic=TOPIC):
    """The first `expected` records' values by position, with kafka-python (no group),
    then one more poll to show there are no more. (Tansu's end offsets are wrong for
    batched writes, so the end is the count the other reader found.)"""
    c = kafka.KafkaConsumer(bootstrap_servers=broker.addr, enable_auto_commit=False)
    parts = [kafka.TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    out = {}
    deadline = time.time() + 120
    while len(out) < expected and time.time() < deadline:
        for batch in c.poll(timeout_ms=1000).values():
            for m in batch:
                out[(m.partition, m.offset)] = m.value
    for batch in c.poll(timeout_ms=2000).values():
        for m in batch:
            out[(m.partition, m.offset)] = m.value
    c.close()
    return out


def questlog(data, *args, log=None, check=True, timeout=300):
    cmd = [BIN, "--data-dir", data] + (["--log", log] if log else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        fail(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr}")
    return p


def readme_blocks():
    """The ```sh and ```python blocks of README.md's "Running on Kafka" section."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(repo, "README.md")).read()
    section = text.split("## Running on Kafka", 1)[1].split("\n## ", 1)[0]
    blocks = {}
    for lang in ("sh", "python"):
        part = section.split(f"```{lang}\n", 1)
        if len(part) != 2:
            fail(f"README.md's Running on Kafka section has no ```{lang} block")
        blocks[lang] = part[1].split("```", 1)[0]
    return blocks


def section_readme():
    """The README's recipe, pasted into a shell as a reader would."""
    blocks = readme_blocks()
    work = os.path.join(WORK, "readme")
    os.makedirs(work, exist_ok=True)
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir, exist_ok=True)
    os.symlink(os.path.abspath(BIN), os.path.join(bindir, "questlog"))
    # `python` and `pip` are the venv's (its bin first on the PATH), which has the packages.
    venv_bin = os.path.dirname(sys.executable)
    script = "set -euxo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + blocks["sh"] + "\npython readme_snippet.py > snippet.out\n"
    with open(os.path.join(work, "recipe.sh"), "w") as f:
        f.write(script)
    with open(os.path.join(work, "readme_snippet.py"), "w") as f:
        f.write(blocks["python"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUESTLOG_")}
    env["PATH"] = bindir + os.pathsep + venv_bin + os.pathsep + env.get("PATH", "")
    t0 = time.time()
    p = subprocess.run(["bash", "recipe.sh"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        fail(f"the README's Kafka recipe failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    if "ok: tables at the partitions' offsets" not in p.stdout:
        fail(f"the recipe's verify did not pass:\n{p.stdout[-3000:]}")
    lines = open(os.path.join(work, "snippet.out")).read().splitlines()
    if len(lines) != 100000:
        fail(f"the README's Python snippet read {len(lines)} records, the recipe sent 100000")
    print(f"ok: the README's Kafka recipe ran as written in {time.time() - t0:.1f} s: verify passed, the snippet read {len(lines)} records")


def section_nodes():
    with broker_with_topic() as broker:
        a, b = Node(broker, "node-a", "--api-only"), Node(broker, "node-b", "--api-only")
        started = time.time()
        loads = [subprocess.Popen([BIN, "generate", "--seed", str(seed), "--events", "20000", "--url", node.base, "--batch", "250"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed, node in [(1, a), (2, b)]]
        outs = [p.communicate(timeout=300) for p in loads]
        retries = 0
        for p, (out, err) in zip(loads, outs):
            if p.returncode != 0 or "20000 accepted" not in out:
                fail(f"load against two nodes: exit {p.returncode}\n{out}\n{err}")
            retries += int(out.split(" retries")[0].rsplit(" ", 1)[1])
        seconds = time.time() - started
        # One valid and one invalid event to node b: the invalid one stays on node b.
        status, body, _ = post(b.base, [{"event_type": "join_guild", "guild_id": 7, "name": "Knights", "player_id": "p-manual",
                                         "event_id": "manual-1"}, {"event_type": "dance", "player_id": "p-manual"}])
        if status != 200 or body["accepted"] != 1 or len(body["rejected"]) != 1:
            fail(f"a batch with one invalid event: {status} {body}")
        if body["first_offset"] is not None:
            fail(f"a Kafka node gave a dense offset range: {body}")
        rejected_b = questlog(b.data, "rejected", log=broker.url()).stdout
        rejected_a = questlog(a.data, "rejected", log=broker.url()).stdout
        if "unknown_event_type" not in rejected_b or rejected_a.strip():
            fail(f"rejected events: node b {rejected_b!r}, node a {rejected_a!r}")
        a.stop()
        b.stop()

        expected = 40001
        records = read_topic_confluent(broker)
        # A request retried after a 503 may have stored its events already (nothing was
        # acknowledged); without retries every accepted event is there exactly once.
        if len(records) < expected or (retries == 0 and len(records) != expected):
            fail(f"confluent-kafka read {len(records)} records, {expected} were accepted ({retries} retried requests)")
        ids, partition_of, last_offset = set(), {}, {}
        for m in records:
            headers = dict(m.headers() or [])
            if headers.get("questlog-format") != b"json-1":
                fail(f"record at {m.partition()}/{m.offset()} has headers {headers}")
            v = json.loads(m.value())
            if "log_offset" in v or "raw_event" not in v or "timestamp" not in v:
                fail(f"record value is not the replay line without its position: {v}")
            if json.loads(v["raw_event"])["event_type"] != v["event_type"]:
                fail(f"raw_event disagrees with event_type: {v}")
            key = m.key().decode() if m.key() else None
            if key != (v["player_id"] or v["event_id"]):
                fail(f"record keyed {key!r}, player {v['player_id']!r}")
            if partition_of.setdefault(key, m.partition()) != m.partition():
                fail(f"player {key} has events in partitions {partition_of[key]} and {m.partition()}")
            ids.add(v["event_id"])
        if len(ids) != expected:
            fail(f"the topic holds {len(ids)} distinct events, {expected} were accepted")
        per_partition = [sum(1 for m in records if m.partition() == p) for p in range(PARTITIONS)]
        if min(per_partition) == 0:
            fail(f"records per partition {per_partition}: the keys did not spread")
        print(f"ok: nodes: 2 serve nodes took 40,000 events in {seconds:.1f} s; confluent-kafka read {len(records)} records "
              f"(per partition {per_partition}), JSON values with the format header, keyed by player, each player in one partition")

        by_python = read_topic_kafka_python(broker, len(records))
        if len(by_python) != len(records) or any(json.loads(v)["event_id"] not in ids for v in by_python.values()):
            fail(f"kafka-python read {len(by_python)} records, or other ones than confluent-kafka")
        print(f"ok: nodes: kafka-python read the same {len(by_python)} records")

        replay = questlog(os.path.join(WORK, "reader"), "replay", log=broker.url()).stdout.splitlines()
        positions = {(m.partition(), m.offset()): json.loads(m.value())["event_id"] for m in records}
        seen = {}
        for line in replay:
            r = json.loads(line)
            seen[(r["log_partition"], r["log_offset"])] = r["event_id"]
        if seen != positions:
            fail(f"questlog replay read {len(seen)} records; they differ from confluent-kafka's {len(positions)}")
        one = questlog(os.path.join(WORK, "reader"), "replay", "--partition", "1", "--from", "2", "--to", "5", log=broker.url()).stdout.splitlines()
        if [(json.loads(l)["log_partition"], json.loads(l)["log_offset"]) for l in one] != [(1, 2), (1, 3), (1, 4)]:
            fail(f"replay --partition 1 --from 2 --to 5 printed {one}")
        end1 = max(o for (p, o) in positions if p == 1) + 1
        past = questlog(os.path.join(WORK, "reader"), "replay", "--partition", "1", "--from", str(end1 + 1000), log=broker.url(), check=False)
        if past.returncode == 0 or past.stdout:
            fail(f"replay --from past the end of partition 1 ({end1}): exit {past.returncode}, {len(past.stdout)} bytes printed")
        print(f"ok: nodes: questlog replay read the {len(seen)} records at the positions confluent-kafka saw; --partition/--from/--to "
              f"select; --from past the end fails: {past.stderr.strip().splitlines()[-1][:100]}")


def section_kill():
    with broker_with_topic() as broker:
        node = Node(broker, "node-kill", "--api-only")
        acked, stop = set(), threading.Event()
        counts = {"ok": 0, "failed": 0}
        lock = threading.Lock()

        def load(worker):
            n = 0
            while not stop.is_set():
                batch = [{"event_type": "take_damage", "enemy_id": 3, "name": "Orc", "damage": 5,
                          "player_id": f"p{random.randrange(500)}", "event_id": f"w{worker}-{n + i}"} for i in range(100)]
                n += 100
                try:
                    status, body, _ = post(node.base, batch, timeout=20)
                except OSError:
                    status, body = None, None
                with lock:
                    if status == 200 and body["accepted"] == len(batch):
                        acked.update(e["event_id"] for e in batch)
                        counts["ok"] += 1
                    else:
                        counts["failed"] += 1
                        time.sleep(0.05)

        workers = [threading.Thread(target=load, args=(w,)) for w in range(3)]
        for w in workers:
            w.start()
        kills, rng = 4, random.Random(7)
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 1.5))
            # Stop the broker, so that requests in flight cannot be acknowledged: a node
            # that answered 200 before the broker's acknowledgement would be caught here.
            broker.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.5)  # answers already under way may still arrive
            with lock:
                settled = counts["ok"]
            time.sleep(1.5)
            with lock:
                early = counts["ok"] - settled
            if early:
                broker.proc.send_signal(signal.SIGCONT)
                fail(f"{early} requests were answered 200 while the broker was stopped")
            node.kill()
            broker.proc.send_signal(signal.SIGCONT)
            node.start()
        time.sleep(1)
        stop.set()
        for w in workers:
            w.join()
        node.stop()
        records = read_topic_confluent(broker)
        in_topic = [json.loads(m.value())["event_id"] for m in records]
        missing = acked - set(in_topic)
        if missing:
            fail(f"{len(missing)} acknowledged events are not in the topic after {kills} SIGKILLs, e.g. {sorted(missing)[:3]}")
        if counts["ok"] == 0 or counts["failed"] == 0:
            fail(f"the kills should cut some requests and let others through: {counts}")
        print(f"ok: kill: {kills} SIGKILLs of a serve node under load: all {len(acked)} acknowledged events are in the topic "
              f"({counts['ok']} requests acknowledged, {counts['failed']} failed or cut off; the topic holds {len(in_topic)} records, "
              f"{len(in_topic) - len(set(in_topic))} of them second copies of a batch sent before a kill)")


def section_memory():
    with broker_with_topic() as broker:
        node = Node(broker, "node-memory", "--api-only")
        broker.proc.send_signal(signal.SIGSTOP)
        answers, lock = [], threading.Lock()

        def one(worker):
            batch = [{"event_type": "join_guild", "guild_id": worker, "name": "x" * 100, "player_id": f"p{worker}-{i}",
                      "event_id": f"m{worker}-{i}"} for i in range(1000)]
            started = time.time()
            try:
                status, body, _ = post(node.base, batch, timeout=60)
            except OSError as e:
                status, body = None, {"error": str(e)}
            with lock:
                answers.append((status, (body or {}).get("error", ""), time.time() - started))

        threads = [threading.Thread(target=one, args=(w,)) for w in range(200)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        peak_kib = int(next(l.split()[1] for l in open(f"/proc/{node.proc.pid}/status") if l.startswith("VmHWM")))
        broker.proc.send_signal(signal.SIGCONT)
        busy = [a for a in answers if a[0] == 503 and "busy" in a[1]]
        waited = [a for a in answers if a[0] == 503 and "busy" not in a[1]]
        if not busy or any(a[2] > 5 for a in busy):
            fail(f"past 100,000 waiting records, appends should be refused at once: {len(busy)} busy answers, "
                 f"slowest {max((a[2] for a in busy), default=0):.1f} s; answers {sorted(set((a[0], a[1][:60]) for a in answers))}")
        if any(a[0] == 200 for a in answers):
            fail("a request was answered 200 while the broker was stopped")
        if peak_kib > 512 * 1024:
            fail(f"node peak RSS {peak_kib // 1024} MiB with 200 requests of 1,000 events waiting on a stopped broker")
        node.stop()
        print(f"ok: memory: broker stopped, 200 concurrent requests of 1,000 events: {len(busy)} refused at once (busy), "
              f"{len(waited)} answered 503 after waiting; node peak RSS {peak_kib // 1024} MiB")


def section_broker():
    with broker_with_topic() as broker:
        missing = questlog(os.path.join(WORK, "no-topic"), "serve", "--listen", "127.0.0.1:0", log=broker.url("nope"), check=False, timeout=60)
        if missing.returncode == 0 or "nope" not in missing.stderr or "create it" not in missing.stderr:
            fail(f"serve on a missing topic: exit {missing.returncode}: {missing.stderr}")
        print(f"ok: broker: serve on a missing topic says: {missing.stderr.strip().splitlines()[-1][:150]}")
        node = Node(broker, "node-broker", "--api-only")
        status, body, _ = post(node.base, [{"event_type": "join_guild", "guild_id": 1, "name": "A", "player_id": "p1"}])
        if status != 200 or body["accepted"] != 1:
            fail(f"append with the broker up: {status} {body}")
        broker.stop()
        started = time.time()
        status, body, headers = post(node.base, [{"event_type": "join_guild", "guild_id": 1, "name": "A", "player_id": "p2"}], timeout=60)
        took = time.time() - started
        if status != 503 or body["accepted"] != 0 or not headers.get("Retry-After"):
            fail(f"append with the broker gone: {status} {body} Retry-After={headers.get('Retry-After')}")
        print(f"ok: broker: with the broker gone, an append answered 503 with Retry-After after {took:.1f} s: {body['error'][:120]}")
        node.kill()


def section_tables():
    with broker_with_topic() as broker:
        a, b = Node(broker, "tables-a", "--api-only"), Node(broker, "tables-b", "--api-only")
        data = os.path.join(WORK, "tables-projector")
        follower = Follower(broker, data)
        started = time.time()
        loads = [subprocess.Popen([BIN, "generate", "--seed", str(seed), "--events", "15000", "--url", node.base, "--batch", "250",
                                   "--rate", "3000"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed, node in [(11, a), (12, b)]]
        outs = [p.communicate(timeout=300) for p in loads]
        for p, (out, err) in zip(loads, outs):
            if p.returncode != 0 or "15000 accepted" not in out:
                fail(f"load against two nodes: exit {p.returncode}\n{out}\n{err}")
        # The same 500 events sent again to the other node, as a client retrying after a
        # lost answer would: the topic holds them twice, the tables once.
        again = [json.loads(l)["raw_event"] for l in questlog(os.path.join(WORK, "tables-reader"), "replay", "--partition", "0",
                                                              "--to", "500", log=broker.url()).stdout.splitlines()]
        status, body, _ = post(b.base, [json.loads(e) for e in again])
        if status != 200 or body["accepted"] != len(again):
            fail(f"re-sending {len(again)} events: {status} {body}")
        ingest_s = time.time() - started
        a.stop()
        b.stop()
        follower.stop()
        # What the follower did not reach before it stopped, a one-shot project finishes.
        final = questlog(data, "project", log=broker.url()).stdout
        acked = {json.loads(m.value())["event_id"] for m in read_topic_confluent(broker)}
        if len(acked) != 30000:
            fail(f"the topic holds {len(acked)} distinct events, 30,000 were accepted")
        rows = check_exactly_once(data, acked, "tables from two nodes")
        if len(rows) != 30000:
            fail(f"the tables hold {len(rows)} rows for 30,000 distinct events")
        steps = open(data + ".project.out").read().count("step: ")
        print(f"ok: tables: 2 nodes took 30,000 events (+{len(again)} re-sent) in {ingest_s:.1f} s while `project --follow` made "
              f"{steps} steps; deltalake reads {len(rows)} rows, each acknowledged event once (last project: {final.splitlines()[0][:80]})")

        verified = questlog(data, "verify", log=broker.url()).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"verify: {verified}")
        print(f"ok: tables: {verified}")

        incremental = sorted((r["log_partition"], r["log_offset"], json.dumps(r, sort_keys=True, default=str)) for r in rows)
        digests = []
        for n in (1, 2):
            other = os.path.join(WORK, f"tables-rebuild-{n}")
            questlog(other, "project", "--rebuild", log=broker.url())
            digests.append(table_files(other))
        if digests[0] != digests[1] or not digests[0]:
            fail(f"two rebuilds from the topic differ: {set(digests[0]) ^ set(digests[1])}")
        rebuilt_rows = [r for t in read_tables(os.path.join(WORK, "tables-rebuild-1")).values() for r in t]
        rebuilt = sorted((r["log_partition"], r["log_offset"], json.dumps(r, sort_keys=True, default=str)) for r in rebuilt_rows)
        if rebuilt != incremental:
            fail(f"incremental tables ({len(incremental)} rows) differ from a rebuild ({len(rebuilt)} rows)")
        print(f"ok: tables: two rebuilds from the topic wrote the same {len(digests[0])} files byte for byte; "
              f"the incremental tables' {len(incremental)} rows equal the rebuild's")

        # replay --follow: the topic to its end, then what arrives, as it comes.
        follow = subprocess.Popen([BIN, "--data-dir", os.path.join(WORK, "tables-reader"), "--log", broker.url(), "replay", "--follow"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        threading.Thread(target=lambda: lines.extend(follow.stdout), daemon=True).start()
        deadline = time.time() + 60
        while len(lines) < 30500 and time.time() < deadline:
            time.sleep(0.1)
        node = Node(broker, "tables-c", "--api-only")
        status, body, _ = post(node.base, [{"event_type": "join_guild", "guild_id": 1, "name": "Late", "player_id": "late", "event_id": "late-1"}])
        deadline = time.time() + 60
        while not any('"late-1"' in l for l in lines) and time.time() < deadline:
            time.sleep(0.1)
        follow.kill()
        node.stop()
        if status != 200 or not any('"late-1"' in l for l in lines) or len(lines) != 30501:
            fail(f"replay --follow printed {len(lines)} lines; the event sent while it followed is {'' if any('late-1' in l for l in lines) else 'not '}among them")
        print(f"ok: tables: replay --follow printed the topic's {len(lines) - 1} records, then the one sent while it followed")


def section_crash():
    with broker_with_topic() as broker:
        nodes = [Node(broker, "crash-a", "--api-only"), Node(broker, "crash-b", "--api-only")]
        # A registered type beside the seed's five: its table is one more table a crash
        # can leave behind or ahead of the others (docs/CONTRACT.md 13.4).
        status, body = call(nodes[0].base, "POST", "/v1/schemas", schema_doc("1-0-0"))
        if status != 201:
            fail(f"crash: POST /v1/schemas answered {status} {body}")
        level_up = {"event_type": "level_up", "level": 9, "class": "mage"}
        deadline = time.time() + 20
        while (post(nodes[1].base, [dict(level_up, player_id="p0", event_id="crash-probe")])[1] or {}).get("accepted") != 1:
            if time.time() > deadline:
                fail("crash: node b did not take level_up within 20 s of its registration on node a")
            time.sleep(0.5)
        registered = [("level_up", "level_up")]
        data = os.path.join(WORK, "crash-projector")
        follower = Follower(broker, data)
        load = Load(nodes, workers=4, batch=50, prefix="c", kinds=[level_up])
        rng = random.Random(11)
        node_kills = projector_kills = 0
        for round_ in range(6):
            time.sleep(rng.uniform(0.5, 1.5))
            if round_ % 2 == 0:
                follower.kill()
                projector_kills += 1
                time.sleep(rng.uniform(0.0, 0.5))
                follower.start()
            else:
                node = nodes[node_kills % 2]
                node.kill()
                node_kills += 1
                node.start()
        time.sleep(1)
        acked = load.finish()
        for n in nodes:
            n.stop()
        follower.stop()
        questlog(data, "project", log=broker.url())
        if load.counts["failed"] == 0:
            fail(f"killing serve nodes under load should cut some requests: {load.counts}")
        rows = check_exactly_once(data, acked, f"after {node_kills} serve and {projector_kills} projector SIGKILLs", registered)
        if not read_tables(data, registered)["level_up"]:
            fail("crash: the registered type's table is empty")
        in_topic = len(read_topic_confluent(broker))
        verified = questlog(data, "verify", log=broker.url()).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"verify after the kills: {verified}")
        # Aborts between the five tables' commits of a step (at the failpoint after a
        # table's commit, at several passes): each leaves some tables a step ahead; the
        # tables never hold an event twice, and the next run brings the others up to them.
        aborted = os.path.join(WORK, "crash-aborts")
        aborts = 0
        for n in (1, 3, 8, 12, 19):
            p = subprocess.run([BIN, "--data-dir", aborted, "--log", broker.url(), "project", "--step-events", "20000"],
                               env={**os.environ, "QUESTLOG_FAILPOINTS": f"publish.after_commit={n}*off->return"},
                               capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            aborts += p.returncode != 0
            check_exactly_once(aborted, set(), f"after an abort at pass {n + 1} of publish.after_commit", registered)
        questlog(aborted, "project", log=broker.url())
        check_exactly_once(aborted, acked, f"after {aborts} aborts between table commits and a last project", registered)
        if aborts < 3:
            fail(f"only {aborts} of 5 runs reached their failpoint")
        print(f"ok: crash: {node_kills} serve-node and {projector_kills} projector SIGKILLs under load (the seed's types and a "
              f"registered one): all {len(acked)} acknowledged "
              f"events in the tables once ({len(rows)} rows from {in_topic} records; {load.counts['failed']} requests failed and were "
              f"re-sent); verify passes; {aborts} aborts between a step's table commits left no event twice, and a last project "
              f"completed the tables")


def section_two():
    with broker_with_topic() as broker:
        questlog(os.path.join(WORK, "two-gen"), "generate", "--seed", "5", "--events", "30000", log=broker.url())
        tables = os.path.join(WORK, "two-tables")
        followers = [Follower(broker, os.path.join(WORK, f"two-{n}"), "--tables", tables) for n in (1, 2)]
        deadline = time.time() + 180
        while all(f.proc.poll() is None for f in followers) and time.time() < deadline:
            time.sleep(0.2)
        refused = [f for f in followers if f.proc.poll() is not None]
        for f in followers:
            if f.proc.poll() is None:
                f.proc.send_signal(signal.SIGTERM)
                f.proc.wait(timeout=120)
        if not refused or any(f.proc.returncode != 1 for f in refused):
            fail(f"two projectors on one set of tables: exits {[f.proc.returncode for f in followers]}")
        said = open(refused[0].out.name).read()
        if "changed by another writer" not in said:
            fail(f"the refused projector did not say why: {said[-500:]}")
        questlog(os.path.join(WORK, "two-1"), "--tables", tables, "project", log=broker.url())
        acked = {json.loads(m.value())["event_id"] for m in read_topic_confluent(broker)}
        from deltalake import DeltaTable
        rows = [r for _, loc in TABLES for r in DeltaTable(os.path.join(tables, loc)).to_pyarrow_table(columns=["event_id"]).to_pylist()]
        ids = [r["event_id"] for r in rows]
        if len(ids) != len(set(ids)) or set(ids) != acked:
            fail(f"two projectors: {len(ids)} rows, {len(set(ids))} distinct, {len(acked)} events in the topic")
        verified = questlog(os.path.join(WORK, "two-1"), "--tables", tables, "verify", log=broker.url()).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"verify after two projectors: {verified}")
        line = next(l for l in said.splitlines() if "another writer" in l)
        print(f"ok: two: of two `project --follow` on one set of tables, {len(refused)} stopped: {line[:160]}…; "
              f"the tables then hold each of the {len(acked)} events once, and verify passes")


def seed_message(i, rng):
    """An event as the seed's Flask API sent it to Kafka: the event's fields with the
    request's headers merged in (event.update(request.headers))."""
    kinds = [{"event_type": "join_guild", "guild_id": rng.randrange(1, 50), "name": "Knights"},
             {"event_type": "kill_enemy", "enemy_id": rng.randrange(1, 9), "name": "Orc", "level": rng.randrange(1, 60)},
             {"event_type": "buy_asset", "store_id": 2, "item_name": "sword", "inventory_id": 7, "total_cost": 9.5,
              "category": "weapon", "on_hand_qty": 1}]
    event = dict(kinds[i % 3], player_id=f"seed-p{i % 40}", event_id=f"seed-{i}")
    event.update({"Host": "localhost:5000", "User-Agent": "ApacheBench/2.3", "Accept": "*/*", "Content-Length": "0"})
    return event


def section_seed():
    with broker_with_topic() as broker:
        rng = random.Random(3)
        producer = kafka.KafkaProducer(bootstrap_servers=broker.addr)
        valid = [seed_message(i, rng) for i in range(3000)]
        invalid = [b'{"event_type": "dance", "Host": "localhost:5000"}', b"not json at all",
                   json.dumps({"event_type": "join_guild", "name": "NoGuild", "Host": "h"}).encode()]
        for i, m in enumerate(valid):
            producer.send(TOPIC, json.dumps(m).encode(), key=m["player_id"].encode())
            if i % 1000 == 500:
                for bad in invalid:
                    producer.send(TOPIC, bad)
        producer.flush()
        producer.close()
        data = os.path.join(WORK, "seed-projector")
        out = questlog(data, "--log-format", "seed", "project", log=broker.url()).stdout
        rows = check_exactly_once(data, {m["event_id"] for m in valid}, "seed-format topic")
        if len(rows) != len(valid):
            fail(f"the tables hold {len(rows)} rows for {len(valid)} valid seed messages")
        sample = next(r for r in rows if r["event_id"] == "seed-0")
        if sample["host"] != "localhost:5000" or sample["user_agent"] != "ApacheBench/2.3" or sample["accept"] != "*/*":
            fail(f"the seed's headers did not become columns: {sample}")
        if json.loads(sample["raw_event"])["Host"] != "localhost:5000":
            fail(f"raw_event is not the message as sent: {sample['raw_event']}")
        listed = [json.loads(l) for l in questlog(data, "rejected", log=broker.url()).stdout.splitlines()]
        reasons = sorted(r["reason"] for r in listed)
        if len(listed) != 3 * len(invalid) or set(reasons) != {"unknown_event_type", "malformed_json", "missing_field"}:
            fail(f"rejected seed messages listed: {listed}")
        if any(r["topic"] != TOPIC or not isinstance(r["partition"], int) or not isinstance(r["offset"], int) for r in listed):
            fail(f"a rejected message without its topic, partition and offset: {listed}")
        again = questlog(data, "--log-format", "seed", "project", "--rebuild", log=broker.url()).stdout
        relisted = questlog(data, "rejected", log=broker.url()).stdout.splitlines()
        if len(relisted) != len(listed):
            fail(f"a rebuild recorded rejected messages twice: {len(relisted)} lines, {len(listed)} before")
        verified = questlog(data, "--log-format", "seed", "verify", log=broker.url()).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"verify of the seed-format tables: {verified}")
        print(f"ok: seed: {len(valid)} seed-format messages from kafka-python are in the tables (Host/User-Agent/Accept as columns); "
              f"the {len(listed)} invalid ones listed with reason, partition and offset, e.g. {listed[0]['reason']} at "
              f"{listed[0]['partition']}/{listed[0]['offset']}; a rebuild lists none twice; verify passes")


def section_restart():
    broker = Nisshi()
    try:
        broker.create_topic()
        node = Node(broker, "restart-node", "--api-only")
        data = os.path.join(WORK, "restart-projector")
        follower = Follower(broker, data)
        load = Load([node], workers=3, batch=50, prefix="r")
        restarts = 0
        for _ in range(2):
            time.sleep(2)
            broker.proc.send_signal(signal.SIGKILL)
            broker.proc.wait()
            time.sleep(1)
            broker.start()
            restarts += 1
        time.sleep(3)
        acked = load.finish()
        node.stop()
        follower.stop()
        questlog(data, "project", log=broker.url())
        rows = check_exactly_once(data, acked, f"after {restarts} broker restarts")
        print(f"ok: restart: {restarts} SIGKILLs and restarts of a persistent broker (Nisshi, SQLite) under load: all {len(acked)} "
              f"acknowledged events in the tables once ({len(rows)} rows; {load.counts['failed']} requests failed and were re-sent)")
    finally:
        broker.stop()


def section_deleted():
    """Records deleted from the start of the partitions (DeleteRecords, as retention does;
    Nisshi implements it) after the tables took them: a projector started afterwards fills
    its dedup window from where each partition now begins. Before, it asked for the
    offsets 250,000 back regardless, was told they were out of range, and never
    projected again."""
    broker = Nisshi("deleted")
    try:
        broker.create_topic()
        rng = random.Random(5)
        producer = kafka.KafkaProducer(bootstrap_servers=broker.addr)
        first = [seed_message(i, rng) for i in range(1500)]
        for m in first:
            producer.send(TOPIC, json.dumps(m).encode(), key=m["player_id"].encode())
        producer.flush()
        data = os.path.join(WORK, "deleted-projector")
        questlog(data, "--log-format", "seed", "project", log=broker.url())
        # Every record the tables hold is deleted from the topic.
        probe = Consumer({"bootstrap.servers": broker.addr, "group.id": "questlog-test-probe"})
        highs = [probe.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in range(PARTITIONS)]
        admin = AdminClient({"bootstrap.servers": broker.addr})
        for f in admin.delete_records([TopicPartition(TOPIC, p, h) for p, h in enumerate(highs)]).values():
            f.result(timeout=30)
        lows = [probe.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[0] for p in range(PARTITIONS)]
        probe.close()
        if lows != highs:
            fail(f"DeleteRecords up to {highs} left the partitions starting at {lows}")
        later = [seed_message(i, rng) for i in range(1500, 2500)]
        for m in later:
            producer.send(TOPIC, json.dumps(m).encode(), key=m["player_id"].encode())
        producer.flush()
        producer.close()
        # A projector that starts now (a new process: its windows are empty).
        out = questlog(data, "--log-format", "seed", "project", log=broker.url(), check=False, timeout=120)
        if out.returncode != 0:
            fail(f"project after DeleteRecords failed:\n{out.stdout}\n{out.stderr}")
        rows = check_exactly_once(data, {m["event_id"] for m in first + later}, "after DeleteRecords")
        print(f"ok: deleted: after DeleteRecords moved the partitions' starts to {lows}, a projector started afresh "
              f"took the {len(later)} later events; the tables hold all {len(rows)} once")
    finally:
        broker.stop()


def section_big():
    """A one-shot `project` whose steps span several 64 MiB batches of its kept consumer
    (MAX_GROUP_BATCH_BYTES): 100,000 events generated twice straight into the topic (the
    second copies dropped by the window, across batch boundaries too), one-shot project,
    each event once, verify."""
    with broker_with_topic() as broker:
        gen = os.path.join(WORK, "big-gen")
        for _ in range(2):
            questlog(gen, "generate", "--seed", "5", "--events", "100000", log=broker.url())
        data = os.path.join(WORK, "big-projector")
        out = questlog(data, "project", log=broker.url()).stdout
        acked = {json.loads(m.value())["event_id"] for m in read_topic_confluent(broker)}
        rows = check_exactly_once(data, acked, "a one-shot project in batches")
        if len(acked) != 100000 or len(rows) != 100000:
            fail(f"big: {len(acked)} distinct events in the topic, {len(rows)} rows; 100,000 each expected")
        verified = questlog(data, "verify", log=broker.url()).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"big: verify: {verified}")
        print(f"ok: big: 200,000 records (100,000 events twice) projected by one-shot project in batches of at most 64 MiB: "
              f"each event once ({len(rows)} rows), verify passes ({out.splitlines()[0][:70]})")


def section_same():
    """The same data on both backends (issue 29, item 6): the same seeded `generate` into
    the sled log and into a topic of 3 partitions gives tables with the same rows — every
    column but where the event sits (`log_offset`, `log_partition`) — and the same report."""
    with broker_with_topic() as broker:
        sled, topic = os.path.join(WORK, "same-sled"), os.path.join(WORK, "same-topic")
        args = ("generate", "--seed", "19", "--events", "20000")
        questlog(sled, *args)
        questlog(topic, *args, log=broker.url())
        questlog(sled, "project")
        questlog(topic, "project", log=broker.url())
        a, b = read_tables(sled), read_tables(topic)
        place = ("log_offset", "log_partition")
        for name, _ in TABLES:
            rows_a = {r["event_id"]: {k: v for k, v in r.items() if k not in place} for r in a[name]}
            rows_b = {r["event_id"]: {k: v for k, v in r.items() if k not in place} for r in b[name]}
            if len(rows_a) != len(a[name]) or len(rows_b) != len(b[name]):
                fail(f"same: {name} holds an event twice")
            if rows_a != rows_b:
                differ = [e for e in rows_a if rows_a[e] != rows_b.get(e)][:3]
                fail(f"same: {name} differs between the sled log's tables and the topic's ({len(rows_a)} vs {len(rows_b)} rows; "
                     f"e.g. {[(rows_a[e], rows_b.get(e)) for e in differ[:1]]})")
        reports = []
        for data, log in [(sled, None), (topic, broker.url())]:
            questlog(data, "report", log=log)
            with open(os.path.join(data, "report", "report.md")) as f:
                lines = f.read().splitlines()
            # Where the tables reach, and where an item was last seen, are places in the
            # log: offsets, or partitions' offsets and positions. Everything else is the same.
            kept, section = [], ""
            for l in lines:
                section = l if l.startswith("## ") else section
                if "log offsets" in l or "position" in l or l.startswith("Latest on-hand quantity"):
                    continue
                if section.startswith("## 3.") and l.startswith("|"):
                    l = "|".join(l.split("|")[:-2]) + "|"
                kept.append(l)
            reports.append(kept)
        if reports[0] != reports[1]:
            diff = [(x, y) for x, y in zip(*reports) if x != y][:3]
            fail(f"same: the reports differ: {diff}")
        print(f"ok: same: generate --seed 19 of 20,000 events into the sled log and into a 3-partition topic: "
              f"the five tables hold the same {sum(len(t) for t in a.values())} rows and the report is the same "
              f"({len(reports[0])} lines)")


def section_retry():
    """`project --follow` from a topic whose step fails once (a failpoint: as a broker or
    store blip would) opens its tables again and goes on. Before, the old projector still
    held the topic's lock when the new one opened, and every retry was refused."""
    with broker_with_topic() as broker:
        data = os.path.join(WORK, "retry-projector")
        os.makedirs(os.path.dirname(data), exist_ok=True)
        out = open(data + ".out", "w")
        env = dict(os.environ, QUESTLOG_FAILPOINTS="project.step=1*return(a blip)")
        proc = subprocess.Popen([BIN, "--data-dir", data, "--log", broker.url(), "project", "--follow", "--interval-ms", "100"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            questlog(os.path.join(WORK, "retry-gen"), "generate", "--seed", "23", "--events", "3000", log=broker.url())
            deadline = time.time() + 60
            rows = []
            while time.time() < deadline:
                try:
                    rows = [r for t in read_tables(data).values() for r in t]
                except Exception:
                    rows = []
                if len(rows) == 3000:
                    break
                time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        text = open(data + ".out").read()
        if len(rows) != 3000:
            fail(f"retry: the follower reached {len(rows)} of 3000 rows after a failed step:\n{text[-2000:]}")
        if "a blip" not in text:
            fail(f"retry: the failpoint did not fire:\n{text[-2000:]}")
        print("ok: retry: a follower whose step failed once opened its tables again and took all 3000 events")


class Member(Follower):
    """`project --follow --group G` into shared tables, with a data dir of its own."""

    def __init__(self, broker, data, tables, group):
        self.tables, self.group = tables, group
        super().__init__(broker, data)

    def start(self):
        self.out = open(self.data + ".project.out", "a")
        self.proc = subprocess.Popen([BIN, "--data-dir", self.data, "--log", self.broker.url(), "--tables", self.tables, "project",
                                      "--follow", "--group", self.group, "--step-events", "5000"],
                                     stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def holdings(self):
        """Every partition set this member said it held, in order."""
        return [json.loads(l.split("holds partitions ", 1)[1].split(" of ")[0])
                for l in open(self.out.name) if "this member holds partitions" in l]


def shared_rows(tables):
    from deltalake import DeltaTable
    return [r for _, loc in TABLES if os.path.isdir(os.path.join(tables, loc, "_delta_log"))
            for r in DeltaTable(os.path.join(tables, loc)).to_pyarrow_table(columns=["event_id", "log_partition", "log_offset"]).to_pylist()]


def wait_for_rows(tables, acked, timeout=120):
    """The shared tables' rows once they hold every id of `acked` (or when `timeout` s passed)."""
    deadline = time.time() + timeout
    rows = []
    while time.time() < deadline:
        try:
            rows = shared_rows(tables)
        except Exception:
            rows = []
        if set(acked) <= {r["event_id"] for r in rows}:
            break
        time.sleep(0.5)
    return rows


def section_group():
    """Projectors as a consumer group: two, then three `project --follow --group` on one
    topic of 6 partitions share its partitions and commit to one set of tables while two
    serve nodes take load; members are SIGKILLed and started again. Every acknowledged
    event lands once, verify passes, and the members held partitions of their own."""
    broker = Nisshi("group-nisshi") if os.environ.get("GROUP_BROKER", "nisshi") == "nisshi" else Broker()
    try:
        broker.create_topic(partitions=6)
        nodes = [Node(broker, "group-a", "--api-only"), Node(broker, "group-b", "--api-only")]
        tables = os.path.join(WORK, "group-tables")
        members = [Member(broker, os.path.join(WORK, f"group-m{i}"), tables, "questlog-test") for i in (1, 2)]
        load = Load(nodes, workers=4, batch=50, prefix="g")
        t0 = time.time()
        time.sleep(6)
        members.append(Member(broker, os.path.join(WORK, "group-m3"), tables, "questlog-test"))
        time.sleep(8)
        kills = 0
        for victim in (0, 1):
            members[victim].kill()
            kills += 1
            time.sleep(4)
            members[victim].start()
            time.sleep(6)
        acked = load.finish()
        for n in nodes:
            n.stop()
        rows = wait_for_rows(tables, acked)
        took = time.time() - t0
        # The group settles (a killed member's old session lapses after 6 s, and the
        # rebalance that follows may still run): then the members' last assignments split
        # the six partitions between them.
        deadline = time.time() + 60
        while time.time() < deadline and sorted(p for m in members for p in (m.holdings() or [[]])[-1]) != list(range(6)):
            time.sleep(0.5)
        for m in members:
            m.stop()
        ids = [r["event_id"] for r in rows]
        missing = set(acked) - set(ids)
        if missing:
            fail(f"group: {len(missing)} acknowledged events are not in the tables, e.g. {sorted(missing)[:3]}")
        if len(ids) != len(set(ids)):
            fail(f"group: {len(ids) - len(set(ids))} rows are second copies of an event")
        if len({(r['log_partition'], r['log_offset']) for r in rows}) != len(rows):
            fail("group: two rows have the same (log_partition, log_offset)")
        verified = questlog(members[0].data, "--tables", tables, "verify", log=broker.url()).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"group: verify: {verified}")
        holdings = [m.holdings() for m in members]
        for i, h in enumerate(holdings):
            if not any(h):
                fail(f"group: member {i + 1} never held a partition: {h}")
            if any(len(set(x)) != len(x) or not set(x) <= set(range(6)) for x in h):
                fail(f"group: member {i + 1} said it held {h}")
        last = [h[-1] for h in holdings]
        # Whether every partition had a member once the group settled is reported, not
        # asserted: in some runs under the whole suite's load (Tansu 2 of ~6, Nisshi 1 of ~12)
        # a rebalance after the kills left partitions without a member for over 60 s while
        # the others kept theirs — a liveness problem not understood yet (the issue's notes);
        # the tables stayed exactly right, which the checks above assert.
        unheld = sorted(set(range(6)) - set(p for x in last for p in x))
        by_member = {f"m{i + 1}": [x for x in h if x] for i, h in enumerate(holdings)}
        print(f"ok: group: 2 then 3 members of one consumer group, {kills} SIGKILLed and started again, under load from 2 serve "
              f"nodes ({took:.0f} s): all {len(acked)} acknowledged events in the shared tables once ({len(rows)} rows); verify "
              f"passes; partitions held in turn: {by_member}; at the end {last}"
              + (f" (NOTE: partitions {unheld} had no member at the end)" if unheld else ""))
    finally:
        broker.stop()


def live(node):
    with urllib.request.urlopen(node.base + "/v1/live", timeout=20) as r:
        return json.loads(r.read())


def section_serve():
    """`serve --log kafka://…` projects by default: two nodes given the same `--tables`
    form one consumer group (named after the tables) and share a topic of 6 partitions
    under load; the tables then hold every acknowledged event once, verify passes, and
    each node's live page (`/v1/live`) shows the tables' freshness per partition, which
    partitions it projects (the two nodes' split the six), and the findings."""
    broker = Nisshi("serve-nisshi")
    try:
        broker.create_topic(partitions=6)
        tables = os.path.join(WORK, "serve-tables")
        nodes = [Node(broker, f"serve-{n}", "--tables", tables) for n in "ab"]
        load = Load(nodes, workers=3, batch=50, prefix="s")
        time.sleep(10)
        acked = load.finish()
        rows = wait_for_rows(tables, acked)
        ids = [r["event_id"] for r in rows]
        if set(acked) - set(ids) or len(ids) != len(set(ids)):
            fail(f"serve: {len(set(acked) - set(ids))} acknowledged events missing, {len(ids) - len(set(ids))} twice")
        # The live pages: each partition once up to date, split between the nodes, findings.
        deadline = time.time() + 90
        pages = []
        while time.time() < deadline:
            pages = [live(n) for n in nodes]
            parts = [p["freshness"]["partitions"] for p in pages]
            held = sorted(q["partition"] for ps in parts for q in ps if q["held_here"])
            fresh = all(len(ps) == 6 and all(q["lag_records"] == 0 for q in ps) for ps in parts)
            if held == list(range(6)) and fresh and all(p["findings"] and p["findings"]["summary"] for p in pages):
                break
            time.sleep(1)
        else:
            fail(f"serve: the live pages did not show 6 up-to-date partitions split between the nodes and findings: "
                 f"{[p['freshness'] for p in pages]} findings: {[bool(p['findings']) for p in pages]}")
        verified = questlog(nodes[0].data, "--tables", tables, "verify", log=broker.url()).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"serve: verify: {verified}")
        for n in nodes:
            n.stop()
        split = [[q["partition"] for q in p["freshness"]["partitions"] if q["held_here"]] for p in pages]
        print(f"ok: serve: two projecting nodes on shared tables took {len(acked)} events; the tables hold each once, verify "
              f"passes; the live pages show 6 partitions up to date, projected by the nodes as {split}, and findings "
              f"({pages[0]['findings']['summary'][0][:60]}…)")
    finally:
        broker.stop()


def call(base, method, path, body=None, content_type="application/json"):
    """(status, JSON body) of an HTTP call."""
    req = urllib.request.Request(base + path, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def schema_doc(version, extra=None):
    props = {"level": {"type": "integer", "minimum": 1, "maximum": 100}, "class": {"type": "string"}}
    props.update(extra or {})
    return json.dumps({"$schema": "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#",
                       "self": {"vendor": "com.example.game", "name": "level_up", "format": "jsonschema", "version": version},
                       "type": "object", "properties": props, "required": ["level", "class"]}).encode()


def section_schemas():
    """Event types on a Kafka log (docs/CONTRACT.md 13.4): schemas recorded through one node
    are in force on the others (side topic `<topic>.schemas`); events of them, sent to
    both nodes, land in their table, projected by two group members; an ADDITION widens
    it (the new column null before it); two nodes registering clashing versions: one 201,
    one 409, both then list the same schemas; `serve --infer-schemas` on a topic; verify
    passes and two rebuilds are byte-identical."""
    broker = Nisshi("schemas-nisshi")
    try:
        broker.create_topic(partitions=6)
        tables = os.path.join(WORK, "schemas-tables")
        nodes = [Node(broker, f"schemas-{n}", "--tables", tables, "--infer-schemas") for n in "ab"]
        status, body = call(nodes[0].base, "POST", "/v1/schemas", schema_doc("1-0-0"))
        if status != 201:
            fail(f"schemas: POST /v1/schemas on node a answered {status} {body}")
        sent, zoned = set(), set()
        def send(node, events):
            status, body, _ = post(node.base, events)
            if status != 200 or body["rejected"]:
                fail(f"schemas: {node.base} answered {status} {body}")
            sent.update(e["event_id"] for e in events)
        # Node b learns the type from the side topic within a few seconds.
        deadline = time.time() + 20
        while True:
            status, body, _ = post(nodes[1].base, [{"event_type": "level_up", "level": 1, "class": "mage", "event_id": "probe", "player_id": "p0"}])
            if status == 200 and body["accepted"] == 1:
                sent.add("probe")
                break
            if time.time() > deadline:
                fail(f"schemas: node b did not take events of a type registered on node a within 20 s: {body}")
            time.sleep(0.5)
        for k in range(20):
            send(nodes[k % 2], [{"event_type": "level_up", "level": i % 100 + 1, "class": "mage", "player_id": f"p{i % 31}",
                                 "event_id": f"lu-{k}-{i}"} for i in range(50)])
        # An ADDITION through node b; a clashing one through node a after it.
        status, body = call(nodes[1].base, "POST", "/v1/schemas", schema_doc("1-0-1", {"zone": {"type": ["string", "null"]}}))
        if status != 201:
            fail(f"schemas: the ADDITION on node b answered {status} {body}")
        status, body = call(nodes[0].base, "POST", "/v1/schemas", schema_doc("1-0-1", {"zone": {"type": ["integer", "null"]}}))
        if status != 409:
            fail(f"schemas: a clashing 1-0-1 on node a answered {status} {body} (409 expected)")
        time.sleep(2)
        for k in range(10):
            events = [{"event_type": "level_up", "level": 7, "class": "rogue", "zone": f"z{i % 4}", "player_id": f"p{i % 31}",
                       "event_id": f"zone-{k}-{i}"} for i in range(50)]
            send(nodes[k % 2], events)
            zoned.update(e["event_id"] for e in events)
        # A name never registered, through --infer-schemas.
        send(nodes[0], [{"event_type": "boss_defeated", "boss": "dragon", "damage": 1200 + i, "player_id": f"p{i}",
                         "event_id": f"boss-{i}"} for i in range(30)])
        lists = [[r["uri"] for r in call(n.base, "GET", "/v1/schemas")[1]["registered"]] for n in nodes]
        if lists[0] != lists[1] or len(lists[0]) != 3:
            fail(f"schemas: the nodes list different schemas: {lists}")
        from deltalake import DeltaTable
        deadline = time.time() + 90
        while True:
            try:
                lu = DeltaTable(os.path.join(tables, "level_up")).to_pyarrow_table(columns=["event_id", "zone"]).to_pylist()
                boss = DeltaTable(os.path.join(tables, "boss_defeated")).to_pyarrow_table(columns=["event_id", "damage"]).to_pylist()
            except Exception:
                lu, boss = [], []
            ids = [r["event_id"] for r in lu] + [r["event_id"] for r in boss]
            if set(ids) == sent:
                break
            if time.time() > deadline:
                fail(f"schemas: the tables hold {len(set(ids))} of the {len(sent)} events sent within 90 s")
            time.sleep(1)
        if len(ids) != len(set(ids)):
            fail(f"schemas: {len(ids) - len(set(ids))} events twice in the tables")
        wrong = [r for r in lu if (r["zone"] is not None) != (r["event_id"] in zoned)]
        if wrong:
            fail(f"schemas: {len(wrong)} level_up rows with the wrong zone, e.g. {wrong[:2]}")
        for n in nodes:
            n.stop()
        verified = questlog(nodes[0].data, "--tables", tables, "verify", log=broker.url()).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"schemas: verify: {verified}")
        # Two rebuilds from the topic: the same bytes.
        rebuilt = []
        for r in range(2):
            out = os.path.join(WORK, f"schemas-rebuild-{r}")
            questlog(out, "--tables", out + "-tables", "project", "--rebuild", log=broker.url())
            import hashlib
            digest = []
            for root, _, files in sorted(os.walk(out + "-tables")):
                for f in sorted(files):
                    if f.endswith(".parquet") and root.endswith(("level_up", "boss_defeated")):
                        digest.append((os.path.basename(root), f, hashlib.sha256(open(os.path.join(root, f), "rb").read()).hexdigest()))
            rebuilt.append(digest)
        if rebuilt[0] != rebuilt[1] or not rebuilt[0]:
            fail(f"schemas: two rebuilds differ or hold no registered table: {rebuilt}")
        print(f"ok: schemas: level_up registered on node a was in force on node b; {len(sent)} events of it and of "
              f"boss_defeated (inferred) sent to both nodes are in their tables once (two group members), zone null in the "
              f"{len(lu) - len(zoned)} rows before the ADDITION; a clashing 1-0-1 answered 409; both nodes list {len(lists[0])} "
              f"schemas; verify passes; two rebuilds are byte-identical ({len(rebuilt[0])} files)")
    finally:
        broker.stop()


def section_catalog():
    """The store catalogue on a Kafka log (issue 29, item 4; docs/CONTRACT.md 12.2–12.3):
    the same seeded `generate --catalog` into the sled log and into a topic of 3 partitions
    gives the same `stock` and `catalog_items` and the same report section; two `serve
    --catalog` nodes on one topic: a purchase of a store the catalogue lacks is rejected,
    a node started with a newer catalogue records it and the other checks against it
    within seconds; `catalog history` lists both versions with their partitions' offsets;
    the serving node's tables and a rebuild from the topic give the same stock; the live
    report has the catalogue section; verify passes."""
    import sqlite3
    shop_a, shop_b = os.path.join(WORK, "shop-a.sqlite"), os.path.join(WORK, "shop-b.sqlite")
    for f in (shop_a, shop_b):
        if os.path.exists(f):
            os.remove(f)
    questlog(os.path.join(WORK, "catalog-init"), "catalog", "init", "--seed", "42", "--out", shop_a)
    # Catalogue b: a's with a quarter of the shelf space (where b takes effect changes the
    # stock), and a store 99 selling one item.
    import shutil
    shutil.copy(shop_a, shop_b)
    with sqlite3.connect(shop_b) as db:
        db.execute("update items set starting_stock = starting_stock / 4")
        db.execute("insert into stores (store_id, name, traffic_weight, restock_interval_hours) values (99, 'Night Market', 1, 6)")
        db.execute("insert into items (store_id, inventory_id, name, category, unit_price_cents, starting_stock, restock_qty, min_level) "
                   "values (99, 9901, 'Lantern', 'tool', 1250, 40, 5, 1)")
    with sqlite3.connect(shop_a) as db:
        items = db.execute("select store_id, inventory_id from items order by store_id, inventory_id").fetchall()

    def stock_csv(data, log=None, *extra):
        return questlog(data, *extra, "sql", "select * from stock order by store_id, inventory_id", "--format", "csv", log=log).stdout

    def catalog_section(data, log=None):
        questlog(data, "report", log=log)
        with open(os.path.join(data, "report", "report.md")) as f:
            text = f.read()
        lines = text.splitlines()
        heading = [i for i, l in enumerate(lines) if l.startswith("## ") and "Catalogue:" in l]
        if not heading:
            fail(f"catalog: the report of {data} has no catalogue section")
        end = next((i for i in range(heading[0] + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        return [l for l in lines if l.startswith("- Catalogue:")] + [l for l in lines[heading[0]:end] if "in force from" not in l]

    with broker_with_topic() as broker:
        # 1. The same seeded traffic on both backends: the same stock.
        sled, topic = os.path.join(WORK, "catalog-sled"), os.path.join(WORK, "catalog-topic")
        args = ("generate", "--seed", "23", "--events", "20000", "--catalog", shop_a)
        # Then catalogue b, mid-stream, and traffic later in time selling from it.
        later = ("generate", "--seed", "24", "--events", "10000", "--catalog", shop_b, "--start-time", "2026-06-01T00:00:00Z")
        for data, log in [(sled, None), (topic, broker.url())]:
            questlog(data, *args, log=log)
            questlog(data, "project", log=log)
            questlog(data, *later, log=log)
            questlog(data, "project", log=log)
        a, b = stock_csv(sled), stock_csv(topic, broker.url())
        if a != b or len(a.splitlines()) != len(items) + 2:
            fail(f"catalog: the stock of the same seeded traffic differs between the sled log and the topic:\n{a[:600]}\n---\n{b[:600]}")
        # Every column but where b took effect: on the topic, the sum of the partitions' high
        # watermarks when it was written, which Tansu reports lower than the records it holds.
        q = "select * exclude (from_log_offset) from catalog_items order by store_id, inventory_id"
        ca = questlog(sled, "sql", q, "--format", "csv").stdout
        cb = questlog(topic, "sql", q, "--format", "csv", log=broker.url()).stdout
        if ca != cb:
            fail(f"catalog: catalog_items differ between the backends:\n{ca[:400]}\n---\n{cb[:400]}")
        if catalog_section(sled) != catalog_section(topic, broker.url()):
            fail("catalog: the report's catalogue section differs between the backends")
        sold = sum(int(l.split(",")[6]) for l in a.splitlines()[1:])
        history = questlog(topic, "catalog", "history", log=broker.url()).stdout.splitlines()
        if len(history) != 2 or "from the partitions' offsets [0, 0, 0]" not in history[0] or "[0, 0, 0]" in history[1]:
            fail(f"catalog: catalog history on the topic: {history!r}")
        lantern = [l for l in a.splitlines() if l.startswith("99,9901,")]
        if not lantern or int(lantern[0].split(",")[8]) == 0:
            fail(f"catalog: the traffic after catalogue b bought nothing of its new store: {lantern}")
        print(f"ok: catalog: generate --catalog a (20,000 events), then --catalog b (10,000 later ones) into the sled log and "
              f"into a 3-partition topic: the same stock ({len(items) + 1} items, {sold} units sold), catalog_items and report "
              f"section; catalog history on the topic: {history[1].split('  ')[0]}")

        # 2. Two nodes on one topic.
        broker.create_topic("shop", 3)
        url = broker.url("shop")
        tables = os.path.join(WORK, "catalog-tables")
        node_a = Node(broker, "catalog-a", "--tables", tables, "--catalog", shop_a, topic="shop")
        sent = []

        def buy(node, store, item, n):
            status, body = call(node.base, "GET", f"/buy_asset?store_id={store}&inventory_id={item}&event_id=buy-{n}&player_id=p{n % 7}")
            if status == 200 and f"buy-{n}" not in sent:
                sent.append(f"buy-{n}")
            return status, body

        for n, (store, item) in enumerate(items * 3):
            status, body = buy(node_a, store, item, n)
            if status != 200:
                fail(f"catalog: node a refused a purchase its catalogue lists: {status} {body}")
        status, body = buy(node_a, 99, 9901, 1000)
        if status != 400 or body["rejected"][0]["reason"] != "unknown_store":
            fail(f"catalog: node a took a purchase of store 99, which its catalogue lacks: {status} {body}")
        node_b = Node(broker, "catalog-b", "--api-only", "--catalog", shop_b, topic="shop")
        status, body = buy(node_b, 99, 9901, 1001)
        if status != 200:
            fail(f"catalog: node b (catalogue b) refused store 99: {status} {body}")
        deadline, n = time.time() + 20, 1002
        while True:
            status, body = buy(node_a, 99, 9901, n)
            n += 1
            if status == 200:
                break
            if time.time() > deadline:
                fail(f"catalog: node a did not take the catalogue node b recorded within 20 s: {status} {body}")
            time.sleep(0.5)
        for k in range(10):
            for node in (node_a, node_b):
                if buy(node, 99, 9901, 2000 + 2 * k + (node is node_b))[0] != 200:
                    fail("catalog: a node refused store 99 after catalogue b was in force")
        # A client's retry through the other node: the same event (same player, so the same
        # partition) once in the tables, and once in a restarted node's stock book.
        if buy(node_b, 99, 9901, 2000)[0] != 200:
            fail("catalog: a re-sent purchase was refused")
        history = questlog(os.path.join(WORK, "catalog-history"), "catalog", "history", log=url).stdout.splitlines()
        if len(history) != 2 or not all("from the partitions' offsets [" in l for l in history):
            fail(f"catalog: catalog history lists {history}")
        # Node a's tables reach the topic's end; then its stock is a rebuild's.
        deadline = time.time() + 90
        while True:
            ids = [r["event_id"] for r in shared_rows(tables)]
            if sorted(ids) == sorted(sent):
                break
            if time.time() > deadline:
                fail(f"catalog: node a's tables hold {len(ids)} of the {len(sent)} purchases within 90 s")
            time.sleep(1)
        live_stock = stock_csv(node_a.data, None, "--tables", tables)
        rebuilt = os.path.join(WORK, "catalog-rebuild")
        questlog(rebuilt, "--tables", rebuilt + "-tables", "project", "--rebuild", log=url)
        rebuilt_stock = stock_csv(rebuilt, url, "--tables", rebuilt + "-tables")
        if live_stock != rebuilt_stock:
            fail(f"catalog: node a's stock and a rebuild's differ:\n{live_stock}\n---\n{rebuilt_stock}")
        lantern = [l for l in live_stock.splitlines() if l.startswith("99,9901,")]
        if not lantern or int(lantern[0].split(",")[8]) != sum(1 for i in sent if int(i.split("-")[1]) >= 1001):
            fail(f"catalog: store 99's stock row {lantern} does not count its {sum(1 for i in sent if int(i.split('-')[1]) >= 1001)} purchases")
        # The live page's findings are made while someone watches (/v1/live), from the
        # tables as they are: wait for ones at the tables' end.
        deadline, page = time.time() + 60, ""
        while True:
            findings = live(node_a)["findings"]
            if findings and any("Catalogue:" in l for l in findings["summary"]):
                with urllib.request.urlopen(node_a.base + "/report.html", timeout=30) as r:
                    page = r.read().decode()
                if "Lantern" in page:
                    break
            if time.time() > deadline:
                fail(f"catalog: node a's live findings have no catalogue section naming catalogue b's item within 60 s: "
                     f"{findings and findings['summary']}")
            time.sleep(1)
        # Node a started again with catalogue b (the one in force: nothing recorded) builds its
        # book from the topic: a seed-style purchase's filled-in on_hand_qty is what the
        # stock table says once that purchase is in it.
        node_a.stop()
        node_a.serve_args = ["--tables", tables, "--catalog", shop_b]
        node_a.start()
        status, body = buy(node_a, 99, 9901, 3000)
        if status != 200:
            fail(f"catalog: node a restarted with catalogue b refused store 99: {status} {body}")
        from deltalake import DeltaTable
        deadline = time.time() + 60
        while True:
            rows = [r for r in DeltaTable(os.path.join(tables, "transactions")).to_pyarrow_table(
                columns=["event_id", "on_hand_qty"]).to_pylist() if r["event_id"] == "buy-3000"]
            if rows:
                break
            if time.time() > deadline:
                fail("catalog: the purchase through the restarted node a is not in the tables within 60 s")
            time.sleep(0.5)
        after = [l for l in stock_csv(node_a.data, None, "--tables", tables).splitlines() if l.startswith("99,9901,")][0]
        if int(after.split(",")[5]) != rows[0]["on_hand_qty"]:
            fail(f"catalog: the restarted node filled on_hand_qty {rows[0]['on_hand_qty']}, the stock table says {after}")
        # On an idle topic, a catalogue recorded by another node is in force for the tables
        # at their end at once: node a's copies follow it without a new event.
        node_c = Node(broker, "catalog-c", "--api-only", "--catalog", shop_a, topic="shop")
        hash_a = next(w for w in questlog(WORK, "catalog", "show", shop_a).stdout.split() if w.startswith("sha256:"))
        deadline = time.time() + 30
        while True:
            hashes = questlog(node_a.data, "--tables", tables, "sql", "select distinct catalog_hash from catalog_items",
                              "--format", "csv").stdout.split()
            if hashes[1:] == [hash_a]:
                break
            if time.time() > deadline:
                fail(f"catalog: node a's catalog_items did not follow catalogue a, recorded on an idle topic, within 30 s: {hashes}")
            time.sleep(0.5)
        for node in (node_a, node_b, node_c):
            node.stop()
        verified = questlog(node_a.data, "--tables", tables, "verify", log=url).stdout.strip()
        if not verified.startswith("ok"):
            fail(f"catalog: verify: {verified}")
        print(f"ok: catalog: two serve --catalog nodes on one topic: store 99 rejected (unknown_store) until node b recorded "
              f"catalogue b, then taken by node a too; catalog history lists 2 versions by partition; {len(sent)} purchases in "
              f"node a's tables; its stock equals a rebuild's ({lantern[0]}); the live report has the catalogue section; "
              f"restarted with catalogue b, node a filled on_hand_qty {rows[0]['on_hand_qty']} as the stock table has it; a "
              f"catalogue recorded on the idle topic reached node a's catalog_items; verify passes")


for name in SECTIONS:
    print(f"-- {name}")
    globals()[f"section_{name}"]()
print("kafka checks: ok")
