//! Fixture-based tests for `report` and `sql`: writes the five tables as real Parquet files
//! (arrow-rs + parquet ArrowWriter, the exact table schemas) and reads them back with Polars.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int16Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use questlog::report::{self, ReportError, TableFiles};
use questlog::sql::{self, OutputFormat, SqlError};

/// 2026-01-01T00:00:00Z in µs.
const BASE_US: i64 = 1_767_225_600_000_000;

/// Deterministic pseudo-random numbers (64-bit LCG).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn type_fields(table: &str) -> Vec<Field> {
    match table {
        "guild_joins" => vec![Field::new("guild_id", DataType::Int64, true), Field::new("name", DataType::Utf8, true)],
        "enemy_kills" => vec![
            Field::new("enemy_id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("level", DataType::Int16, true),
        ],
        "quests" => vec![
            Field::new("quest_id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("contact", DataType::Utf8, true),
        ],
        "take_damage" => vec![
            Field::new("enemy_id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("damage", DataType::Int16, true),
        ],
        "transactions" => vec![
            Field::new("store_id", DataType::Int64, true),
            Field::new("item_name", DataType::Utf8, true),
            Field::new("inventory_id", DataType::Int64, true),
            Field::new("total_cost", DataType::Float32, true),
            Field::new("category", DataType::Utf8, true),
            Field::new("on_hand_qty", DataType::Int16, true),
        ],
        other => panic!("unknown table {other}"),
    }
}

fn event_type(table: &str) -> &'static str {
    match table {
        "guild_joins" => "join_guild",
        "enemy_kills" => "kill_enemy",
        "quests" => "accept_quest",
        "take_damage" => "take_damage",
        "transactions" => "buy_asset",
        other => panic!("unknown table {other}"),
    }
}

fn arrow_schema(table: &str) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("raw_event", DataType::Utf8, false),
        Field::new("timestamp", DataType::Utf8, true),
        Field::new("accept", DataType::Utf8, true),
        Field::new("host", DataType::Utf8, true),
        Field::new("user_agent", DataType::Utf8, true),
        Field::new("event_type", DataType::Utf8, true),
    ];
    fields.extend(type_fields(table));
    fields.extend([
        Field::new("log_offset", DataType::Int64, false),
        Field::new("event_id", DataType::Utf8, true),
        Field::new("player_id", DataType::Utf8, true),
        Field::new("session_id", DataType::Utf8, true),
        Field::new("event_time", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
    ]);
    Arc::new(Schema::new(fields))
}

/// RFC 3339 UTC with microseconds, like the server writes.
fn rfc3339(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil from days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z", sod / 3600, (sod / 60) % 60, sod % 60)
}

