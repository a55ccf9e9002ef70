//! A copy of the log's schema records in the data dir (`DATA_DIR/schemas.json`), for the
//! readers of the tables that cannot open the log: `sql`, `report` and `ddl` run beside a
//! `serve` that holds it. The projector writes it whenever the records it follows change,
//! before it makes or widens a table of theirs, so a reader always knows every registered
//! type's table the tables hold (as the catalogue's copies do for the store catalogue).
//! The log stays the record: the copy is derived, and written again when it differs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LogError, SchemaRecord};

/// The copy's file in the data dir.
pub const SCHEMA_COPIES_FILE: &str = "schemas.json";

#[derive(Serialize, Deserialize)]
struct Stored {
    from_offset: u64,
    hash: String,
    /// The canonical form (JSON text).
    schema: String,
    /// On a Kafka log: in force from these offsets of the events' partitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    from_partitions: Vec<u64>,
}

fn copy_err(path: &Path, reason: impl std::fmt::Display) -> LogError {
    LogError::SchemaCopies { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Writes the copy of `records` under `data_dir`, aside and renamed into place (synced);
/// nothing when it holds these already, or when there are none and no copy.
pub fn write_schema_copies(data_dir: &Path, records: &[SchemaRecord]) -> Result<(), LogError> {
    let path = data_dir.join(SCHEMA_COPIES_FILE);
    match read_schema_copies(data_dir) {
        Ok(have) if have == records && (path.is_file() || records.is_empty()) => return Ok(()),
        _ => {}
    }
    let stored: Vec<Stored> = records
        .iter()
        .map(|r| {
            let schema = String::from_utf8(r.content.clone()).map_err(|e| copy_err(&path, format!("schema {}: {e}", r.hash)))?;
            Ok(Stored { from_offset: r.from_offset, hash: r.hash.clone(), schema, from_partitions: r.from_partitions.clone() })
        })
        .collect::<Result<_, LogError>>()?;
    let json = serde_json::to_vec_pretty(&stored).map_err(|e| copy_err(&path, e))?;
    let tmp: PathBuf = data_dir.join(format!(".{SCHEMA_COPIES_FILE}.tmp"));
    let written = (|| -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    })();
    written.map_err(|e| copy_err(&path, e))
}

/// The schema records of the copy under `data_dir` (none when there is no copy).
pub fn read_schema_copies(data_dir: &Path) -> Result<Vec<SchemaRecord>, LogError> {
    let path = data_dir.join(SCHEMA_COPIES_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(copy_err(&path, e)),
    };
    let stored: Vec<Stored> = serde_json::from_slice(&bytes).map_err(|e| copy_err(&path, e))?;
    Ok(stored
        .into_iter()
        .map(|s| SchemaRecord {
            from_offset: s.from_offset,
            hash: s.hash,
            content: s.schema.into_bytes(),
            from_partitions: s.from_partitions,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_round_trip_and_are_not_rewritten_unchanged() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_schema_copies(d.path()).unwrap(), Vec::new());
        write_schema_copies(d.path(), &[]).unwrap();
        assert!(!d.path().join(SCHEMA_COPIES_FILE).exists(), "no records, no copy");
        let records =
            vec![SchemaRecord { from_offset: 7, hash: "h1".into(), content: br#"{"a":1}"#.to_vec(), from_partitions: Vec::new() }];
        write_schema_copies(d.path(), &records).unwrap();
        assert_eq!(read_schema_copies(d.path()).unwrap(), records);
        let modified = std::fs::metadata(d.path().join(SCHEMA_COPIES_FILE)).unwrap().modified().unwrap();
        write_schema_copies(d.path(), &records).unwrap();
        assert_eq!(std::fs::metadata(d.path().join(SCHEMA_COPIES_FILE)).unwrap().modified().unwrap(), modified);
        std::fs::write(d.path().join(SCHEMA_COPIES_FILE), b"not json").unwrap();
        assert!(matches!(read_schema_copies(d.path()), Err(LogError::SchemaCopies { .. })));
        write_schema_copies(d.path(), &records).unwrap();
        assert_eq!(read_schema_copies(d.path()).unwrap(), records, "a damaged copy is written again");
    }
}
