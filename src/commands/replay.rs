//! `replay` and `rejected`: the log and the rejected events as JSON lines, from the data
//! dir, through a running server, or from a Kafka topic's partitions; `replay --url`
//! re-sends the log to another server.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::{api_key, kafka, log_format, open_log_for, running_server, runtime, sled_only, FOLLOW_POLL_MS};
use crate::generate;
use crate::log::{for_each_partition_prefetched, EventLog, KafkaLog, LogError, PartitionItem, SledLog, ValueFormat};
use crate::project;
use crate::replay;

/// The arguments of `replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Stop before this offset.
    #[arg(long)]
    pub to: Option<u64>,
    /// With a Kafka log: only this partition (--from and --to are offsets in it).
    /// Without it, every partition in turn, each from --from to --to.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Keep printing new events as they arrive.
    #[arg(long)]
    pub follow: bool,
    /// Re-send the events to another questlog server instead of printing them
    /// (in order, batched, keeping event ids so a second replay adds nothing).
    #[arg(long, conflicts_with = "follow")]
    pub url: Option<String>,
    /// Events per second when sending with --url.
    #[arg(long, requires = "url")]
    pub rate: Option<f64>,
}

/// The arguments of `rejected`.
#[derive(Args, Debug)]
pub struct RejectedArgs {
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// `replay`: the log as JSON lines (through the server while one holds it), or re-sent to
/// another server with `--url`.
pub fn run(args: ReplayArgs, data_dir: &Path) -> Result<()> {
    match args {
        ReplayArgs { from, to, follow: _, url: Some(url), rate, .. } => {
            sled_only("replay to another server")?;
            let log = open_log_for(data_dir, "replay to another server")?;
            let pb = generate::progress_bar(0, "replaying");
            let dyn_log: Arc<dyn EventLog> = log.clone();
            let report = runtime()?.block_on(replay::replay_to_url(dyn_log, from, to.unwrap_or(u64::MAX), &url, rate, api_key(), &pb))?;
            pb.finish_and_clear();
            println!("{}", report.render());
            log.close()?;
            Ok(())
        }
        ReplayArgs { from, to, follow, url: None, partition, .. } => match kafka() {
            Some(_) => kafka_replay(from, to.unwrap_or(u64::MAX), partition, follow),
            None => {
                if partition.is_some_and(|p| p != 0) {
                    bail!("--partition {}: the sled log has one partition, 0", partition.unwrap_or(0));
                }
                replay_cmd(data_dir, from, to, follow)
            }
        },
    }
}

/// `rejected`: the rejected events as JSON lines.
pub fn run_rejected(args: RejectedArgs, data_dir: &Path) -> Result<()> {
    rejected_cmd(data_dir, args.from, args.limit)
}

/// `replay` of a Kafka log: JSON lines with `log_partition` and `log_offset`, partition by
/// partition (each in offset order), from `from` to `to` in each; with `follow`, then the
/// records that arrive in any of them, as they come, until each reached `to`.
fn kafka_replay(from: u64, to: u64, partition: Option<u32>, follow: bool) -> Result<()> {
    let (target, options) = kafka().ok_or_else(|| anyhow!("replay of a Kafka log without --log kafka://…"))?;
    if log_format() != ValueFormat::Questlog {
        bail!("replay prints questlog's records; read a topic in the seed's format with a Kafka consumer, or project it (project --log-format seed)");
    }
    let log = KafkaLog::open_reader(target, options)?;
    let partitions: Vec<u32> = match partition {
        Some(p) if p >= log.partitions() => bail!("--partition {p}: the topic has {} partitions", log.partitions()),
        Some(p) => vec![p],
        None => (0..log.partitions()).collect(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut buf = String::with_capacity(64 * 1024);
    let mut reached: Vec<(u32, u64)> = Vec::with_capacity(partitions.len());
    let mut open = true;
    // Printed partition by partition, read side by side: the next partition's consumer
    // starts and finds its end while this one is printed (one after another, each waited
    // ~0.6 s for the brokers to say its end).
    let mut next = from;
    let printed = for_each_partition_prefetched(
        partitions.len(),
        |i| log.read_partition(partitions[i], from, to),
        |item: PartitionItem<crate::event::Record>| -> Result<(), ReplayStop> {
            match item {
                PartitionItem::Begin(_) => next = from,
                PartitionItem::Item(i, offset, record) => {
                    next = offset + 1;
                    replay::write_partitioned_line(&mut buf, partitions[i], offset, &record);
                    if buf.len() >= 60 * 1024 {
                        if !replay::write_all(&mut out, buf.as_bytes()).map_err(|e| ReplayStop::Write(e.into()))? {
                            return Err(ReplayStop::Closed);
                        }
                        buf.clear();
                    }
                }
                PartitionItem::End(i) => reached.push((partitions[i], next)),
            }
            Ok(())
        },
    );
    match printed {
        Ok(()) => {}
        Err(ReplayStop::Closed) => open = false,
        Err(ReplayStop::Log(e)) => return Err(e.into()),
        Err(ReplayStop::Write(e)) => return Err(e),
    }
    if open && replay::write_all(&mut out, buf.as_bytes())? {
        out.flush().ok();
    } else {
        open = false;
    }
    buf.clear();
    let mut following: Vec<(u32, u64)> = reached.into_iter().filter(|&(_, next)| next < to).collect();
    if follow && open && !following.is_empty() {
        // Line by line from here: whoever reads the output sees each record as it comes.
        log.follow(&following.clone(), |p, offset, record| {
            if offset >= to {
                following.retain(|&(q, _)| q != p);
                return Ok(!following.is_empty());
            }
            buf.clear();
            replay::write_partitioned_line(&mut buf, p, offset, record);
            let written = replay::write_all(&mut out, buf.as_bytes()).map_err(|e| LogError::Flush(e.to_string()))?;
            Ok(written && out.flush().is_ok())
        })?;
    }
    log.close()?;
    Ok(())
}

/// Why printing a topic stopped early: the log failed, writing failed, or the reader of
/// the output went away (a closed pipe: a quiet end).
enum ReplayStop {
    Log(LogError),
    Write(anyhow::Error),
    Closed,
}

impl From<LogError> for ReplayStop {
    fn from(e: LogError) -> ReplayStop {
        ReplayStop::Log(e)
    }
}

fn replay_cmd(data_dir: &Path, from: u64, to: Option<u64>, follow: bool) -> Result<()> {
    let to_offset = to.unwrap_or(u64::MAX);
    match SledLog::open(&data_dir.join("log")) {
        Ok(log) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
            let end = log.durable_end();
            if from > end {
                bail!("--from {from} is past the end of the log ({end} events)");
            }
            let end = log.durable_end().min(to_offset);
            replay::replay_to(log.as_ref(), from, end, &mut out)?;
            out.flush().ok();
            log.close()?;
            drop(log);
            if !follow || end >= to_offset {
                return Ok(());
            }
            // Nothing appends to a log that no server holds: release it and follow the
            // next server that opens this data dir.
            eprintln!("replay: end of log at offset {end}; waiting for `questlog serve` on {} to follow it", data_dir.display());
            loop {
                if let Some(addr) = running_server(data_dir) {
                    let mut url = format!("http://{addr}/v1/replay?from={end}&follow=true");
                    if let Some(to) = to {
                        url.push_str(&format!("&to={to}"));
                    }
                    return runtime()?.block_on(stream_http(&url));
                }
                std::thread::sleep(Duration::from_millis(FOLLOW_POLL_MS));
            }
        }
        Err(LogError::Locked { .. }) => {
            let addr = running_server(data_dir).ok_or_else(|| anyhow!("the log in {} is held by another process", data_dir.display()))?;
            let mut url = format!("http://{addr}/v1/replay?from={from}&follow={follow}");
            if let Some(to) = to {
                url.push_str(&format!("&to={to}"));
            }
            runtime()?.block_on(stream_http(&url))
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies an HTTP response body to stdout as it arrives (sent with the API key, if given).
async fn stream_http(url: &str) -> Result<()> {
    let client = reqwest::Client::builder().default_headers(crate::wire::client_headers(api_key())?).build()?;
    let mut resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let hint = crate::wire::key_hint(status.as_u16(), "read");
        bail!("GET {url}: {status}: {}{hint}", resp.text().await.unwrap_or_default().trim_end());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(chunk) = resp.chunk().await.context("reading the replay stream")? {
        // The chunk's bytes as they came: a chunk may end inside a character.
        if !replay::write_all(&mut out, &chunk)? {
            return Ok(());
        }
        out.flush().ok();
    }
    Ok(())
}

fn rejected_cmd(data_dir: &Path, from: u64, limit: usize) -> Result<()> {
    // With a Kafka log, the events this node rejected are in its local store (which a
    // node that never rejected anything has not made), and the values a projector could
    // not project in its own.
    let dir = if kafka().is_some() { data_dir.join(crate::log::kafka::REJECTED_DIR) } else { data_dir.join("log") };
    if kafka().is_none() || dir.is_dir() {
        match SledLog::open(&dir) {
            Ok(log) => {
                let mut s = String::new();
                for (seq, r) in log.rejected(from, limit)? {
                    replay::write_rejected_line(&mut s, seq, &r);
                }
                let mut out = std::io::stdout().lock();
                let open = replay::write_all(&mut out, s.as_bytes())?;
                log.close()?;
                if !open {
                    return Ok(());
                }
            }
            Err(LogError::Locked { .. }) => {
                let addr = running_server(data_dir).ok_or_else(|| anyhow!("the log in {} is held by another process", dir.display()))?;
                runtime()?.block_on(stream_http(&format!("http://{addr}/v1/rejected?from={from}&limit={limit}")))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if kafka().is_some() {
        let mut s = String::new();
        for line in project::SourceRejects::list(data_dir)? {
            s.push_str(&line);
            s.push('\n');
        }
        replay::write_all(&mut std::io::stdout().lock(), s.as_bytes())?;
    }
    Ok(())
}
