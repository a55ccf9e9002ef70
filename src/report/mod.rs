//! The findings report: reads the five Parquet tables of a snapshot with Polars and turns
//! them into a human-readable report (`report.md` and a self-contained `report.html` with
//! inline SVG charts). Sections read through a [`TableSource`]: a [`Snapshot`] of open
//! files gives each section only the columns it uses (`questlog report`), and [`Frames`]
//! in memory give the same report (tests, `sql`).
//!
//! This fills in the seed pipeline's empty "Summary of Findings": an overview, revenue,
//! store stock, guilds, kills, damage, quests and player activity, each with a short
//! interpretation and a table; with a store catalogue in the log, a last section on list
//! prices, sell-through and stock ([`catalog`]).
//!
//! # Determinism
//!
//! The same tables always give byte-identical `report.md` and `report.html`:
//!
//! * every sort has a total tie-break (for example revenue, then name, then id);
//! * money is summed as whole cents (`i64`), never as floats, so the order in which
//!   Polars adds values up cannot change a digit;
//! * quantiles use the nearest-rank method (values that really occurred);
//! * every float is printed with a fixed number of decimals;
//! * nothing machine-specific goes in: no paths, no wall-clock time, no host names.
//!
//! # Snapshots and compaction
//!
//! [`open_snapshot`] (and [`load_frames`], which uses it) opens *every* file of the
//! snapshot before reading any of them, so a compaction that deletes files afterwards
//! cannot tear the snapshot. A file that was
//! already gone gives [`ReportError::FileVanished`]: take a fresh snapshot and retry.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

pub mod catalog;

/// The five table names, in the order used throughout the report.
pub const TABLE_NAMES: [&str; 5] = [
    "guild_joins",
    "enemy_kills",
    "quests",
    "take_damage",
    "transactions",
];

/// The `event_type` stored in each table, in the same order as [`TABLE_NAMES`]
/// (this is also the funnel order).
const EVENT_TYPES: [&str; 5] = [
    "join_guild",
    "kill_enemy",
    "accept_quest",
    "take_damage",
    "buy_asset",
];

/// Funnel order: join_guild → accept_quest → kill_enemy → take_damage → buy_asset.
const FUNNEL: [&str; 5] = [
    "join_guild",
    "accept_quest",
    "kill_enemy",
    "take_damage",
    "buy_asset",
];

/// A snapshot of the tables: for each table name, the Parquet files that make it up
/// (possibly none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFiles {
    pub tables: Vec<(&'static str, Vec<PathBuf>)>,
    /// Tables projected from a Kafka topic: they have the `log_partition` column too.
    pub partitioned: bool,
}

impl TableFiles {
    pub fn new(tables: Vec<(&'static str, Vec<PathBuf>)>) -> Self {
        TableFiles { tables, partitioned: false }
    }

    /// Files of tables projected from a Kafka topic (with `log_partition`).
    pub fn partitioned(mut self, partitioned: bool) -> Self {
        self.partitioned = partitioned;
        self
    }
}

/// The column that tables projected from a Kafka topic have after the contract's.
pub const PARTITION_COLUMN: &str = "log_partition";

/// Why a report (or loading the tables for one) failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file listed in the snapshot was deleted (usually by compaction) before it could
    /// be opened. Take a fresh snapshot and try again.
    #[error(
        "table file {} disappeared before it could be read (probably compacted meanwhile); take a fresh snapshot and retry",
        .0.display()
    )]
    FileVanished(PathBuf),

    /// A file could not be opened or written for another reason (permissions, disk full…).
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file could not be read as Parquet.
    #[error(
        "could not read Parquet file {}: {source} (the file may be damaged; `questlog project --rebuild` rewrites the tables)",
        path.display()
    )]
    Parquet {
        path: PathBuf,
        #[source]
        source: PolarsError,
    },

    /// A Parquet file does not have the table's columns.
    #[error(
        "Parquet file {} does not match the `{table}` table: {detail} (rebuild the tables with `questlog project --rebuild`)",
        path.display()
    )]
    SchemaMismatch {
        table: &'static str,
        path: PathBuf,
        detail: String,
    },

    /// The snapshot names a table questlog does not have.
    #[error("unknown table `{0}`; the tables are guild_joins, enemy_kills, quests, take_damage, transactions")]
    UnknownTable(String),

    /// The snapshot names the same table twice.
    #[error("table `{0}` is listed twice in the snapshot")]
    DuplicateTable(String),

    /// A Polars computation failed.
    #[error("report computation failed: {0}")]
    Polars(#[from] PolarsError),
}

/// The five tables, loaded.
#[derive(Debug, Clone)]
pub struct Frames {
    pub guild_joins: DataFrame,
    pub enemy_kills: DataFrame,
    pub quests: DataFrame,
    pub take_damage: DataFrame,
    pub transactions: DataFrame,
}

impl Frames {
    /// All five tables with zero rows.
    pub fn empty() -> Self {
        Frames {
            guild_joins: empty_frame("guild_joins"),
            enemy_kills: empty_frame("enemy_kills"),
            quests: empty_frame("quests"),
            take_damage: empty_frame("take_damage"),
            transactions: empty_frame("transactions"),
        }
    }

    /// The frame of a table by name.
    pub fn get(&self, table: &str) -> Option<&DataFrame> {
        match table {
            "guild_joins" => Some(&self.guild_joins),
            "enemy_kills" => Some(&self.enemy_kills),
            "quests" => Some(&self.quests),
            "take_damage" => Some(&self.take_damage),
            "transactions" => Some(&self.transactions),
            _ => None,
        }
    }

    /// `(table name, frame)` for all five tables, in [`TABLE_NAMES`] order.
    pub fn iter(&self) -> [(&'static str, &DataFrame); 5] {
        [
            ("guild_joins", &self.guild_joins),
            ("enemy_kills", &self.enemy_kills),
            ("quests", &self.quests),
            ("take_damage", &self.take_damage),
            ("transactions", &self.transactions),
        ]
    }

    fn get_mut(&mut self, table: &str) -> Option<&mut DataFrame> {
        match table {
            "guild_joins" => Some(&mut self.guild_joins),
            "enemy_kills" => Some(&mut self.enemy_kills),
            "quests" => Some(&mut self.quests),
            "take_damage" => Some(&mut self.take_damage),
            "transactions" => Some(&mut self.transactions),
            _ => None,
        }
    }
}

fn datetime_utc_us() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
}

/// The table's columns in file order, or `None` for an unknown table.
fn table_fields(table: &str) -> Option<Vec<(&'static str, DataType)>> {
    use DataType::*;
    let specific: Vec<(&'static str, DataType)> = match table {
        "guild_joins" => vec![("guild_id", Int64), ("name", String)],
        "enemy_kills" => vec![("enemy_id", Int64), ("name", String), ("level", Int16)],
        "quests" => vec![("quest_id", Int64), ("name", String), ("contact", String)],
        "take_damage" => vec![("enemy_id", Int64), ("name", String), ("damage", Int16)],
        "transactions" => vec![
            ("store_id", Int64),
            ("item_name", String),
            ("inventory_id", Int64),
            ("total_cost", Float32),
            ("category", String),
            ("on_hand_qty", Int16),
        ],
        _ => return None,
    };
    let mut fields = vec![
        ("raw_event", String),
        ("timestamp", String),
        ("accept", String),
        ("host", String),
        ("user_agent", String),
        ("event_type", String),
    ];
    fields.extend(specific);
    fields.extend([
        ("log_offset", Int64),
        ("event_id", String),
        ("player_id", String),
        ("session_id", String),
        ("event_time", datetime_utc_us()),
    ]);
    Some(fields)
}

/// The column names of a table in file order (none for an unknown table).
pub fn column_names(table: &str) -> Vec<&'static str> {
    table_fields(table).unwrap_or_default().into_iter().map(|(n, _)| n).collect()
}

/// The Polars schema of a table (columns in file order).
pub fn table_schema(table: &str) -> Option<Schema> {
    table_fields(table).map(|fields| {
        fields
            .into_iter()
            .map(|(name, dtype)| (PlSmallStr::from_static(name), dtype))
            .collect()
    })
}

/// A frame with the table's schema and zero rows. An unknown table name gives a frame with
/// no columns.
pub fn empty_frame(table: &str) -> DataFrame {
    match table_schema(table) {
        Some(schema) => DataFrame::empty_with_schema(&schema),
        None => DataFrame::empty(),
    }
}

/// Loads every table of the snapshot. All files are opened before any is read, so files
/// deleted afterwards (compaction) do not matter; a file that is already gone gives
/// [`ReportError::FileVanished`]. Tables missing from `files` are empty.
pub fn load_frames(files: &TableFiles) -> Result<Frames, ReportError> {
    load_frames_without(files, &[])
}

/// Like [`load_frames`], reading only the columns not named in `skip`.
pub fn load_frames_without(files: &TableFiles, skip: &[&str]) -> Result<Frames, ReportError> {
    let snapshot = open_snapshot(files)?;
    let mut frames = Frames::empty();
    for table in TABLE_NAMES {
        let mut names: Vec<&str> = column_names(table).into_iter().filter(|n| !skip.contains(n)).collect();
        if files.partitioned && !skip.contains(&PARTITION_COLUMN) {
            names.push(PARTITION_COLUMN);
        }
        // One chunk per file is kept: the queries do not need one chunk, and copying a table
        // into one would briefly hold it twice.
        *frames.get_mut(table).expect("known table") = snapshot.columns(table, &names)?;
    }
    Ok(frames)
}

/// The name under which a [`TableSource`] gives the event's time in µs since the epoch
/// (`Int64`): `event_time`, or the server receive `timestamp` when the event carried no
/// `event_time` (see [`time_expr`]).
pub const TIME: &str = "t";

