//! Golden scenarios (`replay/*.toml`): a seeded workload with a projection schedule (and a
//! crash) run in a temp dir, and digests of everything derived from it — the log's replay,
//! each table's rows, the Parquet files of a rebuild, the report — compared with the
//! expected ones the scenario file holds. `--bless` rewrites them after an intended change.
//!
//! A digest is the SHA-256 of a stream of lines. To say where a stream first differs, the
//! scenario's sidecar (`<name>.segments`) keeps a short hash per segment of lines.
//!
//! Invariant: a check only writes inside its temp dir, except `--bless`, which rewrites the
//! scenario's `[expected]` table and its sidecar.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arrow::util::display::{ArrayFormatter, FormatOptions};
use indicatif::ProgressBar;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::catalog::{self, Catalog};
use crate::event::{self, Record};
use crate::generate::{self, World, WorldConfig};
use crate::log::{AppendBatch, EventLog, SledLog};
use crate::project::{self, Codec, Projector, TablesRoot, DELTA_DIR};
use crate::replay;
use crate::report;

/// Most segments per stream in the sidecar. A stream of up to this many lines gets one
/// segment per line, so a mismatch is located to the exact line; longer streams (the
/// million-event scenario) to a range of lines. At 9 bytes a hash, a stream's sidecar
/// entry stays under 40 KiB.
const TARGET_SEGMENTS: u64 = 4_096;
/// Failpoint used when a scenario asks for a crash without naming one.
const DEFAULT_CRASH_POINT: &str = "publish.after_commit";

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("reading scenario {path}: {reason}")]
    Scenario { path: PathBuf, reason: String },
    #[error("running scenario: {0}")]
    Run(String),
}

fn run_err(e: impl std::fmt::Display) -> CheckError {
    CheckError::Run(e.to_string())
}

/// A scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: Option<String>,
    pub seed: u64,
    pub events: u64,
    #[serde(default = "default_players")]
    pub players: u32,
    pub start_time: Option<String>,
    /// NDJSON file of literal events appended after the generated ones (path relative to
    /// the scenario file).
    pub extra_events: Option<String>,
    /// A store catalogue (SQLite, path relative to the scenario file): recorded in the
    /// log first, and the world sells what it lists (`generate --catalog`).
    pub catalog: Option<String>,
    /// Event type schemas recorded in the log as the workload reaches them; the world then
    /// mixes events of the registered types into its traffic (`generate --schema`).
    #[serde(default)]
    pub schemas: Vec<SchemaStep>,
    /// Percent of the events of registered types once there are some.
    #[serde(default = "default_custom_share")]
    pub custom_share: u32,
    pub schedule: Schedule,
    /// Digest name → `sha256:<hex>`.
    #[serde(default)]
    pub expected: BTreeMap<String, String>,
}

fn default_players() -> u32 {
    generate::world::DEFAULT_PLAYERS
}

fn default_custom_share() -> u32 {
    generate::custom::DEFAULT_SHARE_PCT
}

/// Schema files (paths relative to the scenario file) recorded when the workload has
/// appended `at` events: before the event at offset `at`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaStep {
    pub at: u64,
    pub files: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Run a projection step after every this many events are appended.
    pub project_every: u64,
    /// Crash (a real abort, in a child process) during this projection step (1-based).
    pub crash_at_step: Option<u64>,
    /// Which point of the publish protocol to crash at.
    pub crash_point: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Segments {
    lines: u64,
    hashes: Vec<String>,
}

/// Hashes a stream of lines: the whole, and per segment.
struct StreamHash {
    whole: Sha256,
    segment: Sha256,
    segment_lines: u64,
    in_segment: u64,
    lines: u64,
    segments: Vec<String>,
    /// The first line of each segment, to show where a stream differs.
    firsts: Vec<String>,
}