/// One table's rows as a RecordBatch. `offsets` are the rows' log offsets.
fn batch(table: &str, offsets: &[i64], rng: &mut Lcg) -> RecordBatch {
    let n = offsets.len();
    let mut raw = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut player = Vec::with_capacity(n);
    let mut session = Vec::with_capacity(n);
    let mut event_id = Vec::with_capacity(n);
    let mut event_time = Vec::with_capacity(n);
    for &off in offsets {
        let t = BASE_US + off * 97_000_000; // ~97 s apart → about a day in total
        let p = rng.below(40);
        raw.push(format!("{{\"event_type\":\"{}\",\"n\":{off}}}", event_type(table)));
        ts.push(rfc3339(t + 250_000));
        // Every 13th event has no player, every 17th no event_time.
        player.push((off % 13 != 5).then(|| format!("p{p:03}")));
        session.push((off % 13 != 5).then(|| format!("p{p:03}-s{}", off / 200)));
        event_id.push(Some(format!("e{off:06}")));
        event_time.push((off % 17 != 3).then_some(t));
    }
    let common: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(raw)),
        Arc::new(StringArray::from(ts)),
        Arc::new(StringArray::from(vec![Some("*/*"); n])),
        Arc::new(StringArray::from(vec![Some("localhost:8080"); n])),
        Arc::new(StringArray::from(vec![Some("ApacheBench/2.3"); n])),
        Arc::new(StringArray::from(vec![Some(event_type(table)); n])),
    ];
    let specific: Vec<ArrayRef> = match table {
        "guild_joins" => {
            let names = ["Dragonslayers", "Knights <of> | Ni", "Moonwalkers", "Ravens", "Ash & Ember"];
            let g: Vec<usize> = (0..n).map(|_| (rng.below(15) as usize * rng.below(15) as usize) % 5).collect();
            vec![
                Arc::new(Int64Array::from(g.iter().map(|&i| 100 + i as i64).collect::<Vec<_>>())),
                Arc::new(StringArray::from(g.iter().map(|&i| names[i]).collect::<Vec<_>>())),
            ]
        }
        "enemy_kills" => {
            let names = ["goblin", "orc", "troll", "skeleton", "dragon"];
            let e: Vec<usize> = (0..n).map(|_| rng.below(5) as usize).collect();
            vec![
                Arc::new(Int64Array::from(e.iter().map(|&i| 1 + i as i64).collect::<Vec<_>>())),
                Arc::new(StringArray::from(e.iter().map(|&i| names[i]).collect::<Vec<_>>())),
                Arc::new(Int16Array::from(e.iter().map(|&i| Some(1 + (i as i16) * 9 + rng.below(12) as i16)).collect::<Vec<_>>())),
            ]
        }
        "quests" => {
            let contacts = ["Elder Maren", "Captain Rook"];
            vec![
                Arc::new(Int64Array::from((0..n).map(|_| rng.below(8) as i64).collect::<Vec<_>>())),
                Arc::new(StringArray::from(vec!["Find the ring"; n])),
                Arc::new(StringArray::from((0..n).map(|_| contacts[rng.below(2) as usize]).collect::<Vec<_>>())),
            ]
        }
        "take_damage" => {
            let names = ["goblin", "orc", "troll", "dragon"];
            let e: Vec<usize> = (0..n).map(|_| rng.below(4) as usize).collect();
            vec![
                Arc::new(Int64Array::from(e.iter().map(|&i| 1 + i as i64).collect::<Vec<_>>())),
                Arc::new(StringArray::from(e.iter().map(|&i| names[i]).collect::<Vec<_>>())),
                Arc::new(Int16Array::from(
                    e.iter().map(|&i| Some(((i as i16 + 1) * (1 + rng.below(40) as i16)).min(150))).collect::<Vec<_>>(),
                )),
            ]
        }
        "transactions" => {
            let items = [
                ("sword", "weapon", 12.99f32),
                ("bow", "weapon", 9.5),
                ("helmet", "armor", 7.25),
                ("health potion", "potion", 0.99),
                ("horse", "mount", 49.99),
            ];
            let pick: Vec<(usize, i64)> = (0..n).map(|_| (rng.below(5) as usize, 1 + rng.below(3) as i64)).collect();
            vec![
                Arc::new(Int64Array::from(pick.iter().map(|p| p.1).collect::<Vec<_>>())),
                Arc::new(StringArray::from(pick.iter().map(|p| items[p.0].0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(pick.iter().map(|p| p.1 * 100 + p.0 as i64).collect::<Vec<_>>())),
                Arc::new(Float32Array::from(pick.iter().map(|p| items[p.0].2).collect::<Vec<_>>())),
                Arc::new(StringArray::from(pick.iter().map(|p| items[p.0].1).collect::<Vec<_>>())),
                Arc::new(Int16Array::from(
                    offsets.iter().zip(&pick).map(|(off, p)| Some((40 - (off / 30) as i16 - p.0 as i16 * 3).max(0))).collect::<Vec<_>>(),
                )),
            ]
        }
        other => panic!("unknown table {other}"),
    };
    let tail: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(offsets.to_vec())),
        Arc::new(StringArray::from(event_id)),
        Arc::new(StringArray::from(player)),
        Arc::new(StringArray::from(session)),
        Arc::new(TimestampMicrosecondArray::from(event_time).with_timezone("UTC")),
    ];
    let columns: Vec<ArrayRef> = common.into_iter().chain(specific).chain(tail).collect();
    RecordBatch::try_new(arrow_schema(table), columns).expect("valid batch")
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// The standard fixture: 1,350 events over four tables (`transactions` in two files),
/// `quests` with zero files.
fn fixture(dir: &Path) -> TableFiles {
    fixture_with(dir, Some("quests"))
}

