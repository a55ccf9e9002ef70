//! SQL over the five tables, with Polars' SQL engine.
//!
//! [`run_sql`] registers `guild_joins`, `enemy_kills`, `quests`, `take_damage` and
//! `transactions` (see [`crate::report::Frames`]) in a Polars `SQLContext` — with a store
//! catalogue in the log, `catalog_items` and `stock` too ([`run_sql_with`]) — and runs one
//! statement over them; [`format_output`] prints the result as a text table, CSV (with a
//! header) or JSON lines (one object per row).
//!
//! ```text
//! SELECT category, count(*) AS n, sum(total_cost) AS revenue
//! FROM transactions GROUP BY category ORDER BY revenue DESC
//! ```

use std::fmt::Write as _;

use polars::prelude::*;
use polars::sql::SQLContext;

use crate::report::{Frames, TABLE_NAMES};

/// How [`format_output`] prints a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A text table for people (at most [`MAX_TABLE_ROWS`] rows, long values cut).
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON lines: one JSON object per row.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" | "text" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" | "jsonl" | "ndjson" => Ok(OutputFormat::Json),
            other => Err(format!("unknown output format `{other}`; use table, csv or json")),
        }
    }
}

/// Rows shown by the text table; CSV and JSON always print every row.
pub const MAX_TABLE_ROWS: usize = 1000;
/// Longest value (in characters) shown in a text-table cell.
pub const MAX_CELL_CHARS: usize = 60;

const TABLES_HINT: &str = "guild_joins, enemy_kills, quests, take_damage, transactions (and catalog_items, stock with a store catalogue)";

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The query text was empty.
    #[error("empty query; for example: questlog sql \"SELECT count(*) FROM transactions\" (tables: {TABLES_HINT})")]
    EmptyQuery,

    /// Polars could not parse, plan or run the query.
    #[error("SQL query failed: {reason}\n  tables: {TABLES_HINT}\n  (`questlog ddl` lists their columns)")]
    Query {
        reason: String,
        #[source]
        source: PolarsError,
    },

    /// The query names a column that no table it reads has. Polars' own error is not kept
    /// as the source: it lists only the columns loaded for the query, which misleads.
    #[error("SQL query failed: {0}\n  tables: {TABLES_HINT}")]
    UnknownColumn(String),

    /// The result could not be written in the requested format.
    #[error("could not format the result as {format}: {source}")]
    Output {
        format: &'static str,
        #[source]
        source: PolarsError,
    },
}

fn query_error(source: PolarsError) -> SqlError {
    SqlError::Query { reason: source.to_string(), source }
}

/// Runs one SQL statement over the five tables and returns its result.
pub fn run_sql(frames: &Frames, query: &str) -> Result<DataFrame, SqlError> {
    run_sql_with(frames, &[], query)
}

/// [`run_sql`] with more tables beside the five: `catalog_items` and `stock` when the log
/// has a store catalogue ([`crate::report::catalog::frames`]), registered types' tables
/// ([`crate::report::registered_frame`]).
pub fn run_sql_with(frames: &Frames, extra: &[(String, DataFrame)], query: &str) -> Result<DataFrame, SqlError> {
    let query = query.trim();
    if query.trim_end_matches(';').trim().is_empty() {
        return Err(SqlError::EmptyQuery);
    }
    let mut ctx = SQLContext::new();
    for (name, df) in frames.iter() {
        debug_assert!(TABLE_NAMES.contains(&name));
        ctx.register(name, df.clone().lazy());
    }
    for (name, df) in extra {
        ctx.register(name.as_str(), df.clone().lazy());
    }
    let explain = |e: PolarsError| match missing_column(&e) {
        Some(missing) => SqlError::UnknownColumn(unknown_column(query, &missing)),
        None => query_error(e),
    };
    let lf = ctx.execute(query).map_err(explain)?;
    lf.collect().map_err(explain)
}