/// Where the report's sections read their columns: [`Frames`] already in memory, or a
/// [`Snapshot`]'s open files, read again by each section so that only the columns one
/// section needs are in memory at a time (at 10^7 events, all the columns the report uses
/// are ~2 GB at once).
pub trait TableSource {
    /// How many rows `table` has.
    fn rows(&self, table: &'static str) -> Result<usize, ReportError>;

    /// `table` with only `columns`, in that order. [`TIME`] names the event time, computed
    /// from `event_time` and `timestamp`.
    fn columns(&self, table: &'static str, columns: &[&str]) -> Result<DataFrame, ReportError>;
}

/// The stored columns needed to give `columns` (`TIME` needs two), each once.
fn stored_columns<'a>(columns: &[&'a str]) -> Vec<&'a str> {
    let mut stored: Vec<&str> = Vec::with_capacity(columns.len() + 1);
    for &c in columns {
        let needs: &[&str] = if c == TIME { &["event_time", "timestamp"] } else { std::slice::from_ref(&c) };
        for &n in needs {
            if !stored.contains(&n) {
                stored.push(n);
            }
        }
    }
    stored
}

/// Selects `columns` from a frame holding their [`stored_columns`].
fn select_columns(df: DataFrame, columns: &[&str]) -> PolarsResult<DataFrame> {
    let exprs: Vec<Expr> = columns.iter().map(|&c| if c == TIME { time_expr() } else { col(c) }).collect();
    df.lazy().select(exprs).collect()
}

impl TableSource for Frames {
    fn rows(&self, table: &'static str) -> Result<usize, ReportError> {
        self.get(table).map(DataFrame::height).ok_or_else(|| ReportError::UnknownTable(table.to_string()))
    }

    fn columns(&self, table: &'static str, columns: &[&str]) -> Result<DataFrame, ReportError> {
        let df = self.get(table).ok_or_else(|| ReportError::UnknownTable(table.to_string()))?;
        Ok(select_columns(df.clone(), columns)?)
    }
}

