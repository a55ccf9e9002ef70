//! `schema check|add|history|list|show`: event type schemas (JSON Schema, self-describing
//! in Iglu's way; docs/CONTRACT.md section 13). `check` gives the verdict on files without
//! recording anything: each is checked against the seed's built-in types, the log's
//! schemas (when the data dir has a log) and the files before it on the command line, so
//! `schema check v1.json v2.json` checks the evolution from one to the other. `add`
//! records files in the log after the same checks, all or nothing; `history`, `list` and
//! `show` read the log's records (the seed's five are built in and never recorded). While
//! `serve` holds the log, they go through it (`GET|POST /v1/schemas`).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::{api_key, log_options, open_log_for, running_server, runtime, sled_only};
use crate::log::{EventLog, LogError, SchemaRecord, SledLog};
use crate::schema::{self, builtin, Evolution, Schema};

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Check schema files without recording anything: each against the seed's types, the
    /// log's schemas and the files before it (`v1.json v2.json` checks the evolution);
    /// prints each one's table and columns, or why it is refused.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Record schema files in the log, in force from the next offset: checked as `check`
    /// does, and recorded only if every file passes. While `serve` holds the log, through
    /// it (`POST /v1/schemas`, a key with the `admin` scope when it has keys).
    Add {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The schemas the log recorded, oldest first, each with the offset it took effect at.
    History,
    /// List the event types: the seed's five (built in) and the log's, newest version of
    /// each model.
    List,
    /// Print the schema of an event type (`join_guild`, …), its newest version.
    Show { name: String },
}

/// A schema the log holds, and where it took effect.
struct Registered {
    from_offset: u64,
    schema: Schema,
}