impl StreamHash {
    fn new(total_lines: u64) -> StreamHash {
        StreamHash {
            whole: Sha256::new(),
            segment: Sha256::new(),
            segment_lines: total_lines.div_ceil(TARGET_SEGMENTS).max(1),
            in_segment: 0,
            lines: 0,
            segments: Vec::new(),
            firsts: Vec::new(),
        }
    }

    fn line(&mut self, line: &str) {
        if self.in_segment == 0 {
            self.firsts.push(line.chars().take(300).collect());
        }
        self.whole.update(line.as_bytes());
        self.whole.update(b"\n");
        self.segment.update(line.as_bytes());
        self.segment.update(b"\n");
        self.lines += 1;
        self.in_segment += 1;
        if self.in_segment == self.segment_lines {
            self.close_segment();
        }
    }

    fn close_segment(&mut self) {
        let h = std::mem::replace(&mut self.segment, Sha256::new()).finalize();
        self.segments.push(hex(&h[..4]));
        self.in_segment = 0;
    }

    fn finish(mut self) -> Stream {
        if self.in_segment > 0 {
            self.close_segment();
        }
        Stream {
            digest: format!("sha256:{}", hex(&self.whole.finalize())),
            lines: self.lines,
            segment_lines: self.segment_lines,
            segments: self.segments,
            firsts: self.firsts,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A hashed stream.
pub struct Stream {
    pub digest: String,
    pub lines: u64,
    segment_lines: u64,
    segments: Vec<String>,
    firsts: Vec<String>,
}

/// The result of one digest.
pub struct DigestResult {
    pub name: String,
    pub expected: Option<String>,
    pub got: String,
    /// Where the stream first differs, when it does and the sidecar can tell.
    pub first_difference: Option<String>,
}

impl DigestResult {
    pub fn matches(&self) -> bool {
        self.expected.as_deref() == Some(self.got.as_str())
    }
}

/// Everything a check produced.
pub struct CheckOutcome {
    pub results: Vec<DigestResult>,
    /// The hashed streams, for `--bless`.
    streams: Vec<(String, Stream)>,
    /// False when the incremental tables' rows differ from the rebuild's.
    pub incremental_equals_rebuild: bool,
    pub events: u64,
}

impl CheckOutcome {
    pub fn ok(&self) -> bool {
        self.incremental_equals_rebuild && self.results.iter().all(DigestResult::matches)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let status = match &r.expected {
                None => "NEW",
                Some(_) if r.matches() => "match",
                Some(_) => "MISMATCH",
            };
            let _ = write!(out, "  {:<22} {:<9} {}", r.name, status, r.got);
            if let (Some(e), false) = (&r.expected, r.matches()) {
                let _ = write!(out, "\n  {:<22} {:<9} {} (expected)", "", "", e);
            }
            if let Some(d) = &r.first_difference {
                let _ = write!(out, "\n  {:<22} {:<9} {d}", "", "");
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "  {:<22} {}",
            "incremental = rebuild",
            if self.incremental_equals_rebuild { "match" } else { "MISMATCH (tables projected in steps differ from a rebuild)" }
        );
        let matched = self.results.iter().filter(|r| r.matches()).count();
        let _ = write!(out, "{matched} of {} digests match", self.results.len());
        out
    }
}

pub fn load(path: &Path) -> Result<Scenario, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckError::Scenario { path: path.to_path_buf(), reason: e.to_string() })?;
    let s: Scenario = toml::from_str(&text).map_err(|e| CheckError::Scenario { path: path.to_path_buf(), reason: e.to_string() })?;
    if s.schedule.project_every == 0 {
        return Err(CheckError::Scenario { path: path.to_path_buf(), reason: "schedule.project_every must be at least 1".into() });
    }
    if s.players == 0 {
        return Err(CheckError::Scenario { path: path.to_path_buf(), reason: "players must be at least 1".into() });
    }
    if !s.schemas.windows(2).all(|w| w[0].at < w[1].at) || s.schemas.iter().any(|st| st.at > s.events) {
        return Err(CheckError::Scenario {
            path: path.to_path_buf(),
            reason: "schemas: give each step's `at` (an event count up to `events`) in increasing order".into(),
        });
    }
    Ok(s)
}

fn sidecar_path(path: &Path) -> PathBuf {
    path.with_extension("segments")
}

/// Runs the scenario at `path` in a temp dir. `exe` is this program, used to crash a
/// projection in a child process. With `tables` on S3, the scenario's tables go to a new
/// prefix under it (`…/check-<name>-<pid>-<nanos>`), so the digests cover S3 tables too.
pub fn run(path: &Path, exe: &Path, tables: Option<&TablesRoot>, progress: &ProgressBar) -> Result<CheckOutcome, CheckError> {
    let scenario = load(path)?;
    let tmp = tempfile::tempdir().map_err(run_err)?;
    let data = tmp.path().join("data");
    let root = match tables {
        Some(TablesRoot::S3 { bucket, prefix }) => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            let name = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let sub = format!("check-{name}-{}-{nanos}", std::process::id());
            let prefix = if prefix.is_empty() { sub } else { format!("{prefix}/{sub}") };
            TablesRoot::S3 { bucket: bucket.clone(), prefix }
        }
        _ => TablesRoot::Local(data.join(DELTA_DIR)),
    };
    let start_time_us = event::parse_time_us(scenario.start_time.as_deref().unwrap_or(generate::world::DEFAULT_START_TIME))
        .map_err(|e| CheckError::Scenario { path: path.to_path_buf(), reason: format!("start_time: {e}") })?;
    let extra: Vec<Record> = match &scenario.extra_events {
        None => Vec::new(),
        Some(rel) => load_extra(&path.parent().unwrap_or(Path::new(".")).join(rel))?,
    };

