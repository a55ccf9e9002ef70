//! Criterion benchmarks of the hot functions: validating an event, encoding and decoding a
//! log block, rendering a replay line, generating an event.
//! Run: cargo bench --bench hot   (whole-pipeline figures: benches/run.sh)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use questlog::event::{validate_json, Record, RequestMeta};
use questlog::generate::{direct_record, World, WorldConfig};
use questlog::log::{decode_block, encode_block, BlockDecoder, RawBlock, MAX_BLOCK_RECORDS};

const EVENT: &str = r#"{"event_type":"buy_asset","store_id":3,"item_name":"Oak Longbow","inventory_id":3004,"total_cost":34.28,"category":"weapon","on_hand_qty":412,"event_id":"d1ce16d28fee5333f94ccd73012b68df","player_id":"p-000383","session_id":"s-7ca44907ac982019","event_time":"2026-01-01T00:00:00.034947Z"}"#;

fn records(n: usize) -> Vec<Record> {
    let mut world = World::new(WorldConfig { seed: 1, players: 1_000, start_time_us: 1_767_225_600_000_000 });
    let meta = RequestMeta { accept: Some("*/*".into()), host: Some("127.0.0.1:8080".into()), user_agent: Some("bench".into()), app: None };
    (0..n).map(|_| direct_record(world.next_event(), &meta)).collect()
}

fn hot(c: &mut Criterion) {
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validate_json buy_asset", |b| b.iter(|| validate_json(std::hint::black_box(EVENT)).unwrap()));
    g.finish();

    let block = records(MAX_BLOCK_RECORDS);
    let encoded = encode_block(&block);
    let mut g = c.benchmark_group("log block (1,000 records)");
    g.throughput(Throughput::Elements(MAX_BLOCK_RECORDS as u64));
    g.bench_function("encode (bincode + zstd + crc)", |b| b.iter(|| encode_block(std::hint::black_box(&block))));
    g.bench_function("decode", |b| b.iter(|| decode_block::<Record>(0, std::hint::black_box(&encoded)).unwrap()));
    let raw_block = RawBlock { first: 0, wanted: 0..MAX_BLOCK_RECORDS as u64, bytes: encoded.clone().into() };
    let mut decoder = BlockDecoder::new().unwrap();
    g.bench_function("decode as views (borrowed text)", |b| b.iter(|| decoder.views(std::hint::black_box(&raw_block)).unwrap().count()));
    g.finish();

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(MAX_BLOCK_RECORDS as u64));
    g.bench_function("write_line x1000", |b| {
        let mut out = String::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for (i, r) in block.iter().enumerate() {
                questlog::replay::write_line(&mut out, i as u64, r);
            }
            out.len()
        })
    });
    g.finish();

    let raw: Vec<&str> = block.iter().map(|r| r.raw_event.as_str()).collect();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Bytes(raw.iter().map(|r| r.len() as u64).sum()));
    g.bench_function("push_json_str of raw_event x1000", |b| {
        let mut out = String::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for r in &raw {
                questlog::event::push_json_str(&mut out, r);
            }
            out.len()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("generate");
    g.throughput(Throughput::Elements(1));
    let mut world = World::new(WorldConfig { seed: 7, players: 1_000, start_time_us: 0 });
    g.bench_function("World::next_event", |b| b.iter(|| world.next_event()));
    g.finish();
}

criterion_group!(benches, hot);
criterion_main!(benches);
