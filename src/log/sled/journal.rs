//! The sled log's journal: the writes of each group commit, appended to a file of our own
//! and synced before the group is acknowledged, so a commit costs one `write` and one
//! `fdatasync` instead of a flush of sled's store.
//!
//! Why: sled 0.34's flush seals its write buffer and hands it to a thread pool whose
//! queue wakes all seven idle threads (`notify_all`), then writes it with
//! `sync_file_range`; under one event per request (~1,700 group commits a second on two
//! cores) that pool took ~190 ms of CPU a second, most of it in `futex`, and the flush a
//! serial wait per group (benches/HISTORY.md, item 36). sled is flushed and synced in the
//! background instead, once the journal holds [`CHECKPOINT_BYTES`] or a second after the
//! last time (a *checkpoint*),
//! and the journal files that checkpoint covers are then deleted.
//!
//! Files: `LOG_DIR/journal/<sequence>` (20 decimal digits), written in order; the writer
//! appends to the newest only. A record is `len: u32 LE, crc32(len ‖ body): u32 LE, body`,
//! the body a version byte ([`RECORD_VERSION`]), an entry count (`u32 LE`) and the
//! entries, each `tree: u8, key: [u8; 8], value length: u32 LE, value`. A record is
//! written whole by one `write` and synced before its group is acknowledged; after a
//! failed write or sync the file is cut back to its last synced record and nothing more
//! is appended to it (the writer reopens the store, which replays and removes the
//! journal). So the only record that may be torn is the last of the newest file that
//! holds records, with nothing whole after it: the group being written when the process
//! or machine died.
//!
//! Records are written in place over zeros written ahead of them ([`ZERO_AHEAD_BYTES`]),
//! so the `fdatasync` of a small group writes its data only: an append that grows the file
//! makes the sync write the inode too, one more I/O for every group (on this project's
//! ext4 disks a 2 KB write and sync took 170–200 µs appended, 108–128 µs in place). A
//! replay reads the zeros after the last record as no record (a zero length is not one),
//! and a file is cut back to its last record before the next starts, so only the newest
//! can end in zeros.
//!
//! Invariants:
//! - A group is acknowledged only after its record is synced ([`Journal::commit`]).
//! - Opening the log replays every journal file into sled (idempotent: the same keys and
//!   values again), syncs sled, and only then deletes them.
//! - A file is deleted only after a sync of sled that began after its last record was
//!   inserted into sled.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Journal bytes after which the writer starts a checkpoint (it also starts one a second
/// after the last, see the sled log's `CHECKPOINT_INTERVAL_MS`): about 3 s of batched
/// ingest at 300,000 events a second. Bounds the journal's disk use (about twice this
/// while a checkpoint runs) and the replay at the next open (~0.3 s).
pub(crate) const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// Zeros written past the last record when a small group's record reaches the end of
/// the zeros before it: one inode write per MiB of small groups (about 500 groups of
/// one-event requests) instead of one per group. The zeros are written and synced with
/// that group's record. At most this much disk per journal file beyond its records.
const ZERO_AHEAD_BYTES: u64 = 1 << 20;

/// A record at least this long extends the file by itself, with no zeros after it: its
/// own sync writes several pages, so an inode write more costs it little, and zeros ahead
/// of batched ingest's groups (a request of 500 events is ~50 KB) would double the
/// journal's writes. One-event requests make groups of ~2–10 KB.
const SMALL_RECORD_BYTES: usize = 16 * 1024;

/// Format of a journal record's body; a reader refuses others.
const RECORD_VERSION: u8 = 1;

/// Bytes before a record's body: its length and CRC.
const RECORD_HEADER_BYTES: usize = 8;

/// A record's body is one group's writes, at most a group of `MAX_GROUP_RECORDS` events
/// with their rejected events and a catalogue; a length past this is a torn header.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// File numbers [`Journal::rotate`] tries past the current one before giving up (and
/// going on in the current file): only files left by failed rotations take them.
const ROTATE_TRIES: u64 = 8;

