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
mod format;
mod registered;
mod render;
mod sections;

use format::*;
use render::*;
use sections::*;

/// The five table names, in the order used throughout the report.
pub const TABLE_NAMES: [&str; 5] = ["guild_joins", "enemy_kills", "quests", "take_damage", "transactions"];

/// The `event_type` stored in each table, in the same order as [`TABLE_NAMES`]
/// (this is also the funnel order).
const EVENT_TYPES: [&str; 5] = ["join_guild", "kill_enemy", "accept_quest", "take_damage", "buy_asset"];

/// Funnel order: join_guild → accept_quest → kill_enemy → take_damage → buy_asset.
const FUNNEL: [&str; 5] = ["join_guild", "accept_quest", "kill_enemy", "take_damage", "buy_asset"];

/// A snapshot of the tables: for each table name, the Parquet files that make it up
/// (possibly none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFiles {
    pub tables: Vec<(&'static str, Vec<PathBuf>)>,
    /// Registered types' tables (docs/CONTRACT.md 13.4), with their columns.
    pub registered: Vec<(std::sync::Arc<crate::project::TableDef>, Vec<PathBuf>)>,
    /// Tables projected from a Kafka topic: they have the `log_partition` column too.
    pub partitioned: bool,
    /// Tables from a topic read up to these offsets per partition (a snapshot's limits,
    /// see [`crate::project::Snapshot::cut`]): rows past them are left out.
    pub limits: Option<Vec<u64>>,
}