/// A snapshot of the tables with every file already open: compaction may delete the files
/// afterwards, and they can still be read, as often as needed, until this is dropped.
#[derive(Debug)]
pub struct Snapshot {
    tables: Vec<(&'static str, Vec<(PathBuf, File)>)>,
    partitioned: bool,
}

/// Opens every file of the snapshot before reading any of them. A file that is already
/// gone gives [`ReportError::FileVanished`]: take a fresh snapshot and retry.
pub fn open_snapshot(files: &TableFiles) -> Result<Snapshot, ReportError> {
    // Validate the table names first.
    let mut seen: Vec<&str> = Vec::new();
    for (table, _) in &files.tables {
        if !TABLE_NAMES.contains(table) {
            return Err(ReportError::UnknownTable((*table).to_string()));
        }
        if seen.contains(table) {
            return Err(ReportError::DuplicateTable((*table).to_string()));
        }
        seen.push(table);
    }
    let mut tables = Vec::with_capacity(files.tables.len());
    for (table, paths) in &files.tables {
        let mut handles = Vec::with_capacity(paths.len());
        for path in paths {
            match std::fs::File::open(path) {
                Ok(file) => handles.push((path.clone(), file)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ReportError::FileVanished(path.clone()));
                }
                Err(source) => {
                    return Err(ReportError::Io {
                        action: "could not open table file",
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        tables.push((*table, handles));
    }
    Ok(Snapshot { tables, partitioned: files.partitioned })
}

impl Snapshot {
    fn files(&self, table: &str) -> &[(PathBuf, File)] {
        self.tables.iter().find(|(t, _)| *t == table).map(|(_, f)| f.as_slice()).unwrap_or_default()
    }

    /// A reader over an open file (a duplicate handle: the snapshot keeps its own).
    fn reader(path: &Path, file: &File) -> Result<ParquetReader<File>, ReportError> {
        let file = file.try_clone().map_err(|source| ReportError::Io {
            action: "could not reopen table file",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ParquetReader::new(file))
    }
}

impl TableSource for Snapshot {
    fn rows(&self, table: &'static str) -> Result<usize, ReportError> {
        let mut rows = 0;
        for (path, file) in self.files(table) {
            rows += Self::reader(path, file)?.num_rows().map_err(|source| ReportError::Parquet {
                path: path.clone(),
                source,
            })?;
        }
        Ok(rows)
    }

    fn columns(&self, table: &'static str, columns: &[&str]) -> Result<DataFrame, ReportError> {
        let mut all = table_fields(table).ok_or_else(|| ReportError::UnknownTable(table.to_string()))?;
        if self.partitioned {
            all.push((PARTITION_COLUMN, DataType::Int32));
        }
        let stored = stored_columns(columns);
        let mut fields = Vec::with_capacity(stored.len());
        for name in &stored {
            match all.iter().find(|(n, _)| n == name) {
                Some(field) => fields.push(field.clone()),
                None => {
                    return Err(PolarsError::ColumnNotFound(format!("`{name}` is not a column of `{table}`").into()).into());
                }
            }
        }
        let names: Vec<String> = stored.iter().map(|n| n.to_string()).collect();
        let schema: Schema = fields.iter().map(|(n, d)| (PlSmallStr::from_static(n), d.clone())).collect();
        let mut combined = select_columns(DataFrame::empty_with_schema(&schema), columns)?;
        // File by file, so that columns only needed to compute others (the text `timestamp`
        // behind TIME) are held for one file at a time.
        for (path, file) in self.files(table) {
            let df = Self::reader(path, file)?
                .with_columns(Some(names.clone()))
                .finish()
                .map_err(|source| ReportError::Parquet {
                    path: path.clone(),
                    source,
                })?;
            combined.vstack_mut_owned(select_columns(conform(table, path, &fields, df)?, columns)?)?;
        }
        Ok(combined)
    }
}

/// Puts a file's columns in the table's order and types (extra columns are dropped).
fn conform(
    table: &'static str,
    path: &Path,
    fields: &[(&'static str, DataType)],
    df: DataFrame,
) -> Result<DataFrame, ReportError> {
    let height = df.height();
    let mut columns = Vec::with_capacity(fields.len());
    for (name, dtype) in fields {
        let column = df.column(name).map_err(|_| ReportError::SchemaMismatch {
            table,
            path: path.to_path_buf(),
            detail: format!("column `{name}` is missing"),
        })?;
        let column = if column.dtype() == dtype {
            column.clone()
        } else {
            column
                .strict_cast(dtype)
                .map_err(|e| ReportError::SchemaMismatch {
                    table,
                    path: path.to_path_buf(),
                    detail: format!(
                        "column `{name}` has type {} where {dtype} was expected ({e})",
                        column.dtype()
                    ),
                })?
        };
        columns.push(column);
    }
    Ok(DataFrame::new(height, columns)?)
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// A rendered report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `report.md`: stable, diff-friendly Markdown.
    pub markdown: String,
    /// `report.html`: self-contained HTML with inline CSS and SVG charts.
    pub html: String,
    /// 5–10 one-line headline findings for a terminal.
    pub summary: Vec<String>,
}

const REPORT_TITLE: &str = "questlog findings report";
const NO_EVENTS: &str = "No events yet.";
const TOP_N: usize = 10;
const LOW_STOCK: i64 = 10;
/// Longest per-name table (categories, enemies, contacts); the rest is one `questlog sql` away.
const MAX_ROWS: usize = 25;

/// A note under a table that was cut to [`MAX_ROWS`] rows.
fn cut_note(blocks: &mut Vec<Block>, total: usize, what: &str) {
    if total > MAX_ROWS {
        blocks.push(Block::Para(format!(
            "Showing the first {MAX_ROWS} of {} {what}; `questlog sql` has the rest.",
            fmt_int(total as i64)
        )));
    }
}

/// Builds the report from the five tables. `title_note` says which snapshot this is
/// (e.g. "log offsets 0..20000") and appears under the title.
pub fn build_report(frames: &Frames, title_note: &str) -> Result<Report, ReportError> {
    build_report_from(frames, title_note)
}

/// Builds the report from any [`TableSource`]; from a [`Snapshot`], each section reads
/// only the columns it uses, so memory is bounded by the largest section rather than by all
/// the columns at once. Frames and a snapshot of the same tables give the same report.
pub fn build_report_from(src: &dyn TableSource, title_note: &str) -> Result<Report, ReportError> {
    build_report_with(src, title_note, &[])
}

/// [`build_report_from`], with the store catalogue versions the log recorded up to the
/// tables' offset: a catalogue adds its section ([`catalog`]); none leaves the report as it
/// was.
pub fn build_report_with(src: &dyn TableSource, title_note: &str, catalogs: &[crate::catalog::Version]) -> Result<Report, ReportError> {
    let mut summary = Vec::new();
    let people = People::count(src)?;
    let mut sections = vec![
        overview_section(src, &people, &mut summary)?,
        revenue_section(src, &mut summary)?,
        stock_section(src, &mut summary)?,
        guild_section(src, &mut summary)?,
        kills_section(src, &mut summary)?,
        damage_section(src, &mut summary)?,
        quests_section(src, &mut summary)?,
        activity_section(&people, &mut summary)?,
    ];
    if !catalogs.is_empty() {
        sections.push(catalog::section(src, catalogs, sections.len() + 1, &mut summary)?);
    }
    let markdown = render_markdown(title_note, &summary, &sections);
    let html = render_html(title_note, &summary, &sections);
    Ok(Report {
        markdown,
        html,
        summary,
    })
}

/// Writes `report.md` and `report.html` into `out_dir` (created if needed) and returns
/// their paths. Each file is written to a temporary name and renamed into place, so a
/// reader never sees half a report.
pub fn write_report(report: &Report, out_dir: &Path) -> Result<(PathBuf, PathBuf), ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        action: "could not create report directory",
        path: out_dir.to_path_buf(),
        source,
    })?;
    let md = out_dir.join("report.md");
    let html = out_dir.join("report.html");
    write_atomically(&md, report.markdown.as_bytes())?;
    write_atomically(&html, report.html.as_bytes())?;
    Ok((md, html))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|source| ReportError::Io {
        action: "could not write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ReportError::Io {
        action: "could not move report into place at",
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------
// Document model (rendered to both Markdown and HTML)
// ---------------------------------------------------------------------------------------

struct Section {
    id: &'static str,
    title: String,
    blocks: Vec<Block>,
}

enum Block {
    Para(String),
    Heading(String),
    Table(Table),
    Chart(Chart),
}

struct Table {
    headers: Vec<&'static str>,
    /// `true` for right-aligned (numeric) columns.
    numeric: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[(&'static str, bool)]) -> Self {
        Table {
            headers: headers.iter().map(|(h, _)| *h).collect(),
            numeric: headers.iter().map(|(_, n)| *n).collect(),
            rows: Vec::new(),
        }
    }
    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }
}

struct Chart {
    title: String,
    bars: Vec<Bar>,
}

struct Bar {
    label: String,
    value: f64,
    display: String,
}

impl Chart {
    fn new(title: impl Into<String>) -> Self {
        Chart {
            title: title.into(),
            bars: Vec::new(),
        }
    }
    fn bar(&mut self, label: impl Into<String>, value: f64, display: impl Into<String>) {
        self.bars.push(Bar {
            label: label.into(),
            value,
            display: display.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------
// Number and time formatting
// ---------------------------------------------------------------------------------------

/// `12345` → `12,345`.
fn fmt_int(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    let first = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        r => r,
    };
    out.push_str(&digits[..first]);
    let mut i = first;
    while i < digits.len() {
        out.push(',');
        out.push_str(&digits[i..i + 3]);
        i += 3;
    }
    out
}

/// Whole cents → `$1,234.56`.
fn fmt_money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!(
        "{sign}${}.{:02}",
        fmt_int((abs / 100) as i64),
        abs % 100
    )
}

/// `part / whole` as a percentage with one decimal.
fn fmt_pct(part: i64, whole: i64) -> String {
    if whole == 0 {
        return "0.0%".to_string();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// A float with `decimals` decimals and thousands separators.
fn fmt_float(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    let s = format!("{:.*}", decimals, x.abs());
    let (int_part, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s.as_str(), None),
    };
    let int: i64 = int_part.parse().unwrap_or(0);
    let negative = x < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0');
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push_str(&fmt_int(int));
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A quantile or other optional float: integers print without decimals.
fn fmt_opt_num(x: Option<f64>) -> String {
    match x {
        None => "–".to_string(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => fmt_int(v as i64),
        Some(v) => fmt_float(v, 1),
    }
}

fn fmt_opt_int(x: Option<i64>) -> String {
    x.map(fmt_int).unwrap_or_else(|| "–".to_string())
}

fn or_none(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "(none)".to_string())
}

const MICROS_PER_SEC: i64 = 1_000_000;

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[derive(Clone, Copy)]
enum TimePrecision {
    Day,
    Minute,
    Second,
}

/// Microseconds since the epoch (UTC) → `2026-01-01 13:05:00 UTC` style text.
fn fmt_time(micros: i64, precision: TimePrecision) -> String {
    let secs = micros.div_euclid(MICROS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    match precision {
        TimePrecision::Day => format!("{y:04}-{m:02}-{d:02}"),
        TimePrecision::Minute => format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}"),
        TimePrecision::Second => format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}"),
    }
}

fn fmt_instant(micros: i64) -> String {
    format!("{} UTC", fmt_time(micros, TimePrecision::Second))
}

/// A duration in microseconds → `2d 3h 4m`, `5m 6s`, `0s`.
fn fmt_duration(micros: i64) -> String {
    let total = micros.max(0) / MICROS_PER_SEC;
    let (d, h, m, s) = (
        total / 86_400,
        (total / 3600) % 24,
        (total / 60) % 60,
        total % 60,
    );
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 && d == 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 && d == 0 && h == 0 {
        parts.push(format!("{s}s"));
    }
    if parts.is_empty() {
        if micros > 0 {
            return "under 1s".to_string();
        }
        return "0s".to_string();
    }
    parts.join(" ")
}

/// Bucket widths (seconds) tried in order for time series; the first that gives at most
/// 30 buckets wins.
const BUCKET_WIDTHS: [(i64, &str); 24] = [
    (1, "second"),
    (2, "2 seconds"),
    (5, "5 seconds"),
    (10, "10 seconds"),
    (15, "15 seconds"),
    (30, "30 seconds"),
    (60, "minute"),
    (120, "2 minutes"),
    (300, "5 minutes"),
    (600, "10 minutes"),
    (900, "15 minutes"),
    (1_800, "30 minutes"),
    (3_600, "hour"),
    (7_200, "2 hours"),
    (10_800, "3 hours"),
    (21_600, "6 hours"),
    (43_200, "12 hours"),
    (86_400, "day"),
    (172_800, "2 days"),
    (604_800, "week"),
    (1_209_600, "2 weeks"),
    (2_592_000, "30 days"),
    (7_776_000, "90 days"),
    (31_536_000, "365 days"),
];
const MAX_BUCKETS: i64 = 30;

/// Picks the bucket width (µs) and its name for the span `min..=max` (µs).
fn pick_bucket(min: i64, max: i64) -> (i64, String) {
    for (secs, name) in BUCKET_WIDTHS {
        let w = secs * MICROS_PER_SEC;
        if max.div_euclid(w) - min.div_euclid(w) < MAX_BUCKETS {
            return (w, name.to_string());
        }
    }
    // Event times are client-supplied and can be far apart: use whole days, as many as
    // it takes to stay within MAX_BUCKETS.
    let day = 86_400 * MICROS_PER_SEC;
    let span_days = max.saturating_sub(min) / day;
    let days = (span_days + 1) / (MAX_BUCKETS - 2) + 1;
    (days * day, format!("{days} days"))
}

fn bucket_precision(width_micros: i64) -> TimePrecision {
    if width_micros >= 86_400 * MICROS_PER_SEC {
        TimePrecision::Day
    } else if width_micros >= 60 * MICROS_PER_SEC {
        TimePrecision::Minute
    } else {
        TimePrecision::Second
    }
}

/// Histogram band widths tried in order; the first giving at most 12 bands wins.
const BAND_WIDTHS: [i64; 20] = [
    1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1_000, 2_000, 2_500, 5_000, 10_000, 20_000,
    25_000, 50_000, 100_000,
];

fn pick_band(min: i64, max: i64) -> i64 {
    for w in BAND_WIDTHS {
        if max.div_euclid(w) - min.div_euclid(w) < 12 {
            return w;
        }
    }
    BAND_WIDTHS[BAND_WIDTHS.len() - 1]
}

// ---------------------------------------------------------------------------------------
// Polars helpers
// ---------------------------------------------------------------------------------------

fn ints(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<i64>>> {
    let c = df.column(name)?.cast(&DataType::Int64)?;
    Ok(c.i64()?.iter().collect())
}

fn floats(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().collect())
}

fn strs(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<String>>> {
    let c = df.column(name)?.cast(&DataType::String)?;
    Ok(c.str()?.iter().map(|o| o.map(str::to_owned)).collect())
}

fn scalar_i64(df: &DataFrame, name: &str) -> PolarsResult<Option<i64>> {
    Ok(ints(df, name)?.into_iter().next().flatten())
}

fn scalar_f64(df: &DataFrame, name: &str) -> PolarsResult<Option<f64>> {
    Ok(floats(df, name)?.into_iter().next().flatten())
}

/// Row count as an `Int64` column named `name`.
fn count_as(name: &str) -> Expr {
    len().cast(DataType::Int64).alias(name)
}

/// Distinct non-null values.
fn distinct(column: &str) -> Expr {
    col(column).drop_nulls().n_unique().cast(DataType::Int64)
}

fn quantile(column: &str, q: f64) -> Expr {
    col(column)
        .cast(DataType::Float64)
        .quantile(lit(q), QuantileMethod::Nearest)
}

/// Sort options: `descending[i]` per key, nulls last, stable.
fn sort_opts(descending: &[bool]) -> SortMultipleOptions {
    SortMultipleOptions::new()
        .with_order_descending_multi(descending.iter().copied())
        .with_nulls_last(true)
        .with_maintain_order(true)
}

/// The event's time in µs since the epoch: `event_time`, or the server receive
/// `timestamp` when the event carried no `event_time`.
fn time_expr() -> Expr {
    let received = col("timestamp")
        .str()
        .to_datetime(
            Some(TimeUnit::Microseconds),
            None,
            StrptimeOptions {
                format: Some("%Y-%m-%dT%H:%M:%S%.fZ".into()),
                strict: false,
                exact: true,
                cache: false,
            },
            lit("raise"),
        )
        .cast(DataType::Int64);
    coalesce(&[col("event_time").cast(DataType::Int64), received]).alias("t")
}

/// Whole cents of `total_cost` (rounded half to even per purchase).
fn cents_expr() -> Expr {
    (col("total_cost").cast(DataType::Float64) * lit(100.0))
        .round(0, RoundMode::HalfToEven)
        .cast(DataType::Int64)
        .alias("cents")
}

/// Events per player and per session over all five tables, counted table by table so that
/// only one table's ids are in memory at a time (the ids of all tables together are
/// ~0.5 GB at 10^7 events).
struct People {
    /// `player_id`, `events`, `kinds` (how many of the five event types): one row per
    /// player.
    per_player: DataFrame,
    /// `session_id`, `events`: one row per session.
    per_session: DataFrame,
    /// Distinct players per table, in [`TABLE_NAMES`] order.
    players_by_table: [i64; 5],
    /// Events without a `player_id`.
    no_player: i64,
}

impl People {
    fn count(src: &dyn TableSource) -> Result<People, ReportError> {
        let mut player_parts = Vec::with_capacity(TABLE_NAMES.len());
        let mut session_parts = Vec::with_capacity(TABLE_NAMES.len());
        let mut players_by_table = [0; 5];
        let mut no_player = 0;
        for (i, table) in TABLE_NAMES.into_iter().enumerate() {
            let ids = src.columns(table, &["player_id"])?;
            no_player += ids.column("player_id")?.null_count() as i64;
            let per = ids
                .lazy()
                .filter(col("player_id").is_not_null())
                .group_by([col("player_id")])
                .agg([count_as("events")])
                .collect()?;
            players_by_table[i] = per.height() as i64;
            player_parts.push(per.lazy());
            session_parts.push(
                src.columns(table, &["session_id"])?
                    .lazy()
                    .filter(col("session_id").is_not_null())
                    .group_by([col("session_id")])
                    .agg([count_as("events")])
                    .collect()?
                    .lazy(),
            );
        }
        // A player's kinds is the number of tables it occurs in: each table is one type.
        let per_player = concat(player_parts, UnionArgs::default())?
            .group_by([col("player_id")])
            .agg([col("events").sum().cast(DataType::Int64).alias("events"), count_as("kinds")])
            .collect()?;
        let per_session = concat(session_parts, UnionArgs::default())?
            .group_by([col("session_id")])
            .agg([col("events").sum().cast(DataType::Int64).alias("events")])
            .collect()?;
        Ok(People {
            per_player,
            per_session,
            players_by_table,
            no_player,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------

fn overview_section(src: &dyn TableSource, people: &People, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut counts: Vec<i64> = Vec::with_capacity(TABLE_NAMES.len());
    let (mut first, mut last): (Option<i64>, Option<i64>) = (None, None);
    let mut no_event_time = 0i64;
    for table in TABLE_NAMES {
        let times = src.columns(table, &["event_time", TIME])?;
        counts.push(times.height() as i64);
        no_event_time += times.column("event_time")?.null_count() as i64;
        let range = times.lazy().select([col(TIME).min().alias("min"), col(TIME).max().alias("max")]).collect()?;
        if let Some(min) = scalar_i64(&range, "min")? {
            first = Some(first.map_or(min, |f| f.min(min)));
        }
        if let Some(max) = scalar_i64(&range, "max")? {
            last = Some(last.map_or(max, |l| l.max(max)));
        }
    }
    let total: i64 = counts.iter().sum();
    let players = people.per_player.height() as i64;
    let sessions = people.per_session.height() as i64;
    let no_player = people.no_player;

    let mut blocks = Vec::new();
    if total == 0 {
        blocks.push(Block::Para(format!(
            "{NO_EVENTS} All five tables are empty; send events to the API or run `questlog generate`, then `questlog project`."
        )));
        summary.push("No events yet: all five tables are empty.".to_string());
    } else {
        let span = match (first, last) {
            (Some(f), Some(l)) => format!(
                ", between {} and {} ({})",
                fmt_instant(f),
                fmt_instant(l),
                fmt_duration(l - f)
            ),
            _ => String::new(),
        };
        blocks.push(Block::Para(format!(
            "The snapshot holds {} events from {} players in {} sessions{span}.",
            fmt_int(total),
            fmt_int(players),
            fmt_int(sessions)
        )));
        summary.push(format!(
            "{} events from {} players in {} sessions{span}.",
            fmt_int(total),
            fmt_int(players),
            fmt_int(sessions)
        ));
    }

    let mut table = Table::new(&[
        ("Table", false),
        ("Event type", false),
        ("Events", true),
        ("Share", true),
    ]);
    let mut chart = Chart::new("Events by type");
    for ((name, kind), n) in TABLE_NAMES.iter().zip(EVENT_TYPES).zip(&counts) {
        table.row(vec![
            name.to_string(),
            kind.to_string(),
            fmt_int(*n),
            fmt_pct(*n, total),
        ]);
        chart.bar(kind, *n as f64, fmt_int(*n));
    }
    table.row(vec![
        "**Total**".to_string(),
        String::new(),
        fmt_int(total),
        fmt_pct(total, total),
    ]);
    if total > 0 {
        blocks.push(Block::Chart(chart));
    }
    blocks.push(Block::Table(table));

    let mut facts = Table::new(&[("Measure", false), ("Value", true)]);
    facts.row(vec!["Distinct players".into(), fmt_int(players)]);
    facts.row(vec!["Distinct sessions".into(), fmt_int(sessions)]);
    facts.row(vec![
        "First event".into(),
        first.map(fmt_instant).unwrap_or_else(|| "–".into()),
    ]);
    facts.row(vec![
        "Last event".into(),
        last.map(fmt_instant).unwrap_or_else(|| "–".into()),
    ]);
    facts.row(vec![
        "Time span".into(),
        match (first, last) {
            (Some(f), Some(l)) => fmt_duration(l - f),
            _ => "–".into(),
        },
    ]);
    facts.row(vec!["Events without player_id".into(), fmt_int(no_player)]);
    facts.row(vec![
        "Events without event_time (receive time used)".into(),
        fmt_int(no_event_time),
    ]);
    blocks.push(Block::Table(facts));

    Ok(Section {
        id: "overview",
        title: "1. Overview".into(),
        blocks,
    })
}

fn revenue_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let tx = src.columns("transactions", &["category", "item_name", "store_id", "total_cost"])?.lazy().with_column(cents_expr());
    let mut blocks = Vec::new();
    if src.rows("transactions")? == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No purchases (buy_asset) so far.")));
        summary.push("Revenue: no purchases yet.".to_string());
        return Ok(Section {
            id: "revenue",
            title: "2. Revenue".into(),
            blocks,
        });
    }

    let by_cat = tx
        .clone()
        .group_by([col("category")])
        .agg([
            count_as("units"),
            col("cents").sum().cast(DataType::Int64).alias("revenue"),
            distinct("item_name").alias("items"),
        ])
        .sort_by_exprs(
            [col("revenue"), col("units"), col("category")],
            sort_opts(&[true, true, false]),
        )
        .collect()?;
    let cats = strs(&by_cat, "category")?;
    let units = ints(&by_cat, "units")?;
    let revenue = ints(&by_cat, "revenue")?;
    let items = ints(&by_cat, "items")?;
    let total_rev: i64 = revenue.iter().flatten().sum();
    let total_units: i64 = units.iter().flatten().sum();

    let lead = cats.first().map(or_none).unwrap_or_default();
    let lead_rev = revenue.first().copied().flatten().unwrap_or(0);
    blocks.push(Block::Para(format!(
        "{} purchases brought in {} (each purchase is one unit). {lead} is the top category with {} ({} of revenue).",
        fmt_int(total_units),
        fmt_money(total_rev),
        fmt_money(lead_rev),
        fmt_pct(lead_rev, total_rev)
    )));
    summary.push(format!(
        "Revenue: {} from {} purchases; top category {lead} with {} ({}).",
        fmt_money(total_rev),
        fmt_int(total_units),
        fmt_money(lead_rev),
        fmt_pct(lead_rev, total_rev)
    ));

    let mut chart = Chart::new("Revenue by category");
    let mut table = Table::new(&[
        ("Category", false),
        ("Items", true),
        ("Units", true),
        ("Revenue", true),
        ("Share of revenue", true),
    ]);
    for i in 0..by_cat.height().min(MAX_ROWS) {
        let rev = revenue[i].unwrap_or(0);
        chart.bar(or_none(&cats[i]), rev as f64, fmt_money(rev));
        table.row(vec![
            or_none(&cats[i]),
            fmt_opt_int(items[i]),
            fmt_opt_int(units[i]),
            fmt_money(rev),
            fmt_pct(rev, total_rev),
        ]);
    }
    table.row(vec![
        "**Total**".into(),
        String::new(),
        fmt_int(total_units),
        fmt_money(total_rev),
        fmt_pct(total_rev, total_rev),
    ]);
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));
    cut_note(&mut blocks, by_cat.height(), "categories");

    let top = tx
        .group_by([col("item_name"), col("store_id")])
        .agg([
            count_as("units"),
            col("cents").sum().cast(DataType::Int64).alias("revenue"),
        ])
        .sort_by_exprs(
            [col("revenue"), col("units"), col("item_name"), col("store_id")],
            sort_opts(&[true, true, false, false]),
        )
        .limit(TOP_N as IdxSize)
        .collect()?;
    let names = strs(&top, "item_name")?;
    let stores = ints(&top, "store_id")?;
    let units = ints(&top, "units")?;
    let revenue = ints(&top, "revenue")?;
    blocks.push(Block::Heading(format!("Top {TOP_N} items by revenue")));
    let mut table = Table::new(&[
        ("#", true),
        ("Item", false),
        ("Store", true),
        ("Units", true),
        ("Revenue", true),
    ]);
    for i in 0..top.height() {
        table.row(vec![
            (i + 1).to_string(),
            or_none(&names[i]),
            fmt_opt_int(stores[i]),
            fmt_opt_int(units[i]),
            fmt_money(revenue[i].unwrap_or(0)),
        ]);
    }
    if let (Some(name), Some(rev)) = (names.first(), revenue.first()) {
        summary.push(format!(
            "Best-selling item: {} at store {} ({}, {} units).",
            or_none(name),
            fmt_opt_int(stores[0]),
            fmt_money(rev.unwrap_or(0)),
            fmt_opt_int(units[0])
        ));
    }
    blocks.push(Block::Table(table));

    Ok(Section {
        id: "revenue",
        title: "2. Revenue".into(),
        blocks,
    })
}

fn stock_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "3. Store stock running out".to_string();
    if src.rows("transactions")? == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} Stock levels are reported with purchases.")));
        return Ok(Section {
            id: "stock",
            title,
            blocks,
        });
    }
    let items = src
        .columns("transactions", &["store_id", "item_name", "on_hand_qty", "log_offset"])?
        .lazy()
        .group_by([col("store_id"), col("item_name")])
        .agg([
            col("on_hand_qty")
                .sort_by([col("log_offset")], SortMultipleOptions::default())
                .last()
                .cast(DataType::Int64)
                .alias("stock"),
            count_as("purchases"),
            col("log_offset").max().alias("last_offset"),
        ])
        .sort_by_exprs(
            [col("stock"), col("purchases"), col("store_id"), col("item_name")],
            sort_opts(&[false, true, false, false]),
        )
        .collect()?;
    let stock = ints(&items, "stock")?;
    let n_items = items.height() as i64;
    let sold_out = stock.iter().filter(|s| **s == Some(0)).count() as i64;
    let low = stock
        .iter()
        .filter(|s| matches!(s, Some(q) if *q < LOW_STOCK))
        .count() as i64;
    blocks.push(Block::Para(format!(
        "Latest on-hand quantity (by log offset) for each of the {} store items: {} sold out, {} with fewer than {LOW_STOCK} left. The {} lowest:",
        fmt_int(n_items),
        fmt_int(sold_out),
        fmt_int(low),
        TOP_N.min(items.height())
    )));
    summary.push(format!(
        "Stock: {} of {} store items sold out, {} below {LOW_STOCK} units.",
        fmt_int(sold_out),
        fmt_int(n_items),
        fmt_int(low)
    ));
    let stores = ints(&items, "store_id")?;
    let names = strs(&items, "item_name")?;
    let purchases = ints(&items, "purchases")?;
    let last_offset = ints(&items, "last_offset")?;
    let mut table = Table::new(&[
        ("Store", true),
        ("Item", false),
        ("Last seen stock", true),
        ("Purchases", true),
        ("Last seen at log offset", true),
    ]);
    for i in 0..items.height().min(TOP_N) {
        table.row(vec![
            fmt_opt_int(stores[i]),
            or_none(&names[i]),
            fmt_opt_int(stock[i]),
            fmt_opt_int(purchases[i]),
            fmt_opt_int(last_offset[i]),
        ]);
    }
    blocks.push(Block::Table(table));
    Ok(Section {
        id: "stock",
        title,
        blocks,
    })
}

fn guild_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "4. Guilds".to_string();
    let total_joins = src.rows("guild_joins")? as i64;
    if total_joins == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} Nobody has joined a guild.")));
        summary.push("Guilds: no joins yet.".to_string());
        return Ok(Section {
            id: "guilds",
            title,
            blocks,
        });
    }
    let joins = src.columns("guild_joins", &["name", "guild_id", "player_id", TIME])?.lazy();
    let sizes = joins
        .clone()
        .group_by([col("name"), col("guild_id")])
        .agg([distinct("player_id").alias("members"), count_as("joins")])
        .sort_by_exprs(
            [col("members"), col("joins"), col("name"), col("guild_id")],
            sort_opts(&[true, true, false, false]),
        )
        .collect()?;
    let names = strs(&sizes, "name")?;
    let ids = ints(&sizes, "guild_id")?;
    let members = ints(&sizes, "members")?;
    let joins_n = ints(&sizes, "joins")?;

    let lead = or_none(&names[0]);
    blocks.push(Block::Para(format!(
        "{} joins across {} guilds. The largest, {lead}, has {} distinct members from {} joins.",
        fmt_int(total_joins),
        fmt_int(sizes.height() as i64),
        fmt_opt_int(members[0]),
        fmt_opt_int(joins_n[0])
    )));
    summary.push(format!(
        "Largest guild: {lead} with {} members ({} joins) of {} guilds.",
        fmt_opt_int(members[0]),
        fmt_opt_int(joins_n[0]),
        fmt_int(sizes.height() as i64)
    ));
    let mut chart = Chart::new("Guild sizes (distinct members)");
    let mut table = Table::new(&[
        ("Guild", false),
        ("Guild id", true),
        ("Members", true),
        ("Joins", true),
    ]);
    const MAX_GUILDS: usize = 20;
    for i in 0..sizes.height().min(MAX_GUILDS) {
        let label = format!("{} (#{})", or_none(&names[i]), fmt_opt_int(ids[i]));
        chart.bar(label, members[i].unwrap_or(0) as f64, fmt_opt_int(members[i]));
        table.row(vec![
            or_none(&names[i]),
            fmt_opt_int(ids[i]),
            fmt_opt_int(members[i]),
            fmt_opt_int(joins_n[i]),
        ]);
    }
    if sizes.height() > MAX_GUILDS {
        chart.title = format!("Guild sizes (distinct members), largest {MAX_GUILDS}");
        blocks.push(Block::Para(format!(
            "The {MAX_GUILDS} largest of {} guilds:",
            fmt_int(sizes.height() as i64)
        )));
    }
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));

    // Growth over time.
    let timed = joins.select([col("player_id"), col(TIME)]).filter(col(TIME).is_not_null());
    let range = timed
        .clone()
        .select([col("t").min().alias("min"), col("t").max().alias("max")])
        .collect()?;
    if let (Some(min), Some(max)) = (scalar_i64(&range, "min")?, scalar_i64(&range, "max")?) {
        let (width, width_name) = pick_bucket(min, max);
        let per_bucket = timed
            .clone()
            .group_by([col("t").floor_div(lit(width)).alias("bucket")])
            .agg([count_as("joins")])
            .sort_by_exprs([col("bucket")], sort_opts(&[false]))
            .collect()?;
        let newcomers = timed
            .filter(col("player_id").is_not_null())
            .group_by([col("player_id")])
            .agg([col("t").min().alias("first")])
            .group_by([col("first").floor_div(lit(width)).alias("bucket")])
            .agg([count_as("new")])
            .sort_by_exprs([col("bucket")], sort_opts(&[false]))
            .collect()?;
        let joins_at: std::collections::BTreeMap<i64, i64> = ints(&per_bucket, "bucket")?
            .into_iter()
            .zip(ints(&per_bucket, "joins")?)
            .filter_map(|(b, n)| Some((b?, n?)))
            .collect();
        let new_at: std::collections::BTreeMap<i64, i64> = ints(&newcomers, "bucket")?
            .into_iter()
            .zip(ints(&newcomers, "new")?)
            .filter_map(|(b, n)| Some((b?, n?)))
            .collect();
        let precision = bucket_precision(width);
        blocks.push(Block::Heading(format!("Growth: joins per {width_name}")));
        blocks.push(Block::Para(format!(
            "Joins bucketed by event time (UTC) per {width_name}; new members are players joining their first guild."
        )));
        let mut chart = Chart::new(format!("Guild joins per {width_name}"));
        let mut table = Table::new(&[
            ("Period starting (UTC)", false),
            ("Joins", true),
            ("New members", true),
            ("Members so far", true),
        ]);
        let mut cumulative = 0i64;
        for b in min.div_euclid(width)..=max.div_euclid(width) {
            let n = joins_at.get(&b).copied().unwrap_or(0);
            let new = new_at.get(&b).copied().unwrap_or(0);
            cumulative += new;
            let label = fmt_time(b * width, precision);
            chart.bar(label.clone(), n as f64, fmt_int(n));
            table.row(vec![label, fmt_int(n), fmt_int(new), fmt_int(cumulative)]);
        }
        blocks.push(Block::Chart(chart));
        blocks.push(Block::Table(table));
    }
    Ok(Section {
        id: "guilds",
        title,
        blocks,
    })
}

fn kills_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "5. Kills".to_string();
    let total = src.rows("enemy_kills")? as i64;
    if total == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No enemies killed.")));
        summary.push("Kills: none yet.".to_string());
        return Ok(Section {
            id: "kills",
            title,
            blocks,
        });
    }
    let kills = src.columns("enemy_kills", &["name", "level"])?.lazy();
    let by_enemy = kills
        .clone()
        .group_by([col("name")])
        .agg([
            count_as("kills"),
            col("level").cast(DataType::Int64).sum().alias("level_sum"),
            col("level").count().cast(DataType::Int64).alias("level_n"),
            col("level").min().cast(DataType::Int64).alias("min"),
            col("level").max().cast(DataType::Int64).alias("max"),
        ])
        .sort_by_exprs([col("kills"), col("name")], sort_opts(&[true, false]))
        .collect()?;
    let names = strs(&by_enemy, "name")?;
    let n_kills = ints(&by_enemy, "kills")?;
    let level_sum = ints(&by_enemy, "level_sum")?;
    let level_n = ints(&by_enemy, "level_n")?;
    let mins = ints(&by_enemy, "min")?;
    let maxs = ints(&by_enemy, "max")?;
    let mean = |i: usize| -> String {
        match (level_sum[i], level_n[i]) {
            (Some(s), Some(n)) if n > 0 => fmt_float(s as f64 / n as f64, 1),
            _ => "–".into(),
        }
    };
    let lead = or_none(&names[0]);
    blocks.push(Block::Para(format!(
        "{} kills of {} kinds of enemy; {lead} is killed most ({}, {} of kills, mean level {}).",
        fmt_int(total),
        fmt_int(by_enemy.height() as i64),
        fmt_opt_int(n_kills[0]),
        fmt_pct(n_kills[0].unwrap_or(0), total),
        mean(0)
    )));
    summary.push(format!(
        "Most killed enemy: {lead} ({} of {} kills, mean level {}).",
        fmt_opt_int(n_kills[0]),
        fmt_int(total),
        mean(0)
    ));
    let mut chart = Chart::new("Kills by enemy");
    let mut table = Table::new(&[
        ("Enemy", false),
        ("Kills", true),
        ("Share", true),
        ("Mean level", true),
        ("Min level", true),
        ("Max level", true),
    ]);
    for i in 0..by_enemy.height().min(MAX_ROWS) {
        chart.bar(or_none(&names[i]), n_kills[i].unwrap_or(0) as f64, fmt_opt_int(n_kills[i]));
        table.row(vec![
            or_none(&names[i]),
            fmt_opt_int(n_kills[i]),
            fmt_pct(n_kills[i].unwrap_or(0), total),
            mean(i),
            fmt_opt_int(mins[i]),
            fmt_opt_int(maxs[i]),
        ]);
    }
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));
    cut_note(&mut blocks, by_enemy.height(), "enemies");

    let bands = kills
        .group_by([(col("level").cast(DataType::Int64) - lit(1i64))
            .floor_div(lit(10i64))
            .alias("band")])
        .agg([count_as("kills"), distinct("name").alias("enemies")])
        .sort_by_exprs([col("band")], sort_opts(&[false]))
        .collect()?;
    let band = ints(&bands, "band")?;
    let band_kills = ints(&bands, "kills")?;
    let enemies = ints(&bands, "enemies")?;
    blocks.push(Block::Heading("Kills by enemy level band".into()));
    let mut table = Table::new(&[
        ("Level band", false),
        ("Kills", true),
        ("Share", true),
        ("Enemy kinds", true),
    ]);
    for i in 0..bands.height() {
        let label = match band[i] {
            Some(b) => format!("{}–{}", b * 10 + 1, b * 10 + 10),
            None => "(no level)".into(),
        };
        table.row(vec![
            label,
            fmt_opt_int(band_kills[i]),
            fmt_pct(band_kills[i].unwrap_or(0), total),
            fmt_opt_int(enemies[i]),
        ]);
    }
    blocks.push(Block::Table(table));
    Ok(Section {
        id: "kills",
        title,
        blocks,
    })
}

