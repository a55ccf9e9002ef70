//! Whole commands within issue 27's memory bound: 512 MiB peak RSS at 10^7 events. These
//! fail when a bound the commands rely on is lifted (the way the line-bomb test fails
//! without the body budget); `benches/run.sh` measures every command at that size.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// Issue 27's bound on every command's peak RSS at 10^7 events.
const PEAK_RSS_BOUND_KIB: u64 = 512 * 1024;

/// Runs `questlog --data-dir DIR ARGS…`, which must succeed, and returns its peak RSS in
/// KiB (the kernel's own figure, from `wait4`).
fn peak_rss_kib(data: &Path, args: &[&str]) -> u64 {
    let err_path = data.with_extension("stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let child =
        Command::new(bin()).arg("--data-dir").arg(data).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(err).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes only to the status and rusage it is given, both ours; the child
    // is ours and not waited for elsewhere (`Child` does not wait when dropped).
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(ok, "questlog {args:?} failed (status {status}): {}", std::fs::read_to_string(&err_path).unwrap_or_default());
    // Linux reports ru_maxrss in KiB.
    usage.ru_maxrss as u64
}

/// Every command of issue 27's list but `serve` (measured by `benches/run.sh`), on one
/// log of 10^7 events, peaks within 512 MiB. Measured on 2026-12-04 (`benches/run.sh
/// --sizes 10000000`): `generate` 454 MiB (463–516 MiB in later runs; ~400 since item 41), `replay` 219, `project --rebuild` 475, `report`
/// 423, `verify` 476, `sql` 151–182. The bounds they rely on:
/// - `generate`: the log writer looks each block it wrote up `SLED_WRITE_TOUCHES` times so
///   that sled's cache counts the accesses and can evict; without those lookups sled kept
///   what was written and `generate` peaked at 580–646 MiB (benches/HISTORY.md, items 32
///   and 38).
/// - `project --rebuild` and `verify` (which rebuilds the tables in a scratch directory):
///   `WRITER_QUEUE_BATCHES` Arrow batches queued per Parquet writer, and `replay`:
///   `DECODE_QUEUE_BLOCKS` decoded blocks ahead of the reader. A build with the two lifted
///   (10,000 and 100,000): `project --rebuild` 4,689 MiB, `verify` 4,637, `replay` 693,
///   against 479, 471 and 222 (benches/HISTORY.md, item 40).
#[test]
fn commands_on_ten_million_events_stay_within_512_mib() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runs: [&[&str]; 6] = [
        &["generate", "--seed", "7", "--events", "10000000"],
        &["project", "--rebuild"],
        &["replay", "--from", "0"],
        &["report"],
        &["verify"],
        &["sql", "SELECT name, count(*) AS kills, avg(level) AS mean_level FROM enemy_kills GROUP BY name ORDER BY kills DESC"],
    ];
    let mut over = Vec::new();
    let mut seen = Vec::new();
    for args in runs {
        let peak_mib = peak_rss_kib(&data, args) / 1024;
        seen.push(format!("{} {peak_mib} MiB", args[0]));
        if peak_mib * 1024 > PEAK_RSS_BOUND_KIB {
            over.push(args[0]);
        }
    }
    assert!(over.is_empty(), "over 512 MiB at 10^7 events: {over:?} (peaks: {})", seen.join(", "));
}
