//! Crash harness: concurrent HTTP load with unique `event_id`s while `serve` is SIGKILLed at
//! random moments (during appends, flushes, projection steps, file publishing) and
//! restarted. At the end: every acknowledged event is in the log exactly once, no event is
//! there twice, offsets are dense, and `verify` finds the tables equal to a rebuild.
//!
//! `QUESTLOG_CRASH_KILLS` sets the number of kills (default 30, what CI runs);
//! `tests/crash/run.sh` runs 500 and prints the tally. `QUESTLOG_CRASH_SEED` varies the
//! kill timing.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 4;
const PER_REQUEST: usize = 40;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn acknowledged_events_survive_random_sigkills_exactly_once() {
    let kills = env_u64("QUESTLOG_CRASH_KILLS", 30);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(env_u64("QUESTLOG_CRASH_SEED", 1));
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut sent = 0u64;
    for kill in 0..kills {
        let server = Server::start_with(dir.path(), &["--project-interval-ms", "5"]);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (stop, acked, addr) = (stop.clone(), acked.clone(), server.addr);
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    let mut r = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let ids: Vec<String> = (0..PER_REQUEST).map(|i| format!("k{kill}-c{c}-r{r}-{i}")).collect();
                        let body = format!(
                            "[{}]",
                            ids.iter()
                                .map(|id| format!(
                                    r#"{{"event_type":"take_damage","enemy_id":{c},"name":"Orc","damage":{r},"event_id":"{id}"}}"#,
                                    r = r % 1000
                                ))
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                        r += 1;
                        sent += PER_REQUEST as u64;
                        match http(addr, "POST", "/v1/events", &[], body.as_bytes()) {
                            Ok(resp) if resp.status == 200 => {
                                let v = resp.json();
                                assert_eq!(v["accepted"], PER_REQUEST as u64, "{v}");
                                acked.lock().unwrap().extend(ids);
                            }
                            // The server died mid-request: not acknowledged.
                            Ok(_) | Err(_) => break,
                        }
                    }
                    sent
                })
            })
            .collect();
        // Fault injection: the kill lands anywhere in the server's work.
        std::thread::sleep(Duration::from_millis(rng.random_range(5..250)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            sent += c.join().unwrap();
        }
    }

    // Reconcile.
    let server = Server::start(dir.path());
    server.stop();
    let lines = replay_lines(dir.path());
    let mut count: HashMap<&str, u32> = HashMap::new();
    for (k, line) in lines.iter().enumerate() {
        assert_eq!(line["log_offset"], k as u64, "offsets are dense");
        *count.entry(line["event_id"].as_str().unwrap()).or_default() += 1;
    }
    let acked = acked.lock().unwrap();
    let lost = acked.iter().filter(|id| !count.contains_key(id.as_str())).count();
    let duplicated = count.values().filter(|&&n| n > 1).count();
    println!(
        "crash harness: kills {kills}, sent {sent}, acked {}, in log {}, lost {lost}, duplicated {duplicated}",
        acked.len(),
        lines.len()
    );
    assert_eq!(lost, 0, "acknowledged events lost");
    assert_eq!(duplicated, 0, "events in the log twice");
    assert!(acked.len() > 0, "the load made progress");
    let out = questlog(dir.path(), &["verify"]);
    assert!(out.status.success(), "verify after {kills} kills: {}", String::from_utf8_lossy(&out.stderr));
}
