//! "Acknowledged only once durable", checked at the level of the promise: the system
//! calls. `serve` runs under `strace`; events are sent one request at a time and then from
//! eight clients at once; the trace must show, for every `200` answer to `POST /v1/events`,
//! an `fdatasync`/`fsync` of the log's journal (`log/journal/<n>`, where each group commit
//! is written before sled is flushed in the background) that began after the request was
//! read and ended before the answer was written — and, for the requests sent one at a
//! time, one that began after the last write of the journal made for that request.
//!
//! The same for the tables: every table directory that gained a file is synced before the
//! Delta commit that names it, and the commit's log entry and directory after it.
//!
//! SIGKILL tests cannot catch a missing fsync (the page cache survives them). This one
//! fails if the journal's `fdatasync` is removed, or moved after the answer or before the
//! journal's write.
//!
//! Needs `strace` and ptrace (`.ci/run` installs strace; CI runs as root). Where either is
//! missing, the test says so and passes without running — except under CI (`CI` set).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Requests sent one at a time (each checked against the log writes made for it).
const SEQUENTIAL_REQUESTS: usize = 40;
/// Concurrent clients, and requests each sends, of 20 events each.
const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: usize = 15;

/// One system call as the trace shows it. Positions are line numbers in the trace: strace
/// prints one line per call when nothing happened in between, and splits a call into
/// `<unfinished ...>` and `<... resumed>` lines when another thread's call came between,
/// so ordering by line is ordering by time. A one-line call started just before its line.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    /// Everything between the parentheses, as strace printed it (with `-yy`, each fd
    /// argument carries its path or its TCP endpoints).
    args: String,
    ret: i64,
    start: f64,
    end: f64,
}

fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: HashMap<String, (String, String, f64)> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let pos = i as f64;
        let mut parts = line.splitn(3, char::is_whitespace).filter(|s| !s.is_empty());
        let Some(pid) = parts.next() else { continue };
        let rest = line[pid.len()..].trim_start();
        // Skip the timestamp (-ttt): the position in the file orders the calls.
        let Some((_, rest)) = rest.split_once(' ') else { continue };
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else { continue };
            let Some((pname, head, start)) = pending.remove(pid) else { continue };
            assert_eq!(pname, name, "trace line {i}: resumed call does not match: {line}");
            let full = format!("{head}{tail}");
            if let Some((args, ret)) = split_result(&full) {
                calls.push(Call { name: name.to_string(), args, ret, start, end: pos });
            }
            continue;
        }
        let Some((name, after)) = rest.split_once('(') else { continue };
        if let Some(head) = after.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_string(), (name.to_string(), head.to_string(), pos));
            continue;
        }
        if let Some((args, ret)) = split_result(after) {
            calls.push(Call { name: name.to_string(), args, ret, start: pos - 0.5, end: pos });
        }
    }
    calls
}

/// `args) = ret <duration>` into the arguments and the return value (with `-yy` a returned
/// fd carries its path, `7</tmp/x>`: the number is what counts).
fn split_result(s: &str) -> Option<(String, i64)> {
    // strace pads short calls: `fsync(3</x/db>)         = 0`.
    let (args, result) = s.rsplit_once(" = ")?;
    let args = args.trim_end().strip_suffix(')')?;
    let digits: String = result.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
    let ret = digits.parse().ok()?;
    Some((args.to_string(), ret))
}

/// A write to a file: the journal writes its records with `pwrite64`, as sled does.
fn is_write(c: &Call) -> bool {
    matches!(c.name.as_str(), "write" | "writev" | "pwrite64" | "pwritev" | "pwritev2")
}

/// The first argument: an fd with its path or endpoints, e.g. `7</tmp/x/log/db>`.
fn fd_arg(args: &str) -> &str {
    args.split(", ").next().unwrap_or("")
}

fn strace_usable() -> bool {
    let ok = Command::new("strace").args(["-f", "-o", "/dev/null", "true"]).output().map(|o| o.status.success()).unwrap_or(false);
    can_run(ok, "strace with ptrace allowed (apt-get install strace; run as root)")
}