/// Writes the fixture with `empty` (if any) having zero files: guild_joins 300 rows,
/// enemy_kills 400, quests 250, take_damage 350, transactions 300 (in two files).
/// Returns the snapshot.
fn fixture_with(dir: &Path, empty: Option<&str>) -> TableFiles {
    let mut rng = Lcg(205);
    let mut plan: [(&'static str, usize, usize); 5] =
        [("guild_joins", 300, 1), ("enemy_kills", 400, 1), ("quests", 250, 1), ("take_damage", 350, 1), ("transactions", 300, 2)];
    for p in plan.iter_mut() {
        if Some(p.0) == empty {
            p.1 = 0;
            p.2 = 0;
        }
    }
    // Interleave log offsets across tables deterministically.
    let total: usize = plan.iter().map(|p| p.1).sum();
    let mut owners: Vec<usize> = Vec::with_capacity(total);
    let mut left: Vec<usize> = plan.iter().map(|p| p.1).collect();
    while owners.len() < total {
        let t = rng.below(5) as usize;
        if left[t] > 0 {
            left[t] -= 1;
            owners.push(t);
        }
    }
    let mut tables = Vec::new();
    for (t, (name, _, files)) in plan.iter().enumerate() {
        let offsets: Vec<i64> = owners.iter().enumerate().filter(|(_, o)| **o == t).map(|(i, _)| i as i64).collect();
        let mut paths = Vec::new();
        if *files > 0 {
            let per = offsets.len().div_ceil(*files);
            for (k, chunk) in offsets.chunks(per).enumerate() {
                let dir = dir.join(name);
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("part-{k:05}.parquet"));
                write_parquet(&path, &batch(name, chunk, &mut rng));
                paths.push(path);
            }
        }
        tables.push((*name, paths));
    }
    TableFiles::new(tables)
}

fn reversed(files: &TableFiles) -> TableFiles {
    TableFiles::new(files.tables.iter().rev().map(|(t, p)| (*t, p.iter().rev().cloned().collect::<Vec<PathBuf>>())).collect())
}

#[test]
fn load_frames_reads_all_tables_with_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture(dir.path());
    let frames = report::load_frames(&files).unwrap();
    assert_eq!(frames.guild_joins.height(), 300);
    assert_eq!(frames.enemy_kills.height(), 400);
    assert_eq!(frames.quests.height(), 0);
    assert_eq!(frames.take_damage.height(), 350);
    assert_eq!(frames.transactions.height(), 300);
    for (table, df) in frames.iter() {
        assert_eq!(df.schema().as_ref(), report::empty_frame(table).schema().as_ref(), "{table}");
    }
    use polars::prelude::{DataType as P, TimeUnit as PU, TimeZone};
    assert_eq!(frames.enemy_kills.column("level").unwrap().dtype(), &P::Int16);
    assert_eq!(frames.transactions.column("on_hand_qty").unwrap().dtype(), &P::Int16);
    assert_eq!(frames.transactions.column("total_cost").unwrap().dtype(), &P::Float32);
    assert_eq!(frames.take_damage.column("event_time").unwrap().dtype(), &P::Datetime(PU::Microseconds, Some(TimeZone::UTC)));
    // event_time values survive: first offset's time.
    let offs = frames.take_damage.column("log_offset").unwrap().i64().unwrap().get(0).unwrap();
    let t = frames.take_damage.column("event_time").unwrap().cast(&P::Int64).unwrap().i64().unwrap().get(0);
    if offs % 17 != 3 {
        assert_eq!(t, Some(BASE_US + offs * 97_000_000));
    }
}

#[test]
fn report_is_deterministic_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture(dir.path());
    let frames = report::load_frames(&files).unwrap();
    let a = report::build_report(&frames, "log offsets 0..1350").unwrap();
    let b = report::build_report(&frames, "log offsets 0..1350").unwrap();
    assert_eq!(a.markdown, b.markdown);
    assert_eq!(a.html, b.html);
    // Same tables, files listed in another order → same report.
    let frames2 = report::load_frames(&reversed(&files)).unwrap();
    let c = report::build_report(&frames2, "log offsets 0..1350").unwrap();
    assert_eq!(a.markdown, c.markdown);
    assert_eq!(a.html, c.html);

    assert!((5..=10).contains(&a.summary.len()), "{:?}", a.summary);
    for heading in [
        "## Summary of Findings",
        "## 1. Overview",
        "## 2. Revenue",
        "## 3. Store stock running out",
        "## 4. Guilds",
        "## 5. Kills",
        "## 6. Damage taken",
        "## 7. Quests by contact",
        "## 8. Player activity",
    ] {
        assert!(a.markdown.contains(heading), "missing {heading}");
    }
    assert!(a.markdown.contains("| 1,350 |"), "total events");
    assert!(a.markdown.contains("Knights \\<of\\> \\| Ni"), "md cell escaping");
    assert!(a.html.contains("Knights &lt;of&gt; | Ni"), "html escaping");
    assert!(!a.html.contains("<of>"));
    assert!(a.markdown.contains('$'));
    assert!(a.html.contains("<svg"));
    assert!(a.html.matches("<svg").count() >= 4);
    assert!(!a.html.contains("http://") && !a.html.contains("https://") && !a.html.contains("<script"));
    let dir_str = dir.path().to_string_lossy();
    assert!(!a.markdown.contains(dir_str.as_ref()) && !a.html.contains(dir_str.as_ref()));
    // Quests has zero files → its section says so.
    let quests = a.markdown.split("## 7. Quests by contact").nth(1).unwrap();
    assert!(quests.trim_start().starts_with("No events yet."));

    let out = tempfile::tempdir().unwrap();
    let (md, html) = report::write_report(&a, &out.path().join("report")).unwrap();
    assert_eq!(std::fs::read_to_string(&md).unwrap(), a.markdown);
    assert_eq!(std::fs::read_to_string(&html).unwrap(), a.html);
    assert_eq!(md.file_name().unwrap(), "report.md");
    assert_eq!(html.file_name().unwrap(), "report.html");

    if let Ok(dump) = std::env::var("REPORT_DUMP_DIR") {
        report::write_report(&a, Path::new(&dump)).unwrap();
    }
}

