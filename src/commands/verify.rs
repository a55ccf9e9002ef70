//! `verify`: the log is whole and the tables equal its projection (from a topic too).

use std::path::Path;

use anyhow::{anyhow, Result};

use super::{kafka, log_format, open_log_for, tables_root};
use crate::generate;
use crate::log::{EventLog, KafkaLog};

/// `verify`: from the sled log, or (`--log kafka://…`) from the topic.
pub fn run(data_dir: &Path) -> Result<()> {
    if kafka().is_some() {
        return verify_topic(data_dir);
    }
    let log = open_log_for(data_dir, "verify")?;
    let pb = generate::progress_bar(0, "verifying");
    let result = crate::verify::verify(log.as_ref(), &tables_root(data_dir)?, data_dir, &pb);
    pb.finish_and_clear();
    log.close()?;
    println!("{}", result?.render());
    Ok(())
}

fn verify_topic(data_dir: &Path) -> Result<()> {
    let (target, options) = kafka().ok_or_else(|| anyhow!("no Kafka log"))?;
    let log = KafkaLog::open_reader(target, options)?;
    let pb = generate::progress_bar(0, "verifying");
    let result = crate::verify::verify_topic(log.as_ref(), log_format(), &target.topic, &tables_root(data_dir)?, data_dir, &pb);
    pb.finish_and_clear();
    println!("{}", result?.render());
    Ok(())
}