fn event(i: usize) -> String {
    format!(r#"{{"event_type":"kill_enemy","event_id":"dur-{i}","enemy_id":{i},"name":"Orc","level":3}}"#)
}

/// Sends SIGTERM to the `questlog serve` that strace runs (its pid is in serve.json) and
/// waits for both to exit.
fn stop_traced(server: Server, data_dir: &Path) {
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data_dir.join("serve.json")).unwrap()).unwrap();
    let pid = info["pid"].as_u64().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut server = server;
    let status = wait_exit(&mut server.child, Duration::from_secs(60), "serve under strace, after SIGTERM,");
    assert!(status.success(), "strace (and serve) exited with {status}");
}

#[test]
fn every_acknowledgement_follows_an_fsync_of_the_log_covering_it() {
    if !strace_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trace_path = dir.path().join("trace.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-ttt", "-T", "-yy", "-s", "48", "-o"])
        .arg(&trace_path)
        .args(["-e", "trace=pwrite64,pwritev,pwritev2,write,writev,sendto,sendmsg,read,recvfrom,fsync,fdatasync,sync_file_range"])
        .arg(bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let server = Server::start_command(cmd);

    // One at a time: the log writes between a request and its answer are that request's.
    for i in 0..SEQUENTIAL_REQUESTS {
        let r = http(server.addr, "POST", "/v1/events?one-at-a-time", &[], event(i).as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["accepted"], 1);
    }
    // Concurrently: group commits answer several requests with one fsync.
    let addr = server.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                for r in 0..REQUESTS_PER_CLIENT {
                    let base = 1_000_000 + (c * REQUESTS_PER_CLIENT + r) * 20;
                    let body = format!("[{}]", (base..base + 20).map(event).collect::<Vec<_>>().join(","));
                    let resp = http(addr, "POST", "/v1/events", &[], body.as_bytes()).unwrap();
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    assert_eq!(resp.json()["accepted"], 20);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop_traced(server, &data);

    let trace = std::fs::read_to_string(&trace_path).unwrap();
    let calls = parse_trace(&trace);
    let is_log_file = |c: &Call| fd_arg(&c.args).contains("/log/journal/");
    let syncs: Vec<&Call> =
        calls.iter().filter(|c| matches!(c.name.as_str(), "fsync" | "fdatasync") && is_log_file(c) && c.ret == 0).collect();
    let log_writes: Vec<&Call> = calls.iter().filter(|c| is_write(c) && is_log_file(c) && c.ret > 0).collect();
    assert!(!log_writes.is_empty(), "the trace shows no write of log/journal/: is the log elsewhere?");

    // Per connection (the fd's TCP endpoints, unique per connection): its reads, and
    // whether it carried an event POST, and of which phase.
    // With -yy a TCP socket shows its endpoints, or `socket:[inode]` where strace cannot
    // decode them; either names one connection.
    let tcp = |c: &Call| fd_arg(&c.args).contains("<TCP:[") || fd_arg(&c.args).contains("<socket:[");
    let mut reads: HashMap<&str, Vec<&Call>> = HashMap::new();
    let mut kind: HashMap<&str, &str> = HashMap::new();
    for c in calls.iter().filter(|c| matches!(c.name.as_str(), "read" | "recvfrom") && tcp(c) && c.ret > 0) {
        let conn = fd_arg(&c.args).split_once('<').map_or("", |x| x.1);
        reads.entry(conn).or_default().push(c);
        if c.args.contains("POST /v1/events?one-at-a-time ") {
            kind.insert(conn, "sequential");
        } else if c.args.contains("POST /v1/events ") {
            kind.insert(conn, "concurrent");
        }
    }
    let mut checked: HashMap<&str, usize> = HashMap::new();
    for answer in calls
        .iter()
        .filter(|c| matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg") && tcp(c) && c.args.contains("\"HTTP/1.1 200"))
    {
        let conn = fd_arg(&answer.args).split_once('<').map_or("", |x| x.1);
        let Some(&phase) = kind.get(conn) else { continue };
        let request_read = reads[conn].iter().filter(|r| r.end < answer.start).map(|r| r.end).fold(f64::MIN, f64::max);
        assert!(request_read > f64::MIN, "an answer on {conn} before any read of its request");
        assert!(
            syncs.iter().any(|s| s.start > request_read && s.end < answer.start),
            "{phase} answer on {conn} (trace line {}) was sent with no fsync of the journal between reading its request (line {}) and answering",
            answer.end,
            request_read
        );
        if phase == "sequential" {
            let last_write =
                log_writes.iter().filter(|w| w.start > request_read && w.end < answer.start).map(|w| w.end).fold(f64::MIN, f64::max);
            assert!(
                last_write > f64::MIN,
                "no write of the journal between the request on {conn} (line {request_read}) and its answer (line {})",
                answer.end
            );
            assert!(
                syncs.iter().any(|s| s.start > last_write && s.end < answer.start),
                "the answer on {conn} (line {}) is not preceded by an fsync of the journal that began after its last write for it (line {last_write})",
                answer.end
            );
        }
        *checked.entry(phase).or_default() += 1;
    }
    assert_eq!(checked.get("sequential").copied().unwrap_or(0), SEQUENTIAL_REQUESTS, "every sequential answer was found in the trace");
    assert_eq!(
        checked.get("concurrent").copied().unwrap_or(0),
        CLIENTS * REQUESTS_PER_CLIENT,
        "every concurrent answer was found in the trace"
    );
    let sync_file_ranges = calls.iter().filter(|c| c.name == "sync_file_range").count();
    eprintln!(
        "durability trace: {} journal writes, {} sync_file_range (sled), {} fsync/fdatasync of the journal for {} answers",
        log_writes.len(),
        sync_file_ranges,
        syncs.len(),
        SEQUENTIAL_REQUESTS + CLIENTS * REQUESTS_PER_CLIENT
    );
}