#[test]
fn every_section_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture_with(dir.path(), None);
    let frames = report::load_frames(&files).unwrap();
    assert_eq!(frames.quests.height(), 250);
    let a = report::build_report(&frames, "all tables").unwrap();
    let b = report::build_report(&report::load_frames(&reversed(&files)).unwrap(), "all tables").unwrap();
    assert_eq!(a, b);
    // Read section by section from open files (what `questlog report` does): the same
    // report, even when every file is deleted after opening (compaction).
    let snapshot = report::open_snapshot(&files).unwrap();
    for (_, paths) in &files.tables {
        for path in paths {
            std::fs::remove_file(path).unwrap();
        }
    }
    let c = report::build_report_from(&snapshot, "all tables").unwrap();
    assert_eq!(a, c);
    assert!(!a.markdown.contains("No events yet."), "{}", a.markdown);
    let quests = a.markdown.split("## 7. Quests by contact").nth(1).unwrap();
    assert!(quests.contains("| Elder Maren |") && quests.contains("| Captain Rook |"));
    assert!(a.summary.iter().any(|l| l.starts_with("Top quest contact:")));
    let funnel = a.summary.iter().find(|l| l.starts_with("Funnel:")).unwrap();
    assert!(!funnel.starts_with("Funnel: 0 of"), "{funnel}");
    assert!(a.summary.len() <= 10);
    if let Ok(dump) = std::env::var("REPORT_DUMP_DIR") {
        report::write_report(&a, &Path::new(&dump).join("all")).unwrap();
    }

    // Guild joins without files, the rest with events.
    let dir = tempfile::tempdir().unwrap();
    let frames = report::load_frames(&fixture_with(dir.path(), Some("guild_joins"))).unwrap();
    let r = report::build_report(&frames, "no guilds").unwrap();
    let guilds = r.markdown.split("## 4. Guilds").nth(1).unwrap();
    assert!(guilds.trim_start().starts_with("No events yet."));
}

#[test]
fn all_tables_empty_gives_readable_report() {
    let files = TableFiles::new(report::TABLE_NAMES.iter().map(|t| (*t, Vec::new())).collect());
    let frames = report::load_frames(&files).unwrap();
    let r = report::build_report(&frames, "log offsets 0..0").unwrap();
    assert!(r.markdown.contains("No events yet."));
    assert!(r.html.contains("<svg") || r.html.contains("No events yet."));
    assert!(!r.summary.is_empty());
    let mut df = sql::run_sql(&frames, "SELECT count(*) AS n FROM transactions").unwrap();
    let out = sql::format_output(&mut df, OutputFormat::Csv).unwrap();
    assert_eq!(out, "n\n0\n");
}