/// Runs a `schema` subcommand.
pub fn run(cmd: SchemaCommand, data_dir: &Path) -> Result<()> {
    match cmd {
        SchemaCommand::Check { files } => {
            let known = match existing(data_dir, "check schemas against the log's") {
                Ok(known) => known,
                Err(e) if super::running_server(data_dir).is_some() => {
                    eprintln!("note: {e:#}\nnote: checked against the built-in types and the files given only, not the log's schemas");
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            let (verdicts, refused) = check_files(&files, known.iter().map(|r| r.schema.clone()).collect());
            for v in &verdicts {
                println!("{v}");
            }
            if refused > 0 {
                bail!("{refused} of {} schema files refused; nothing was recorded", files.len());
            }
            Ok(())
        }
        SchemaCommand::Add { files } => add(&files, data_dir),
        SchemaCommand::History => {
            let known = existing(data_dir, "list the log's schemas")?;
            if known.is_empty() {
                println!("the log has no schema of its own (the seed's five types are built in; `questlog schema add FILE` records one)");
            }
            let mut before: Vec<Schema> = Vec::new();
            for r in &known {
                let what = describe(&schema::evolve(&before, &r.schema), &r.schema);
                println!("from offset {:>10}  {}  {}  {what}", r.from_offset, r.schema.uri(), r.schema.hash());
                before.push(r.schema.clone());
            }
            Ok(())
        }
        SchemaCommand::List => {
            for s in builtin::schemas() {
                println!("{}  {}  built in, table {} ({} properties)", s.name, s.uri(), builtin_table(&s.name), s.properties.len());
            }
            for r in newest_of_each_model(&existing(data_dir, "list the log's schemas")?) {
                let s = &r.schema;
                println!(
                    "{}  {}  from offset {}, table {} ({} properties)",
                    s.name,
                    s.uri(),
                    r.from_offset,
                    s.table_name(),
                    s.properties.len()
                );
            }
            Ok(())
        }
        SchemaCommand::Show { name } => {
            if let Some((_, doc)) = builtin::DOCUMENTS.iter().find(|(n, _)| *n == name) {
                print!("{doc}");
                return Ok(());
            }
            let known = existing(data_dir, "read the log's schemas")?;
            let Some(r) = known.iter().filter(|r| r.schema.name == name).max_by_key(|r| r.schema.version) else {
                let mut names: Vec<String> = builtin::DOCUMENTS.iter().map(|(n, _)| n.to_string()).collect();
                for r in &known {
                    if !names.contains(&r.schema.name) {
                        names.push(r.schema.name.clone());
                    }
                }
                bail!("no event type `{name}`; the types are {}", names.join(", "));
            };
            let doc: serde_json::Value = serde_json::from_str(r.schema.canonical()).context("a recorded schema's canonical form")?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
    }
}

/// The seed's table of a built-in type.
fn builtin_table(name: &str) -> &'static str {
    crate::project::SEED_TABLES.iter().find(|t| t.event_type.as_str() == name).map_or("?", |t| t.name)
}

/// Where the log's schemas are: nowhere yet, the log itself, or the server holding it.
enum Source {
    NoLog,
    Log(std::sync::Arc<SledLog>),
    Server(std::net::SocketAddr),
}

fn source(data_dir: &Path, what: &str) -> Result<Source> {
    if !data_dir.join("log").exists() {
        return Ok(Source::NoLog);
    }
    sled_only(what)?;
    match SledLog::open_with(&data_dir.join("log"), log_options()) {
        Ok(log) => Ok(Source::Log(log)),
        Err(LogError::Locked { .. }) => match running_server(data_dir) {
            Some(addr) => Ok(Source::Server(addr)),
            // Held by something that is not a server: say so, as other commands do.
            None => Ok(Source::Log(open_log_for(data_dir, what)?)),
        },
        Err(e) => Err(e.into()),
    }
}

/// The schemas the log of `data_dir` holds (none when it has no log yet: nothing is
/// created to find that out), from the server when one holds the log.
fn existing(data_dir: &Path, what: &str) -> Result<Vec<Registered>> {
    match source(data_dir, what)? {
        Source::NoLog => Ok(Vec::new()),
        Source::Log(log) => {
            let out = registered(log.schemas()?)?;
            log.close()?;
            Ok(out)
        }
        Source::Server(addr) => runtime()?.block_on(from_server(addr)),
    }
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().default_headers(crate::wire::client_headers(api_key())?).build()?)
}

/// `GET /v1/schemas`'s records, each parsed again and checked against its hash.
async fn from_server(addr: std::net::SocketAddr) -> Result<Vec<Registered>> {
    let url = format!("http://{addr}/v1/schemas");
    let resp = http_client()?.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("GET {url}: {status}: {}{}", text.trim_end(), crate::wire::key_hint(status.as_u16(), "read"));
    }
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON"))?;
    let records = v["registered"].as_array().map(|a| a.as_slice()).unwrap_or_default();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        out.push(SchemaRecord {
            from_offset: r["from_offset"].as_u64().context("a record without from_offset")?,
            hash: r["hash"].as_str().context("a record without hash")?.to_string(),
            content: crate::schema::canonical_json(&r["schema"]).into_bytes(),
            from_partitions: r["from_offsets"].as_array().map(|a| a.iter().filter_map(|o| o.as_u64()).collect()).unwrap_or_default(),
        });
    }
    registered(out)
}

/// The log's schema records, each parsed again and checked against its hash.
fn registered(records: Vec<SchemaRecord>) -> Result<Vec<Registered>> {
    records
        .into_iter()
        .map(|r| {
            let schema = Schema::from_record(&r.content, &r.hash).with_context(|| format!("in force from log offset {}", r.from_offset))?;
            Ok(Registered { from_offset: r.from_offset, schema })
        })
        .collect()
}

fn newest_of_each_model(all: &[Registered]) -> Vec<&Registered> {
    let mut out: Vec<&Registered> = Vec::new();
    for r in all {
        let s = &r.schema;
        match out.iter_mut().find(|o| o.schema.vendor == s.vendor && o.schema.name == s.name && o.schema.version.model == s.version.model) {
            Some(o) if o.schema.version < s.version => *o = r,
            Some(_) => {}
            None => out.push(r),
        }
    }
    out
}