/// Why a query named a column no table has: the name, the closest real column, and the
/// real columns of every table the query names (all five when it names none). Polars'
/// own message lists only the columns loaded for the query (`sql` loads only the columns
/// a query names), which misleads.
fn unknown_column(query: &str, missing: &str) -> String {
    let mut tables = named_tables(query);
    if tables.is_empty() {
        tables = TABLE_NAMES.to_vec();
    }
    let candidates: Vec<&str> = tables.iter().flat_map(|t| crate::report::column_names(t)).collect();
    let closest = candidates
        .iter()
        .map(|c| (edit_distance(&missing.to_ascii_lowercase(), c), *c))
        .min()
        .filter(|(d, c)| *d <= (c.len().max(missing.len()) / 3).max(1))
        .map(|(_, c)| c);
    let mut out = format!("unknown column \"{missing}\"");
    if let Some(c) = closest {
        out.push_str(&format!("; did you mean \"{c}\"?"));
    }
    for t in tables {
        out.push_str(&format!("\n  columns of {t}: {}", crate::report::column_names(t).join(", ")));
    }
    out
}

/// The column a Polars error says it could not find: `unable to find column "x"` (a bare
/// name) or `no column named 'x' found in table 't'` (a qualified one).
fn missing_column(e: &PolarsError) -> Option<String> {
    let msg = e.to_string();
    if let PolarsError::ColumnNotFound(_) = e {
        return msg.split('"').nth(1).map(str::to_string);
    }
    let rest = msg.split("no column named '").nth(1)?;
    rest.split('\'').next().map(str::to_string)
}

/// Levenshtein distance between two short strings (column names).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Columns not worth loading for `query`: every column it never names, unless it selects
/// `*` (or uses `NATURAL` joins or `COLUMNS(…)`). A query can only use a column by naming
/// it, so skipping the rest is safe, and it keeps a query's memory near that of the
/// columns it reads (at 10^7 events a whole table is over 1 GB). `log_offset` is always
/// kept, so that a table keeps its rows for `count(*)`.
pub fn skippable_columns(query: &str) -> Vec<&'static str> {
    let q = query.to_ascii_lowercase();
    let bytes = q.as_bytes();
    // A wildcard is a `*` that is not `count(*)`'s.
    let wildcard = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'*' && {
            let before = q[..i].trim_end();
            let after = q[i + 1..].trim_start();
            !(before.ends_with('(') && after.starts_with(')'))
        }
    });
    if wildcard || q.contains("natural") || q.contains("columns") {
        return Vec::new();
    }
    let named = |col: &str| {
        q.match_indices(col).any(|(i, _)| {
            let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            !ident(q[..i].chars().next_back()) && !ident(q[i + col.len()..].chars().next())
        })
    };
    let mut skip: Vec<&'static str> = Vec::new();
    for table in TABLE_NAMES {
        for column in crate::report::column_names(table) {
            if column != "log_offset" && !named(column) && !skip.contains(&column) {
                skip.push(column);
            }
        }
    }
    skip
}

/// The tables `query` names (as whole words); the others need not be loaded. `SHOW TABLES`
/// and the like name none and get all five listed, empty.
pub fn named_tables(query: &str) -> Vec<&'static str> {
    let q = query.to_ascii_lowercase();
    TABLE_NAMES
        .iter()
        .copied()
        .filter(|t| {
            q.match_indices(t).any(|(i, _)| {
                let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                !ident(q[..i].chars().next_back()) && !ident(q[i + t.len()..].chars().next())
            })
        })
        .collect()
}

/// Whether `query` names `catalog_items` or `stock` (as whole words), the tables a store
/// catalogue adds.
pub fn names_catalog_tables(query: &str) -> bool {
    [crate::report::catalog::CATALOG_ITEMS, crate::report::catalog::STOCK].iter().any(|t| names_table(query, t))
}

/// Whether `query` names `table` (as a whole word, in any case).
pub fn names_table(query: &str, table: &str) -> bool {
    let (q, t) = (query.to_ascii_lowercase(), table.to_ascii_lowercase());
    q.match_indices(t.as_str()).any(|(i, _)| {
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !ident(q[..i].chars().next_back()) && !ident(q[i + t.len()..].chars().next())
    })
}

