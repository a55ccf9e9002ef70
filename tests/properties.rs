//! Property tests over random cases: for random seeds, sizes, step schedules and crash
//! points —
//! - generation is a pure function of its arguments;
//! - replay from any offset (to any offset) is exactly that slice of a replay from 0;
//! - projecting incrementally, crashing anywhere in the publish protocol, gives the same
//!   tables as a rebuild (`verify` rebuilds and compares row by row).
//!
//! The cases come from a ChaCha stream: `QUESTLOG_PROPTEST_SEED` picks another stream,
//! `QUESTLOG_PROPTEST_CASES` runs more cases. A failure prints the case to reproduce it.

mod common;

use std::process::{Command, Stdio};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FAILPOINTS: [&str; 3] = ["publish.before_commit", "publish.after_commit", "publish.mid_rename"];

fn cases() -> (u64, usize) {
    let seed = std::env::var("QUESTLOG_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_128);
    let n = std::env::var("QUESTLOG_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    (seed, n)
}

#[test]
fn generation_is_pure_and_replay_slices_are_exact() {
    let (master, n) = cases();
    let mut rng = ChaCha8Rng::seed_from_u64(master);
    for case in 0..n {
        let seed: u64 = rng.random();
        let events: u64 = rng.random_range(1..3_000);
        let players: u32 = rng.random_range(1..300);
        let args = ["generate", "--seed", &seed.to_string(), "--events", &events.to_string(), "--players", &players.to_string()];
        let ctx = format!("case {case} (QUESTLOG_PROPTEST_SEED={master}): {args:?}");
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        questlog_ok(a.path(), &args);
        questlog_ok(b.path(), &args);
        let full = questlog_ok(a.path(), &["replay"]);
        assert!(full == questlog_ok(b.path(), &["replay"]), "{ctx}: two runs differ");
        let lines: Vec<&str> = full.lines().collect();
        assert_eq!(lines.len() as u64, events, "{ctx}");
        for _ in 0..3 {
            let from = rng.random_range(0..=events);
            let to = rng.random_range(from..=events);
            let suffix = questlog_ok(a.path(), &["replay", "--from", &from.to_string()]);
            assert_eq!(suffix, lines[from as usize..].iter().map(|l| format!("{l}\n")).collect::<String>(), "{ctx}: --from {from}");
            let slice = questlog_ok(a.path(), &["replay", "--from", &from.to_string(), "--to", &to.to_string()]);
            assert_eq!(
                slice,
                lines[from as usize..to as usize].iter().map(|l| format!("{l}\n")).collect::<String>(),
                "{ctx}: --from {from} --to {to}"
            );
        }
    }
}

#[test]
fn incremental_projection_with_random_crashes_equals_a_rebuild() {
    let (master, n) = cases();
    let mut rng = ChaCha8Rng::seed_from_u64(master ^ 0x9E37_79B9_7F4A_7C15);
    for case in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut schedule = Vec::new();
        let mut total = 0u64;
        let rounds = rng.random_range(2..6);
        for round in 0..rounds {
            let seed: u64 = rng.random();
            let events: u64 = rng.random_range(1..2_500);
            total += events;
            questlog_ok(d, &["generate", "--seed", &seed.to_string(), "--events", &events.to_string(), "--players", "40"]);
            let step = rng.random_range(1..900u64).to_string();
            if rng.random_bool(0.5) {
                let fp = FAILPOINTS[rng.random_range(0..FAILPOINTS.len())];
                schedule.push(format!("round {round}: +{events} events, project --step-events {step} crashing at {fp}"));
                let out = Command::new(bin())
                    .arg("--data-dir")
                    .arg(d)
                    .args(["project", "--step-events", &step])
                    .env("QUESTLOG_FAILPOINT", fp)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(!out.status.success(), "case {case}: {schedule:?}: expected a crash");
            } else {
                schedule.push(format!("round {round}: +{events} events, project --step-events {step}"));
                questlog_ok(d, &["project", "--step-events", &step]);
            }
        }
        let ctx = format!("case {case} (QUESTLOG_PROPTEST_SEED={master}): {schedule:#?}");
        questlog_ok(d, &["project", "--step-events", &rng.random_range(1..2_000u64).to_string()]);
        let out = questlog(d, &["verify"]);
        assert!(out.status.success(), "{ctx}\nverify: {}", String::from_utf8_lossy(&out.stderr));
        let ok = String::from_utf8_lossy(&out.stdout);
        assert!(ok.contains(&format!("tables at offset {total}")), "{ctx}\n{ok}");
    }
}
