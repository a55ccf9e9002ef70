//! A full disk, for real: `serve` runs with its data dir on a small tmpfs (mounted in a
//! private mount namespace made by `unshare`, so nothing leaks if the test dies). Load
//! fills the disk; every answer must be 200 or 507/503 with nothing acknowledged that is
//! not durable. Then space returns (a filler file is deleted) and, without a restart,
//! appends resume, the refused batches are accepted on retry, every acknowledged event is
//! in the log exactly once at dense offsets, and `verify` passes on what is on the disk.
//!
//! Two ways to fill: with the free-space reserve (sled never sees ENOSPC), and with the
//! reserve off (sled hits ENOSPC, latches the error, and the log reopens it).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Size of the test filesystem and of the filler that is deleted to give space back.
const TMPFS_SIZE_MB: u64 = 64;
const FILLER_MB: u64 = 48;
/// Events per request while filling.
const BATCH_EVENTS: usize = 200;
/// Bounds on each phase, so a regression fails instead of hanging.
const FILL_MAX_BATCHES: usize = 5_000;
const RECOVERY_TIMEOUT_MS: u64 = 60_000;

struct Run {
    server: Server,
    /// The mount point, as this process names it; `/proc/PID/root` + it reaches the tmpfs.
    mount: PathBuf,
    /// The `sh` in the namespace (the server's parent).
    ns_pid: u32,
}

impl Run {
    fn start(mount: &Path, min_free_mb: u64) -> Run {
        let is_root = unsafe_geteuid() == 0;
        // `serve` runs again after a SIGKILL (an operator's restart) until the test leaves
        // a `stop` file; then `verify` checks what is on the disk.
        let script = format!(
            "set -e; mount -t tmpfs -o size={TMPFS_SIZE_MB}m questlog-test '{m}'; \
             head -c {FILLER_MB}M /dev/zero > '{m}/filler'; \
             for attempt in 1 2 3; do \
               '{bin}' --data-dir '{m}/data' --min-free-mb {min_free_mb} serve --listen 127.0.0.1:0 --project-interval-ms 100 || true; \
               if [ -e '{m}/stop' ]; then break; fi; \
             done; \
             if '{bin}' --data-dir '{m}/data' verify >&2; then echo VERIFY-PASSED; else echo VERIFY-FAILED; fi",
            m = mount.display(),
            bin = bin().display(),
        );
        let mut cmd = Command::new("unshare");
        if !is_root {
            // An unprivileged user may mount in a user namespace of its own.
            cmd.arg("--map-root-user");
        }
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        let server = Server::start_command(cmd);
        let ns_pid = server.child.id();
        Run { server, mount: mount.to_path_buf(), ns_pid }
    }