fn damage_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "6. Damage taken".to_string();
    let total_hits = src.rows("take_damage")? as i64;
    if total_hits == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No damage taken.")));
        summary.push("Damage: none taken yet.".to_string());
        return Ok(Section {
            id: "damage",
            title,
            blocks,
        });
    }
    let dmg = src.columns("take_damage", &["name", "damage"])?.lazy();
    let by_enemy = dmg
        .clone()
        .group_by([col("name")])
        .agg([
            count_as("hits"),
            col("damage").cast(DataType::Int64).sum().alias("total"),
            quantile("damage", 0.5).alias("p50"),
            quantile("damage", 0.9).alias("p90"),
            quantile("damage", 0.99).alias("p99"),
            col("damage").max().cast(DataType::Int64).alias("max"),
        ])
        .sort_by_exprs([col("hits"), col("name")], sort_opts(&[true, false]))
        .collect()?;
    let names = strs(&by_enemy, "name")?;
    let hits = ints(&by_enemy, "hits")?;
    let totals = ints(&by_enemy, "total")?;
    let p50 = floats(&by_enemy, "p50")?;
    let p90 = floats(&by_enemy, "p90")?;
    let p99 = floats(&by_enemy, "p99")?;
    let maxs = ints(&by_enemy, "max")?;

    let overall = dmg
        .clone()
        .select([
            quantile("damage", 0.5).alias("p50"),
            quantile("damage", 0.9).alias("p90"),
            quantile("damage", 0.99).alias("p99"),
            col("damage").min().cast(DataType::Int64).alias("min"),
            col("damage").max().cast(DataType::Int64).alias("max"),
            col("damage").cast(DataType::Int64).sum().alias("total"),
        ])
        .collect()?;
    // Hardest hitter: highest p90, then highest max, then name.
    let mut order: Vec<usize> = (0..by_enemy.height()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| (p90[i].unwrap_or(f64::MIN), maxs[i].unwrap_or(i64::MIN));
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(names[a].cmp(&names[b]))
    });
    let hard = order[0];
    blocks.push(Block::Para(format!(
        "{} hits for {} damage in total; half of all hits do at most {} damage, one in ten does more than {}. Hardest hitter: {} (p90 {}, max {}).",
        fmt_int(total_hits),
        fmt_opt_int(scalar_i64(&overall, "total")?),
        fmt_opt_num(scalar_f64(&overall, "p50")?),
        fmt_opt_num(scalar_f64(&overall, "p90")?),
        or_none(&names[hard]),
        fmt_opt_num(p90[hard]),
        fmt_opt_int(maxs[hard])
    )));
    summary.push(format!(
        "Hardest hitter: {} (p90 damage {}, max {}) across {} hits taken.",
        or_none(&names[hard]),
        fmt_opt_num(p90[hard]),
        fmt_opt_int(maxs[hard]),
        fmt_int(total_hits)
    ));
    let mut table = Table::new(&[
        ("Enemy", false),
        ("Hits", true),
        ("Total damage", true),
        ("p50", true),
        ("p90", true),
        ("p99", true),
        ("Max", true),
    ]);
    for i in 0..by_enemy.height().min(MAX_ROWS) {
        table.row(vec![
            or_none(&names[i]),
            fmt_opt_int(hits[i]),
            fmt_opt_int(totals[i]),
            fmt_opt_num(p50[i]),
            fmt_opt_num(p90[i]),
            fmt_opt_num(p99[i]),
            fmt_opt_int(maxs[i]),
        ]);
    }
    table.row(vec![
        "**All enemies**".into(),
        fmt_int(total_hits),
        fmt_opt_int(scalar_i64(&overall, "total")?),
        fmt_opt_num(scalar_f64(&overall, "p50")?),
        fmt_opt_num(scalar_f64(&overall, "p90")?),
        fmt_opt_num(scalar_f64(&overall, "p99")?),
        fmt_opt_int(scalar_i64(&overall, "max")?),
    ]);
    blocks.push(Block::Para(
        "Per enemy (percentiles are nearest-rank values of single hits):".into(),
    ));
    blocks.push(Block::Table(table));
    cut_note(&mut blocks, by_enemy.height(), "enemies");

    if let (Some(min), Some(max)) = (scalar_i64(&overall, "min")?, scalar_i64(&overall, "max")?) {
        let width = pick_band(min, max);
        let hist = dmg
            .filter(col("damage").is_not_null())
            .group_by([col("damage").cast(DataType::Int64).floor_div(lit(width)).alias("band")])
            .agg([count_as("hits")])
            .sort_by_exprs([col("band")], sort_opts(&[false]))
            .collect()?;
        let counts: std::collections::BTreeMap<i64, i64> = ints(&hist, "band")?
            .into_iter()
            .zip(ints(&hist, "hits")?)
            .filter_map(|(b, n)| Some((b?, n?)))
            .collect();
        let with_damage: i64 = counts.values().sum();
        blocks.push(Block::Heading("Damage per hit, histogram".into()));
        let mut chart = Chart::new("Damage per hit (number of hits per damage band)");
        let mut table = Table::new(&[("Damage", false), ("Hits", true), ("Share", true)]);
        for b in min.div_euclid(width)..=max.div_euclid(width) {
            let n = counts.get(&b).copied().unwrap_or(0);
            let label = if width == 1 {
                fmt_int(b)
            } else {
                format!("{}–{}", fmt_int(b * width), fmt_int(b * width + width - 1))
            };
            chart.bar(label.clone(), n as f64, fmt_int(n));
            table.row(vec![label, fmt_int(n), fmt_pct(n, with_damage)]);
        }
        blocks.push(Block::Chart(chart));
        blocks.push(Block::Table(table));
    }
    Ok(Section {
        id: "damage",
        title,
        blocks,
    })
}

