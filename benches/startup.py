"""The API under load from the first second after `serve` is ready, with and without a live
page watching, and how fresh the tables stay (issue 27's benchmark; BENCHMARKS.md quotes it).

usage: python3 benches/startup.py QUESTLOG_BIN WORK_DIR [--events N] [--chromium PATH] [--serve-args "…"] [--smoke]

1. A data dir of N events (default 1,000,000), projected, as after `project`.
2. `serve` starts on it; the clock starts when `/healthz` first answers 200 (ready: not
   `starting`). At once: `generate --url --rate 5000 --batch 500` for 10 s — p99 and max.
3. Then alternating 10 s phases at the same load, three of each: with nobody watching, and
   with `GET /v1/live` polled every second as an open page does — p99 of each, and their
   ratio.
4. The same load with the page open in headless Chromium (when given) — p99.
5. Freshness: `generate --url --rate 20000 --batch 100 --concurrency 4` for 10 s while
   `/healthz` is sampled every 0.1 s; at each sample the tables' lag is the time since the
   log first held an event the tables still lack — p50, p99, max.

Every phase's client retries are counted (a retry is a failure of the promise "no client
retries"). Prints one line per figure; asserts nothing (benchmarks measure).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request


def arg(name, default=None):
    if name in sys.argv:
        i = sys.argv.index(name)
        return sys.argv[i + 1]
    return default


BIN, WORK = sys.argv[1], sys.argv[2]
SMOKE = "--smoke" in sys.argv
EVENTS = int(arg("--events", "20000" if SMOKE else "1000000"))
PHASE_S = 2 if SMOKE else 10
ROUNDS = 1 if SMOKE else 3
CHROMIUM = arg("--chromium")
SERVE_ARGS = arg("--serve-args", "").split()


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start_serve(data):
    out = open(os.path.join(WORK, "serve.out"), "w")
    err = open(os.path.join(WORK, "serve.err"), "w")
    t0 = time.time()
    proc = subprocess.Popen([BIN, "--data-dir", data, "serve", "--listen", "127.0.0.1:0"] + SERVE_ARGS, stdout=out, stderr=err,
                            stdin=subprocess.DEVNULL)
    addr = None
    while time.time() - t0 < 60:
        m = re.search(r"http://[0-9.:]+", open(os.path.join(WORK, "serve.out")).read())
        if m:
            addr = m.group(0)
            break
        time.sleep(0.02)
    if not addr:
        sys.exit("serve printed no address: " + open(os.path.join(WORK, "serve.err")).read())
    listening = time.time()
    starting_seen = False
    while True:
        try:
            status, body = get(addr + "/healthz", timeout=2)
        except OSError:
            status, body = 0, b""
        if status == 200:
            break
        if b'"starting"' in body:
            starting_seen = True
        if time.time() - t0 > 120:
            sys.exit(f"serve not ready after 120 s: {status} {body[:200]}")
        time.sleep(0.02)
    ready = time.time()
    return proc, addr, listening - t0, ready - listening, starting_seen


def load(addr, rate, seconds, batch=500, concurrency=4, seed=1):
    events = int(rate * seconds)
    p = subprocess.run([BIN, "generate", "--url", addr, "--seed", str(seed), "--events", str(events), "--rate", str(rate),
                        "--batch", str(batch), "--concurrency", str(concurrency), "--start-time", "2026-06-01T00:00:00Z"],
                       capture_output=True, text=True)
    text = p.stdout + p.stderr
    m = re.search(r"p50 ([0-9.]+)\s+p90 ([0-9.]+)\s+p99 ([0-9.]+)\s+max ([0-9.]+)", text)
    retries = re.search(r"(\d+) retries", text)
    failed = re.search(r"(\d+) failed requests", text)
    if not m:
        sys.exit("no latency in generate's output:\n" + text)
    return {"p50": float(m.group(1)), "p99": float(m.group(3)), "max": float(m.group(4)),
            "retries": int(retries.group(1)) if retries else -1, "failed": int(failed.group(1)) if failed else -1}


def poll_live(addr, stop):
    while not stop.is_set():
        get(addr + "/v1/live")
        stop.wait(1.0)


def freshness(addr, seconds):
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            status, body = get(addr + "/healthz")
            if status == 200:
                h = json.loads(body)
                samples.append((time.time(), h["log_end_offset"], h["projected_offset"]))
            stop.wait(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    result = load(addr, 20000, seconds, batch=100, concurrency=4, seed=9)
    time.sleep(2)
    stop.set()
    t.join()
    lags = []
    for i, (t_now, end, projected) in enumerate(samples):
        if end <= projected:
            lags.append(0.0)
            continue
        first = next((ts for ts, e, _ in samples[: i + 1] if e > projected), t_now)
        lags.append(t_now - first)
    lags.sort()
    pct = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] if lags else 0.0
    return result, pct(0.5), pct(0.99), lags[-1] if lags else 0.0, len(lags)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    data = os.path.join(WORK, "data")
    subprocess.run([BIN, "--data-dir", data, "generate", "--seed", "7", "--events", str(EVENTS)], check=True, capture_output=True)
    subprocess.run([BIN, "--data-dir", data, "project"], check=True, capture_output=True)
    proc, addr, listen_s, ready_s, starting_seen = start_serve(data)
    print(f"startup: listening after {listen_s:.2f} s, ready {ready_s:.2f} s later (/healthz said starting: {starting_seen}); {EVENTS} events in the log")
    try:
        first = load(addr, 5000, PHASE_S, seed=2)
        print(f"first {PHASE_S} s after ready, 5000/s in batches of 500: p50 {first['p50']:.1f} ms, p99 {first['p99']:.1f} ms, max {first['max']:.1f} ms; retries {first['retries']}, failed {first['failed']}")
        quiet, watched = [], []
        for r in range(ROUNDS):
            quiet.append(load(addr, 5000, PHASE_S, seed=10 + r))
            stop = threading.Event()
            t = threading.Thread(target=poll_live, args=(addr, stop), daemon=True)
            t.start()
            watched.append(load(addr, 5000, PHASE_S, seed=20 + r))
            stop.set()
            t.join()
        q99 = sorted(x["p99"] for x in quiet)[len(quiet) // 2]
        w99 = sorted(x["p99"] for x in watched)[len(watched) // 2]
        print(f"later, median of {ROUNDS} alternating {PHASE_S} s phases: p99 {q99:.1f} ms unwatched, {w99:.1f} ms with /v1/live every second (x{w99 / max(q99, 1e-9):.2f}); retries {sum(x['retries'] for x in quiet + watched)}")
        if CHROMIUM:
            profile = os.path.join(WORK, "chromium")
            page = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                     f"--user-data-dir={profile}", addr + "/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(3)  # the page loads and starts polling (a measurement, not synchronisation)
                cpu0 = page_cpu(page.pid)
                with_page = load(addr, 5000, PHASE_S, seed=30)
                cpu1 = page_cpu(page.pid)
            finally:
                page.terminate()
                page.wait()
            print(f"with the page open in headless Chromium: p99 {with_page['p99']:.1f} ms, max {with_page['max']:.1f} ms; the browser used {(cpu1 - cpu0) / PHASE_S:.2f} cores ({(cpu1 - cpu0) * 60 / PHASE_S:.1f} CPU-s a minute); retries {with_page['retries']}")
        result, p50, p99, mx, n = freshness(addr, PHASE_S)
        print(f"freshness at 20000/s (batches of 100, 4 connections; {n} samples every 0.1 s): tables behind the log p50 {p50:.2f} s, p99 {p99:.2f} s, max {mx:.2f} s; ingest p99 {result['p99']:.1f} ms, retries {result['retries']}")
    finally:
        proc.terminate()
        proc.wait()


def page_cpu(pid):
    """CPU seconds of a process and all its descendants (Chromium's zygote, renderer and
    GPU processes), including those of descendants that have exited and been waited for."""
    total = 0.0
    hz = os.sysconf("SC_CLK_TCK")
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p)], capture_output=True, text=True).stdout.split()
        todo += [int(c) for c in out]
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / hz
        except OSError:
            pass
    return total


if __name__ == "__main__":
    main()