/// A schema file's bytes, at most [`schema::MAX_SCHEMA_BYTES`] of them read.
fn read_schema_file(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(schema::MAX_SCHEMA_BYTES as u64 + 1).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

fn describe(evolution: &Result<Evolution, schema::EvolutionError>, s: &Schema) -> String {
    let table = s.table_name();
    match evolution {
        Ok(Evolution::NewTable) => format!("a new table `{table}`"),
        Ok(Evolution::Addition { added }) if added.is_empty() => format!("the same columns of `{table}`"),
        Ok(Evolution::Addition { added }) => format!("ADDITION to `{table}`: {} added, nullable", added.join(", ")),
        Ok(Evolution::Unchanged) => "registered already".to_string(),
        Err(e) => format!("refused: {e}"),
    }
}

fn check_files(files: &[PathBuf], known: Vec<Schema>) -> (Vec<String>, usize) {
    check_files_into(files, known, &mut Vec::new())
}

/// One verdict line (with the columns) per file, and how many were refused. Files that
/// pass join `known` for the files after them; `passed` gets each passing file's schema,
/// as checked.
fn check_files_into(files: &[PathBuf], mut known: Vec<Schema>, passed: &mut Vec<(PathBuf, Schema)>) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut refused = 0usize;
    for path in files {
        let s = match read_schema_file(path).and_then(|bytes| Schema::parse(&bytes).map_err(anyhow::Error::from)) {
            Ok(s) => s,
            Err(e) => {
                out.push(format!("refused  {}: {e:#}", path.display()));
                refused += 1;
                continue;
            }
        };
        match schema::check_against(&known, &s) {
            Ok(evolution) => {
                let mut text = format!("ok  {}  {}: {}; {}", path.display(), s.uri(), describe(&Ok(evolution.clone()), &s), s.hash());
                for p in &s.properties {
                    let null = if p.nullable() { "nullable" } else { "NOT NULL" };
                    text.push_str(&format!("\n      {:<24} {:<8} {:<18} {null}", p.name, p.json_type.as_str(), p.column.sql_name()));
                }
                out.push(text);
                passed.push((path.clone(), s.clone()));
                if evolution != Evolution::Unchanged {
                    known.push(s);
                }
            }
            Err(e) => {
                out.push(format!("refused  {}: {e}", path.display()));
                refused += 1;
            }
        }
    }
    (out, refused)
}

fn add(files: &[PathBuf], data_dir: &Path) -> Result<()> {
    sled_only("record schemas")?;
    let (log, known) = match source(data_dir, "record schemas")? {
        Source::Server(addr) => return runtime()?.block_on(add_through_server(files, addr)),
        Source::Log(log) => {
            let known = registered(log.schemas()?)?;
            (log, known)
        }
        Source::NoLog => (open_log_for(data_dir, "record schemas")?, Vec::new()),
    };
    let recorded = record_checked(log.as_ref(), files, &known);
    log.close()?;
    for line in recorded? {
        println!("{line}");
    }
    Ok(())
}

/// Checks `files` against the log's schemas (`known`) and each other, and records them all
/// or, if any is refused, none (a failure while recording says what was kept): a line
/// per file saying what became of it.
fn record_checked(log: &dyn EventLog, files: &[PathBuf], known: &[Registered]) -> Result<Vec<String>> {
    let checked = check_all(files, known)?;
    // Every file passed against the log and the files before it: record the schemas as
    // checked (not the files again), in order.
    let mut done: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for (path, s) in &checked {
        // By hash: on a Kafka log other nodes may record schemas meanwhile.
        let had = log.schemas()?.iter().any(|r| r.hash == s.hash());
        let recorded = log.record_schema(s.hash(), s.canonical().as_bytes().to_vec()).and_then(|p| p.wait());
        if let Err(e) = recorded {
            return Err(partial(e.into(), path, &done));
        }
        let now = log.schemas()?;
        match now.iter().find(|r| !had && r.hash == s.hash()) {
            Some(r) => {
                lines.push(format!("recorded  {}  {}  {}: in force from log offset {}", path.display(), s.uri(), s.hash(), r.from_offset));
                tracing::info!(schema = %s.uri(), hash = %s.hash(), from_offset = r.from_offset, "event type schema recorded");
                done.push(s.uri());
            }
            None => lines.push(format!("unchanged  {}  {}: the log holds it already", path.display(), s.uri())),
        }
    }
    Ok(lines)
}