impl TableFiles {
    pub fn new(tables: Vec<(&'static str, Vec<PathBuf>)>) -> Self {
        TableFiles { tables, registered: Vec::new(), partitioned: false, limits: None }
    }

    /// The files of a snapshot's tables: the seed's five by name, registered types' beside.
    pub fn of(snap: &crate::project::Snapshot) -> Self {
        let mut files = TableFiles::new(Vec::new()).partitioned(snap.partitioned);
        files.limits = snap.limits().map(<[u64]>::to_vec);
        for (def, paths) in snap.defs.iter().zip(&snap.files) {
            match def.builtin() {
                Some(t) => files.tables.push((crate::project::table_for(t).name, paths.clone())),
                None => files.registered.push((def.clone(), paths.clone())),
            }
        }
        files
    }

    /// Files of tables projected from a Kafka topic (with `log_partition`).
    pub fn partitioned(mut self, partitioned: bool) -> Self {
        self.partitioned = partitioned;
        self
    }

    /// Read up to these offsets per partition (see [`TableFiles::limits`]).
    pub fn limited(mut self, limits: Option<Vec<u64>>) -> Self {
        self.limits = limits;
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
    SchemaMismatch { table: &'static str, path: PathBuf, detail: String },

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
    table_fields(table).map(|fields| fields.into_iter().map(|(name, dtype)| (PlSmallStr::from_static(name), dtype)).collect())
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

    /// [`TableSource::columns`] a part at a time, for aggregations that combine per-part
    /// results: `f` sees at least one part (an empty one for an empty table), and a
    /// [`Snapshot`] holds one file's columns at a time. At 10^7 events, counting players
    /// and sessions over whole `session_id` columns took the report to 514 MiB, a file at
    /// a time to under 400 (benches/HISTORY.md, item 32).
    fn for_each_part(
        &self,
        table: &'static str,
        columns: &[&str],
        f: &mut dyn FnMut(DataFrame) -> Result<(), ReportError>,
    ) -> Result<(), ReportError> {
        f(self.columns(table, columns)?)
    }

    /// Whether the tables were projected from a Kafka topic (`log_partition`; `log_offset`
    /// then orders a partition only).
    fn partitioned(&self) -> bool {
        false
    }

    /// Registered types' tables (docs/CONTRACT.md 13.4), in table order: none unless the
    /// source has them.
    fn registered(&self) -> Vec<std::sync::Arc<crate::project::TableDef>> {
        Vec::new()
    }

    /// Registered table `table`'s `columns` ([`TIME`] as in [`TableSource::columns`]); a
    /// column its older files lack (an ADDITION's) is null in their rows.
    fn registered_columns(&self, table: &str, columns: &[&str]) -> Result<DataFrame, ReportError> {
        let _ = columns;
        Err(ReportError::UnknownTable(table.to_string()))
    }
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
    registered: Vec<(std::sync::Arc<crate::project::TableDef>, Vec<(PathBuf, File)>)>,
    partitioned: bool,
    /// See [`TableFiles::limits`].
    limits: Option<Vec<u64>>,
}

/// Opens `paths`, all before any is read (see [`open_snapshot`]).
fn open_all(paths: &[PathBuf]) -> Result<Vec<(PathBuf, File)>, ReportError> {
    let mut handles = Vec::with_capacity(paths.len());
    for path in paths {
        match std::fs::File::open(path) {
            Ok(file) => handles.push((path.clone(), file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ReportError::FileVanished(path.clone()));
            }
            Err(source) => {
                return Err(ReportError::Io { action: "could not open table file", path: path.clone(), source });
            }
        }
    }
    Ok(handles)
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
        tables.push((*table, open_all(paths)?));
    }
    let mut registered = Vec::with_capacity(files.registered.len());
    for (def, paths) in &files.registered {
        registered.push((def.clone(), open_all(paths)?));
    }
    Ok(Snapshot { tables, registered, partitioned: files.partitioned, limits: files.limits.clone() })
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
        if self.limits.is_some() {
            // Some rows of the files are past the snapshot: counted as read.
            self.for_each_part(table, &["log_offset"], &mut |part| {
                rows += part.height();
                Ok(())
            })?;
            return Ok(rows);
        }
        for (path, file) in self.files(table) {
            rows += Self::reader(path, file)?.num_rows().map_err(|source| ReportError::Parquet { path: path.clone(), source })?;
        }
        Ok(rows)
    }

    fn columns(&self, table: &'static str, columns: &[&str]) -> Result<DataFrame, ReportError> {
        let mut combined: Option<DataFrame> = None;
        self.for_each_part(table, columns, &mut |part| {
            match &mut combined {
                None => combined = Some(part),
                Some(c) => {
                    c.vstack_mut_owned(part)?;
                }
            }
            Ok(())
        })?;
        Ok(combined.expect("for_each_part gives at least one part"))
    }

    fn for_each_part(
        &self,
        table: &'static str,
        columns: &[&str],
        f: &mut dyn FnMut(DataFrame) -> Result<(), ReportError>,
    ) -> Result<(), ReportError> {
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
        let mut names: Vec<String> = stored.iter().map(|n| n.to_string()).collect();
        if self.limits.is_some() {
            // What a row's place in the topic needs, read beside the columns asked for.
            for (name, dtype) in [("log_offset", DataType::Int64), (PARTITION_COLUMN, DataType::Int32)] {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                    fields.push((name, dtype));
                }
            }
        }
        let files = self.files(table);
        if files.is_empty() {
            let schema: Schema = fields.iter().map(|(n, d)| (PlSmallStr::from_static(n), d.clone())).collect();
            return f(select_columns(DataFrame::empty_with_schema(&schema), columns)?);
        }
        // File by file, so that columns only needed to compute others (the text `timestamp`
        // behind TIME) are held for one file at a time.
        for (path, file) in files {
            let df = Self::reader(path, file)?
                .with_columns(Some(names.clone()))
                .finish()
                .map_err(|source| ReportError::Parquet { path: path.clone(), source })?;
            let df = conform(table, path, &fields, df)?;
            let df = match &self.limits {
                Some(limits) => below_limits(df, limits)?,
                None => df,
            };
            f(select_columns(df, columns)?)?;
        }
        Ok(())
    }

    fn registered(&self) -> Vec<std::sync::Arc<crate::project::TableDef>> {
        self.registered.iter().map(|(d, _)| d.clone()).collect()
    }

    fn partitioned(&self) -> bool {
        self.partitioned
    }

