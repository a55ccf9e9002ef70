//! The fuzz targets' regression corpus, replayed on every test run: each file under
//! `fuzz/corpus/<target>/` (seeds, inputs the fuzzer found interesting, and minimized
//! crashes once fixed) goes through the same function the target calls. A crash found by
//! `cargo fuzz` is kept here by copying its artifact into the corpus.
//!
//! `QUESTLOG_WRITE_FUZZ_SEEDS=1` (re)writes the block seeds: real blocks made from
//! `fixtures/edge-events.ndjson`, so the fuzzer starts from valid blocks.

use std::path::{Path, PathBuf};

use questlog::event::{validate_json, Record, RequestMeta};
use questlog::log::encode_block;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// Runs `f` on every input; a panic names the file that caused it.
fn replay(target: &str, min_inputs: usize, f: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(inputs.len() >= min_inputs, "{target}: only {} inputs in the corpus", inputs.len());
    for (path, data) in inputs {
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            panic!("fuzz target {target} panics on {}", path.display());
        }
    }
}

#[test]
fn event_corpus_never_panics() {
    replay("event", 10, questlog::event::fuzz_event);
}

#[test]
fn log_block_corpus_never_panics() {
    replay("log_block", 3, questlog::log::fuzz_block);
}

/// Blocks of real records, with the first byte the target reads (odd: fix the CRC up).
fn seed_blocks() -> Vec<Vec<u8>> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/edge-events.ndjson");
    let records: Vec<Record> = std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .filter_map(|l| validate_json(l).ok().map(|event| (l, event)))
        .enumerate()
        .map(|(i, (raw, event))| Record {
            received_at_us: 1_700_000_000_000_000 + i as i64,
            meta: RequestMeta { accept: Some("*/*".into()), host: Some("localhost".into()), user_agent: Some("fuzz".into()), app: None },
            raw_event: raw.to_string(),
            event,
        })
        .collect();
    assert!(records.len() >= 10);
    let mut out = Vec::new();
    for chunk in [&records[..1], &records[..10], &records[..]] {
        for mode in [0u8, 1] {
            let mut b = vec![mode];
            b.extend_from_slice(&encode_block(chunk));
            out.push(b);
        }
    }
    out
}

#[test]
fn seed_blocks_round_trip() {
    for block in seed_blocks() {
        questlog::log::fuzz_block(&block);
    }
    if std::env::var_os("QUESTLOG_WRITE_FUZZ_SEEDS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/log_block");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, b) in seed_blocks().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), b).unwrap();
        }
    }
}