fn quests_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "7. Quests by contact".to_string();
    let total = src.rows("quests")? as i64;
    if total == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No quests accepted.")));
        summary.push("Quests: none accepted yet.".to_string());
        return Ok(Section {
            id: "quests",
            title,
            blocks,
        });
    }
    let by_contact = src
        .columns("quests", &["contact", "quest_id", "player_id"])?
        .lazy()
        .group_by([col("contact")])
        .agg([
            count_as("accepted"),
            distinct("quest_id").alias("quests"),
            distinct("player_id").alias("players"),
        ])
        .sort_by_exprs(
            [col("accepted"), col("contact")],
            sort_opts(&[true, false]),
        )
        .collect()?;
    let contacts = strs(&by_contact, "contact")?;
    let accepted = ints(&by_contact, "accepted")?;
    let quests = ints(&by_contact, "quests")?;
    let players = ints(&by_contact, "players")?;
    let lead = or_none(&contacts[0]);
    blocks.push(Block::Para(format!(
        "{} quests accepted from {} contacts; {lead} hands out the most ({}, {}).",
        fmt_int(total),
        fmt_int(by_contact.height() as i64),
        fmt_opt_int(accepted[0]),
        fmt_pct(accepted[0].unwrap_or(0), total)
    )));
    summary.push(format!(
        "Top quest contact: {lead} ({} of {} quests accepted).",
        fmt_opt_int(accepted[0]),
        fmt_int(total)
    ));
    let mut chart = Chart::new("Quests accepted by contact");
    let mut table = Table::new(&[
        ("Contact", false),
        ("Accepted", true),
        ("Share", true),
        ("Distinct quests", true),
        ("Distinct players", true),
    ]);
    for i in 0..by_contact.height().min(MAX_ROWS) {
        chart.bar(or_none(&contacts[i]), accepted[i].unwrap_or(0) as f64, fmt_opt_int(accepted[i]));
        table.row(vec![
            or_none(&contacts[i]),
            fmt_opt_int(accepted[i]),
            fmt_pct(accepted[i].unwrap_or(0), total),
            fmt_opt_int(quests[i]),
            fmt_opt_int(players[i]),
        ]);
    }
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));
    cut_note(&mut blocks, by_contact.height(), "contacts");
    Ok(Section {
        id: "quests",
        title,
        blocks,
    })
}

