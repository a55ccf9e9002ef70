//! `catalog init|show|schema|history`: store catalogues (the seed's SQLite), and the DDL
//! lines for the catalogue copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;

use super::{absolute, kafka, log_catalogs, open_log_for};
use crate::generate;
use crate::log::EventLog;

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Write a realistic catalogue: the generator's stores and items, list prices
    /// jittered by the seed.
    Init {
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The new SQLite file (must not exist).
        #[arg(long, default_value = "catalog.sqlite")]
        out: PathBuf,
    },
    /// Check a catalogue file and print its hash and size.
    Show { file: PathBuf },
    /// Print the SQL schema a catalogue file must have.
    Schema,
    /// List the catalogues the log recorded, with the offset each took effect at.
    History,
}

/// Runs a `catalog` subcommand.
pub fn run(cmd: CatalogCommand, data_dir: &Path) -> Result<()> {
    use crate::catalog::Catalog;
    match cmd {
        CatalogCommand::Init { seed, out } => {
            let c = generate::world::builtin_catalog(seed);
            c.write(&out)?;
            let c = Catalog::open(&out)?;
            println!("wrote {} ({} stores, {} items; {})", out.display(), c.stores.len(), c.items.len(), c.hash());
            Ok(())
        }
        CatalogCommand::Show { file } => {
            let c = Catalog::open(&file)?;
            println!("{}: a valid catalogue, {} stores, {} items, {}", file.display(), c.stores.len(), c.items.len(), c.hash());
            for s in &c.stores {
                let n = c.items.iter().filter(|i| i.store_id == s.store_id).count();
                let restock = if s.restock_interval_hours == 0 {
                    "never restocked".to_string()
                } else {
                    format!("restocked every {} h", s.restock_interval_hours)
                };
                println!("  store {:>4}  {}  ({n} items, {restock})", s.store_id, s.name);
            }
            Ok(())
        }
        CatalogCommand::Schema => {
            print!("{}", crate::catalog::SCHEMA_SQL);
            Ok(())
        }
        CatalogCommand::History => {
            // A topic's side topic is read without taking the data dir (a `serve` may hold it).
            let (log, kafka_log): (Arc<dyn EventLog>, bool) = match kafka() {
                Some((target, options)) => (crate::log::kafka::KafkaLog::open_reader(target, options)?, true),
                None => (open_log_for(data_dir, "list the log's catalogues")?, false),
            };
            let versions = log_catalogs(log.as_ref())?;
            if versions.is_empty() {
                println!("the log has no store catalogue (serve --catalog FILE or generate --catalog FILE records one)");
            }
            for v in &versions {
                let from = if kafka_log {
                    format!("from the partitions' offsets {:?}", v.from_partitions)
                } else {
                    format!("from offset {:>10}", v.from_offset)
                };
                println!("{from}  {}  ({} stores, {} items)", v.hash, v.catalog.stores.len(), v.catalog.items.len());
            }
            // A sled log's copies are refreshed here; a topic's are its projectors' to write.
            if !kafka_log {
                crate::catalog::write_copies(data_dir, &versions)?;
            }
            log.close()?;
            Ok(())
        }
    }
}

/// `ddl`'s statements for the catalogue copy, when the log has a catalogue.
pub(crate) fn catalog_ddl(data_dir: &Path) -> Result<String> {
    let versions = crate::catalog::read_copies(data_dir)?;
    let Some(latest) = versions.last() else { return Ok(String::new()) };
    let copy = absolute(data_dir)?.join(crate::catalog::COPIES_DIR).join(crate::catalog::SQLITE_COPY);
    let path = copy.display().to_string().replace('\'', "''");
    Ok(format!(
        "\n-- The store catalogue in force ({}, from log offset {}), a copy of the log's at\n\
         -- {path}. DuckDB (its sqlite extension):\n\
         attach '{path}' as questlog_catalog (type sqlite, read_only);\n\
         create or replace view catalog_items as select s.name as store_name, i.* from questlog_catalog.items i join questlog_catalog.stores s using (store_id);\n\
         -- Spark (the org.xerial sqlite-jdbc driver on its classpath):\n\
         create table if not exists default.catalog_items using jdbc options (url 'jdbc:sqlite:{path}', dbtable 'items');\n\
         -- Stock is computed from the log by questlog: `questlog sql \"select * from stock\" --format csv`.\n",
        latest.hash, latest.from_offset
    ))
}