    let catalog = match &scenario.catalog {
        None => None,
        Some(rel) => {
            let file = path.parent().unwrap_or(Path::new(".")).join(rel);
            Some(Catalog::open(&file).map_err(|e| CheckError::Scenario { path: path.to_path_buf(), reason: e.to_string() })?)
        }
    };

    // The workload, with a projection step after every `project_every` events.
    let cfg = WorldConfig { seed: scenario.seed, players: scenario.players, start_time_us };
    let mut world = match &catalog {
        Some(c) => World::with_catalog(cfg, c).map_err(|e| CheckError::Scenario { path: path.to_path_buf(), reason: e })?,
        None => World::new(cfg),
    };
    // Each schema step's files, parsed (they are recorded as the workload reaches them).
    let mut schema_steps: Vec<(u64, Vec<crate::schema::Schema>)> = Vec::new();
    for st in &scenario.schemas {
        let mut parsed = Vec::new();
        for rel in &st.files {
            let file = path.parent().unwrap_or(Path::new(".")).join(rel);
            let bytes = std::fs::read(&file).map_err(|e| CheckError::Scenario { path: file.clone(), reason: e.to_string() })?;
            parsed.push(
                crate::schema::Schema::parse(&bytes).map_err(|e| CheckError::Scenario { path: file.clone(), reason: e.to_string() })?,
            );
        }
        schema_steps.push((st.at, parsed));
    }
    let mut schema_steps = schema_steps.into_iter().peekable();
    let mut recorded: Vec<crate::schema::Schema> = Vec::new();
    let every = scenario.schedule.project_every;
    let total = scenario.events + extra.len() as u64;
    progress.set_length(total);
    let mut log = Some(SledLog::open(&data.join("log")).map_err(run_err)?);
    if let Some(c) = &catalog {
        log.as_ref().expect("log open").record_catalog(c.hash(), c.canonical()).map_err(run_err)?.wait().map_err(run_err)?;
    }
    let mut projector = Some(Projector::open(&root, &data, Codec::Snappy).map_err(run_err)?.with_step_events(every));
    let mut extra = extra.into_iter();
    let mut appended = 0u64;
    let mut step = 0u64;
    let hidden = ProgressBar::hidden();
    while appended < total {
        if let Some((_, schemas)) = schema_steps.next_if(|(at, _)| *at <= appended) {
            // Recorded as `schema add` records them (checked against those before), and
            // the world's traffic takes the types in force from here on.
            let l = log.as_ref().expect("log open");
            for s in &schemas {
                crate::schema::check_against(&recorded, s)
                    .map_err(|e| CheckError::Scenario { path: path.to_path_buf(), reason: e.to_string() })?;
                l.record_schema(s.hash(), s.canonical().as_bytes().to_vec()).map_err(run_err)?.wait().map_err(run_err)?;
                recorded.push(s.clone());
            }
            let in_force: Vec<crate::schema::Schema> = event::Registry::from_schemas(&recorded).schemas().cloned().collect();
            let traffic = match world.custom_mut() {
                Some(t) => t.replace_types(&in_force),
                None => generate::custom::CustomTraffic::new(scenario.seed, &in_force, scenario.custom_share).map(|t| world.set_custom(t)),
            };
            traffic.map_err(|reason| CheckError::Scenario { path: path.to_path_buf(), reason })?;
        }
        // A batch ends where the next schema step begins.
        let next_at = schema_steps.peek().map_or(u64::MAX, |(at, _)| *at);
        let n = every.min(total - appended).min(next_at.saturating_sub(appended).max(1));
        let meta = generate::direct_meta();
        let records: Vec<Record> = (0..n)
            .map(|i| {
                if appended + i < scenario.events {
                    generate::direct_record(world.next_event(), &meta)
                } else {
                    extra.next().expect("counted")
                }
            })
            .collect();
        let l = log.as_ref().expect("log open");
        l.append(AppendBatch { records, rejected: vec![] }).map_err(run_err)?.wait().map_err(run_err)?;
        appended += n;
        progress.set_position(appended);
        step += 1;
        if scenario.schedule.crash_at_step == Some(step) {
            // Hand the data dir to a child that dies in the middle of publishing.
            drop(projector.take());
            log.take().expect("log open").close().map_err(run_err)?;
            let point = scenario.schedule.crash_point.as_deref().unwrap_or(DEFAULT_CRASH_POINT);
            let out = std::process::Command::new(exe)
                .arg("--data-dir")
                .arg(&data)
                .arg("--tables")
                .arg(root.to_string())
                .args(["project", "--step-events", &every.to_string()])
                .env("QUESTLOG_FAILPOINT", point)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(run_err)?;
            if out.status.success() {
                return Err(CheckError::Run(format!("the projection meant to crash at {point} finished instead")));
            }
            log = Some(SledLog::open(&data.join("log")).map_err(run_err)?);
            projector = Some(Projector::open(&root, &data, Codec::Snappy).map_err(run_err)?.with_step_events(every));
        } else {
            let p = projector.as_mut().expect("projector open");
            p.step(log.as_ref().expect("log open").as_ref(), &hidden).map_err(run_err)?;
        }
    }
    let log = log.expect("log open");
    let mut projector = projector.expect("projector open");
    projector.catch_up(log.as_ref(), &hidden).map_err(run_err)?;
    let end = log.durable_end();

