//! `check`: golden scenarios (`replay/*.toml`) run and compared with their digests.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{sled_only, TABLES_OPTIONS};
use crate::generate;

/// The arguments of `check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Scenario files.
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Rewrite the expected digests after an intended change.
    #[arg(long)]
    pub bless: bool,
}

/// `check`: runs each scenario and compares (or, with `--bless`, rewrites) its digests.
pub fn run(args: CheckArgs) -> Result<()> {
    let CheckArgs { scenarios, bless } = args;
    sled_only("run scenarios")?;
    let exe = std::env::current_exe().context("locating the questlog binary")?;
    let mut failed = Vec::new();
    for path in &scenarios {
        let scenario = crate::check::load(path)?;
        println!(
            "scenario {}: {} events (seed {}), project every {}{}",
            path.display(),
            scenario.events,
            scenario.seed,
            scenario.schedule.project_every,
            scenario.schedule.crash_at_step.map(|s| format!(", crash in step {s}")).unwrap_or_default()
        );
        let pb = generate::progress_bar(0, "running");
        let tables = TABLES_OPTIONS.get().and_then(|(root, _)| root.as_ref());
        let outcome = crate::check::run(path, &exe, tables, &pb)?;
        pb.finish_and_clear();
        println!("{}", outcome.render());
        if bless {
            if !outcome.incremental_equals_rebuild {
                bail!("not blessing {}: incremental tables differ from a rebuild", path.display());
            }
            crate::check::bless(path, &outcome)?;
            println!("blessed: wrote the expected digests to {}", path.display());
        } else if !outcome.ok() {
            failed.push(path.display().to_string());
        }
    }
    if !failed.is_empty() {
        bail!("{} scenario(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