/// The string arguments of a call (`"…"`), in order.
fn paths(args: &str) -> Vec<&str> {
    args.split('"').skip(1).step_by(2).collect()
}

/// The tables' commit, checked in the system calls of `questlog project`: every change to
/// a table directory's entries (a staged file created or renamed into it) is followed by
/// an `fsync` of that directory before the Delta commit that may name the file, and every
/// commit is followed by an `fsync` of its log entry and of the `_delta_log` directory. A
/// power loss then cannot leave a commit naming files whose directory entries were lost,
/// nor take a commit that was reported done.
#[test]
fn every_table_commit_follows_an_fsync_of_the_directories_it_names() {
    if !strace_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    questlog_ok(&data, &["generate", "--seed", "3", "--events", "6000"]);
    let trace_path = dir.path().join("trace.txt");
    let mut traced = Command::new("strace")
        .args(["-f", "-ttt", "-yy", "-s", "256", "-o"])
        .arg(&trace_path)
        .args(["-e", "trace=openat,rename,renameat,renameat2,link,linkat,fsync,fdatasync"])
        .arg(bin())
        .arg("--data-dir")
        .arg(&data)
        // Twelve steps of 500 events: ten files per table, so compaction commits too.
        .args(["project", "--step-events", "500"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut traced, Duration::from_secs(120), "project under strace");
    assert!(status.success(), "project under strace exited with {status}");
    let calls = parse_trace(&std::fs::read_to_string(&trace_path).unwrap());
    let root = std::fs::canonicalize(data.join("delta")).unwrap().to_string_lossy().to_string();
    // A Delta commit is the creation of `<table>/_delta_log/<version>.json` (object_store's
    // local put-if-absent links a written temporary file to that name).
    let commit_of = |p: &str| -> Option<String> {
        let (table, file) = p.strip_prefix(&root)?.trim_start_matches('/').split_once("/_delta_log/")?;
        let version = file.strip_suffix(".json")?;
        (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())).then(|| format!("{root}/{table}"))
    };
    // Directory entry changes in the table directories (not their logs), as (position, directory).
    let mut changes: Vec<(f64, String)> = Vec::new();
    let mut commits: Vec<(f64, f64, String, String)> = Vec::new();
    let mut syncs: Vec<(f64, f64, String)> = Vec::new();
    for c in calls.iter().filter(|c| c.ret >= 0) {
        match c.name.as_str() {
            "openat" if c.args.contains("O_CREAT") => {
                if let Some(p) = paths(&c.args).first().filter(|p| p.starts_with(&root)) {
                    let parent = Path::new(p).parent().unwrap().to_string_lossy().to_string();
                    if !parent.ends_with("/_delta_log") && parent != root {
                        changes.push((c.end, parent));
                    }
                }
            }
            "rename" | "renameat" | "renameat2" | "link" | "linkat" => {
                let ps = paths(&c.args);
                let Some(to) = ps.last() else { continue };
                if let Some(table) = commit_of(to) {
                    commits.push((c.start, c.end, table, to.to_string()));
                } else if to.starts_with(&root) && !to.contains("/_delta_log/") {
                    changes.push((c.end, Path::new(to).parent().unwrap().to_string_lossy().to_string()));
                }
            }
            "fsync" | "fdatasync" => {
                let fd = fd_arg(&c.args);
                if let Some(path) = fd.split_once('<').map(|x| x.1.trim_end_matches('>')) {
                    syncs.push((c.start, c.end, path.to_string()));
                }
            }
            _ => {}
        }
    }
    // Five tables created, twelve steps each, and compaction.
    assert!(commits.len() >= 5 * 13 + 1, "only {} Delta commits in the trace", commits.len());
    let mut checked = 0;
    for (i, (start, end, table, entry)) in commits.iter().enumerate() {
        let since = commits[..i].iter().rev().find(|c| &c.2 == table).map_or(f64::MIN, |c| c.1);
        for (at, d) in changes.iter().filter(|(at, d)| *at > since && *at < *start && d == table) {
            assert!(
                syncs.iter().any(|(s, e, p)| p == d && *s > *at && *e < *start),
                "commit {entry} (trace line {start}) may name a file in {d} whose directory entry (line {at}) was never synced before it"
            );
            checked += 1;
        }
        if entry.ends_with("00000000000000000000.json") {
            continue; // the table's creation: nothing was acknowledged by it
        }
        let log_dir = format!("{table}/_delta_log");
        assert!(
            syncs.iter().any(|(s, _, p)| p == entry && *s > *end) && syncs.iter().any(|(s, _, p)| *p == log_dir && *s > *end),
            "commit {entry} (trace line {start}): the entry and its directory are not synced after it"
        );
    }
    assert!(checked >= 60, "only {checked} directory changes were checked");
}

