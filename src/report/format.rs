//! Formatting for the report: numbers, money, percentages, times and durations, the
//! time buckets and bands of its charts, the Polars helpers its sections share, and the
//! count of people (players, sessions) several sections use.

use super::*;

// ---------------------------------------------------------------------------------------
// Number and time formatting
// ---------------------------------------------------------------------------------------

/// `12345` → `12,345`.
pub(super) fn fmt_int(n: i64) -> String {
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
pub(super) fn fmt_money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}${}.{:02}", fmt_int((abs / 100) as i64), abs % 100)
}

/// `part / whole` as a percentage with one decimal.
pub(super) fn fmt_pct(part: i64, whole: i64) -> String {
    if whole == 0 {
        return "0.0%".to_string();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// A float with `decimals` decimals and thousands separators.
pub(super) fn fmt_float(x: f64, decimals: usize) -> String {
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
pub(super) fn fmt_opt_num(x: Option<f64>) -> String {
    match x {
        None => "–".to_string(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => fmt_int(v as i64),
        Some(v) => fmt_float(v, 1),
    }
}

pub(super) fn fmt_opt_int(x: Option<i64>) -> String {
    x.map(fmt_int).unwrap_or_else(|| "–".to_string())
}

pub(super) fn or_none(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "(none)".to_string())
}

pub(super) const MICROS_PER_SEC: i64 = 1_000_000;

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
pub(super) enum TimePrecision {
    Day,
    Minute,
    Second,
}

/// Microseconds since the epoch (UTC) → `2026-01-01 13:05:00 UTC` style text.
pub(super) fn fmt_time(micros: i64, precision: TimePrecision) -> String {
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

pub(super) fn fmt_instant(micros: i64) -> String {
    format!("{} UTC", fmt_time(micros, TimePrecision::Second))
}

/// A duration in microseconds → `2d 3h 4m`, `5m 6s`, `0s`.
pub(super) fn fmt_duration(micros: i64) -> String {
    let total = micros.max(0) / MICROS_PER_SEC;
    let (d, h, m, s) = (total / 86_400, (total / 3600) % 24, (total / 60) % 60, total % 60);
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
pub(super) const BUCKET_WIDTHS: [(i64, &str); 24] = [
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
pub(super) const MAX_BUCKETS: i64 = 30;

/// Picks the bucket width (µs) and its name for the span `min..=max` (µs).
pub(super) fn pick_bucket(min: i64, max: i64) -> (i64, String) {
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

pub(super) fn bucket_precision(width_micros: i64) -> TimePrecision {
    if width_micros >= 86_400 * MICROS_PER_SEC {
        TimePrecision::Day
    } else if width_micros >= 60 * MICROS_PER_SEC {
        TimePrecision::Minute
    } else {
        TimePrecision::Second
    }
}

/// Histogram band widths tried in order; the first giving at most 12 bands wins.
pub(super) const BAND_WIDTHS: [i64; 20] =
    [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1_000, 2_000, 2_500, 5_000, 10_000, 20_000, 25_000, 50_000, 100_000];

pub(super) fn pick_band(min: i64, max: i64) -> i64 {
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

pub(super) fn ints(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<i64>>> {
    let c = df.column(name)?.cast(&DataType::Int64)?;
    Ok(c.i64()?.iter().collect())
}

pub(super) fn floats(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().collect())
}

pub(super) fn strs(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<String>>> {
    let c = df.column(name)?.cast(&DataType::String)?;
    Ok(c.str()?.iter().map(|o| o.map(str::to_owned)).collect())
}

pub(super) fn scalar_i64(df: &DataFrame, name: &str) -> PolarsResult<Option<i64>> {
    Ok(ints(df, name)?.into_iter().next().flatten())
}

pub(super) fn scalar_f64(df: &DataFrame, name: &str) -> PolarsResult<Option<f64>> {
    Ok(floats(df, name)?.into_iter().next().flatten())
}

/// Row count as an `Int64` column named `name`.
pub(super) fn count_as(name: &str) -> Expr {
    len().cast(DataType::Int64).alias(name)
}

/// Distinct non-null values.
pub(super) fn distinct(column: &str) -> Expr {
    col(column).drop_nulls().n_unique().cast(DataType::Int64)
}

pub(super) fn quantile(column: &str, q: f64) -> Expr {
    col(column).cast(DataType::Float64).quantile(lit(q), QuantileMethod::Nearest)
}

/// Sort options: `descending[i]` per key, nulls last, stable.
pub(super) fn sort_opts(descending: &[bool]) -> SortMultipleOptions {
    SortMultipleOptions::new().with_order_descending_multi(descending.iter().copied()).with_nulls_last(true).with_maintain_order(true)
}

/// The event's time in µs since the epoch: `event_time`, or the server receive
/// `timestamp` when the event carried no `event_time`.
///
/// Only the rows without `event_time` have their `timestamp` parsed: Polars parses text
/// with chrono at ~0.26 µs a value, which over every row was a third of a report of 10^7
/// events where all of them carry `event_time`.
pub(super) fn time_expr() -> Expr {
    let received = when(col("event_time").is_null())
        .then(col("timestamp"))
        .otherwise(lit(NULL).cast(DataType::String))
        .str()
        .to_datetime(
            Some(TimeUnit::Microseconds),
            None,
            StrptimeOptions { format: Some("%Y-%m-%dT%H:%M:%S%.fZ".into()), strict: false, exact: true, cache: false },
            lit("raise"),
        )
        .cast(DataType::Int64);
    coalesce(&[col("event_time").cast(DataType::Int64), received]).alias("t")
}

/// Whole cents of `total_cost` (rounded half to even per purchase).
pub(super) fn cents_expr() -> Expr {
    (col("total_cost").cast(DataType::Float64) * lit(100.0)).round(0, RoundMode::HalfToEven).cast(DataType::Int64).alias("cents")
}

/// Events per player and per session over all five tables, counted table by table so that
/// only one table's ids are in memory at a time (the ids of all tables together are
/// ~0.5 GB at 10^7 events).
pub(super) struct People {
    /// `player_id`, `events`, `kinds` (how many of the five event types): one row per
    /// player.
    pub(super) per_player: DataFrame,
    /// `session_id`, `events`: one row per session.
    pub(super) per_session: DataFrame,
    /// Distinct players per table, in [`TABLE_NAMES`] order.
    pub(super) players_by_table: [i64; 5],
    /// Events without a `player_id`.
    pub(super) no_player: i64,
}

/// Rows of `table` per non-null value of `column` (`column`, `events`), counted a part at
/// a time; adds the rows where it is null to `nulls`.
fn counts_by(src: &dyn TableSource, table: &'static str, column: &str, nulls: &mut i64) -> Result<DataFrame, ReportError> {
    let mut parts = Vec::new();
    src.for_each_part(table, &[column], &mut |part| {
        *nulls += part.column(column)?.null_count() as i64;
        parts.push(part.lazy().filter(col(column).is_not_null()).group_by([col(column)]).agg([count_as("events")]).collect()?.lazy());
        Ok(())
    })?;
    Ok(concat(parts, UnionArgs::default())?
        .group_by([col(column)])
        .agg([col("events").sum().cast(DataType::Int64).alias("events")])
        .collect()?)
}

impl People {
    pub(super) fn count(src: &dyn TableSource) -> Result<People, ReportError> {
        let mut player_parts = Vec::with_capacity(TABLE_NAMES.len());
        let mut session_parts = Vec::with_capacity(TABLE_NAMES.len());
        let mut players_by_table = [0; 5];
        let mut no_player = 0;
        for (i, table) in TABLE_NAMES.into_iter().enumerate() {
            let players = counts_by(src, table, "player_id", &mut no_player)?;
            players_by_table[i] = players.height() as i64;
            player_parts.push(players.lazy());
            session_parts.push(counts_by(src, table, "session_id", &mut 0)?.lazy());
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
        Ok(People { per_player, per_session, players_by_table, no_player })
    }
}