/// A record's CRC: over its length field and its body, so a zeroed header does not pass.
fn record_crc(len: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(body);
    h.finalize()
}

/// The shortest body: its version byte and entry count.
const MIN_BODY_BYTES: usize = 5;

/// The directory of the journal files, in the log's directory.
pub(crate) const JOURNAL_DIR: &str = "journal";

/// Which sled tree an entry goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tree {
    Blocks = 0,
    Rejected = 1,
    Catalogs = 2,
    Schemas = 3,
}

impl Tree {
    fn from_byte(b: u8) -> Option<Tree> {
        match b {
            0 => Some(Tree::Blocks),
            1 => Some(Tree::Rejected),
            2 => Some(Tree::Catalogs),
            3 => Some(Tree::Schemas),
            _ => None,
        }
    }
}

/// The journal file the writer appends to, and the record it is building.
pub(crate) struct Journal {
    dir: PathBuf,
    file: std::fs::File,
    sequence: u64,
    /// Bytes of synced records at the start of the current file.
    len: u64,
    /// The file's size: from `len` to here it holds zeros ([`ZERO_AHEAD_BYTES`]).
    zeroed_to: u64,
    record: Vec<u8>,
    entries: u32,
}

fn file_name(sequence: u64) -> String {
    format!("{sequence:020}")
}