    let mut streams: Vec<(String, Stream)> = Vec::new();
    // The log, as `replay` prints it, with a line for each catalogue and each event type
    // schema where it took effect (none for a log with neither: the seed's digests).
    let catalogs = catalog::versions(log.catalogs().map_err(run_err)?).map_err(run_err)?;
    let mut kept: Vec<(u64, String)> = catalogs.iter().map(|v| (v.from_offset, format!("catalog {} {}", v.from_offset, v.hash))).collect();
    kept.extend(log.schemas().map_err(run_err)?.into_iter().map(|r| (r.from_offset, format!("schema {} {}", r.from_offset, r.hash))));
    // Stable: records of one offset keep the order they were recorded in, catalogues first.
    kept.sort_by_key(|(from, _)| *from);
    let mut h = StreamHash::new(end + kept.len() as u64);
    let mut line = String::new();
    let mut next_kept = kept.iter().peekable();
    for item in log.read(0, end).map_err(run_err)? {
        let (offset, record) = item.map_err(run_err)?;
        while let Some((_, l)) = next_kept.next_if(|(from, _)| *from <= offset) {
            h.line(l);
        }
        line.clear();
        replay::write_line(&mut line, offset, &record);
        h.line(line.trim_end());
    }
    for (_, l) in next_kept {
        h.line(l);
    }
    streams.push(("log".into(), h.finish()));