/// A store catalogue is in force only once durable: `generate --catalog` records it, and
/// only after the record's `Ok` writes the copies under `DATA_DIR/catalog/`. Between the
/// log's opening sync (of `log/db`) and that first copy, the trace must show the record
/// written to the log's journal and an `fdatasync`/`fsync` of the journal after that write.
#[test]
fn a_catalogue_record_is_synced_before_it_is_in_force() {
    if !strace_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trace_path = dir.path().join("trace.txt");
    let catalog = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/catalog-example.sqlite");
    let status = Command::new("strace")
        .args(["-f", "-ttt", "-T", "-yy", "-s", "48", "-o"])
        .arg(&trace_path)
        .args(["-e", "trace=pwrite64,pwritev,pwritev2,write,writev,fsync,fdatasync"])
        .arg(bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["generate", "--seed", "1", "--events", "10", "--catalog"])
        .arg(&catalog)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "generate --catalog under strace exited with {status}");
    let calls = parse_trace(&std::fs::read_to_string(&trace_path).unwrap());
    let is_log_file = |c: &Call| fd_arg(&c.args).contains("/log/journal/");
    let is_sync = |c: &Call| matches!(c.name.as_str(), "fsync" | "fdatasync") && is_log_file(c) && c.ret == 0;
    let is_store_sync = |c: &Call| matches!(c.name.as_str(), "fsync" | "fdatasync") && fd_arg(&c.args).ends_with("/log/db>") && c.ret == 0;
    let copy = calls
        .iter()
        .find(|c| {
            let fd = fd_arg(&c.args);
            c.name.starts_with("write") && fd.contains("/catalog/.versions.json.") && fd.ends_with(".tmp>")
        })
        .expect("the trace shows the catalogue copy being written");
    let opened = calls.iter().find(|c| is_store_sync(c)).expect("the log's opening sync");
    let record_write = calls
        .iter()
        .filter(|c| is_write(c) && is_log_file(c) && c.ret > 0 && c.start > opened.end && c.end < copy.start)
        .map(|c| c.end)
        .fold(f64::MIN, f64::max);
    assert!(record_write > f64::MIN, "no write of the log's journal between opening the log and the catalogue coming into force");
    assert!(
        calls.iter().any(|c| is_sync(c) && c.start > record_write && c.end < copy.start),
        "the catalogue came into force (trace line {}) with no fsync of the journal after its record was written (line {record_write})",
        copy.end
    );
}

