"""questlog on Kafka across hosts, as Linux network namespaces this test makes (issue 29,
item 7): a broker host (Nisshi, SQLite storage), two node hosts each running `serve` as a
member of one consumer group (sharing the tables directory, as a network filesystem
would), and a load host posting events to both nodes. All addresses live inside the
namespaces (10.77.0.0/24 on veth pairs joined by a bridge); nothing listens outside.

Under load: SIGKILL of a node (a projecting member) and its restart; one node cut off
from the broker with iptables and healed; the broker killed and restarted. Then a checker
in the style of Jepsen's Kafka test: `lost` (acknowledged, never in the tables),
`duplicated` (in the tables more than once) and `unexpected` (in the tables, never sent)
must all be empty; `verify` (from the broker host) passes.

usage: netns.py QUESTLOG_BIN NISSHI_BIN WORK_DIR   (as root; needs ip and iptables)
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter

BIN, NISSHI, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
HERE = os.path.dirname(os.path.abspath(__file__))
NET = "10.77.0"
HOSTS = {"qlbroker": 1, "qlnode1": 11, "qlnode2": 12, "qlload": 21}
BRIDGE = "qlbr0"
TOPIC = "events"
GROUP = "netns-test"


def fail(msg):
    print(f"FAIL: netns: {msg}", file=sys.stderr)
    sys.exit(1)


def sh(*cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        fail(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p


def in_ns(ns, *cmd):
    return ["ip", "netns", "exec", ns, *cmd]


def addr(host):
    return f"{NET}.{HOSTS[host]}"


def teardown():
    for ns in HOSTS:
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)


def setup():
    teardown()
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    for ns, n in HOSTS.items():
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"ql{n}a", "type", "veth", "peer", "name", f"ql{n}b")
        sh("ip", "link", "set", f"ql{n}b", "master", BRIDGE)
        sh("ip", "link", "set", f"ql{n}b", "up")
        sh("ip", "link", "set", f"ql{n}a", "netns", ns)
        sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
        sh(*in_ns(ns, "ip", "addr", "add", f"{NET}.{n}/24", "dev", f"ql{n}a"))
        sh(*in_ns(ns, "ip", "link", "set", f"ql{n}a", "up"))


class Broker:
    def __init__(self):
        self.log = open(os.path.join(WORK, "nisshi.log"), "a")
        self.start()

    def start(self):
        url = f"tcp://{addr('qlbroker')}:9092"
        self.proc = subprocess.Popen(in_ns("qlbroker", NISSHI, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                           "--storage-engine", "sqlite://netns.db", "--cluster-id", "netns"),
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=WORK)
        deadline = time.time() + 60
        while time.time() < deadline:
            if sh(*in_ns("qlbroker", "bash", "-c", f"exec 3<>/dev/tcp/{addr('qlbroker')}/9092"), check=False).returncode == 0:
                return
            time.sleep(0.2)
        fail("nisshi did not listen within 60 s")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def questlog(host, data, *args, timeout=300):
    p = subprocess.run(in_ns(host, BIN, "--data-dir", data, "--log", f"kafka://{addr('qlbroker')}:9092/{TOPIC}", *args),
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        fail(f"questlog {' '.join(args)} on {host} exited {p.returncode}: {p.stderr[-2000:]}")
    return p.stdout


class Node:
    """`serve` on a node host, projecting as a member of GROUP into the shared tables."""

    def __init__(self, host, tables):
        self.host, self.tables = host, tables
        self.data = os.path.join(WORK, host)
        self.base = f"http://{addr(host)}:8080"
        self.start()

    def start(self):
        self.err = open(self.data + ".stderr", "a")
        self.proc = subprocess.Popen(in_ns(self.host, BIN, "--data-dir", self.data, "--log", f"kafka://{addr('qlbroker')}:9092/{TOPIC}",
                                           "--tables", self.tables, "serve", "--listen", f"{addr(self.host)}:8080", "--allow-keyless",
                                           "--group", GROUP),
                                     stdout=self.err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if sh(*in_ns(self.host, "curl", "-sf", "-o", "/dev/null", self.base + "/healthz"), check=False).returncode == 0:
                return
            time.sleep(0.2)
        fail(f"serve on {self.host} did not answer /healthz within 30 s; see {self.err.name}")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)

    def live(self):
        p = sh(*in_ns(self.host, "curl", "-sf", self.base + "/v1/live"), check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None


def cut(host, on):
    """Drops everything between `host` and the broker (both ways), or lets it through again."""
    op = "-A" if on else "-D"
    for chain, flag in (("OUTPUT", "-d"), ("INPUT", "-s")):
        sh(*in_ns(host, "iptables", op, chain, flag, addr("qlbroker"), "-j", "DROP"))


def table_rows(tables):
    from deltalake import DeltaTable
    rows = []
    for loc in ["guild_joins", "enemies_killed", "quest_accept", "damage_taken", "transactions"]:
        path = os.path.join(tables, loc)
        if os.path.isdir(os.path.join(path, "_delta_log")):
            rows += DeltaTable(path).to_pyarrow_table(columns=["event_id", "log_partition", "log_offset"]).to_pylist()
    return rows


def main():
    os.makedirs(WORK, exist_ok=True)
    setup()
    procs = []
    try:
        broker = Broker()
        # The topic, from the broker host (the only one that needs no routing to itself).
        sh(*in_ns("qlbroker", sys.executable, "-c",
                  "import sys; from confluent_kafka.admin import AdminClient, NewTopic; "
                  f"a = AdminClient({{'bootstrap.servers': '{addr('qlbroker')}:9092'}}); "
                  f"[f.result(timeout=30) for f in a.create_topics([NewTopic('{TOPIC}', 6, 1)]).values()]"))
        tables = os.path.join(WORK, "tables")
        nodes = [Node("qlnode1", tables), Node("qlnode2", tables)]
        out, stop = os.path.join(WORK, "load.json"), os.path.join(WORK, "load.stop")
        load = subprocess.Popen(in_ns("qlload", sys.executable, os.path.join(HERE, "netns_load.py"), out, stop, *[n.base for n in nodes]))
        procs.append(load)
        t0 = time.time()
        faults = []
        time.sleep(6)
        nodes[0].kill()
        faults.append(f"SIGKILL serve on qlnode1 at {time.time() - t0:.0f} s")
        time.sleep(3)
        nodes[0].start()
        time.sleep(6)
        cut("qlnode2", True)
        faults.append(f"iptables cut qlnode2 from the broker at {time.time() - t0:.0f} s for 12 s")
        time.sleep(12)
        cut("qlnode2", False)
        time.sleep(6)
        broker.kill()
        faults.append(f"SIGKILL nisshi at {time.time() - t0:.0f} s, restarted 2 s later")
        time.sleep(2)
        broker.start()
        time.sleep(10)
        open(stop, "w").close()
        load.wait(timeout=120)
        result = json.load(open(out))
        sent, acked = set(result["sent"]), set(result["acked"])
        # The members catch up (the group settles after the faults).
        deadline = time.time() + 180
        rows = []
        while time.time() < deadline:
            try:
                rows = table_rows(tables)
            except Exception:
                rows = []
            if acked <= {r["event_id"] for r in rows}:
                break
            time.sleep(1)
        pages = [n.live() for n in nodes]
        for n in nodes:
            n.stop()
        ids = Counter(r["event_id"] for r in rows)
        lost = sorted(acked - set(ids))
        duplicated = sorted(i for i, c in ids.items() if c > 1)
        unexpected = sorted(set(ids) - sent)
        places = Counter((r["log_partition"], r["log_offset"]) for r in rows)
        twice_placed = [k for k, c in places.items() if c > 1]
        verdict = {"acknowledged": len(acked), "sent": len(sent), "rows": len(rows), "lost": len(lost), "duplicated": len(duplicated),
                   "unexpected": len(unexpected), "requests": result["counts"], "errors": result.get("errors")}
        print(f"netns checker: {json.dumps(verdict)}")
        if lost or duplicated or unexpected or twice_placed:
            fail(f"lost {lost[:5]}, duplicated {duplicated[:5]}, unexpected {unexpected[:5]}, two rows at one place {twice_placed[:5]}")
        if result["counts"]["failed"] == 0:
            fail("no request failed: the faults did not reach the clients")
        verified = questlog("qlbroker", os.path.join(WORK, "qlnode1"), "--tables", tables, "verify").strip()
        if not verified.startswith("ok"):
            fail(f"verify: {verified}")
        held = [[p["partition"] for p in (page or {}).get("freshness", {}).get("partitions", []) if p["held_here"]] for page in pages]
        print(f"ok: netns: broker, two serve nodes (group members) and a load host in network namespaces; {'; '.join(faults)}: "
              f"{len(acked)} acknowledged events, 0 lost, 0 duplicated, 0 unexpected ({len(rows)} rows; "
              f"{result['counts']['failed']} requests failed and were re-sent); verify passes; partitions held at the end {held}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for name in ("qlnode1", "qlnode2", "qlbroker"):
            sh("pkill", "-KILL", "-f", f"--data-dir {os.path.join(WORK, name)}", check=False)
        sh("pkill", "-KILL", "-f", "netns.db", check=False)
        teardown()


if __name__ == "__main__":
    main()