    // Each table's rows, from the incremental tables and from a rebuild.
    let schemas = log.schemas().map_err(run_err)?;
    let live = project::snapshot(&root, &data, &schemas).map_err(run_err)?;
    let rebuilt_root = TablesRoot::Local(tmp.path().join("rebuild"));
    project::rebuild_into(log.as_ref(), end, &rebuilt_root, tmp.path(), Codec::Snappy, &hidden).map_err(run_err)?;
    let rebuilt = project::snapshot(&rebuilt_root, tmp.path(), &schemas).map_err(run_err)?;
    let mut incremental_equals_rebuild = live.defs == rebuilt.defs;
    // Rows are compared table by table only when both have the same tables.
    for (i, def) in live.defs.iter().enumerate().filter(|(i, _)| *i < rebuilt.defs.len()) {
        let rows = live.rows()[i];
        let schema = def.arrow_schema(false);
        let a = hash_rows(&def.name, &schema, &live.files[i], rows)?;
        let b = hash_rows(&def.name, &schema, &rebuilt.files[i], rows)?;
        incremental_equals_rebuild &= a.digest == b.digest;
        streams.push((format!("rows.{}", def.name), a));
    }

    // The rebuilt Parquet files, byte for byte.
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (i, def) in rebuilt.defs.iter().enumerate() {
        for f in &rebuilt.files[i] {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.push((format!("{}/{}", def.location, name), f.clone()));
        }
    }
    let mut h = StreamHash::new(files.len() as u64);
    for (name, path) in files {
        let bytes = std::fs::read(&path).map_err(run_err)?;
        h.line(&format!("{name} {}", hex(&Sha256::digest(&bytes))));
    }
    streams.push(("parquet".into(), h.finish()));

    // The report, from the incremental tables.
    let files = report::TableFiles::of(&live);
    let snapshot = report::open_snapshot(&files).map_err(run_err)?;
    let rep = report::build_report_with(&snapshot, &format!("log offsets 0..{end}"), &catalogs).map_err(run_err)?;
    let mut h = StreamHash::new(rep.markdown.lines().count() as u64);
    for l in rep.markdown.lines() {
        h.line(l);
    }
    streams.push(("report".into(), h.finish()));
    log.close().map_err(run_err)?;

    let sidecar: BTreeMap<String, Segments> =
        std::fs::read_to_string(sidecar_path(path)).ok().and_then(|t| toml::from_str(&t).ok()).unwrap_or_default();
    let results: Vec<DigestResult> = streams
        .iter()
        .map(|(name, s)| {
            let expected = scenario.expected.get(name).cloned();
            let first_difference = match (&expected, sidecar.get(name)) {
                (Some(e), Some(seg)) if *e != s.digest => locate(s, seg),
                _ => None,
            };
            DigestResult { name: name.clone(), expected, got: s.digest.clone(), first_difference }
        })
        .collect();
    Ok(CheckOutcome { results, incremental_equals_rebuild, events: end, streams })
}

/// Where a stream first differs from the expected segment hashes.
fn locate(s: &Stream, expected: &Segments) -> Option<String> {
    if expected.lines != s.segment_lines {
        return Some(format!("{} lines now; the sidecar's segments were made for another length", s.lines));
    }
    let k = s
        .segments
        .iter()
        .zip(&expected.hashes)
        .position(|(a, b)| a != b)
        .or_else(|| (s.segments.len() != expected.hashes.len()).then_some(s.segments.len().min(expected.hashes.len())))?;
    let from = k as u64 * s.segment_lines + 1;
    let to = (from + s.segment_lines - 1).min(s.lines);
    let first = s.firsts.get(k).map(String::as_str).unwrap_or("(no such line now)");
    if s.segment_lines == 1 {
        Some(format!("first difference at line {from}, which is now: {first}"))
    } else {
        Some(format!("first difference within lines {from}..{to}; line {from} is now: {first}"))
    }
}