/// What the commits of the test above rely on besides their own entries: a table directory
/// and its `_delta_log/` that were just created are synced into their parents (a new
/// directory's entry is its parent's data), and a checkpoint — which a reader starts from
/// once the log entries before it are cleaned up — is synced with `_last_checkpoint` and
/// `_delta_log/` before the projector goes on.
#[test]
fn new_table_directories_and_checkpoints_are_synced() {
    if !strace_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    questlog_ok(&data, &["generate", "--seed", "3", "--events", "6000"]);
    let trace_path = dir.path().join("trace.txt");
    let mut traced = Command::new("strace")
        .args(["-f", "-ttt", "-yy", "-s", "256", "-o"])
        .arg(&trace_path)
        .args(["-e", "trace=mkdir,mkdirat,openat,rename,renameat,renameat2,link,linkat,fsync,fdatasync"])
        .arg(bin())
        .arg("--data-dir")
        .arg(&data)
        // 24 steps of 250 events: more than 20 commits per table, so a checkpoint.
        .args(["project", "--step-events", "250"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut traced, Duration::from_secs(180), "project under strace");
    assert!(status.success(), "project under strace exited with {status}");
    let calls = parse_trace(&std::fs::read_to_string(&trace_path).unwrap());
    let data_dir = std::fs::canonicalize(&data).unwrap().to_string_lossy().to_string();
    let root = format!("{data_dir}/delta");
    let syncs: Vec<(f64, String)> = calls
        .iter()
        .filter(|c| c.ret == 0 && matches!(c.name.as_str(), "fsync" | "fdatasync"))
        .filter_map(|c| fd_arg(&c.args).split_once('<').map(|x| (c.start, x.1.trim_end_matches('>').to_string())))
        .collect();
    let synced_after = |at: f64, path: &str| syncs.iter().any(|(s, p)| *s > at && p == path);
    // Directories created under the tables' root (the root itself, the tables, their logs).
    let mut made = 0;
    for c in calls.iter().filter(|c| c.ret == 0 && c.name.starts_with("mkdir")) {
        let Some(p) = paths(&c.args).first().map(|p| p.to_string()) else { continue };
        if !(p == root || p.starts_with(&format!("{root}/"))) {
            continue;
        }
        let parent = Path::new(&p).parent().unwrap().to_string_lossy().to_string();
        assert!(synced_after(c.end, &parent), "{p} was created (trace line {}) but its parent {parent} never synced after", c.end);
        made += 1;
    }
    assert!(made >= 1 + 5 + 5, "only {made} directories created under {root}");
    // Checkpoints: every rename or link onto a checkpoint file or `_last_checkpoint`.
    let mut checkpoints = 0;
    for c in calls.iter().filter(|c| c.ret == 0 && matches!(c.name.as_str(), "rename" | "renameat" | "renameat2" | "link" | "linkat")) {
        let Some(to) = paths(&c.args).last().map(|p| p.to_string()) else { continue };
        if !to.starts_with(&root) || !(to.contains(".checkpoint.") || to.ends_with("/_last_checkpoint")) {
            continue;
        }
        let log_dir = Path::new(&to).parent().unwrap().to_string_lossy().to_string();
        assert!(synced_after(c.end, &to), "{to} (trace line {}) is never synced", c.end);
        assert!(synced_after(c.end, &log_dir), "{log_dir} is not synced after {to} (trace line {})", c.end);
        checkpoints += 1;
    }
    assert!(checkpoints >= 2 * 5, "only {checkpoints} checkpoint files written (5 tables, a checkpoint and _last_checkpoint each)");
}