#[test]
fn vanished_file_is_reported_distinctly() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture(dir.path());
    let gone = files.tables[4].1[1].clone();
    std::fs::remove_file(&gone).unwrap();
    match report::load_frames(&files) {
        Err(ReportError::FileVanished(p)) => assert_eq!(p, gone),
        other => panic!("expected FileVanished, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn file_deleted_after_open_is_still_read() {
    // What load_frames relies on: once a file is open, compaction deleting it does not
    // matter, Polars reads from the open handle.
    let dir = tempfile::tempdir().unwrap();
    let files = fixture(dir.path());
    let path = &files.tables[4].1[0];
    let file = std::fs::File::open(path).unwrap();
    std::fs::remove_file(path).unwrap();
    use polars::prelude::SerReader;
    let df = polars::prelude::ParquetReader::new(file).finish().unwrap();
    assert_eq!(df.height(), 150);
    // Polars reads the Parquet types natively: INT32 (INT_16) → Int16, TIMESTAMP(µs, UTC) →
    // Datetime(µs, "UTC"); load_frames needs no casts for files questlog writes.
    use polars::prelude::{DataType as P, TimeUnit as PU, TimeZone};
    assert_eq!(df.column("on_hand_qty").unwrap().dtype(), &P::Int16);
    assert_eq!(df.column("event_time").unwrap().dtype(), &P::Datetime(PU::Microseconds, Some(TimeZone::UTC)));
    assert_eq!(df.schema().as_ref(), report::empty_frame("transactions").schema().as_ref());
    // And a snapshot naming the deleted file now fails distinctly.
    assert!(matches!(report::load_frames(&files), Err(ReportError::FileVanished(_))));
}

#[test]
fn damaged_file_gives_a_parquet_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.parquet");
    std::fs::write(&path, b"not parquet at all").unwrap();
    let files = TableFiles::new(vec![("quests", vec![path.clone()])]);
    let err = report::load_frames(&files).unwrap_err();
    assert!(matches!(err, ReportError::Parquet { .. }), "{err}");
    assert!(err.to_string().contains("bad.parquet"));
}

fn first_i64(df: &polars::prelude::DataFrame, name: &str) -> i64 {
    df.column(name).unwrap().cast(&polars::prelude::DataType::Int64).unwrap().i64().unwrap().get(0).unwrap()
}

#[test]
fn sql_over_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let frames = report::load_frames(&fixture(dir.path())).unwrap();

    let mut df = sql::run_sql(&frames, "SELECT count(*) FROM transactions").unwrap();
    assert_eq!(df.shape(), (1, 1));
    println!("{}", sql::format_output(&mut df, OutputFormat::Table).unwrap());
    assert_eq!(first_i64(&df, df.get_column_names()[0].as_str()), 300);

    let mut df = sql::run_sql(
        &frames,
        "SELECT category, count(*) AS n, sum(total_cost) AS revenue \
         FROM transactions GROUP BY category ORDER BY n DESC, category",
    )
    .unwrap();
    assert_eq!(df.height(), 4);
    let table = sql::format_output(&mut df, OutputFormat::Table).unwrap();
    assert!(table.starts_with(" category | "), "{table}");
    assert!(table.ends_with("(4 rows)\n"), "{table}");

    // JOIN between tables, WHERE on strings.
    let df = sql::run_sql(
        &frames,
        "SELECT g.name AS guild, count(*) AS purchases \
         FROM guild_joins g JOIN transactions t ON g.player_id = t.player_id \
         WHERE t.category = 'weapon' AND g.name <> 'Ravens' \
         GROUP BY g.name ORDER BY purchases DESC, guild",
    )
    .unwrap();
    assert!(df.height() > 0 && df.height() <= 4);

    let df = sql::run_sql(&frames, "SELECT name, max(damage) AS worst FROM take_damage WHERE name LIKE 'dr%' GROUP BY name").unwrap();
    assert_eq!(df.height(), 1);

    let df = sql::run_sql(&frames, "SHOW TABLES").unwrap();
    assert_eq!(df.height(), 5);

    let mut df = sql::run_sql(
        &frames,
        "SELECT store_id, item_name, total_cost, on_hand_qty, event_time FROM transactions \
         WHERE item_name IN ('horse', 'bow') ORDER BY log_offset LIMIT 2",
    )
    .unwrap();
    println!("{}", sql::format_output(&mut df, OutputFormat::Table).unwrap());

    // Empty table (no files) in a join.
    let df = sql::run_sql(
        &frames,
        "SELECT q.contact, count(*) AS n FROM quests q JOIN enemy_kills k ON q.player_id = k.player_id GROUP BY q.contact",
    )
    .unwrap();
    assert_eq!(df.height(), 0);

    // Timestamps and Int16 come out in CSV and JSON.
    let mut df = sql::run_sql(&frames, "SELECT log_offset, level, event_time FROM enemy_kills ORDER BY log_offset LIMIT 3").unwrap();
    let csv = sql::format_output(&mut df, OutputFormat::Csv).unwrap();
    assert!(csv.starts_with("log_offset,level,event_time\n"), "{csv}");
    assert!(csv.contains(",2026-01-01T00:01:37.000000Z\n"), "{csv}");
    assert_eq!(csv.lines().count(), 4);
    let json = sql::format_output(&mut df, OutputFormat::Json).unwrap();
    assert_eq!(json.lines().count(), 3);
    assert!(json.lines().all(|l| l.starts_with("{\"log_offset\":")), "{json}");
    println!("{csv}{json}{}", sql::format_output(&mut df, OutputFormat::Table).unwrap());
}

