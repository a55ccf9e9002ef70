//! `report`, `sql` and `ddl`: what reads the published tables — the findings report, SQL
//! with Polars, and the statements other engines register them with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::catalog::catalog_ddl;
use super::{absolute, catalogs_up_to, open_log_for, read_snapshot, sled_only, tables_root};
use crate::log::EventLog;
use crate::project::{self, Codec, TablesRoot};
use crate::replay;
use crate::report;
use crate::sql;

/// The arguments of `report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Where to write report.md and report.html (default DATA_DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Report on the tables as they were at this log offset (rebuilt in a temp dir).
    #[arg(long)]
    pub to: Option<u64>,
}

/// The arguments of `sql`.
#[derive(Args, Debug)]
pub struct SqlArgs {
    pub query: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// `report`: the findings report of the tables (as of `--to`, rebuilt in a temp dir).
pub fn run(args: ReportArgs, data_dir: &Path) -> Result<()> {
    let ReportArgs { out, to } = args;
    let out = out.unwrap_or_else(|| data_dir.join("report"));
    let (report, offset) = match to {
        None => build_report(&tables_root(data_dir)?, data_dir, data_dir)?,
        Some(to) => {
            // As of offset `to`: rebuild the tables that far in a temp dir.
            sled_only("report as of an offset")?;
            let log = open_log_for(data_dir, "report as of an offset")?;
            let end = log.durable_end();
            if to > end {
                bail!("--to {to} is past the end of the log ({end} events)");
            }
            let tmp = tempfile::tempdir().context("creating a temp dir")?;
            let root = TablesRoot::Local(tmp.path().join("tables"));
            project::rebuild_into(log.as_ref(), to, &root, tmp.path(), Codec::Snappy, &indicatif::ProgressBar::hidden())?;
            // The rebuilt tables' types, from the log itself (the data dir's copy may not
            // be written yet).
            crate::log::write_schema_copies(tmp.path(), &log.schemas()?)?;
            log.close()?;
            build_report_with_schemas(&root, tmp.path(), data_dir, tmp.path())?
        }
    };
    let (md, html) = report::write_report(&report, &out)?;
    for line in &report.summary {
        println!("{line}");
    }
    println!("\nreport (tables at log offset {offset}): {}\n                                   {}", md.display(), html.display());
    Ok(())
}

/// `sql`: a query over the tables (and the catalogue's tables).
pub fn run_sql(args: SqlArgs, data_dir: &Path) -> Result<()> {
    let SqlArgs { query, format } = args;
    // Load only the tables the query names, without heavy columns it never uses.
    let skip = sql::skippable_columns(&query);
    let named = sql::named_tables(&query);
    // With a store catalogue: `catalog_items` and `stock` beside the five.
    let wants_catalog = sql::names_catalog_tables(&query) && !crate::catalog::read_copies(data_dir)?.is_empty();
    let ((frames, extra, registered), at) = read_snapshot(&tables_root(data_dir)?, data_dir, data_dir, |files| {
        let named_files =
            report::TableFiles::new(files.tables.iter().filter(|(t, _)| named.contains(t)).map(|(t, f)| (*t, f.clone())).collect())
                .partitioned(files.partitioned)
                .limited(files.limits.clone());
        let frames = report::load_frames_without(&named_files, &skip)?;
        // Registered types' tables the query names, whole.
        let wanted: Vec<&String> = files.registered.iter().map(|(d, _)| &d.name).filter(|n| sql::names_table(&query, n)).collect();
        let extra = if wants_catalog || !wanted.is_empty() { Some(report::open_snapshot(files)?) } else { None };
        let mut registered = Vec::with_capacity(wanted.len());
        if let Some(snapshot) = &extra {
            for name in wanted {
                registered.push((name.clone(), report::registered_frame(snapshot, name)?));
            }
        }
        Ok((frames, extra.filter(|_| wants_catalog), registered))
    })?;
    let mut extra: Vec<(String, polars::prelude::DataFrame)> = match extra {
        Some(snapshot) => {
            // The copies as they are now, after the snapshot: a version a projector followed
            // before committing tables past its `from` is in them.
            let in_force = catalogs_up_to(data_dir, &at)?;
            report::catalog::frames(&snapshot, &in_force)?.into_iter().map(|(n, df)| (n.to_string(), df)).collect()
        }
        None => Vec::new(),
    };
    extra.extend(registered);
    let mut df = sql::run_sql_with(&frames, &extra, &query)?;
    let fmt = match format {
        Format::Table => sql::OutputFormat::Table,
        Format::Csv => sql::OutputFormat::Csv,
        Format::Json => sql::OutputFormat::Json,
    };
    let text = sql::format_output(&mut df, fmt)?;
    let mut out = std::io::stdout().lock();
    replay::write_all(&mut out, text.as_bytes())?;
    if !text.ends_with('\n') {
        replay::write_all(&mut out, b"\n")?;
    }
    Ok(())
}

/// `ddl`: statements that register the tables in Hive, Spark, Trino and DuckDB.
pub fn run_ddl(data_dir: &Path) -> Result<()> {
    let root = tables_root(data_dir)?;
    let mut text = String::new();
    // The plain view exists once a projector has opened local tables (and is gone if
    // it could not be kept up to date, e.g. tables on another filesystem).
    let view = absolute(data_dir)?.join(project::plain::LINK);
    // Every table the log's schemas give (as the projector's copy of them has it).
    let set = project::TableSet::from_records(&crate::log::read_schema_copies(data_dir)?, u64::MAX)?;
    if root.is_local() && std::fs::read_link(&view).is_ok() {
        text.push_str("-- Hive, or Spark without Delta Lake: the plain-directory view DATA_DIR/tables\n");
        text.push_str(&project::hive_ddl(&view, set.defs()));
    }
    text.push_str(&project::delta_ddl(&root, set.defs())?);
    text.push_str(&catalog_ddl(data_dir)?);
    // Through write_all: a closed pipe (`questlog ddl | head`) ends quietly.
    replay::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
    Ok(())
}

/// The report of the tables at `root`; `catalogs_from` is the data dir whose catalogue
/// copies apply (those in force up to the tables' offset).
pub(crate) fn build_report(root: &TablesRoot, data_dir: &Path, catalogs_from: &Path) -> Result<(report::Report, u64)> {
    build_report_with_schemas(root, data_dir, catalogs_from, catalogs_from)
}

/// [`build_report`] with the copy of the log's schema records in `schemas_from`.
fn build_report_with_schemas(
    root: &TablesRoot,
    data_dir: &Path,
    catalogs_from: &Path,
    schemas_from: &Path,
) -> Result<(report::Report, u64)> {
    // Opened, not loaded: each section reads only the columns it uses.
    let (snapshot, at) = read_snapshot(root, data_dir, schemas_from, report::open_snapshot)?;
    let catalogs = catalogs_up_to(catalogs_from, &at)?;
    let offset = at.offset;
    let report = report::build_report_with(&snapshot, &format!("log offsets 0..{offset}"), &catalogs)?;
    Ok((report, offset))
}