    /// A path inside the tmpfs, as seen from outside the namespace.
    fn inside(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}/{rel}", self.ns_pid, self.mount.display()))
    }

    /// The processes the namespace's shell started (`serve`, then `verify`).
    fn shell_children(&self) -> Vec<String> {
        let path = format!("/proc/{0}/task/{0}/children", self.ns_pid);
        std::fs::read_to_string(path).unwrap_or_default().split_whitespace().map(String::from).collect()
    }

    /// The one `serve` the shell runs now.
    fn serve_pid(&self) -> String {
        let pids = self.shell_children();
        assert_eq!(pids.len(), 1, "the shell runs just `serve`: {pids:?}");
        pids[0].clone()
    }

    /// What an operator does with a server stuck on a failed disk: SIGKILL and start it
    /// again (the shell does), on the same data.
    fn restart(&mut self) {
        let old = self.serve_pid();
        let printed = self.server.output.lock().unwrap().matches("questlog serving on").count();
        assert!(Command::new("kill").args(["-KILL", &old]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_millis(RECOVERY_TIMEOUT_MS);
        loop {
            let out = self.server.output.lock().unwrap().clone();
            if out.matches("questlog serving on").count() > printed {
                let line = out.lines().filter(|l| l.contains("questlog serving on")).last().unwrap();
                self.server.addr = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
                break;
            }
            assert!(Instant::now() < deadline, "serve did not come back after the restart");
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = Instant::now() + Duration::from_millis(RECOVERY_TIMEOUT_MS);
        while http(self.server.addr, "GET", "/healthz", &[], b"").map(|r| r.status).unwrap_or(0) != 200 {
            assert!(Instant::now() < deadline, "the restarted server never became healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to `serve` (not to its `sh`), then the output of the `verify` that follows.
    fn stop_and_verify(mut self) -> String {
        std::fs::write(self.inside("stop"), b"").expect("writing the stop file");
        let serve = self.serve_pid();
        assert!(Command::new("kill").args(["-TERM", &serve]).status().unwrap().success());
        let status = self.server.child.wait().expect("wait");
        assert!(status.success(), "the namespace's shell failed: {status}");
        // The shell has exited, but the thread draining its stdout may not have read the
        // last line yet (a CI run once took the output before `VERIFY-PASSED` reached it).
        let deadline = Instant::now() + Duration::from_millis(RECOVERY_TIMEOUT_MS);
        loop {
            let out = self.server.output.lock().unwrap().clone();
            if out.contains("VERIFY-PASSED") || out.contains("VERIFY-FAILED") || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Run {
    /// If the test fails midway, `serve` must not outlive it (killing the shell alone
    /// would leave it running, holding the test's output pipe).
    fn drop(&mut self) {
        for pid in self.shell_children() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

fn unsafe_geteuid() -> u32 {
    // Without a libc dependency: the effective uid is in /proc/self/status.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Events that compress badly, so the disk fills in a few seconds.
fn batch(tag: &str, n: usize, seed: &mut u64) -> (Vec<String>, Vec<u8>) {
    let mut ids = Vec::with_capacity(n);
    let mut body = Vec::new();
    for _ in 0..n {
        let mut name = String::with_capacity(160);
        for _ in 0..10 {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            name.push_str(&format!("{:016x}", *seed));
        }
        let id = format!("{tag}-{:016x}", *seed);
        body.extend_from_slice(
            format!(r#"{{"event_type":"take_damage","event_id":"{id}","player_id":"p1","enemy_id":3,"name":"{name}","damage":5}}"#)
                .as_bytes(),
        );
        body.push(b'\n');
        ids.push(id);
    }
    (ids, body)
}

fn post(server: &Server, body: &[u8]) -> Response {
    server.post("/v1/events", &[("Content-Type", "application/x-ndjson")], body)
}

fn fill_recover_reconcile(min_free_mb: u64) {
    let mount = tempfile::tempdir().unwrap();
    let mut run = Run::start(mount.path(), min_free_mb);
    let mut seed = 0x5eed ^ min_free_mb;
    let mut acked: HashSet<String> = HashSet::new();
    let mut refused: Vec<(Vec<String>, Vec<u8>)> = Vec::new();

    // 1. Fill the disk. Every answer is 200 (all appended) or a refusal that appended nothing.
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for i in 0..FILL_MAX_BATCHES {
        let (ids, body) = batch(&format!("fill{min_free_mb}-{i}"), BATCH_EVENTS, &mut seed);
        let r = post(&run.server, &body);
        *statuses.entry(r.status).or_default() += 1;
        match r.status {
            200 => {
                assert_eq!(r.json()["accepted"], BATCH_EVENTS as u64, "{}", r.text());
                acked.extend(ids);
            }
            507 | 503 => {
                let j = r.json();
                assert_eq!(j["accepted"], 0, "a refusal acknowledges nothing: {j}");
                assert!(r.headers.iter().any(|(k, _)| k == "retry-after"), "refusals say when to retry");
                refused.push((ids, body));
                if refused.len() >= 3 {
                    break;
                }
            }
            other => panic!("filling the disk got {other}: {}", r.text()),
        }
    }
    assert!(refused.len() >= 3, "the disk never filled: {statuses:?}");
    assert!(statuses.get(&507).copied().unwrap_or(0) >= 1, "a full disk answers 507: {statuses:?}");
    if min_free_mb > 0 {
        // Under the reserve the log refuses before writing, and says why.
        let h = run.server.get("/healthz");
        assert_eq!(h.status, 503, "{}", h.text());
        assert!(h.text().contains("disk full"), "{}", h.text());
    }

    // 2. Space returns. Appends resume within the bound, without a restart, unless sled
    //    itself hit the full disk and cannot let go of its store (then the server says
    //    so on /healthz, and an operator's restart recovers).
    std::fs::remove_file(run.inside("filler")).expect("deleting the filler");
    let deadline = Instant::now() + Duration::from_millis(RECOVERY_TIMEOUT_MS);
    let mut restarted = false;
    loop {
        let (ids, body) = batch(&format!("probe{min_free_mb}"), 1, &mut seed);
        let r = post(&run.server, &body);
        if r.status == 200 {
            acked.extend(ids);
            break;
        }
        assert!(matches!(r.status, 503 | 507), "while recovering: {} {}", r.status, r.text());
        refused.push((ids, body)); // retried below, like the others
        let health = run.server.get("/healthz").text();
        if health.contains("restart") && min_free_mb == 0 && !restarted {
            eprintln!("disk_full: sled could not release its failed store ({health}); restarting serve");
            run.restart();
            restarted = true;
            continue;
        }
        assert!(Instant::now() < deadline, "appends did not resume within {RECOVERY_TIMEOUT_MS} ms: {} / {health}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(min_free_mb == 0 || !restarted, "with the reserve, no restart is needed");
    let server = &run.server;
    assert_eq!(server.get("/healthz").status, 200);

    // 3. The refused batches, retried, are taken (a part of one that reached the disk
    //    before the failure is dropped as a duplicate: it is there once either way).
    for (ids, body) in refused {
        let r = post(server, &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        let dups = j["duplicates"].as_u64().unwrap_or(0);
        assert_eq!(j["accepted"].as_u64().unwrap() + dups, ids.len() as u64, "{j}");
        if min_free_mb > 0 {
            assert_eq!(dups, 0, "with the reserve, a refused batch wrote nothing: {j}");
        }
        acked.extend(ids);
    }

    // 4. Reconcile: every acknowledged event exactly once, dense offsets, nothing else.
    let replay = server.get("/v1/replay?from=0");
    assert_eq!(replay.status, 200);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (k, line) in replay.text().lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["log_offset"], k as u64, "offsets are dense");
        *seen.entry(v["event_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let lost: Vec<_> = acked.iter().filter(|id| !seen.contains_key(*id)).take(5).collect();
    assert!(lost.is_empty(), "acknowledged events missing from the log: {lost:?}");
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dup.is_empty(), "events in the log twice: {dup:?}");
    let stray: Vec<_> = seen.keys().filter(|id| !acked.contains(*id)).take(5).collect();
    assert!(stray.is_empty(), "events in the log nobody was told of: {stray:?}");

    // 5. The tables catch up; after a clean stop, `verify` passes on what is on the disk.
    let end = seen.len() as u64;
    let deadline = Instant::now() + Duration::from_millis(RECOVERY_TIMEOUT_MS);
    loop {
        let h = server.get("/healthz").json();
        if h["projected_offset"] == end {
            break;
        }
        assert!(Instant::now() < deadline, "the tables did not catch up: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run.stop_and_verify();
    assert!(out.contains("VERIFY-PASSED"), "verify failed after the disk-full run:\n{out}");
}

/// Whether this machine lets the test mount a tmpfs in a private mount namespace (as root,
/// or in a user namespace of its own). Where it cannot (containers without user
/// namespaces), the tests say so and pass without running — except under CI (`CI` set),
/// whose `.ci/run` runs as root and must run them.
fn can_mount_privately() -> bool {
    let mut cmd = Command::new("unshare");
    if unsafe_geteuid() != 0 {
        cmd.arg("--map-root-user");
    }
    let probe = tempfile::tempdir().unwrap();
    let script = format!("mount -t tmpfs -o size=1m questlog-probe '{}'", probe.path().display());
    let ok = cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().map(|o| o.status.success()).unwrap_or(false);
    can_run(ok, "a tmpfs in a private mount namespace (root or user namespaces, and util-linux's unshare)")
}

#[test]
fn full_disk_under_the_reserve_refuses_then_resumes() {
    if can_mount_privately() {
        fill_recover_reconcile(2);
    }
}

#[test]
fn full_disk_hit_by_sled_is_reopened_and_resumes() {
    if can_mount_privately() {
        fill_recover_reconcile(0);
    }
}