/// `serve --schemas DIR`: records the directory's `*.json` files (in name order) as
/// `schema add` would, before the server takes events: a line per file.
pub(crate) fn record_dir(log: &dyn EventLog, dir: &Path) -> Result<Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--schemas {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("--schemas {}", dir.display()))?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    if files.is_empty() {
        bail!("--schemas {}: no *.json schema files in it", dir.display());
    }
    let known = registered(log.schemas()?)?;
    record_checked(log, &files, &known).with_context(|| format!("--schemas {}", dir.display()))
}

/// `generate --schema FILE…`: records the files as `schema add` would (all or none; those
/// the log holds already are left as they are): a line per file.
pub(crate) fn record_files(log: &dyn EventLog, files: &[PathBuf]) -> Result<Vec<String>> {
    let known = registered(log.schemas()?)?;
    record_checked(log, files, &known)
}

/// A schema file, read and parsed (not checked against a log).
pub(crate) fn read_schema(path: &Path) -> Result<Schema> {
    let bytes = read_schema_file(path)?;
    Schema::parse(&bytes).with_context(|| format!("{}", path.display()))
}

/// The registered event types of the log's schemas, to check events against.
pub(crate) fn registry_of(log: &dyn EventLog) -> Result<crate::event::Registry> {
    let all = registered(log.schemas()?)?;
    Ok(crate::event::Registry::from_schemas(all.iter().map(|r| &r.schema)))
}

/// The error of a registration that failed part way, saying what was recorded before it.
fn partial(e: anyhow::Error, path: &Path, done: &[String]) -> anyhow::Error {
    if done.is_empty() {
        e.context(format!("recording {}; nothing was recorded", path.display()))
    } else {
        e.context(format!("recording {}; recorded before it, and kept: {}", path.display(), done.join(", ")))
    }
}

/// Checks every file before any is recorded; prints the refusals and fails if there are
/// any, else returns each file's schema as checked.
fn check_all(files: &[PathBuf], known: &[Registered]) -> Result<Vec<(PathBuf, Schema)>> {
    let mut passed = Vec::new();
    let (verdicts, refused) = check_files_into(files, known.iter().map(|r| r.schema.clone()).collect(), &mut passed);
    if refused > 0 {
        for v in verdicts.iter().filter(|v| v.starts_with("refused")) {
            println!("{v}");
        }
        bail!("{refused} of {} schema files refused; nothing was recorded", files.len());
    }
    Ok(passed)
}

/// `schema add` while `serve` holds the log: the files checked against the server's
/// schemas first (all or nothing), then `POST /v1/schemas` one at a time with the
/// schemas as checked (the server checks each again, against what it holds then).
async fn add_through_server(files: &[PathBuf], addr: std::net::SocketAddr) -> Result<()> {
    let checked = check_all(files, &from_server(addr).await?)?;
    let url = format!("http://{addr}/v1/schemas");
    let client = http_client()?;
    let mut done: Vec<String> = Vec::new();
    for (path, s) in &checked {
        let sent = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(s.canonical().to_string())
            .send()
            .await
            .with_context(|| format!("POST {url}"));
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Err(partial(e, path, &done)),
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if !status.is_success() {
            let why = v["error"].as_str().map_or_else(|| text.trim_end().to_string(), str::to_string);
            let verdict = if status.is_client_error() { "refused" } else { "failed" };
            println!("{verdict}  {}: {why}", path.display());
            let e = anyhow::anyhow!("POST {url}: {status}{}", crate::wire::key_hint(status.as_u16(), "admin"));
            return Err(partial(e, path, &done));
        }
        match v["from_offset"].as_u64() {
            Some(from) if v["recorded"] == true => {
                println!(
                    "recorded  {}  {}  {}: in force from log offset {from} (through the server at http://{addr})",
                    path.display(),
                    s.uri(),
                    s.hash()
                );
                done.push(s.uri());
            }
            _ => println!("unchanged  {}  {}: the log holds it already", path.display(), s.uri()),
        }
    }
    Ok(())
}