    fn registered_columns(&self, table: &str, columns: &[&str]) -> Result<DataFrame, ReportError> {
        let (def, files) =
            self.registered.iter().find(|(d, _)| d.name == table).ok_or_else(|| ReportError::UnknownTable(table.to_string()))?;
        let all = registered::fields(def);
        let stored = stored_columns(columns);
        let mut fields = Vec::with_capacity(stored.len());
        for name in &stored {
            match all.iter().find(|(n, _)| n == name) {
                Some(field) => fields.push(field.clone()),
                None => return Err(PolarsError::ColumnNotFound(format!("`{name}` is not a column of `{table}`").into()).into()),
            }
        }
        let empty = |height: usize| -> Result<DataFrame, ReportError> {
            let cols: Vec<Column> = fields.iter().map(|(n, d)| Column::full_null(n.as_str().into(), height, d)).collect();
            Ok(DataFrame::new(height, cols)?)
        };
        let mut combined = select_columns(empty(0)?, columns)?;
        for (path, file) in files {
            let parquet_err = |source| ReportError::Parquet { path: path.clone(), source };
            let mut reader = Self::reader(path, file)?;
            let in_file = reader.schema().map_err(parquet_err)?;
            let height = Self::reader(path, file)?.num_rows().map_err(parquet_err)?;
            // A file from before an ADDITION lacks its columns: nulls there.
            let present: Vec<String> = fields.iter().filter(|(n, _)| in_file.get(n.as_str()).is_some()).map(|(n, _)| n.clone()).collect();
            let df = if present.is_empty() {
                empty(height)?
            } else {
                let read = reader.with_columns(Some(present)).finish().map_err(parquet_err)?;
                let mut cols = Vec::with_capacity(fields.len());
                for (name, dtype) in &fields {
                    cols.push(match read.column(name) {
                        Ok(c) if c.dtype() == dtype => c.clone(),
                        Ok(c) => c.strict_cast(dtype)?,
                        Err(_) => Column::full_null(name.as_str().into(), read.height(), dtype),
                    });
                }
                DataFrame::new(read.height(), cols)?
            };
            combined.vstack_mut_owned(select_columns(df, columns)?)?;
        }
        Ok(combined)
    }
}

/// A registered type's table `table` whole, every column (a column its older files lack,
/// an ADDITION's, null in their rows): for `sql`.
pub fn registered_frame(snapshot: &Snapshot, table: &str) -> Result<DataFrame, ReportError> {
    let def = snapshot
        .registered
        .iter()
        .find(|(d, _)| d.name == table)
        .map(|(d, _)| d.clone())
        .ok_or_else(|| ReportError::UnknownTable(table.to_string()))?;
    let names: Vec<String> = registered::fields(&def).into_iter().map(|(n, _)| n).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    snapshot.registered_columns(table, &names)
}

/// Puts a file's columns in the table's order and types (extra columns are dropped).
/// The rows of `df` (with `log_partition` and `log_offset`) below `limits`, per partition.
fn below_limits(df: DataFrame, limits: &[u64]) -> Result<DataFrame, ReportError> {
    let partitions = df.column(PARTITION_COLUMN)?.i32()?;
    let offsets = df.column("log_offset")?.i64()?;
    let mask: BooleanChunked = partitions
        .iter()
        .zip(offsets.iter())
        .map(|(p, o)| {
            let limit = p.and_then(|p| usize::try_from(p).ok()).and_then(|p| limits.get(p)).copied().unwrap_or(0);
            Some(o.and_then(|o| u64::try_from(o).ok()).is_some_and(|o| o < limit))
        })
        .collect();
    Ok(df.filter(&mask)?)
}

