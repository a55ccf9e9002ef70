//! The report's section for each registered type's table (docs/CONTRACT.md 13.4), the same
//! for any schema: events over time, players and sessions, and a line per property — the
//! share of nulls, min/p50/p90/max of numbers and times, the most common values of strings,
//! enums and booleans — computed by Polars one property's column at a time.

use std::sync::Arc;

use super::format::quantile;
use super::*;
use crate::project::TableDef;
use crate::schema::ColumnType;

/// Most common values shown per string, enum or boolean property.
const TOP_VALUES: usize = 3;

/// The Polars type of a property's column.
fn dtype(c: ColumnType) -> DataType {
    match c {
        ColumnType::SmallInt => DataType::Int16,
        ColumnType::Int => DataType::Int32,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Float => DataType::Float32,
        ColumnType::Double => DataType::Float64,
        ColumnType::String | ColumnType::Json => DataType::String,
        ColumnType::Timestamp => datetime_utc_us(),
        ColumnType::Boolean => DataType::Boolean,
    }
}

/// A registered table's columns in file order, with their Polars types.
pub(super) fn fields(def: &TableDef) -> Vec<(String, DataType)> {
    use DataType::String as Text;
    let mut fields: Vec<(String, DataType)> =
        ["raw_event", "timestamp", "accept", "host", "user_agent", "event_type"].iter().map(|n| (n.to_string(), Text)).collect();
    fields.extend(def.property_columns().into_iter().map(|c| (c.name, dtype(c.column))));
    fields.extend([
        ("log_offset".to_string(), DataType::Int64),
        ("event_id".to_string(), Text),
        ("player_id".to_string(), Text),
        ("session_id".to_string(), Text),
        ("event_time".to_string(), datetime_utc_us()),
    ]);
    fields
}

fn fmt_value(x: Option<f64>, column: ColumnType) -> String {
    match (x, column) {
        (None, _) => "–".to_string(),
        (Some(us), ColumnType::Timestamp) => fmt_instant(us as i64),
        (Some(v), ColumnType::Float | ColumnType::Double) if v.fract() != 0.0 => fmt_float(v, 2),
        (v, _) => fmt_opt_num(v),
    }
}

pub(super) fn section(
    src: &dyn TableSource,
    def: &Arc<TableDef>,
    number: usize,
    summary: &mut Vec<String>,
) -> Result<Section, ReportError> {
    let table = def.name.as_str();
    let title = format!("{number}. Registered type: {} (table {table})", def.event_type());
    let id = format!("type-{table}");
    let mut blocks = Vec::new();
    let who = src.registered_columns(table, &["player_id", "session_id", TIME])?;
    let events = who.height() as i64;
    if events == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} The table {table} has no rows.")));
        return Ok(Section { id, title, blocks });
    }
    let counts = who
        .clone()
        .lazy()
        .select([
            super::format::distinct("player_id").alias("players"),
            super::format::distinct("session_id").alias("sessions"),
            col(TIME).min().alias("min"),
            col(TIME).max().alias("max"),
        ])
        .collect()?;
    let players = scalar_i64(&counts, "players")?.unwrap_or(0);
    let sessions = scalar_i64(&counts, "sessions")?.unwrap_or(0);
    let (min, max) = (scalar_i64(&counts, "min")?, scalar_i64(&counts, "max")?);
    let span = match (min, max) {
        (Some(f), Some(l)) => format!(", between {} and {}", fmt_instant(f), fmt_instant(l)),
        _ => String::new(),
    };
    blocks.push(Block::Para(format!(
        "{} events of `{}` from {} players in {} sessions{span}.",
        fmt_int(events),
        def.event_type(),
        fmt_int(players),
        fmt_int(sessions)
    )));
    summary.push(format!("{}: {} events from {} players.", def.event_type(), fmt_int(events), fmt_int(players)));

    // Events over time.
    if let (Some(min), Some(max)) = (min, max) {
        let (width, width_name) = pick_bucket(min, max);
        let per_bucket = who
            .lazy()
            .filter(col(TIME).is_not_null())
            .group_by([col(TIME).floor_div(lit(width)).alias("bucket")])
            .agg([super::format::count_as("events")])
            .collect()?;
        let at: std::collections::BTreeMap<i64, i64> =
            ints(&per_bucket, "bucket")?.into_iter().zip(ints(&per_bucket, "events")?).filter_map(|(b, n)| Some((b?, n?))).collect();
        let precision = bucket_precision(width);
        let mut chart = Chart::new(format!("{} events per {width_name}", def.event_type()));
        for b in min.div_euclid(width)..=max.div_euclid(width) {
            let n = at.get(&b).copied().unwrap_or(0);
            chart.bar(fmt_time(b * width, precision), n as f64, fmt_int(n));
        }
        blocks.push(Block::Chart(chart));
    }

    // One line per property.
    blocks.push(Block::Heading("Properties".to_string()));
    let mut props = Table::new(&[
        ("Property", false),
        ("Column", false),
        ("Nulls", true),
        ("Min", true),
        ("p50", true),
        ("p90", true),
        ("Max", true),
        ("Most common", false),
    ]);
    for c in def.property_columns() {
        let df = src.registered_columns(table, &[c.name.as_str()])?;
        let nulls = df.column(&c.name)?.null_count() as i64;
        let mut cells = vec![c.name.clone(), c.column.sql_name().to_string(), fmt_pct(nulls, events)];
        match c.column {
            ColumnType::SmallInt
            | ColumnType::Int
            | ColumnType::BigInt
            | ColumnType::Float
            | ColumnType::Double
            | ColumnType::Timestamp => {
                let stats = df
                    .lazy()
                    .select([
                        col(&c.name).cast(DataType::Float64).min().alias("min"),
                        quantile(&c.name, 0.5).alias("p50"),
                        quantile(&c.name, 0.9).alias("p90"),
                        col(&c.name).cast(DataType::Float64).max().alias("max"),
                    ])
                    .collect()?;
                for q in ["min", "p50", "p90", "max"] {
                    cells.push(fmt_value(super::format::scalar_f64(&stats, q)?, c.column));
                }
                cells.push(String::new());
            }
            ColumnType::String | ColumnType::Boolean | ColumnType::Json => {
                cells.extend(std::iter::repeat_n("–".to_string(), 4));
                let top = if c.column == ColumnType::Json {
                    String::new()
                } else {
                    let counts = df
                        .lazy()
                        .filter(col(&c.name).is_not_null())
                        .group_by([col(&c.name).cast(DataType::String).alias("value")])
                        .agg([super::format::count_as("n")])
                        .sort_by_exprs([col("n"), col("value")], super::format::sort_opts(&[true, false]))
                        .limit(TOP_VALUES as IdxSize)
                        .collect()?;
                    strs(&counts, "value")?
                        .into_iter()
                        .zip(ints(&counts, "n")?)
                        .map(|(v, n)| format!("{} ({})", or_none(&v), fmt_pct(n.unwrap_or(0), events)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                cells.push(top);
            }
        }
        props.row(cells);
    }
    blocks.push(Block::Table(props));
    Ok(Section { id, title, blocks })
}