fn activity_section(people: &People, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "8. Player activity".to_string();
    let per_player = people.per_player.clone().lazy();
    let per_session = people.per_session.clone().lazy();
    let dist = |lf: LazyFrame| -> PolarsResult<DataFrame> {
        lf.select([
            count_as("n"),
            col("events").sum().cast(DataType::Int64).alias("sum"),
            quantile("events", 0.5).alias("p50"),
            quantile("events", 0.9).alias("p90"),
            col("events").max().alias("max"),
        ])
        .collect()
    };
    let pd = dist(per_player.clone())?;
    let sd = dist(per_session)?;
    let players = scalar_i64(&pd, "n")?.unwrap_or(0);
    if players == 0 && scalar_i64(&sd, "n")?.unwrap_or(0) == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No events carry a player_id or session_id.")));
        summary.push("Players: no player activity yet.".to_string());
        return Ok(Section {
            id: "activity",
            title,
            blocks,
        });
    }

    let mut table = Table::new(&[
        ("Per", false),
        ("Count", true),
        ("Mean events", true),
        ("p50", true),
        ("p90", true),
        ("Max", true),
    ]);
    for (label, d) in [("Player", &pd), ("Session", &sd)] {
        let n = scalar_i64(d, "n")?.unwrap_or(0);
        let sum = scalar_i64(d, "sum")?.unwrap_or(0);
        table.row(vec![
            label.into(),
            fmt_int(n),
            if n > 0 {
                fmt_float(sum as f64 / n as f64, 1)
            } else {
                "–".into()
            },
            fmt_opt_num(scalar_f64(d, "p50")?),
            fmt_opt_num(scalar_f64(d, "p90")?),
            fmt_opt_int(scalar_i64(d, "max")?),
        ]);
    }
    blocks.push(Block::Para(format!(
        "{} players; the median player has {} events and the busiest {}.",
        fmt_int(players),
        fmt_opt_num(scalar_f64(&pd, "p50")?),
        fmt_opt_int(scalar_i64(&pd, "max")?)
    )));
    blocks.push(Block::Table(table));

    // Top players.
    let top = per_player
        .clone()
        .sort_by_exprs(
            [col("events"), col("player_id")],
            sort_opts(&[true, false]),
        )
        .limit(TOP_N as IdxSize)
        .collect()?;
    let ids = strs(&top, "player_id")?;
    let ev = ints(&top, "events")?;
    let kinds = ints(&top, "kinds")?;
    blocks.push(Block::Heading(format!("Top {TOP_N} players by events")));
    let mut table = Table::new(&[
        ("#", true),
        ("Player", false),
        ("Events", true),
        ("Event types", true),
    ]);
    for i in 0..top.height() {
        table.row(vec![
            (i + 1).to_string(),
            or_none(&ids[i]),
            fmt_opt_int(ev[i]),
            format!("{} of 5", fmt_opt_int(kinds[i])),
        ]);
    }
    blocks.push(Block::Table(table));

    // Funnel.
    let players_of = |kind: &str| -> i64 {
        EVENT_TYPES.iter().position(|k| *k == kind).map_or(0, |i| people.players_by_table[i])
    };
    let all_five = per_player
        .filter(col("kinds").eq(lit(5i64)))
        .select([count_as("n")])
        .collect()?;
    let all_five = scalar_i64(&all_five, "n")?.unwrap_or(0);
    blocks.push(Block::Heading("Funnel across event types".into()));
    blocks.push(Block::Para(format!(
        "Distinct players who did each event type, in funnel order; {} of {} players ({}) did all five.",
        fmt_int(all_five),
        fmt_int(players),
        fmt_pct(all_five, players)
    )));
    summary.push(format!(
        "Funnel: {} of {} players ({}) did all five event types.",
        fmt_int(all_five),
        fmt_int(players),
        fmt_pct(all_five, players)
    ));
    let mut chart = Chart::new("Funnel: distinct players per event type");
    let mut table = Table::new(&[
        ("Step", true),
        ("Event type", false),
        ("Players", true),
        ("Share of players", true),
    ]);
    for (i, kind) in FUNNEL.iter().enumerate() {
        let n = players_of(kind);
        chart.bar(*kind, n as f64, format!("{} ({})", fmt_int(n), fmt_pct(n, players)));
        table.row(vec![
            (i + 1).to_string(),
            kind.to_string(),
            fmt_int(n),
            fmt_pct(n, players),
        ]);
    }
    chart.bar("all five", all_five as f64, format!("{} ({})", fmt_int(all_five), fmt_pct(all_five, players)));
    table.row(vec![
        String::new(),
        "**all five**".into(),
        fmt_int(all_five),
        fmt_pct(all_five, players),
    ]);
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));
    Ok(Section {
        id: "activity",
        title,
        blocks,
    })
}