#[test]
fn bad_sql_is_explained() {
    let frames = report::Frames::empty();
    for q in ["SELECT * FROM nowhere", "SELEKT 1", "SELECT missing_column FROM transactions"] {
        let err = sql::run_sql(&frames, q).unwrap_err();
        let msg = err.to_string();
        if q.contains("missing_column") {
            assert!(matches!(err, SqlError::UnknownColumn(_)), "{msg}");
            assert!(msg.contains("unknown column \"missing_column\"") && msg.contains("columns of transactions: raw_event,"), "{msg}");
        } else {
            assert!(matches!(err, SqlError::Query { .. }), "{msg}");
        }
        for t in report::TABLE_NAMES {
            assert!(msg.contains(t), "{msg}");
        }
        println!("{q}\n  → {msg}");
    }
}

/// Players and sessions are counted a file at a time (the bound that took `report` at
/// 10^7 events from 514 MiB to under 400: benches/HISTORY.md, item 32): no section asks for
/// a whole `session_id` column, and each table's ids come in one part per file, no part
/// larger than its file. Counting over whole columns again fails here.
#[test]
fn players_and_sessions_are_counted_a_file_at_a_time() {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    struct Watched<'a> {
        inner: &'a dyn report::TableSource,
        whole: RefCell<Vec<(&'static str, Vec<String>)>>,
        /// Per (table, column): the rows of each part handed out.
        parts: RefCell<BTreeMap<(&'static str, String), Vec<usize>>>,
    }
    impl report::TableSource for Watched<'_> {
        fn rows(&self, table: &'static str) -> Result<usize, ReportError> {
            self.inner.rows(table)
        }
        fn columns(&self, table: &'static str, columns: &[&str]) -> Result<polars::prelude::DataFrame, ReportError> {
            self.whole.borrow_mut().push((table, columns.iter().map(|c| c.to_string()).collect()));
            self.inner.columns(table, columns)
        }
        fn for_each_part(
            &self,
            table: &'static str,
            columns: &[&str],
            f: &mut dyn FnMut(polars::prelude::DataFrame) -> Result<(), ReportError>,
        ) -> Result<(), ReportError> {
            self.inner.for_each_part(table, columns, &mut |part| {
                self.parts.borrow_mut().entry((table, columns.join(","))).or_default().push(part.height());
                f(part)
            })
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let files = fixture_with(dir.path(), None);
    let snapshot = report::open_snapshot(&files).unwrap();
    let watched = Watched { inner: &snapshot, whole: RefCell::new(Vec::new()), parts: RefCell::new(BTreeMap::new()) };
    let a = report::build_report_from(&watched, "all tables").unwrap();
    assert_eq!(a, report::build_report(&report::load_frames(&files).unwrap(), "all tables").unwrap());
    let whole = watched.whole.borrow();
    assert!(!whole.iter().any(|(_, cols)| cols.iter().any(|c| c == "session_id")), "a whole session_id column was read: {whole:?}");
    let parts = watched.parts.borrow();
    for (table, paths) in &files.tables {
        let file_rows: Vec<usize> = paths
            .iter()
            .map(|p| {
                let f = std::fs::File::open(p).unwrap();
                parquet::file::reader::FileReader::metadata(&parquet::file::serialized_reader::SerializedFileReader::new(f).unwrap())
                    .file_metadata()
                    .num_rows() as usize
            })
            .collect();
        for column in ["player_id", "session_id"] {
            let seen = parts.get(&(*table, column.to_string())).unwrap_or_else(|| panic!("{table}.{column} not counted a part at a time"));
            if file_rows.is_empty() {
                assert_eq!(seen, &vec![0], "{table}.{column}: one empty part for an empty table");
            } else {
                assert_eq!(seen, &file_rows, "{table}.{column}: one part per file, each the file's rows");
            }
        }
    }
}