fn conform(table: &'static str, path: &Path, fields: &[(&'static str, DataType)], df: DataFrame) -> Result<DataFrame, ReportError> {
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
            column.strict_cast(dtype).map_err(|e| ReportError::SchemaMismatch {
                table,
                path: path.to_path_buf(),
                detail: format!("column `{name}` has type {} where {dtype} was expected ({e})", column.dtype()),
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
    /// (title, SVG) of every chart, in report order: the same drawings as in `report.html`
    /// (the live page shows some).
    pub charts: Vec<(String, String)>,
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
        blocks.push(Block::Para(format!("Showing the first {MAX_ROWS} of {} {what}; `questlog sql` has the rest.", fmt_int(total as i64))));
    }
}

/// Gives the memory a section freed back to the OS before the next section takes its own
/// (mimalloc keeps freed memory for a second otherwise, so two sections' columns were held
/// at once): at 10^7 events `report` peaked at 512–566 MiB without, 418–432 MiB with, in
/// 3.1 s against 2.2–3.0 (benches/HISTORY.md, item 32). Without mimalloc as the global
/// allocator (the library's tests) it does nothing.
fn give_back_freed_memory() {
    // SAFETY: mi_collect takes a flag and touches only mimalloc's own state.
    unsafe { libmimalloc_sys::mi_collect(true) }
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
    give_back_freed_memory();
    let mut sections = Vec::new();
    let builders: [&dyn Fn(&mut Vec<String>) -> Result<Section, ReportError>; 7] = [
        &|s| overview_section(src, &people, s),
        &|s| revenue_section(src, s),
        &|s| stock_section(src, s),
        &|s| guild_section(src, s),
        &|s| kills_section(src, s),
        &|s| damage_section(src, s),
        &|s| quests_section(src, s),
    ];
    for build in builders {
        sections.push(build(&mut summary)?);
        give_back_freed_memory();
    }
    sections.push(activity_section(&people, &mut summary)?);
    if !catalogs.is_empty() {
        sections.push(catalog::section(src, catalogs, sections.len() + 1, &mut summary)?);
    }
    for def in src.registered() {
        sections.push(registered::section(src, &def, sections.len() + 1, &mut summary)?);
        give_back_freed_memory();
    }
    let markdown = render_markdown(title_note, &summary, &sections);
    let html = render_html(title_note, &summary, &sections);
    let charts = sections
        .iter()
        .flat_map(|s| s.blocks.iter())
        .filter_map(|b| match b {
            Block::Chart(c) => Some((c.title.clone(), svg_bar_chart(c))),
            _ => None,
        })
        .collect();
    Ok(Report { markdown, html, summary, charts })
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
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|source| ReportError::Io { action: "could not write", path: tmp.clone(), source })?;
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
    id: String,
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
        Table { headers: headers.iter().map(|(h, _)| *h).collect(), numeric: headers.iter().map(|(_, n)| *n).collect(), rows: Vec::new() }
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
        Chart { title: title.into(), bars: Vec::new() }
    }
    fn bar(&mut self, label: impl Into<String>, value: f64, display: impl Into<String>) {
        self.bars.push(Bar { label: label.into(), value, display: display.into() });
    }
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
            assert_eq!(df.column("event_time").unwrap().dtype(), &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)));
        }
        assert_eq!(empty_frame("transactions").width(), 17);
        assert_eq!(empty_frame("guild_joins").width(), 13);
        assert_eq!(empty_frame("enemy_kills").column("level").unwrap().dtype(), &DataType::Int16);
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
        let timestamp = Column::new("timestamp".into(), ["2026-01-01T00:00:00.250000Z", "2026-01-02T03:04:05Z", "garbage"]);
        let event_time = Column::new("event_time".into(), [Some(day0 + 10), None, None]).cast(&datetime_utc_us()).unwrap();
        let player = Column::new("player_id".into(), [Some("a"), Some("b"), None]);
        let session = Column::new("session_id".into(), [None::<&str>, None, None]);
        frames.quests = DataFrame::new(3, vec![timestamp, event_time, player, session]).unwrap();
        let t = frames.columns("quests", &[TIME]).unwrap();
        assert_eq!(ints(&t, "t").unwrap(), vec![Some(day0 + 10), Some(day0 + (86_400 + 3 * 3_600 + 4 * 60 + 5) * MICROS_PER_SEC), None]);
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