/// The journal files in `dir`, oldest first. Names that are not journal files are left
/// alone (and not listed).
pub(crate) fn files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(sequence) = name.parse::<u64>() {
                out.push((sequence, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Journal {
    /// Starts a new, empty journal file numbered `sequence` in `dir` (created if need
    /// be), its directory entry synced.
    pub(crate) fn create(dir: &Path, sequence: u64) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file_name(sequence));
        let file = std::fs::OpenOptions::new().create_new(true).write(true).open(&path)?;
        let synced = sync_dir(dir).and_then(|()| dir.parent().map_or(Ok(()), sync_dir));
        if let Err(e) = synced {
            // Not left behind: appends go on in the older file.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Journal { dir: dir.to_path_buf(), file, sequence, len: 0, zeroed_to: 0, record: Vec::new(), entries: 0 })
    }

    /// The number of the file being appended to.
    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Bytes of synced records in the current file.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Starts the next group's record, dropping anything added since the last commit.
    pub(crate) fn begin(&mut self) {
        self.record.clear();
        self.record.resize(RECORD_HEADER_BYTES + MIN_BODY_BYTES, 0);
        self.entries = 0;
    }

    /// Adds one write of the group to its record.
    pub(crate) fn add(&mut self, tree: Tree, key: &[u8; 8], value: &[u8]) {
        debug_assert!(self.record.len() >= RECORD_HEADER_BYTES + MIN_BODY_BYTES, "begin() first");
        self.record.push(tree as u8);
        self.record.extend_from_slice(key);
        self.record.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.record.extend_from_slice(value);
        self.entries += 1;
    }

    /// Writes the group's record after the last one (one `write`, and a second of zeros
    /// ahead when a small record reaches the end of the zeros) and syncs it (`fdatasync`).
    /// On `Ok`, the group's writes survive a crash or power loss, as far as the disk
    /// honours `fdatasync`: opening the log replays them. On `Err`, the file may hold part
    /// or all of the record; append nothing more to it. A group without writes appends
    /// nothing.
    pub(crate) fn commit(&mut self) -> std::io::Result<()> {
        if self.entries == 0 {
            return Ok(());
        }
        let body_len = self.record.len() - RECORD_HEADER_BYTES;
        if body_len > MAX_RECORD_BYTES {
            return Err(std::io::Error::other(format!("a group of {body_len} bytes is over the journal's record limit")));
        }
        self.record[RECORD_HEADER_BYTES] = RECORD_VERSION;
        self.record[RECORD_HEADER_BYTES + 1..RECORD_HEADER_BYTES + 5].copy_from_slice(&self.entries.to_le_bytes());
        self.record[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        let crc = record_crc(&self.record[0..4], &self.record[RECORD_HEADER_BYTES..]);
        self.record[4..8].copy_from_slice(&crc.to_le_bytes());
        let end = self.len + self.record.len() as u64;
        let zero_ahead = end > self.zeroed_to && self.record.len() < SMALL_RECORD_BYTES;
        let written = self
            .file
            .write_all_at(&self.record, self.len)
            .and_then(|()| if zero_ahead { self.file.write_all_at(&vec![0; ZERO_AHEAD_BYTES as usize], end) } else { Ok(()) })
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Best effort: the record was not acknowledged, so it should not come back
            // at the next open (an error promises nothing either way).
            if self.file.set_len(self.len).is_ok() {
                let _ = self.file.sync_data();
            }
            self.zeroed_to = self.len;
            return Err(e);
        }
        self.len = end;
        self.zeroed_to = if zero_ahead { end + ZERO_AHEAD_BYTES } else { self.zeroed_to.max(end) };
        debug_assert!(self.len <= self.zeroed_to);
        Ok(())
    }

    /// Starts the next file and returns the number of the one it replaces, which holds
    /// only committed records. On `Err`, appends go on to the current file.
    pub(crate) fn rotate(&mut self) -> std::io::Result<u64> {
        // The file it replaces ends at its last record, so that in a replay only the newest
        // file can end in zeros: an older one that does lost records to damage, and a
        // newer file's records show it.
        if self.zeroed_to > self.len {
            if let Err(e) = self.file.set_len(self.len).and_then(|()| self.file.sync_data()) {
                // Appends go on here, writing zeros ahead again as they need them.
                self.zeroed_to = self.len;
                return Err(e);
            }
            self.zeroed_to = self.len;
        }
        // A number taken by a file a failed rotation could not remove is skipped.
        let mut next = Journal::create(&self.dir, self.sequence + 1);
        for skip in 2..=ROTATE_TRIES {
            match next {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => next = Journal::create(&self.dir, self.sequence + skip),
                _ => break,
            }
        }
        let next = next?;
        let done = self.sequence;
        *self = next;
        Ok(done)
    }
}

/// Deletes the journal files numbered up to `through` and syncs their directory.
pub(crate) fn remove_through(dir: &Path, through: u64) -> std::io::Result<()> {
    let mut removed = false;
    for (sequence, path) in files(dir)? {
        if sequence <= through {
            match std::fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// What [`replay`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    pub files: usize,
    pub records: u64,
    pub entries: u64,
    /// Bytes at the end of the newest file that are not a whole, checked record, up to
    /// its last byte that is not zero: the group being written when the process died,
    /// never acknowledged. (The zeros after the last record are written ahead on purpose.)
    pub torn_bytes: u64,
    /// The highest file number seen (0 when none).
    pub last_sequence: u64,
}

/// Why the journal cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error("reading the journal file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("journal file {path} is damaged at byte {at}: {reason}; records after it were acknowledged, so the log is not opened (restore the file from a copy; moving it aside gives those records up)")]
    Damaged { path: PathBuf, at: u64, reason: String },
    #[error(transparent)]
    Apply(#[from] crate::log::LogError),
}

/// Reads every record of every journal file in `dir`, oldest first, and hands each entry
/// to `apply`. Where the bytes stop being a record, the rest is the group being written
/// when the process or machine died (never acknowledged; skipped and counted in
/// [`Replayed::torn_bytes`]) unless a whole record follows somewhere after it, in this file
/// or a later one: then it is damage, and an error, since that record was acknowledged.
/// (A power loss can leave any part of an unsynced write on the disk, its header zeroed
/// and its tail present, so the only sure sign of damage is a good record after it.)
pub(crate) fn replay(
    dir: &Path,
    mut apply: impl FnMut(Tree, [u8; 8], &[u8]) -> Result<(), crate::log::LogError>,
) -> Result<Replayed, ReplayError> {
    let all = files(dir).map_err(|source| ReplayError::Io { path: dir.to_path_buf(), source })?;
    let mut out = Replayed { files: all.len(), ..Default::default() };
    for (i, (sequence, path)) in all.iter().enumerate() {
        out.last_sequence = *sequence;
        let Some(bytes) = read(path)? else { continue };
        let mut at = 0usize;
        while at < bytes.len() {
            match parse_record(&bytes[at..]) {
                Ok((body, used)) => {
                    for_each_entry(body, |tree, key, value| {
                        out.entries += 1;
                        apply(tree, key, value)
                    })
                    .map_err(|e| match e {
                        EntryError::Apply(e) => ReplayError::Apply(e),
                        EntryError::Format(reason) => ReplayError::Damaged { path: path.clone(), at: at as u64, reason },
                    })?;
                    out.records += 1;
                    at += used;
                }
                Err(reason) => {
                    if let Some(next) = (at + 1..bytes.len()).find(|&j| plausible_length(&bytes[j..]) && parse_record(&bytes[j..]).is_ok())
                    {
                        let reason = format!("{reason}, and a whole record at byte {next} after it");
                        return Err(ReplayError::Damaged { path: path.clone(), at: at as u64, reason });
                    }
                    if let Some(later) = later_file_with_records(&all[i + 1..])? {
                        let reason = format!("{reason}, and records in the newer file {} after it", later.display());
                        return Err(ReplayError::Damaged { path: path.clone(), at: at as u64, reason });
                    }
                    // Zeros at the end are the writer's zeros ahead (or a size that
                    // reached the disk before its data): not part of a torn group.
                    let end = bytes.iter().rposition(|&b| b != 0).map_or(at, |last| (last + 1).max(at));
                    out.torn_bytes += (end - at) as u64;
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// A journal file's bytes; `None` when it is gone (removed by a checkpoint that finished
/// meanwhile: sled holds its records).
fn read(path: &Path) -> Result<Option<Vec<u8>>, ReplayError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReplayError::Io { path: path.to_path_buf(), source }),
    }
}

/// The first of `files` that starts with a whole record (an empty file, or one holding
/// only a torn record, is what a rotation or a crash can leave; neither was acknowledged).
fn later_file_with_records(files: &[(u64, PathBuf)]) -> Result<Option<&Path>, ReplayError> {
    for (_, path) in files {
        if let Some(bytes) = read(path)? {
            if parse_record(&bytes).is_ok() {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

/// Whether `bytes` start with a length a record can have and its format byte: a quick
/// test (it spares a CRC over the rest of the file at most positions of a torn tail) before
/// [`parse_record`] when looking for a record at every byte of a file's tail (its zeros
/// ahead included).
fn plausible_length(bytes: &[u8]) -> bool {
    bytes.len() >= RECORD_HEADER_BYTES + MIN_BODY_BYTES
        && bytes[RECORD_HEADER_BYTES] == RECORD_VERSION
        && (MIN_BODY_BYTES..=MAX_RECORD_BYTES.min(bytes.len() - RECORD_HEADER_BYTES))
            .contains(&(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize))
}

/// One checked record at the start of `bytes`: (its body, bytes it takes), or why the
/// bytes there are not one.
fn parse_record(bytes: &[u8]) -> Result<(&[u8], usize), String> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(format!("{} bytes, shorter than a record header", bytes.len()));
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if !(MIN_BODY_BYTES..=MAX_RECORD_BYTES).contains(&len) {
        return Err(format!("a record length of {len} bytes"));
    }
    if bytes.len() - RECORD_HEADER_BYTES < len {
        return Err(format!("a record of {len} bytes where {} remain", bytes.len() - RECORD_HEADER_BYTES));
    }
    let body = &bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
    if record_crc(&bytes[0..4], body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok((body, RECORD_HEADER_BYTES + len))
}

enum EntryError {
    Format(String),
    Apply(crate::log::LogError),
}

fn for_each_entry(body: &[u8], mut apply: impl FnMut(Tree, [u8; 8], &[u8]) -> Result<(), crate::log::LogError>) -> Result<(), EntryError> {
    let format = |s: &str| EntryError::Format(s.to_string());
    if body.len() < MIN_BODY_BYTES {
        return Err(format("record body shorter than its header"));
    }
    if body[0] != RECORD_VERSION {
        return Err(EntryError::Format(format!("record format {} (this questlog reads {RECORD_VERSION})", body[0])));
    }
    let count = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);
    let mut rest = &body[5..];
    for _ in 0..count {
        if rest.len() < 13 {
            return Err(format("entry header cut short"));
        }
        let tree = Tree::from_byte(rest[0]).ok_or_else(|| EntryError::Format(format!("unknown tree {}", rest[0])))?;
        let key: [u8; 8] = rest[1..9].try_into().map_err(|_| format("entry key"))?;
        let len = u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize;
        if rest.len() - 13 < len {
            return Err(format("entry value cut short"));
        }
        apply(tree, key, &rest[13..13 + len]).map_err(EntryError::Apply)?;
        rest = &rest[13 + len..];
    }
    if !rest.is_empty() {
        return Err(EntryError::Format(format!("{} bytes after the record's last entry", rest.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(dir: &Path) -> Result<(Replayed, Vec<(Tree, u64, Vec<u8>)>), ReplayError> {
        let mut got = Vec::new();
        let r = replay(dir, |t, k, v| {
            got.push((t, u64::from_be_bytes(k), v.to_vec()));
            Ok(())
        })?;
        Ok((r, got))
    }

    fn group(j: &mut Journal, first: u64) {
        j.begin();
        j.add(Tree::Blocks, &first.to_be_bytes(), format!("block {first}").as_bytes());
        j.add(Tree::Rejected, &(first + 1).to_be_bytes(), b"");
        j.commit().unwrap();
    }

    #[test]
    fn committed_records_replay_in_order_across_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(JOURNAL_DIR);
        let mut j = Journal::create(&dir, 1).unwrap();
        group(&mut j, 10);
        // A group without writes appends nothing.
        j.begin();
        j.commit().unwrap();
        let len = j.len();
        // The file holds its records, then zeros written ahead.
        let bytes = std::fs::read(dir.join(file_name(1))).unwrap();
        assert_eq!(bytes.len() as u64, len + ZERO_AHEAD_BYTES);
        assert!(bytes[len as usize..].iter().all(|&b| b == 0));
        assert_eq!(j.rotate().unwrap(), 1);
        // The file it replaced ends at its last record.
        assert_eq!(std::fs::metadata(dir.join(file_name(1))).unwrap().len(), len);
        group(&mut j, 20);
        let (r, got) = collect(&dir).unwrap();
        assert_eq!((r.files, r.records, r.entries, r.torn_bytes, r.last_sequence), (2, 2, 4, 0, 2));
        let keys: Vec<(Tree, u64)> = got.iter().map(|(t, k, _)| (*t, *k)).collect();
        assert_eq!(keys, [(Tree::Blocks, 10), (Tree::Rejected, 11), (Tree::Blocks, 20), (Tree::Rejected, 21)]);
        assert_eq!(got[0].2, b"block 10");
        remove_through(&dir, 1).unwrap();
        assert_eq!(files(&dir).unwrap().iter().map(|f| f.0).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_torn_last_record_is_skipped_and_damage_before_newer_files_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(JOURNAL_DIR);
        let mut j = Journal::create(&dir, 1).unwrap();
        group(&mut j, 0);
        group(&mut j, 5);
        let path = dir.join(file_name(1));
        let mut whole = std::fs::read(&path).unwrap();
        // The zeros ahead are not torn bytes.
        assert_eq!(collect(&dir).unwrap().0, Replayed { files: 1, records: 2, entries: 4, torn_bytes: 0, last_sequence: 1 });
        whole.truncate(j.len() as usize);
        // Every cut of the second record leaves the first, and counts the rest as torn.
        let first_len = whole.len() / 2;
        for cut in first_len..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (r, got) = collect(&dir).unwrap();
            // Torn: the cut record's bytes up to its last one that is not zero.
            let torn = whole[first_len..cut].iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
            assert_eq!((r.records, r.torn_bytes), (1, torn as u64), "cut at {cut}");
            assert_eq!(got.len(), 2);
        }
        // A flipped byte in the last record: its CRC fails; it is skipped.
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(collect(&dir).unwrap().0.records, 1);
        // A zeroed tail (the file's size reached the disk, its data did not): skipped,
        // and not counted as torn, like the zeros ahead.
        let mut zeroed = whole.clone();
        zeroed.extend_from_slice(&[0; 64]);
        std::fs::write(&path, &zeroed).unwrap();
        assert_eq!(collect(&dir).unwrap().0, Replayed { files: 1, records: 2, entries: 4, torn_bytes: 0, last_sequence: 1 });
        // A torn group followed by zeros: its bytes up to the last non-zero one are torn.
        // (Cut where the zeros after it cannot complete it: its last non-zero byte goes.)
        let cut = whole.len() - 10;
        let mut torn = whole[..cut].to_vec();
        torn.extend_from_slice(&[0; 64]);
        std::fs::write(&path, &torn).unwrap();
        let last_nonzero = whole[..cut].iter().rposition(|&b| b != 0).unwrap();
        assert!(last_nonzero > first_len);
        let r = collect(&dir).unwrap().0;
        assert_eq!((r.records, r.torn_bytes), (1, (last_nonzero + 1 - first_len) as u64));
        // Damage with a record after it is refused, in the newest file too: that record
        // was acknowledged.
        let mut early = whole.clone();
        early[RECORD_HEADER_BYTES + 3] ^= 1;
        std::fs::write(&path, &early).unwrap();
        let err = collect(&dir).unwrap_err().to_string();
        assert!(err.contains("damaged at byte 0") && err.contains("checksum") && err.contains("a whole record at byte"), "{err}");
        // A length made too large by damage does not hide the records after it either.
        let mut long = whole.clone();
        long[2] = 0x7f;
        std::fs::write(&path, &long).unwrap();
        assert!(collect(&dir).unwrap_err().to_string().contains("damaged at byte 0"));
        // What a power loss can leave of an unsynced last write: its header zeroed, its
        // tail on the disk. Nothing whole follows, so it is the torn group.
        let mut holed = whole.clone();
        holed[first_len..first_len + RECORD_HEADER_BYTES + 2].fill(0);
        std::fs::write(&path, &holed).unwrap();
        assert_eq!(collect(&dir).unwrap().0.records, 1);
        // A torn tail with only an empty newer file after it (a rotation the crash cut
        // short) is still the unacknowledged tail.
        std::fs::write(&path, &flipped).unwrap();
        std::fs::File::create(dir.join(file_name(2))).unwrap();
        assert_eq!(collect(&dir).unwrap().0.records, 1);
        // With a record in the newer file, the same damage is refused.
        std::fs::remove_file(dir.join(file_name(2))).unwrap();
        let mut j2 = Journal::create(&dir, 2).unwrap();
        group(&mut j2, 10);
        let err = collect(&dir).unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains(&file_name(1)), "{err}");
    }

    #[test]
    fn a_rotation_skips_numbers_left_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(JOURNAL_DIR);
        let mut j = Journal::create(&dir, 1).unwrap();
        std::fs::File::create(dir.join(file_name(2))).unwrap();
        assert_eq!(j.rotate().unwrap(), 1);
        assert_eq!(j.sequence(), 3);
    }
}