// ---------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------

/// Escapes a table cell: `|` and `\` are escaped, line breaks become spaces. A cell
/// wrapped in `**…**` by the report itself stays bold.
fn md_cell(s: &str) -> String {
    if let Some(inner) = s.strip_prefix("**").and_then(|r| r.strip_suffix("**")) {
        if !inner.is_empty() {
            return format!("**{}**", md_cell(inner));
        }
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '<' | '>' | '*' | '`' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Prose: one line, and no raw `<`/`>` that a Markdown renderer would take for HTML.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

fn render_markdown(title_note: &str, summary: &[String], sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {REPORT_TITLE}");
    out.push('\n');
    if !title_note.is_empty() {
        let _ = writeln!(out, "Snapshot: {}", md_text(title_note));
        out.push('\n');
    }
    out.push_str("## Summary of Findings\n\n");
    for line in summary {
        let _ = writeln!(out, "- {}", md_text(line));
    }
    for section in sections {
        let _ = write!(out, "\n## {}\n", section.title);
        for block in &section.blocks {
            if matches!(block, Block::Chart(_)) {
                // Charts are drawn in the HTML report; the tables carry the numbers.
                continue;
            }
            out.push('\n');
            match block {
                Block::Para(p) => {
                    let _ = writeln!(out, "{}", md_text(p));
                }
                Block::Heading(h) => {
                    let _ = writeln!(out, "### {}", md_text(h));
                }
                Block::Chart(_) => {}
                Block::Table(t) => {
                    out.push('|');
                    for h in &t.headers {
                        let _ = write!(out, " {} |", md_cell(h));
                    }
                    out.push_str("\n|");
                    for numeric in &t.numeric {
                        out.push_str(if *numeric { " ---: |" } else { " :--- |" });
                    }
                    out.push('\n');
                    for row in &t.rows {
                        out.push('|');
                        for cell in row {
                            let _ = write!(out, " {} |", md_cell(cell));
                        }
                        out.push('\n');
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// HTML and SVG
// ---------------------------------------------------------------------------------------

/// Escapes text for HTML and XML (also inside attribute values).
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `**bold**` cells made by the report render bold; everything else is escaped text.
fn html_cell(s: &str) -> String {
    match s.strip_prefix("**").and_then(|r| r.strip_suffix("**")) {
        Some(inner) if !inner.is_empty() => format!("<strong>{}</strong>", xml_escape(inner)),
        _ => xml_escape(s),
    }
}

/// Inline markdown code spans (`like this`) in report prose become `<code>`.
fn html_text(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", xml_escape(part));
        } else {
            out.push_str(&xml_escape(part));
        }
    }
    out
}

fn truncate_label(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// A horizontal bar chart as inline SVG: a title, one labelled bar per entry, each with
/// its value printed after the bar.
fn svg_bar_chart(chart: &Chart) -> String {
    const WIDTH: f64 = 720.0;
    const LABEL_W: f64 = 200.0;
    const BAR_MAX: f64 = 380.0;
    const ROW_H: f64 = 24.0;
    const TOP: f64 = 36.0;
    let rows = chart.bars.len().max(1) as f64;
    let height = TOP + rows * ROW_H + 12.0;
    let max = chart
        .bars
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let title = xml_escape(&chart.title);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {WIDTH:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"{title}\">\n<title>{title}</title>\n<text x=\"0\" y=\"20\" class=\"ct\" font-size=\"14\" font-weight=\"600\">{title}</text>\n"
    );
    if chart.bars.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{LABEL_W:.0}\" y=\"{:.0}\" class=\"cl\">no data</text>",
            TOP + 16.0
        );
    }
    for (i, bar) in chart.bars.iter().enumerate() {
        let y = TOP + i as f64 * ROW_H;
        let w = if max > 0.0 && bar.value.is_finite() && bar.value > 0.0 {
            (bar.value / max * BAR_MAX).max(1.0)
        } else {
            0.0
        };
        let text_y = y + ROW_H / 2.0 + 4.0;
        let label = xml_escape(&truncate_label(&bar.label, 30));
        let full = xml_escape(&bar.label);
        let value = xml_escape(&bar.display);
        let _ = writeln!(
            out,
            "<g><title>{full}: {value}</title><text x=\"{:.0}\" y=\"{text_y:.1}\" class=\"cl\" fill=\"#1f2328\" text-anchor=\"end\">{label}</text><rect x=\"{LABEL_W:.0}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" class=\"cb\" fill=\"#4c78a8\"/><text x=\"{:.1}\" y=\"{text_y:.1}\" class=\"cv\" fill=\"#59636e\">{value}</text></g>",
            LABEL_W - 8.0,
            y + 3.0,
            ROW_H - 6.0,
            LABEL_W + w + 6.0,
        );
    }
    out.push_str("</svg>");
    out
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;background:#fff;margin:0;line-height:1.45}
main{max-width:960px;margin:0 auto;padding:24px}
h1{font-size:1.8em;margin-bottom:0.2em}
h2{border-bottom:1px solid #d0d7de;padding-bottom:0.2em;margin-top:1.8em}
h3{margin-top:1.4em}
p.note{color:#59636e;margin-top:0}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.92em}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left}
th{background:#f6f8fa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
code{background:#f6f8fa;padding:0 3px;border-radius:3px}
figure{margin:1em 0}
svg.chart{max-width:100%;height:auto;font-size:12px}
svg .ct{font-size:14px;font-weight:600;fill:#1f2328}
svg .cl{fill:#1f2328}
svg .cv{fill:#59636e}
svg .cb{fill:#4c78a8}
ul.summary li{margin:0.2em 0}
";

fn render_html(title_note: &str, summary: &[String], sections: &[Section]) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(out, "<title>{}</title>", xml_escape(REPORT_TITLE));
    let _ = write!(out, "<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n");
    let _ = writeln!(out, "<h1>{}</h1>", xml_escape(REPORT_TITLE));
    if !title_note.is_empty() {
        let _ = writeln!(out, "<p class=\"note\">Snapshot: {}</p>", xml_escape(title_note));
    }
    out.push_str("<section id=\"summary\">\n<h2>Summary of Findings</h2>\n<ul class=\"summary\">\n");
    for line in summary {
        let _ = writeln!(out, "<li>{}</li>", html_text(line));
    }
    out.push_str("</ul>\n</section>\n");
    for section in sections {
        let _ = writeln!(
            out,
            "<section id=\"{}\">\n<h2>{}</h2>",
            section.id,
            xml_escape(&section.title)
        );
        for block in &section.blocks {
            match block {
                Block::Para(p) => {
                    let _ = writeln!(out, "<p>{}</p>", html_text(p));
                }
                Block::Heading(h) => {
                    let _ = writeln!(out, "<h3>{}</h3>", xml_escape(h));
                }
                Block::Chart(c) => {
                    let _ = writeln!(out, "<figure>\n{}\n</figure>", svg_bar_chart(c));
                }
                Block::Table(t) => {
                    out.push_str("<table>\n<thead><tr>");
                    for (h, numeric) in t.headers.iter().zip(&t.numeric) {
                        let class = if *numeric { " class=\"num\"" } else { "" };
                        let _ = write!(out, "<th{class}>{}</th>", xml_escape(h));
                    }
                    out.push_str("</tr></thead>\n<tbody>\n");
                    for row in &t.rows {
                        out.push_str("<tr>");
                        for (cell, numeric) in row.iter().zip(&t.numeric) {
                            let class = if *numeric { " class=\"num\"" } else { "" };
                            let _ = write!(out, "<td{class}>{}</td>", html_cell(cell));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</tbody>\n</table>\n");
                }
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(fmt_int(0), "0");
        assert_eq!(fmt_int(999), "999");
        assert_eq!(fmt_int(1_000), "1,000");
        assert_eq!(fmt_int(12_345), "12,345");
        assert_eq!(fmt_int(-1_234_567), "-1,234,567");
        assert_eq!(fmt_money(123_456), "$1,234.56");
        assert_eq!(fmt_money(5), "$0.05");
        assert_eq!(fmt_money(-100), "-$1.00");
        assert_eq!(fmt_pct(1, 3), "33.3%");
        assert_eq!(fmt_pct(0, 0), "0.0%");
        assert_eq!(fmt_float(1234.56, 1), "1,234.6");
        assert_eq!(fmt_float(-0.04, 1), "0.0");
        assert_eq!(fmt_opt_num(Some(42.0)), "42");
        assert_eq!(fmt_opt_num(Some(2.5)), "2.5");
        assert_eq!(fmt_opt_num(None), "–");
    }

    #[test]
    fn formats_times() {
        assert_eq!(fmt_instant(0), "1970-01-01 00:00:00 UTC");
        // 2026-01-01T00:00:00Z
        let t = 1_767_225_600 * MICROS_PER_SEC;
        assert_eq!(fmt_instant(t), "2026-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(t + 3_723 * MICROS_PER_SEC, TimePrecision::Minute), "2026-01-01 01:02");
        assert_eq!(fmt_time(-MICROS_PER_SEC, TimePrecision::Second), "1969-12-31 23:59:59");
        assert_eq!(fmt_duration(0), "0s");
        assert_eq!(fmt_duration(90 * MICROS_PER_SEC), "1m 30s");
        assert_eq!(fmt_duration((2 * 86_400 + 3 * 3600 + 60) * MICROS_PER_SEC), "2d 3h");
    }

    #[test]
    fn buckets_fit_the_span() {
        let day = 86_400 * MICROS_PER_SEC;
        for span in [0, MICROS_PER_SEC, 59 * MICROS_PER_SEC, 3_600 * MICROS_PER_SEC, day, 7 * day, 400 * day] {
            let start = 1_767_225_600 * MICROS_PER_SEC + 12_345;
            let (w, _) = pick_bucket(start, start + span);
            let n = (start + span).div_euclid(w) - start.div_euclid(w) + 1;
            assert!(n <= MAX_BUCKETS, "span {span}: {n} buckets");
        }
        let far = pick_bucket(-62_135_596_800 * MICROS_PER_SEC, 253_402_300_799 * MICROS_PER_SEC);
        let n = 253_402_300_799 * MICROS_PER_SEC / far.0 - (-62_135_596_800 * MICROS_PER_SEC).div_euclid(far.0) + 1;
        assert!(n <= MAX_BUCKETS, "{n}");
        let (w, name) = pick_bucket(0, 20 * day);
        assert_eq!((w, name.as_str()), (day, "day"));
        let (w, name) = pick_bucket(0, 20 * 3_600 * MICROS_PER_SEC);
        assert_eq!((w, name.as_str()), (3_600 * MICROS_PER_SEC, "hour"));
        assert_eq!(pick_band(0, 100), 10);
        assert_eq!(pick_band(1, 9), 1);
    }

    #[test]
    fn escapes_text() {
        assert_eq!(xml_escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
        assert_eq!(md_cell("a|b\nc"), "a\\|b c");
        assert_eq!(md_cell("**Total**"), "**Total**");
        assert_eq!(md_cell("<b>*x*"), "\\<b\\>\\*x\\*");
        assert_eq!(md_text("Knights <of> Ni\n"), "Knights \\<of\\> Ni ");
        assert_eq!(html_cell("**Total**"), "<strong>Total</strong>");
        assert_eq!(html_text("run `x<y`"), "run <code>x&lt;y</code>");
        let mut chart = Chart::new("Revenue <by> category");
        chart.bar("swords & <shields>", 10.0, "$10.00");
        chart.bar("potions", 5.0, "$5.00");
        let svg = svg_bar_chart(&chart);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Revenue &lt;by&gt; category"));
        assert!(svg.contains("swords &amp; &lt;shields&gt;"));
        assert!(!svg.contains("<shields>"));
    }

    #[test]
    fn empty_frames_have_the_table_schemas() {
        for table in TABLE_NAMES {
            let df = empty_frame(table);
            assert_eq!(df.height(), 0);
            assert_eq!(df.get_column_names()[0].as_str(), "raw_event");
            assert_eq!(
                df.column("event_time").unwrap().dtype(),
                &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            );
        }
        assert_eq!(empty_frame("transactions").width(), 17);
        assert_eq!(empty_frame("guild_joins").width(), 13);
        assert_eq!(
            empty_frame("enemy_kills").column("level").unwrap().dtype(),
            &DataType::Int16
        );
        assert_eq!(empty_frame("nope").width(), 0);
    }

    #[test]
    fn empty_tables_give_a_readable_report() {
        let frames = Frames::empty();
        let a = build_report(&frames, "log offsets 0..0").unwrap();
        let b = build_report(&frames, "log offsets 0..0").unwrap();
        assert_eq!(a, b);
        assert!(a.markdown.contains("## Summary of Findings"));
        assert!(a.markdown.contains(NO_EVENTS));
        assert!(a.html.contains("No events yet."));
        assert!(!a.html.contains("<svg"), "no empty charts");
        assert!((5..=10).contains(&a.summary.len()), "{:?}", a.summary);
    }

    #[test]
    fn receive_time_stands_in_for_missing_event_time() {
        let day0 = 1_767_225_600 * MICROS_PER_SEC;
        let mut frames = Frames::empty();
        let timestamp = Column::new(
            "timestamp".into(),
            ["2026-01-01T00:00:00.250000Z", "2026-01-02T03:04:05Z", "garbage"],
        );
        let event_time = Column::new("event_time".into(), [Some(day0 + 10), None, None])
            .cast(&datetime_utc_us())
            .unwrap();
        let player = Column::new("player_id".into(), [Some("a"), Some("b"), None]);
        let session = Column::new("session_id".into(), [None::<&str>, None, None]);
        frames.quests = DataFrame::new(3, vec![timestamp, event_time, player, session]).unwrap();
        let t = frames.columns("quests", &[TIME]).unwrap();
        assert_eq!(
            ints(&t, "t").unwrap(),
            vec![
                Some(day0 + 10),
                Some(day0 + (86_400 + 3 * 3_600 + 4 * 60 + 5) * MICROS_PER_SEC),
                None
            ]
        );
    }

    #[test]
    fn load_frames_reports_vanished_files_and_unknown_tables() {
        let missing = std::env::temp_dir().join("questlog-report-test-does-not-exist.parquet");
        let files = TableFiles::new(vec![("quests", vec![missing.clone()])]);
        match load_frames(&files) {
            Err(ReportError::FileVanished(p)) => assert_eq!(p, missing),
            other => panic!("expected FileVanished, got {other:?}"),
        }
        let files = TableFiles::new(vec![("bogus", vec![])]);
        assert!(matches!(load_frames(&files), Err(ReportError::UnknownTable(_))));
        let frames = load_frames(&TableFiles::new(vec![("quests", vec![])])).unwrap();
        assert_eq!(frames.quests.height(), 0);
        assert_eq!(frames.quests.schema(), empty_frame("quests").schema());
    }
}