/// Prints a query result.
pub fn format_output(df: &mut DataFrame, format: OutputFormat) -> Result<String, SqlError> {
    match format {
        OutputFormat::Table => format_table(df).map_err(|source| SqlError::Output { format: "a table", source }),
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            let mut out = utc_as_rfc3339(df).map_err(|source| SqlError::Output { format: "CSV", source })?;
            CsvWriter::new(&mut buf).include_header(true).finish(&mut out).map_err(|source| SqlError::Output { format: "CSV", source })?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            JsonWriter::new(&mut buf)
                .with_json_format(JsonFormat::JsonLines)
                .finish(df)
                .map_err(|source| SqlError::Output { format: "JSON lines", source })?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}

/// UTC timestamps as RFC 3339 text (`2026-01-01T00:00:00.000000Z`): without Polars'
/// `timezones` feature the CSV writer would print them with no zone at all.
fn utc_as_rfc3339(df: &DataFrame) -> PolarsResult<DataFrame> {
    let mut columns = Vec::with_capacity(df.width());
    for column in df.columns() {
        match column.dtype() {
            DataType::Datetime(_, Some(tz)) if tz.as_str() == "UTC" => {
                // Cast gives `2026-01-01 00:00:00.000000+00:00`.
                let text = column.cast(&DataType::String)?;
                let ca: StringChunked = text
                    .str()?
                    .iter()
                    .map(|v| {
                        v.map(|s| {
                            let s = s.replacen(' ', "T", 1);
                            match s.strip_suffix("+00:00") {
                                Some(base) => format!("{base}Z"),
                                None => s,
                            }
                        })
                    })
                    .collect();
                columns.push(ca.with_name(column.name().clone()).into_column());
            }
            _ => columns.push(column.clone()),
        }
    }
    DataFrame::new(df.height(), columns)
}

/// The cell texts of the first `rows` values of a column.
fn cells(column: &Column, rows: usize) -> PolarsResult<Vec<String>> {
    let column = column.slice(0, rows);
    // Most types print well through a cast to String; others through AnyValue's Display.
    if let Ok(as_str) = column.cast(&DataType::String) {
        if let Ok(ca) = as_str.str() {
            return Ok(ca.iter().map(|v| v.map_or_else(|| "null".to_string(), clean_cell)).collect());
        }
    }
    (0..column.len())
        .map(|i| {
            Ok(match column.get(i)? {
                AnyValue::Null => "null".to_string(),
                AnyValue::String(s) => clean_cell(s),
                AnyValue::StringOwned(s) => clean_cell(s.as_str()),
                other => clean_cell(&other.to_string()),
            })
        })
        .collect()
}

/// One line, at most [`MAX_CELL_CHARS`] characters.
fn clean_cell(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() > MAX_CELL_CHARS {
        let mut cut: String = one_line.chars().take(MAX_CELL_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        one_line
    }
}

fn is_numeric(dtype: &DataType) -> bool {
    dtype.is_primitive_numeric() || matches!(dtype, DataType::Decimal(..))
}

/// A psql-style text table:
///
/// ```text
///  category | n
/// ----------+----
///  armor    | 12
/// (1 row)
/// ```
fn format_table(df: &DataFrame) -> PolarsResult<String> {
    let shown = df.height().min(MAX_TABLE_ROWS);
    let mut columns: Vec<(String, bool, Vec<String>)> = Vec::with_capacity(df.width());
    for column in df.columns() {
        columns.push((clean_cell(column.name().as_str()), is_numeric(column.dtype()), cells(column, shown)?));
    }
    let width = |s: &str| s.chars().count();
    let widths: Vec<usize> = columns
        .iter()
        .map(|(name, _, values)| values.iter().map(|v| width(v)).chain(std::iter::once(width(name))).max().unwrap_or(0))
        .collect();

    let mut out = String::new();
    let pad = |out: &mut String, text: &str, w: usize, right: bool| {
        let fill = w.saturating_sub(width(text));
        if right {
            out.extend(std::iter::repeat_n(' ', fill));
            out.push_str(text);
        } else {
            out.push_str(text);
            out.extend(std::iter::repeat_n(' ', fill));
        }
    };
    let line = |out: &mut String, texts: &mut dyn Iterator<Item = (&str, usize, bool)>| {
        let mut first = true;
        for (text, w, right) in texts {
            out.push_str(if first { " " } else { " | " });
            first = false;
            pad(out, text, w, right);
        }
        // No trailing spaces.
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    };
    if !columns.is_empty() {
        line(&mut out, &mut columns.iter().zip(&widths).map(|((name, _, _), w)| (name.as_str(), *w, false)));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        out.push_str(&rule.join("+"));
        out.push('\n');
        for row in 0..shown {
            line(&mut out, &mut columns.iter().zip(&widths).map(|((_, numeric, values), w)| (values[row].as_str(), *w, *numeric)));
        }
    }
    let total = df.height();
    if shown < total {
        let _ = writeln!(out, "(showing the first {shown} of {total} rows; use CSV or JSON output for all of them)");
    } else {
        let _ = writeln!(out, "({total} {})", if total == 1 { "row" } else { "rows" });
    }
    Ok(out)
}

#[cfg(test)]
mod skip_tests {
    use super::skippable_columns;

    #[test]
    fn skips_only_unnamed_columns() {
        let all: Vec<&str> = crate::report::TABLE_NAMES.iter().flat_map(|t| crate::report::column_names(t)).fold(Vec::new(), |mut v, c| {
            if c != "log_offset" && !v.contains(&c) {
                v.push(c);
            }
            v
        });
        assert_eq!(skippable_columns("SELECT count(*) FROM transactions"), all);
        assert!(skippable_columns("SELECT * FROM transactions").is_empty());
        assert!(skippable_columns("SELECT t.* FROM transactions t").is_empty());
        assert!(skippable_columns("SELECT COLUMNS('^p.*$') FROM quests").is_empty());
        let skip = skippable_columns("SELECT raw_event, host, name FROM quests WHERE player_id IS NOT NULL");
        for kept in ["raw_event", "host", "name", "player_id", "log_offset"] {
            assert!(!skip.contains(&kept), "{kept} is named or always kept");
        }
        for skipped in ["accept", "user_agent", "session_id", "contact", "total_cost"] {
            assert!(skip.contains(&skipped), "{skipped} is not named");
        }
        assert!(skippable_columns("SELECT hostname_x FROM quests").contains(&"host"));
        assert_eq!(
            super::named_tables("SELECT * FROM quests q JOIN take_damage d ON q.player_id = d.player_id"),
            ["quests", "take_damage"]
        );
        assert!(super::named_tables("SELECT 1 AS quests_x").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Frames {
        let mut frames = Frames::empty();
        let tx = df! {
            "store_id" => [1i64, 1, 2],
            "item_name" => ["sword", "shield", "sword"],
            "category" => ["weapon", "armor", "weapon"],
            "total_cost" => [10.5f32, 4.25, 10.5],
            "player_id" => ["p1", "p2", "p1"],
        }
        .unwrap();
        frames.transactions = tx;
        let kills = df! {
            "name" => ["goblin", "orc"],
            "level" => [3i16, 12],
            "player_id" => ["p1", "p3"],
        }
        .unwrap();
        frames.enemy_kills = kills;
        frames
    }

    #[test]
    fn counts_groups_orders_and_joins() {
        let frames = frames();
        let df = run_sql(&frames, "SELECT count(*) AS n FROM transactions").unwrap();
        assert_eq!(df.column("n").unwrap().cast(&DataType::Int64).unwrap().i64().unwrap().get(0), Some(3));

        let df = run_sql(
            &frames,
            "SELECT category, count(*) AS n, sum(total_cost) AS revenue FROM transactions \
             GROUP BY category ORDER BY revenue DESC, category",
        )
        .unwrap();
        let cats: Vec<_> = df.column("category").unwrap().str().unwrap().iter().collect();
        assert_eq!(cats, vec![Some("weapon"), Some("armor")]);

        let df = run_sql(
            &frames,
            "SELECT t.player_id, k.name FROM transactions t JOIN enemy_kills k \
             ON t.player_id = k.player_id WHERE t.item_name = 'sword' ORDER BY t.store_id",
        )
        .unwrap();
        assert_eq!(df.height(), 2);
    }

    #[test]
    fn empty_tables_are_queryable() {
        let frames = Frames::empty();
        for table in TABLE_NAMES {
            let df = run_sql(&frames, &format!("SELECT count(*) AS n FROM {table}")).unwrap();
            assert_eq!(df.height(), 1);
        }
        let df = run_sql(&frames, "SELECT * FROM quests WHERE contact = 'x'").unwrap();
        assert_eq!(df.width(), 14);
    }

    #[test]
    fn bad_sql_names_the_reason_and_the_tables() {
        let frames = frames();
        for q in ["SELEC nope", "SELECT * FROM no_such_table", "SELECT no_such_col FROM quests"] {
            let err = run_sql(&frames, q).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("transactions") && msg.contains("guild_joins"), "{msg}");
            assert!(matches!(err, SqlError::Query { .. } | SqlError::UnknownColumn(_)), "{msg}");
        }
        assert!(matches!(run_sql(&frames, "  ; "), Err(SqlError::EmptyQuery)));
    }

    #[test]
    fn an_unknown_column_names_the_tables_real_columns_and_the_closest() {
        // As `questlog sql` loads them for a query naming no real column: `log_offset` only.
        let mut frames = Frames::empty();
        for df in [&mut frames.guild_joins, &mut frames.enemy_kills, &mut frames.quests, &mut frames.take_damage, &mut frames.transactions]
        {
            *df = df.select(["log_offset"]).unwrap();
        }
        let msg = run_sql(&frames, "SELECT item_nme FROM transactions").unwrap_err().to_string();
        assert!(msg.contains("unknown column \"item_nme\"; did you mean \"item_name\"?"), "{msg}");
        assert!(msg.contains("columns of transactions: raw_event,") && msg.contains("item_name, inventory_id, total_cost"), "{msg}");
        assert!(!msg.contains("columns of quests"), "only the tables the query names: {msg}");
        let msg =
            run_sql(&frames, "SELECT q.nope FROM quests q JOIN guild_joins g ON q.log_offset = g.log_offset").unwrap_err().to_string();
        assert!(
            msg.contains("unknown column \"nope\"") && msg.contains("columns of quests:") && msg.contains("columns of guild_joins:"),
            "{msg}"
        );
        assert!(!msg.contains("did you mean"), "nothing is close to `nope`: {msg}");
    }

    #[test]
    fn formats_table_csv_and_json_lines() {
        let frames = frames();
        let mut df = run_sql(&frames, "SELECT item_name, store_id FROM transactions ORDER BY store_id, item_name").unwrap();
        let table = format_output(&mut df, OutputFormat::Table).unwrap();
        assert_eq!(
            table,
            " item_name | store_id\n-----------+----------\n shield    |        1\n sword     |        1\n sword     |        2\n(3 rows)\n"
        );
        let csv = format_output(&mut df, OutputFormat::Csv).unwrap();
        assert_eq!(csv, "item_name,store_id\nshield,1\nsword,1\nsword,2\n");
        let json = format_output(&mut df, OutputFormat::Json).unwrap();
        assert_eq!(
            json,
            "{\"item_name\":\"shield\",\"store_id\":1}\n{\"item_name\":\"sword\",\"store_id\":1}\n{\"item_name\":\"sword\",\"store_id\":2}\n"
        );
        assert_eq!("jsonl".parse::<OutputFormat>(), Ok(OutputFormat::Json));
        assert!("xml".parse::<OutputFormat>().is_err());
    }

    #[test]
    fn table_caps_rows_and_long_values() {
        let n = MAX_TABLE_ROWS + 5;
        let long = "x".repeat(200);
        let mut df = df! {
            "i" => (0..n as i64).collect::<Vec<_>>(),
            "s" => vec![long.as_str(); n],
        }
        .unwrap();
        let out = format_output(&mut df, OutputFormat::Table).unwrap();
        assert!(out.contains(&format!("showing the first {MAX_TABLE_ROWS} of {n} rows")));
        assert!(out.contains('…'));
        assert_eq!(out.lines().count(), MAX_TABLE_ROWS + 3);
    }
}
