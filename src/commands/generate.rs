//! `generate`: the seeded world's traffic, written into the log (the same arguments give
//! the same log) or sent to a server over HTTP as a load test.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::{api_key, kafka, log_name, open_catalog, open_event_log, record_catalog, runtime};
use crate::event;
use crate::generate::{self, World, WorldConfig};

/// The arguments of `generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    pub seed: u64,
    #[arg(long)]
    pub events: u64,
    #[arg(long, default_value_t = generate::world::DEFAULT_PLAYERS)]
    pub players: u32,
    /// Start of the simulated clock (RFC 3339).
    #[arg(long, default_value = generate::world::DEFAULT_START_TIME)]
    pub start_time: String,
    /// Send to this questlog server instead of writing the log (a load test).
    #[arg(long)]
    pub url: Option<String>,
    /// Target events per second (with --url); unlimited when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Concurrent requests (with --url).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Events per request (with --url).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Sell what this store catalogue (SQLite) lists instead of the built-in stores;
    /// without --url it is recorded in the log before the events.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Mix in events of these event types (schema files, as `schema add` takes them):
    /// without --url they are recorded in the log first, if it does not hold them (events
    /// of each are drawn against the newest version the log then has); with --url the
    /// server must know them already. Repeat for several.
    #[arg(long = "schema", value_name = "FILE")]
    pub schemas: Vec<PathBuf>,
    /// Percent of the events that are of the --schema types (1 to 100), the type picked
    /// uniformly.
    #[arg(long, value_name = "PCT", default_value_t = generate::custom::DEFAULT_SHARE_PCT)]
    pub custom_share: u32,
}

/// `generate`: seeded traffic into the log, or over HTTP with `--url` (a load test).
pub fn run(args: GenerateArgs, data_dir: &Path) -> Result<()> {
    let GenerateArgs { seed, events, players, start_time, url, rate, concurrency, batch, catalog, schemas, custom_share } = args;
    if players == 0 {
        bail!("--players must be at least 1");
    }
    if !schemas.is_empty() && !(1..=100).contains(&custom_share) {
        bail!("--custom-share {custom_share}: give 1 to 100 (percent of the events)");
    }
    let start_time_us = event::parse_time_us(&start_time).map_err(|e| anyhow!("--start-time `{start_time}`: {e}"))?;
    let cfg = WorldConfig { seed, players, start_time_us };
    let catalog = catalog.as_deref().map(open_catalog).transpose()?;
    let world = match &catalog {
        Some(c) => World::with_catalog(cfg, c).map_err(|e| anyhow!("--catalog: {e}"))?,
        None => World::new(cfg),
    };
    // The mix of registered types, made once their schemas are known.
    let mix = |world: World, types: &[crate::schema::Schema]| -> Result<World> {
        if types.is_empty() {
            return Ok(world);
        }
        let traffic = generate::custom::CustomTraffic::new(seed, types, custom_share).map_err(|e| anyhow!("--schema: {e}"))?;
        Ok(world.with_custom(traffic))
    };
    match url {
        Some(url) => {
            // The server checks each name's events against its newest version: so are they drawn.
            let files = schemas.iter().map(|p| super::schema::read_schema(p)).collect::<Result<Vec<_>>>()?;
            let types: Vec<crate::schema::Schema> = crate::event::Registry::from_schemas(&files).schemas().cloned().collect();
            let world = mix(world, &types)?;
            if batch == 0 || batch > generate::MAX_BATCH {
                bail!("--batch must be between 1 and {}", generate::MAX_BATCH);
            }
            if concurrency == 0 || concurrency > generate::MAX_CONCURRENCY {
                bail!("--concurrency must be between 1 and {}", generate::MAX_CONCURRENCY);
            }
            let settings = generate::LoadSettings { url, rate, concurrency, batch, api_key: api_key().map(str::to_string) };
            let pb = generate::progress_bar(events, "sending");
            let report = runtime()?.block_on(generate::load_test(world, events, settings, pb.clone()))?;
            pb.finish_and_clear();
            print!("{}", report.render());
            if report.failed_requests > 0 {
                let refused = [401, 403].into_iter().find(|s| report.errors.iter().any(|(kind, _)| *kind == format!("HTTP {s}")));
                bail!("{} requests failed{}", report.failed_requests, refused.map_or(String::new(), |s| crate::wire::key_hint(s, "write")));
            }
            Ok(())
        }
        None => {
            let log = open_event_log(data_dir, "generate into the log")?;
            if let Some(c) = &catalog {
                record_catalog(log.as_ref(), data_dir, c)?;
            }
            let mut world = world;
            if !schemas.is_empty() {
                for line in super::schema::record_files(log.as_ref(), &schemas).context("--schema")? {
                    println!("{line}");
                }
                let registry = super::schema::registry_of(log.as_ref())?;
                let mut names: Vec<String> = Vec::new();
                for p in &schemas {
                    let name = super::schema::read_schema(p)?.name;
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                let types: Vec<crate::schema::Schema> =
                    names.iter().filter_map(|n| registry.schemas().find(|s| &s.name == n).cloned()).collect();
                world = mix(world, &types)?;
            }
            let pb = generate::progress_bar(events, "generating");
            let s = generate::generate_into_log(log.as_ref(), &mut world, events, &pb)?;
            pb.finish_and_clear();
            log.close()?;
            if s.duplicates > 0 {
                println!(
                        "{} of the events were already in the log (same event ids: this seed was generated here before) and were not appended again",
                        s.duplicates
                    );
            }
            let place = match kafka() {
                Some((target, _)) => format!("{target} ({} partitions; acknowledged by the brokers)", log.partitions()),
                None => format!("{} at offsets {}..{}", log_name(data_dir), s.first_offset, s.end_offset),
            };
            println!(
                "generated {} events (seed {seed}; {} bytes of event JSON) into {place} in {:.2} s ({:.0} events/s), durable",
                s.events,
                s.json_bytes,
                s.seconds,
                s.events as f64 / s.seconds.max(1e-9)
            );
            Ok(())
        }
    }
}
