//! `project`: the tables from the log — incremental steps, a rebuild, time travel into
//! another place (`--out`), and `--follow` (the projector process of a Kafka deployment).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;

use super::{
    kafka, log_catalogs, log_format, log_name, log_options, open_log_for, open_projector, running_server, runtime, shutdown_signal,
    tables_root, vacuum_retention_ms, FOLLOW_POLL_MS,
};
use crate::generate;
use crate::log::{EventLog, KafkaLog};
use crate::project::{self, Codec, Projector, TablesRoot};

/// The arguments of `project`.
#[derive(Args, Debug)]
pub struct ProjectArgs {
    /// Rebuild them from offset 0 and swap them in atomically.
    #[arg(long)]
    pub rebuild: bool,
    #[arg(long, default_value = "snappy")]
    pub compression: String,
    /// Most events per published step (default and maximum 500000).
    #[arg(long, default_value_t = project::MAX_STEP_EVENTS)]
    pub step_events: u64,
    /// With --rebuild: build the tables as they were at this log offset.
    #[arg(long, requires = "rebuild")]
    pub to: Option<u64>,
    /// With --rebuild: write the tables into this new place (a directory or
    /// s3://bucket/prefix) instead of the live ones (time travel without touching them).
    #[arg(long, requires = "rebuild")]
    pub out: Option<String>,
    /// Keep projecting as the log grows (a step every --interval-ms once caught up)
    /// until SIGINT or SIGTERM: the projector process of a Kafka deployment.
    #[arg(long, conflicts_with = "rebuild")]
    pub follow: bool,
    /// With --follow from a Kafka topic: be a member of this consumer group, projecting
    /// the partitions the group gives this process into tables the members share (each
    /// member with its own --data-dir). Members may run on several machines.
    #[arg(long, env = "QUESTLOG_GROUP")]
    pub group: Option<String>,
    /// With --follow: milliseconds between steps once the tables reached the end.
    #[arg(long, default_value_t = project::DEFAULT_PROJECT_INTERVAL_MS, requires = "follow",
          value_parser = clap::value_parser!(u64).range(1..=project::MAX_PROJECT_INTERVAL_MS))]
    pub interval_ms: u64,
}

/// `project`: bring the tables up to the log's end, rebuild them, follow the log, or
/// (with `--out`) build them as of an offset in another place.
pub fn run(args: ProjectArgs, data_dir: &Path) -> Result<()> {
    let ProjectArgs { rebuild, compression, step_events, to, out, follow, interval_ms, group } = args;
    if kafka().is_some() {
        return run_topic(rebuild, compression, step_events, to, out, follow, interval_ms, group, data_dir);
    }
    if group.is_some() {
        bail!("--group (or QUESTLOG_GROUP) makes a projector a member of a Kafka consumer group: it needs --log kafka://…");
    }
    let codec = Codec::parse(&compression)?;
    let log = open_log_for(data_dir, "project")?;
    let end = log.durable_end();
    // The catalogue copies `sql` and `report` read, from the log (a data dir copied
    // without them, or an older questlog's, gets them here).
    crate::catalog::write_copies(data_dir, &log_catalogs(log.as_ref())?)?;
    if let Some(to) = to.filter(|&t| t > end) {
        bail!("--to {to} is past the end of the log ({end} events)");
    }
    let pb = generate::progress_bar(0, if rebuild { "rebuilding" } else { "projecting" });
    if let Some(out) = out {
        // Time travel into another place; the live tables are not touched.
        let out_root = TablesRoot::parse(&out)?;
        let taken = match &out_root {
            TablesRoot::Local(dir) => dir.read_dir().is_ok_and(|mut d| d.next().is_some()),
            TablesRoot::S3 { .. } => project::snapshot(&out_root, data_dir, &[])?.versions.iter().any(Option::is_some),
        };
        if taken {
            bail!("--out {out} already holds files or tables; choose a new place");
        }
        let summary = project::rebuild_into(log.as_ref(), to.unwrap_or(end), &out_root, data_dir, codec, &pb)?;
        pb.finish_and_clear();
        println!("{}", summary.render());
        println!("tables as of offset {} in {out_root}", summary.to_offset);
        log.close()?;
        return Ok(());
    }
    let mut projector =
        open_projector(data_dir, codec, !rebuild)?.with_step_events(step_events).with_min_free_bytes(log_options().min_free_bytes);
    if follow {
        if running_server(data_dir).is_some() {
            bail!("a server runs on {}; its own projector keeps the tables", data_dir.display());
        }
        let root = tables_root(data_dir)?;
        let reopen = || -> Result<Projector> {
            Ok(open_projector(data_dir, codec, true)?.with_step_events(step_events).with_min_free_bytes(log_options().min_free_bytes))
        };
        let result = follow_log(projector, reopen, log.as_ref(), &log_name(data_dir), interval_ms, &root);
        log.close()?;
        return result;
    }
    let summary =
        if rebuild { projector.rebuild(log.as_ref(), to.unwrap_or(u64::MAX), &pb)? } else { projector.catch_up(log.as_ref(), &pb)? };
    pb.finish_and_clear();
    println!("{}", summary.render());
    println!("tables at offset {} in {}", projector.offset(), tables_root(data_dir)?);
    log.close()?;
    Ok(())
}

