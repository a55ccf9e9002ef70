//! `schema check|list|show`: event type schemas (JSON Schema, self-describing in Iglu's
//! way; docs/CONTRACT.md section 13). `check` gives the verdict on files without recording
//! anything: each is checked against the seed's built-in types and the files before it on
//! the command line, so `schema check v1.json v2.json` checks the evolution from one to
//! the other. `list` and `show` print the built-in types.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::schema::{self, builtin, Evolution, Schema};

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Check schema files without recording anything: each against the seed's types and
    /// the files before it (`v1.json v2.json` checks the evolution); prints each one's
    /// table and columns, or why it is refused.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the event types: the seed's five, built in.
    List,
    /// Print the schema of an event type (`join_guild`, …) as a document.
    Show { name: String },
}

/// Runs a `schema` subcommand.
pub fn run(cmd: SchemaCommand) -> Result<()> {
    match cmd {
        SchemaCommand::Check { files } => check(&files),
        SchemaCommand::List => {
            for s in builtin::schemas() {
                println!("{}  {}  built in ({} properties)", s.name, s.uri(), s.properties.len());
            }
            Ok(())
        }
        SchemaCommand::Show { name } => {
            let Some((_, doc)) = builtin::DOCUMENTS.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = builtin::DOCUMENTS.iter().map(|(n, _)| *n).collect();
                bail!("no event type `{name}`; the types are {}", names.join(", "));
            };
            print!("{doc}");
            Ok(())
        }
    }
}

/// A schema file's bytes, at most [`schema::MAX_SCHEMA_BYTES`] of them read.
fn read_schema_file(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(schema::MAX_SCHEMA_BYTES as u64 + 1).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

fn check(files: &[PathBuf]) -> Result<()> {
    let mut known: Vec<Schema> = Vec::new();
    let mut refused = 0usize;
    for path in files {
        let verdict = read_schema_file(path).and_then(|bytes| Schema::parse(&bytes).map_err(anyhow::Error::from));
        let s = match verdict {
            Ok(s) => s,
            Err(e) => {
                println!("refused  {}: {e:#}", path.display());
                refused += 1;
                continue;
            }
        };
        match schema::check_against(&known, &s) {
            Ok(evolution) => {
                let table = s.table_name();
                let what = match &evolution {
                    Evolution::NewTable => format!("a new table `{table}`"),
                    Evolution::Addition { added } if added.is_empty() => format!("the same columns of `{table}`"),
                    Evolution::Addition { added } => format!("ADDITION to `{table}`: {} added, nullable", added.join(", ")),
                    Evolution::Unchanged => "the same as an earlier file".to_string(),
                };
                println!("ok  {}  {}: {what}; {}", path.display(), s.uri(), s.hash());
                for p in &s.properties {
                    let null = if p.nullable() { "nullable" } else { "NOT NULL" };
                    println!("      {:<24} {:<8} {:<18} {null}", p.name, p.json_type.as_str(), p.column.sql_name());
                }
                if evolution != Evolution::Unchanged {
                    known.push(s);
                }
            }
            Err(e) => {
                println!("refused  {}: {e}", path.display());
                refused += 1;
            }
        }
    }
    if refused > 0 {
        bail!("{refused} of {} schema files refused; nothing was recorded", files.len());
    }
    Ok(())
}