/// One line per row: the values, tab-separated, nulls as `∅`.
/// The rows of a table's `files` as lines, each with the table's columns (`schema`: a
/// file from before an ADDITION has nulls in its columns, as a rebuild's has).
fn hash_rows(table: &str, schema: &arrow::datatypes::SchemaRef, files: &[PathBuf], rows: u64) -> Result<Stream, CheckError> {
    let mut h = StreamHash::new(rows);
    let options = FormatOptions::default().with_null("∅");
    let mut line = String::new();
    for path in files {
        for batch in project::batch_reader(path).map_err(run_err)? {
            let batch = project::conform(table, batch.map_err(run_err)?, schema).map_err(run_err)?;
            let columns: Vec<arrow::array::ArrayRef> = batch.columns().iter().map(printable).collect();
            let formatters: Vec<ArrayFormatter> =
                columns.iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<_, _>>().map_err(run_err)?;
            for r in 0..batch.num_rows() {
                line.clear();
                for (i, f) in formatters.iter().enumerate() {
                    if i > 0 {
                        line.push('\t');
                    }
                    let _ = write!(line, "{}", f.value(r));
                }
                h.line(&line);
            }
        }
    }
    Ok(h.finish())
}

/// The column with UTC timestamps turned into RFC 3339 text (arrow's own formatter needs
/// a time zone database for named zones such as "UTC"); other columns as they are.
pub(crate) fn printable(col: &arrow::array::ArrayRef) -> arrow::array::ArrayRef {
    use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
    match col.as_any().downcast_ref::<TimestampMicrosecondArray>() {
        Some(ts) => {
            std::sync::Arc::new((0..ts.len()).map(|i| ts.is_valid(i).then(|| event::format_time_us(ts.value(i)))).collect::<StringArray>())
        }
        None => col.clone(),
    }
}

/// Literal events from an NDJSON file, as direct records received at their event time.
fn load_extra(path: &Path) -> Result<Vec<Record>, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckError::Scenario { path: path.to_path_buf(), reason: e.to_string() })?;
    let meta = generate::direct_meta();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let e = event::validate_json(line.trim())
            .map_err(|r| CheckError::Scenario { path: path.to_path_buf(), reason: format!("line {}: {}", i + 1, r.message) })?;
        let received_at_us = e.event_time_us.unwrap_or(0);
        out.push(Record { received_at_us, meta: meta.clone(), raw_event: line.trim().to_string(), event: e });
    }
    Ok(out)
}

/// Rewrites the scenario's `[expected]` table and its sidecar from the last run.
pub fn bless(path: &Path, outcome: &CheckOutcome) -> Result<(), CheckError> {
    let streams = &outcome.streams;
    let text = std::fs::read_to_string(path).map_err(|e| CheckError::Scenario { path: path.to_path_buf(), reason: e.to_string() })?;
    let head = match text.find("\n[expected]") {
        Some(i) => &text[..i + 1],
        None => text.as_str(),
    };
    let mut out = head.trim_end().to_string();
    out.push_str("\n\n[expected]\n");
    let mut side = String::from("# Segment hashes of each digest's lines, to locate a mismatch. Written by `questlog check --bless`.\n");
    for (name, s) in streams {
        let _ = writeln!(out, "{:<20} = \"{}\"", format!("\"{name}\""), s.digest);
        let _ = writeln!(
            side,
            "\n[\"{name}\"]\nlines = {}\nhashes = [{}]",
            s.segment_lines,
            s.segments.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ")
        );
    }
    std::fs::write(path, out).map_err(run_err)?;
    std::fs::write(sidecar_path(path), side).map_err(run_err)?;
    Ok(())
}