/// `project` from a Kafka topic.
#[allow(clippy::too_many_arguments)]
fn run_topic(
    rebuild: bool,
    compression: String,
    step_events: u64,
    to: Option<u64>,
    out: Option<String>,
    follow: bool,
    interval_ms: u64,
    group: Option<String>,
    data_dir: &Path,
) -> Result<()> {
    if group.is_some() && !follow {
        bail!("a consumer group member follows the topic: add --follow (or unset QUESTLOG_GROUP for a one-shot project)");
    }
    if to.is_some() || out.is_some() {
        bail!("--to and --out take one log offset; a topic has an offset per partition: rebuild the whole topic (project --rebuild)");
    }
    let codec = Codec::parse(&compression)?;
    let (target, options) = kafka().ok_or_else(|| anyhow!("no Kafka log"))?;
    let log = KafkaLog::open_reader(target, options)?;
    let layout = project::Layout::Topic { topic: target.topic.clone(), partitions: log.partitions() };
    let root = tables_root(data_dir)?;
    let open = || -> Result<Projector> {
        Ok(Projector::open_source(&root, data_dir, codec, vacuum_retention_ms(), !rebuild, layout.clone(), log_format())?
            .with_step_events(step_events)
            .with_min_free_bytes(log_options().min_free_bytes)
            .with_group(group.clone()))
        .map(|p| if follow { p } else { p.reading_to_the_end() })
    };
    let mut projector = open()?;
    if follow {
        return follow_log(projector, open, log.as_ref(), &target.to_string(), interval_ms, &root);
    }
    let pb = generate::progress_bar(0, if rebuild { "rebuilding" } else { "projecting" });
    let summary = if rebuild { projector.rebuild(log.as_ref(), u64::MAX, &pb)? } else { projector.catch_up(log.as_ref(), &pb)? };
    pb.finish_and_clear();
    println!("{}", summary.render());
    println!("tables at the partitions' offsets {:?} of {target} in {root}", projector.partition_offsets());
    Ok(())
}

/// `project --follow`: steps until the tables reach the log's end, then one step every
/// `interval_ms`, until SIGINT or SIGTERM (the step under way finishes first). A step
/// that fails for a reason that may pass (a broker or the object store unreachable, a full
/// disk) is retried after a backoff that doubles up to [`project::MAX_PROJECT_BACKOFF_MS`],
/// from tables opened again; another writer's commit, or tables that are not this log's,
/// end the run with that error.
fn follow_log(
    projector: Projector,
    reopen: impl Fn() -> Result<Projector>,
    log: &dyn EventLog,
    source: &str,
    interval_ms: u64,
    root: &TablesRoot,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime()?;
    let stop2 = stop.clone();
    rt.spawn(async move {
        shutdown_signal().await;
        stop2.store(true, Ordering::SeqCst);
    });
    if log.is_local() {
        println!("following {source} into {root} (every {interval_ms} ms once caught up; Ctrl-C stops)");
    } else {
        println!("following {source} into {root} (records as they come; Ctrl-C stops)");
    }
    let hidden = indicatif::ProgressBar::hidden();
    let mut failures: u32 = 0;
    let mut reopen_next = false;
    let mut last_held: Option<Vec<u32>> = None;
    let mut projector = Some(projector);
    while !stop.load(Ordering::SeqCst) {
        if reopen_next {
            // The old one goes first: it holds the tables' (and a topic's) lock, which the
            // new one takes.
            drop(projector.take());
            match reopen() {
                Ok(p) => {
                    projector = Some(p);
                    reopen_next = false;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    eprintln!("questlog: cannot open the tables again: {e:#}");
                }
            }
        }
        let mut wait_ms = interval_ms;
        if let Some(projector) = projector.as_mut().filter(|_| !reopen_next) {
            match projector.step(log, &hidden) {
                Ok(s) => {
                    failures = 0;
                    if s.events > 0 || s.rows.iter().any(|&r| r > 0) {
                        let held = s.partitions_held.as_ref().map(|p| format!("; partitions held {p:?}")).unwrap_or_default();
                        println!(
                            "step: {} records read, {} rows, {} re-sent copies dropped, {} rejected; position {} ({:.2} s){held}",
                            s.events,
                            s.rows.iter().sum::<u64>(),
                            s.duplicates,
                            s.rejected,
                            s.to_offset,
                            s.seconds
                        );
                    }
                    if let Some(held) = s.partitions_held.as_ref().filter(|h| Some(*h) != last_held.as_ref()) {
                        println!("this member holds partitions {held:?} of {source}");
                        last_held = Some(held.clone());
                    }
                    // A group member's step waits for records itself (and polls its
                    // consumer, which keeps it in the group).
                    if !s.at_end || s.partitions_held.is_some() {
                        continue; // more to read: no wait
                    }
                }
                Err(
                    e @ (project::ProjectError::Conflict { .. }
                    | project::ProjectError::Schema { .. }
                    | project::ProjectError::Inconsistent { .. }),
                ) => {
                    return Err(e.into());
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    eprintln!("questlog: projection step failed (attempt {failures}; retrying): {e}");
                    reopen_next = true;
                }
            }
        }
        if failures > 0 {
            wait_ms = (interval_ms << failures.min(16)).min(project::MAX_PROJECT_BACKOFF_MS);
        }
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(FOLLOW_POLL_MS.min(wait_ms)));
        }
    }
    match projector {
        Some(p) => println!("stopped; tables at position {} in {root}", p.offset()),
        None => println!("stopped; the tables could not be opened again"),
    }
    Ok(())
}
