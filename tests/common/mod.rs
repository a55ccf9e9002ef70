//! Helpers for end-to-end tests: run the real `questlog` binary, talk HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to answer `/healthz`.
pub const STARTUP_TIMEOUT_MS: u64 = 30_000;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_questlog"))
}

/// Runs `questlog --data-dir DIR ARGS…` to completion.
pub fn questlog(data_dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(bin()).arg("--data-dir").arg(data_dir).args(args).stdin(Stdio::null()).output().expect("running questlog");
    out
}

/// Runs a command that must succeed; returns its stdout.
pub fn questlog_ok(data_dir: &Path, args: &[&str]) -> String {
    let out = questlog(data_dir, args);
    assert!(
        out.status.success(),
        "questlog {args:?} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A `questlog serve` process on an ephemeral port.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// What the server printed on stdout after its first line.
    pub output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("--data-dir").arg(data_dir).args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        Server::start_command(cmd)
    }

    /// `start_with`, with failpoints set (`QUESTLOG_FAILPOINTS`, the fail crate's syntax).
    pub fn start_with_failpoints(data_dir: &Path, extra: &[&str], failpoints: &str) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("--data-dir").arg(data_dir).args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        cmd.env("QUESTLOG_FAILPOINTS", failpoints);
        Server::start_command(cmd)
    }

    /// `start`, for a server that is expected not to become healthy: waits (bounded) until
    /// `/healthz` says `status` (e.g. `degraded`) instead.
    pub fn start_with_status(data_dir: &Path, status: &str) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("--data-dir").arg(data_dir).args(["serve", "--listen", "127.0.0.1:0"]);
        Server::start_command_until(cmd, |r| r.json()["status"] == status)
    }

    /// Starts `cmd`, a command that ends up running `questlog serve` on a port it prints
    /// on the first line of stdout, and waits until it is healthy.
    pub fn start_command(cmd: Command) -> Server {
        Server::start_command_until(cmd, |r| r.status == 200)
    }

    /// `start_command`, waiting (bounded) until `/healthz`'s answer passes `ready`.
    pub fn start_command_until(mut cmd: Command, ready: impl Fn(&Response) -> bool) -> Server {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("starting questlog serve");
        // The first line of stdout names the address: "questlog serving on http://ADDR (…)".
        // Read on a thread so that a server that never prints fails the test in bounded time.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send((line, reader));
        });
        let Ok((line, mut reader)) = rx.recv_timeout(Duration::from_millis(STARTUP_TIMEOUT_MS)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server printed no first line within {STARTUP_TIMEOUT_MS} ms");
        };
        let Some(addr) =
            line.split("http://").nth(1).and_then(|rest| rest.split_whitespace().next()).and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no address in server output {line:?}");
        };
        // Keep draining stdout so the server never blocks on a full pipe; keep what it says.
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let server = Server { child, addr, output };
        server.wait_until(ready);
        server
    }

    fn wait_until(&self, ready: impl Fn(&Response) -> bool) {
        let deadline = Instant::now() + Duration::from_millis(STARTUP_TIMEOUT_MS);
        let mut last = String::new();
        loop {
            if let Ok(r) = http(self.addr, "GET", "/healthz", &[], b"") {
                if ready(&r) {
                    return;
                }
                last = format!("{} {}", r.status, r.text());
            }
            assert!(Instant::now() < deadline, "server at {} not healthy (or not as expected) in time; last: {last}", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        assert!(status.success());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "server exited with {status}");
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, &[], b"").expect("GET")
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        http(self.addr, "POST", path, headers, body).expect("POST")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client: one request per connection, `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Ok(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { break };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Parses `questlog replay` output.
pub fn replay_lines(data_dir: &Path) -> Vec<serde_json::Value> {
    questlog_ok(data_dir, &["replay", "--from", "0"]).lines().map(|l| serde_json::from_str(l).expect("replay line is JSON")).collect()
}

/// Copies a directory tree (symlinks as symlinks).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&e.path(), &target);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The table directories, in contract order.
pub const TABLE_DIRS: [&str; 5] = ["guild_joins", "enemies_killed", "quest_accept", "damage_taken", "transactions"];

/// The log offset a Delta table at `table_dir` reaches, read straight from its newest
/// commit's `txn` action (every projector commit carries one; 0 before the first).
pub fn delta_table_offset(table_dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(table_dir.join("_delta_log")) else { return 0 };
    let newest = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v: u64 = name.strip_suffix(".json")?.parse().ok()?;
            Some((v, e.path()))
        })
        .max();
    let Some((_, path)) = newest else { return 0 };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| v["txn"]["version"].as_u64()).unwrap_or(0)
}

/// The offset all five local Delta tables of `data_dir` reach (`DATA_DIR/delta`).
pub fn tables_offset(data_dir: &Path) -> u64 {
    TABLE_DIRS.iter().map(|d| delta_table_offset(&data_dir.join("delta").join(d))).min().unwrap_or(0)
}

/// A file of the local Delta table `DATA_DIR/delta/<dir>` that the table holds now (one
/// the plain-directory view `DATA_DIR/tables/<dir>` lists).
pub fn table_file(data_dir: &Path, dir: &str) -> PathBuf {
    let name = std::fs::read_dir(data_dir.join("tables").join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .find(|n| n.to_string_lossy().ends_with(".parquet"))
        .unwrap_or_else(|| panic!("no Parquet file in tables/{dir}"));
    data_dir.join("delta").join(dir).join(name)
}

/// Whether a test that needs `what` of the machine can run. Where it cannot, the test says
/// so and passes without running — except under CI (`CI` set), which must be able to.
pub fn can_run(available: bool, what: &str) -> bool {
    if !available {
        assert!(std::env::var_os("CI").is_none(), "CI must have {what}");
        eprintln!("SKIPPED: this machine lacks {what}");
    }
    available
}

/// Waits for `child` to exit, at most `timeout`; panics naming `what` past it.
pub fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
