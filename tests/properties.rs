//! Property tests over random cases: for random seeds, sizes, step schedules and crash
//! points —
//! - generation is a pure function of its arguments;
//! - replay from any offset (to any offset) is exactly that slice of a replay from 0;
//! - projecting incrementally, crashing anywhere in the publish protocol, gives the same
//!   tables as a rebuild (`verify` rebuilds and compares row by row);
//! - and so does crashing at every pass of every crash point, in turn: each staged write,
//!   each finished file, each publish of a step or of a compaction (counted failpoints,
//!   `QUESTLOG_FAILPOINTS=name=N*off->return` crashes the N+1st time the point is reached).
//!
//! The cases come from a ChaCha stream: `QUESTLOG_PROPTEST_SEED` picks another stream,
//! `QUESTLOG_PROPTEST_CASES` runs more cases. A failure prints the case to reproduce it.

mod common;

use std::process::{Command, Stdio};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Points where a projection can crash (each aborts the process like a SIGKILL).
const FAILPOINTS: [&str; 5] = ["stage.write", "stage.finished", "publish.before_commit", "publish.after_commit", "publish.before_view"];

/// The `QUESTLOG_FAILPOINTS` value that crashes at the `pass`th time `point` is reached
/// (from 0).
fn crash_at(point: &str, pass: u32) -> String {
    if pass == 0 {
        format!("{point}=return")
    } else {
        format!("{point}={pass}*off->return")
    }
}

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
                let fp = crash_at(FAILPOINTS[rng.random_range(0..FAILPOINTS.len())], rng.random_range(0..4));
                let out = Command::new(bin())
                    .arg("--data-dir")
                    .arg(d)
                    .args(["project", "--step-events", &step])
                    .env("QUESTLOG_FAILPOINTS", &fp)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                let crashed = !out.status.success();
                schedule.push(format!(
                    "round {round}: +{events} events, project --step-events {step} with {fp}: {}",
                    if crashed { "crashed" } else { "not reached" }
                ));
                if crashed {
                    assert!(
                        String::from_utf8_lossy(&out.stderr).contains("reached; aborting"),
                        "case {case}: {schedule:?}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
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

/// Every pass of every crash point, in turn: for each point and N = 0, 1, 2, … a copy of
/// the same data dir is projected in small steps (so compactions happen) crashing the
/// N+1st time the point is reached, then projected to the end and verified against a
/// rebuild — until N passes the number of times the point is reached at all.
#[test]
fn crashing_at_every_pass_of_every_point_recovers_to_a_rebuild() {
    const EVENTS: u64 = 150;
    const STEP: &str = "15";
    let base = tempfile::tempdir().unwrap();
    questlog_ok(base.path(), &["generate", "--seed", "77", "--events", &EVENTS.to_string(), "--players", "30"]);
    // How many times each point is reached, by a run that does not crash, for the bound.
    let mut totals = Vec::new();
    for point in FAILPOINTS.iter().chain(&["compact.publish"]) {
        let mut pass = 0u32;
        loop {
            let case = tempfile::tempdir().unwrap();
            let d = case.path().join("data");
            copy_dir(base.path(), &d);
            let spec = crash_at(point, pass);
            let out = Command::new(bin())
                .arg("--data-dir")
                .arg(&d)
                .args(["project", "--step-events", STEP])
                .env("QUESTLOG_FAILPOINTS", &spec)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                break; // the point is reached only `pass` times
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(&format!("failpoint {point} reached; aborting")), "{spec}: {stderr}");
            questlog_ok(&d, &["project", "--step-events", STEP]);
            let verified = questlog(&d, &["verify"]);
            assert!(verified.status.success(), "after a crash with {spec}: {}", String::from_utf8_lossy(&verified.stderr));
            assert!(String::from_utf8_lossy(&verified.stdout).contains(&format!("tables at offset {EVENTS}")), "{spec}");
            pass += 1;
            assert!(pass < 500, "{point} reached over 500 times: the loop is not ending");
        }
        totals.push(format!("{point}: {pass}"));
        assert!(pass > 0, "{point} was never reached: the scenario does not exercise it");
    }
    eprintln!("crashed at every pass: {}", totals.join(", "));
}
