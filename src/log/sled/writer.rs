//! The sled log's writer thread: group commit (offsets, dedup, blocks encoded beside it,
//! one journal record synced per group), checkpoints of sled in the background, the
//! space reserve, and reopening the store after a storage failure. The only code that
//! writes the store (`Store`, readers and `SledLog` are in `mod.rs`).

use super::journal::{self, Journal};
use super::*;

/// How often the writer retries reopening the store after a storage failure when no
/// append asks it to. Short enough that `/healthz` turns `ok` within a second or two of
/// space returning; long enough that a dead disk costs nothing measurable.
const RECOVER_RETRY_INTERVAL_MS: u64 = 1_000;

/// How long one reopen attempt waits for readers to drop their handles on the old store
/// (sled locks its files, so the new store cannot open while one lives).
const REOPEN_WAIT_MS: u64 = 2_000;

/// The longest the writer goes between checkpoints while groups arrive, however little
/// the journal holds. sled frees and rewrites its segments on the strength of its own
/// flush (`sync_file_range`, no cache flush), so between syncs of sled a power loss on a
/// disk with a volatile write cache could take pages sled relocated since the last sync,
/// which no journal file holds any more. A sync of sled a second bounds that window to a
/// second (it was one group commit while sled was synced per group), for one background
/// sled flush and `fdatasync` a second.
const CHECKPOINT_INTERVAL_MS: u64 = 1_000;

/// The longest wait before another checkpoint after failures in a row (see
/// `Writer::checkpoint_backoff`): a minute of journal is at most what a minute of appends
/// writes, and the next open replays it.
const CHECKPOINT_BACKOFF_MAX_MS: u64 = 60_000;

/// How long a stopping writer waits for a checkpoint still running. A healthy one takes
/// what syncing up to [`journal::CHECKPOINT_BYTES`] takes, well under this; one stuck in
/// sled after a write error never ends, and then the next open replays the journal.
const FINISH_CHECKPOINT_MS: u64 = 30_000;

/// Most threads that encode a group's blocks, the writer's own included.
const MAX_ENCODE_THREADS: usize = 8;

/// A share of a group's blocks for a helper to encode (the group's records, and each
/// block's first offset and range of them), and where the bytes go.
type EncodeJob = (Arc<Vec<Record>>, Vec<(u64, Range<usize>)>, mpsc::SyncSender<Vec<(u64, Vec<u8>)>>);

/// Threads beside the log writer that encode a group's blocks (bincode, zstd, CRC; about
/// 1 ms per 1,000 records, most of the writer's work under bulk appends), one per core
/// but the writer's. They live as long as the writer: a thread started per group got
/// fresh memory from the allocator every time, which the kernel had to zero. The group's
/// records are shared with them, not copied into a buffer per block.
pub(super) struct Encoders {
    jobs: Vec<mpsc::SyncSender<EncodeJob>>,
    own: BlockEncoder,
}

impl Encoders {
    pub(super) fn start() -> Encoders {
        let helpers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_ENCODE_THREADS) - 1;
        let mut jobs = Vec::with_capacity(helpers);
        for i in 0..helpers {
            let (tx, rx) = mpsc::sync_channel::<EncodeJob>(1);
            let spawned = std::thread::Builder::new().name(format!("questlog-log-encode-{i}")).spawn(move || {
                let mut encoder = BlockEncoder::new();
                for (records, blocks, reply) in rx {
                    let encoded = blocks.into_iter().map(|(first, range)| (first, encoder.encode(&records[range]))).collect();
                    drop(records);
                    let _ = reply.send(encoded);
                }
            });
            // Without a helper the writer encodes everything itself.
            if spawned.is_ok() {
                jobs.push(tx);
            }
        }
        Encoders { jobs, own: BlockEncoder::new() }
    }

    /// Encodes `blocks` of `records`, in order: the first share on this thread, the
    /// others on the helpers at the same time; a group of one block (a small request)
    /// stays here.
    fn encode(&mut self, records: Vec<Record>, mut blocks: Vec<(u64, Range<usize>)>) -> Vec<(u64, Vec<u8>)> {
        let threads = (self.jobs.len() + 1).min(blocks.len()).max(1);
        let per_thread = blocks.len().div_ceil(threads);
        let mut rest = blocks.split_off(per_thread.min(blocks.len()));
        let records = Arc::new(records);
        let mut replies = Vec::with_capacity(threads - 1);
        for job in &self.jobs {
            if rest.is_empty() {
                break;
            }
            let later = rest.split_off(per_thread.min(rest.len()));
            let share = std::mem::replace(&mut rest, later);
            let (tx, rx) = mpsc::sync_channel(1);
            match job.send((records.clone(), share, tx)) {
                Ok(()) => replies.push(Ok(rx)),
                // The helper is gone: encode its share here.
                Err(mpsc::SendError((_, share, _))) => replies.push(Err(share)),
            }
        }
        let mut encoded: Vec<(u64, Vec<u8>)> = Vec::with_capacity(blocks.len() + rest.len() + per_thread * replies.len());
        for (first, range) in blocks {
            encoded.push((first, self.own.encode(&records[range])));
        }
        for reply in replies {
            let share = match reply {
                Ok(rx) => match rx.recv() {
                    Ok(bytes) => {
                        encoded.extend(bytes);
                        continue;
                    }
                    Err(_) => unreachable!("an encoder thread answers every job it takes"),
                },
                Err(share) => share,
            };
            for (first, range) in share {
                encoded.push((first, self.own.encode(&records[range])));
            }
        }
        for (first, range) in rest {
            encoded.push((first, self.own.encode(&records[range])));
        }
        encoded
    }
}

/// The writer thread: takes queued appends, gives offsets, writes blocks, flushes once
/// per group, answers every append of the group.
pub(super) struct Writer {
    pub(super) flush_watch: Arc<FlushWatch>,
    pub(super) epoch: Instant,
    pub(super) dir: PathBuf,
    pub(super) min_free_bytes: u64,
    /// The writer's handle on the store; `None` from a storage failure until reopened.
    pub(super) store: Option<Store>,
    /// The handle readers clone; the writer empties it while it reopens the store.
    pub(super) shared: SharedStore,
    /// The storage failure that latched the store (sled 0.34 fails every later operation
    /// after an I/O error), until [`Writer::recover`] reopens it.
    pub(super) failed: Option<Refusal>,
    pub(super) next_offset: u64,
    pub(super) next_rejected: u64,
    /// Catalogue records acknowledged, and the hash of the latest.
    pub(super) next_catalog: u64,
    pub(super) latest_catalog: Option<String>,
    /// Schema records acknowledged, and the hashes of all of them.
    pub(super) next_schema: u64,
    pub(super) schema_hashes: std::collections::HashSet<String>,
    pub(super) end_tx: watch::Sender<u64>,
    pub(super) counters: Arc<Counters>,
    pub(super) dedup: Dedup,
    /// Whether `dedup` holds the log's tail yet.
    pub(super) refilled: bool,
    /// The failed store could not be released: only a restart recovers.
    pub(super) stuck: bool,
    /// sled's blob files already synced (see [`Store::sync`]); shared with the checkpoint
    /// thread, the one that syncs sled while the writer runs.
    pub(super) blobs_seen: Arc<Mutex<BlobsSeen>>,
    pub(super) encoders: Encoders,
    /// The journal file group commits append to; `None` from a failed append until the
    /// store is reopened (nothing more is appended to a file after a failure).
    pub(super) journal: Option<Journal>,
    /// The checkpoint running in the background, if any (see [`Writer::maybe_checkpoint`]).
    pub(super) checkpoint: Option<JoinHandle<Result<(), LogError>>>,
    pub(super) checkpoint_bytes: u64,
    /// When the last checkpoint started (see [`CHECKPOINT_INTERVAL_MS`]).
    pub(super) last_checkpoint: Instant,
    /// Checkpoints failed (or not started) in a row, and when the next may start.
    pub(super) checkpoint_failures: u32,
    pub(super) checkpoint_not_before: Instant,
}

/// The recent `event_id`s, as 128-bit hashes, in two generations: `current` takes new
/// ids; once it holds [`DEDUP_WINDOW_EVENTS`], it becomes `previous` and the old
/// `previous` is dropped. So the window always holds at least the last
/// [`DEDUP_WINDOW_EVENTS`] ids (and at most twice as many).
///
/// One set with a queue of ids in order, trimmed one id at a time, left tombstones in the
/// table until it doubled to 2^22 buckets, and its resizes briefly held both tables: 92 MB
/// of the server's peak heap under batched ingest (heaptrack), against two tables of 2^21
/// buckets here (~34 MiB each, reserved once, never resized) and no queue
/// (benches/HISTORY.md, item 32).
pub(super) struct Dedup {
    /// The keys are already hashes; foldhash (seeded per process, so still not
    /// predictable from outside) hashes them again for the table in a few instructions,
    /// where the default SipHash took ~5% of the writer thread under batched ingest.
    current: std::collections::HashSet<u128, foldhash::fast::RandomState>,
    previous: std::collections::HashSet<u128, foldhash::fast::RandomState>,
    /// Ids per generation: [`DEDUP_WINDOW_EVENTS`] (smaller in tests).
    window: usize,
}

impl Dedup {
    pub(super) fn new() -> Dedup {
        Dedup::with_window(DEDUP_WINDOW_EVENTS)
    }

    pub(super) fn with_window(window: usize) -> Dedup {
        Dedup { current: Dedup::generation(window), previous: Default::default(), window }
    }

    /// Room for a full window plus the group that fills it, since generations turn only
    /// between groups ([`Dedup::trim`]), so that a failed group's ids are all in `current`
    /// to be forgotten. (One append larger than a group may still grow it.)
    fn generation(window: usize) -> std::collections::HashSet<u128, foldhash::fast::RandomState> {
        std::collections::HashSet::with_capacity_and_hasher(window + MAX_GROUP_RECORDS, Default::default())
    }

    /// See [`super::event_id_key`].
    pub(super) fn key(app: Option<&str>, event_id: &str) -> u128 {
        super::event_id_key(app, event_id)
    }

    /// Remembers `k`; false if it was already there.
    pub(super) fn insert(&mut self, k: u128) -> bool {
        !self.previous.contains(&k) && self.current.insert(k)
    }

    /// Takes back an id [`Dedup::insert`] took since the last [`Dedup::trim`].
    pub(super) fn forget(&mut self, k: u128) {
        self.current.remove(&k);
    }

    /// Turns the generations once `current` is full; between groups only.
    pub(super) fn trim(&mut self) {
        if self.current.len() >= self.window {
            // The oldest is dropped here, before the next is reserved: at most two are held.
            self.previous = std::mem::take(&mut self.current);
            self.current = Dedup::generation(self.window);
        }
    }
}

/// Why a group cannot be written: the error each of its appends gets.
#[derive(Clone)]
pub(super) struct Refusal {
    no_space: bool,
    message: String,
}

impl Refusal {
    fn error(&self) -> LogError {
        if self.no_space {
            LogError::NoSpace(self.message.clone())
        } else {
            LogError::Flush(self.message.clone())
        }
    }
}

/// `syncfs` of the filesystem holding `dir`: writes back every dirty page there. Best
/// effort: the log's own syncs are what make its data durable. (Not in the fuzz crate,
/// which compiles this file without `libc`.)
fn sync_filesystem(dir: &Path) {
    #[cfg(not(all(target_os = "linux", not(fuzzing))))]
    let _ = dir;
    #[cfg(all(target_os = "linux", not(fuzzing)))]
    if let Ok(d) = std::fs::File::open(dir) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: syncfs takes a descriptor this function owns; it reads no memory of ours.
        let _ = unsafe { libc::syncfs(d.as_raw_fd()) };
    }
}

impl Writer {
    /// Fills the dedup window from the last [`DEDUP_WINDOW_EVENTS`] records.
    fn refill_dedup(&mut self) -> Result<(), LogError> {
        let store = self.store.as_ref().ok_or_else(|| LogError::Recovering("store not open".into()))?;
        let end = self.next_offset;
        let reader = TreeReader { blocks: store.blocks.clone(), end };
        let mut ids = Vec::new();
        for_each_prefetched(reader.read(end.saturating_sub(DEDUP_WINDOW_EVENTS as u64), end)?, |_, r| -> Result<(), LogError> {
            if let Some(id) = &r.event.event_id {
                ids.push(Dedup::key(r.meta.app.as_deref(), id));
            }
            Ok(())
        })?;
        for k in ids {
            self.dedup.insert(k);
        }
        self.dedup.trim();
        Ok(())
    }

    /// Marks the store failed (appends refused until `recover` reopens it) and says why.
    fn fail(&mut self, no_space: bool, why: String) {
        self.counters.set_unwritable(Some(why.clone()));
        self.failed = Some(Refusal { no_space, message: why });
    }

    /// `Err` with the reason when the log's filesystem has less than the reserve free.
    fn check_space(&self) -> Result<(), String> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        match fs2::available_space(&self.dir) {
            Ok(free) if free < self.min_free_bytes => Err(format!(
                "{free} bytes free on the filesystem of {}, under the reserve of {} bytes; appends resume by themselves once it has that much free",
                self.dir.display(),
                self.min_free_bytes
            )),
            // A filesystem that cannot say leaves the decision to the write itself.
            _ => Ok(()),
        }
    }

    /// Whether the next group may be written; on `Err`, what its appends are told.
    fn ready(&mut self) -> Result<(), Refusal> {
        if self.failed.is_some() {
            self.recover();
        }
        if let Some(failed) = &self.failed {
            let no_space = failed.no_space || self.check_space().is_err();
            return Err(Refusal { no_space, message: failed.message.clone() });
        }
        if let Err(why) = self.check_space() {
            self.counters.set_unwritable(Some(format!("disk full: {why}")));
            return Err(Refusal { no_space: true, message: why });
        }
        if !self.refilled {
            let started = Instant::now();
            // Write back what is dirty on the log's filesystem first (another process's
            // files: a `project` that just ran, a copy): the first group commits would
            // otherwise queue behind that writeback, for seconds on a large store.
            sync_filesystem(&self.dir);
            if let Err(e) = self.refill_dedup() {
                // Without the window, duplicates could land: refuse to append, and say so
                // (the next append tries again).
                tracing::error!(error = %e, "cannot read the log's tail to refill the dedup window");
                let message = format!("cannot read the log's tail to refill the dedup window: {e}");
                self.counters.set_unwritable(Some(message.clone()));
                return Err(Refusal { no_space: false, message });
            }
            self.refilled = true;
            self.counters.refilled.store(true, Ordering::Release);
            if self.counters.is_unwritable() {
                self.counters.set_unwritable(None);
            }
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "dedup window refilled from the log's tail");
        }
        Ok(())
    }

    /// After a storage failure: once the reserve is free again, drops every handle on the
    /// failed store, reopens it (sled recovers what reached the disk), removes what the
    /// failed group left there ([`Writer::drop_unacknowledged`]) and carries on from the
    /// last acknowledged offset; a client's retry of the failed group is then new to the log.
    fn recover(&mut self) {
        if self.stuck {
            return;
        }
        // Keep the failed store (for readers) until there is room: sled 0.34 dropped or
        // opened on a full disk can leave a corrupt snapshot behind (seen in
        // tests/disk_full.rs), so this waits for room even with the reserve off.
        let free = fs2::available_space(&self.dir).unwrap_or(u64::MAX);
        let needed = self.min_free_bytes.max(REOPEN_MIN_FREE_BYTES);
        if free < needed {
            self.counters.set_unwritable(Some(format!(
                "disk full: {free} bytes free on the filesystem of {}, {needed} needed to reopen the log's storage; appends resume by themselves once it has that much free",
                self.dir.display()
            )));
            return;
        }
        tracing::info!(path = %self.dir.display(), "reopening the log's storage after a failure");
        // Readers get `Recovering` until the new store is in place. Dropping sled's last
        // handle flushes, and after a write error that flush can wait for good (sled
        // 0.34): drop on a thread of its own, and give up on reopening if it never ends.
        let old = (self.shared.write().unwrap_or_else(|p| p.into_inner()).take(), self.store.take());
        self.journal = None;
        // A checkpoint still running holds the old store; the reopen below waits for it
        // like for a reader (and a failed one leaves its journal files to the replay).
        if self.checkpoint.as_ref().is_some_and(|h| h.is_finished()) {
            let _ = self.checkpoint.take().map(|h| h.join());
        }
        self.checkpoint = None;
        let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new().name("questlog-log-reaper".into()).spawn(move || {
            drop(old);
            let _ = dropped_tx.send(());
        });
        if spawned.is_err() || dropped_rx.recv_timeout(Duration::from_millis(REOPEN_WAIT_MS)).is_err() {
            let why = "the log's storage is stuck after an I/O error (sled cannot release it); restart `questlog serve` (acknowledged events are safe on disk)".to_string();
            tracing::error!(path = %self.dir.display(), "{why}");
            self.stuck = true;
            self.fail(false, why);
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(REOPEN_WAIT_MS);
        let opened = loop {
            match Store::open_and_replay(&self.dir).and_then(|(s, sequence)| s.ends().map(|ends| (s, sequence, ends))) {
                // A reader still holds the old store (sled locks its files): wait for it.
                Err(LogError::Locked { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                other => break other,
            }
        };
        let opened = opened.and_then(|(store, sequence, ends)| {
            let ends = self.drop_unacknowledged(&store, ends)?;
            let journal = Journal::create(&self.dir.join(journal::JOURNAL_DIR), sequence).map_err(io_error)?;
            Ok((store, journal, ends))
        });
        match opened {
            Ok((store, journal, (end, next_rejected))) => {
                self.journal = Some(journal);
                self.next_offset = end;
                self.next_rejected = next_rejected;
                self.counters.rejected_total.store(next_rejected, Ordering::Relaxed);
                self.dedup = Dedup::new();
                self.refilled = false;
                self.counters.refilled.store(false, Ordering::Release);
                *self.shared.write().unwrap_or_else(|p| p.into_inner()) = Some(store.clone());
                self.store = Some(store);
                self.end_tx.send_replace(end);
                self.failed = None;
                self.counters.set_unwritable(None);
                self.counters.reopens_total.fetch_add(1, Ordering::Relaxed);
                tracing::info!(durable_end = end, "log storage reopened; appends resume");
            }
            Err(LogError::Locked { .. }) => {
                let why = "reopening the log's storage: it is still in use (a long read, or sled stuck after the I/O error); if this lasts, restart `questlog serve` (acknowledged events are safe on disk)".to_string();
                tracing::warn!("{why}");
                self.fail(false, why);
            }
            Err(e) => {
                let why = format!("reopening the log's storage: {e}");
                tracing::warn!(error = %e, "cannot reopen the log's storage yet");
                self.fail(e.is_no_space(), why);
            }
        }
    }

    /// After a reopen: removes what the store holds past the last acknowledged group (the
    /// failed group's records, which may have reached the disk although their flush
    /// failed) and makes the removal durable, so that the log holds exactly what was
    /// acknowledged and readers and the projector never see a record whose append
    /// answered `Err`. Returns the store's ends afterwards.
    fn drop_unacknowledged(&self, store: &Store, (end, next_rejected): (u64, u64)) -> Result<(u64, u64), LogError> {
        let (acked, acked_rejected) = (self.next_offset, self.next_rejected);
        let mut removed_catalogs = false;
        for kv in store.catalogs.range(block_key(self.next_catalog)..) {
            store.catalogs.remove(kv?.0)?;
            removed_catalogs = true;
        }
        for kv in store.schemas.range(block_key(self.next_schema)..) {
            store.schemas.remove(kv?.0)?;
            removed_catalogs = true;
        }
        if removed_catalogs {
            tracing::warn!("a catalogue or schema record of a failed, unacknowledged group reached the disk; removed it");
            store.sync(&mut Default::default(), &self.counters.fsync_nanos_total)?;
        }
        if end < acked || next_rejected < acked_rejected {
            // fsync said these were on disk; say so loudly rather than carry on quietly.
            tracing::error!(acknowledged_end = acked, stored_end = end, "the reopened log holds less than was acknowledged");
            return Ok((end, next_rejected));
        }
        if end == acked && next_rejected == acked_rejected {
            return Ok((end, next_rejected));
        }
        tracing::warn!(
            acknowledged_end = acked,
            stored_end = end,
            "records of a failed, unacknowledged group reached the disk; removing them"
        );
        for kv in store.blocks.range(block_key(acked)..) {
            store.blocks.remove(kv?.0)?;
        }
        for kv in store.rejected.range(block_key(acked_rejected)..) {
            store.rejected.remove(kv?.0)?;
        }
        store.sync(&mut Default::default(), &self.counters.fsync_nanos_total)?;
        let ends = store.ends()?;
        if ends != (acked, acked_rejected) {
            return Err(LogError::Corrupt {
                offset: ends.0,
                reason: format!("after removing the unacknowledged tail the log ends at {ends:?}, expected ({acked}, {acked_rejected})"),
            });
        }
        Ok(ends)
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = if self.counters.is_unwritable() {
                // Look again on a timer too, so the log heals (and `/healthz` says so)
                // without waiting for traffic.
                match rx.recv_timeout(Duration::from_millis(RECOVER_RETRY_INTERVAL_MS)) {
                    Ok(req) => req,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if self.failed.is_some() {
                            self.recover();
                        } else if self.check_space().is_ok() {
                            self.counters.set_unwritable(None);
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(req) => req,
                    Err(_) => break,
                }
            };
            let mut group = vec![first];
            let mut records = group[0].batch.records.len();
            while records < MAX_GROUP_RECORDS {
                match rx.try_recv() {
                    Ok(req) => {
                        records += req.batch.records.len();
                        group.push(req);
                    }
                    Err(_) => break,
                }
            }
            match self.ready() {
                Ok(()) => self.commit(group),
                Err(refusal) => {
                    self.counters.flush_errors_total.fetch_add(1, Ordering::Relaxed);
                    for req in group {
                        let _ = req.reply.send(Err(refusal.error()));
                    }
                }
            }
        }
        self.finish();
        tracing::debug!("log writer stopped");
    }

    /// Starts a checkpoint once the journal file holds [`LogOptions::checkpoint_bytes`], or
    /// anything at all [`CHECKPOINT_INTERVAL_MS`] after the last one started, and none is
    /// running: appends go on in a new journal file while a thread of its own
    /// syncs sled (everything inserted so far, the old file's groups with it) and then
    /// removes the old file. A failed checkpoint leaves its files for the next one, or the
    /// next open, to cover.
    fn maybe_checkpoint(&mut self) {
        if self.checkpoint.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        if let Some(done) = self.checkpoint.take() {
            // A failed sync may have lost sled's writes for good (a second fsync can
            // report success for pages the first one dropped), so no later checkpoint may
            // remove the journal files behind them: the store is reopened, which replays
            // the journal into sled and syncs it again.
            let failed = match done.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some((e.is_no_space(), format!("a checkpoint of the log failed: {e}"))),
                Err(_) => Some((false, "the log's checkpoint thread panicked".to_string())),
            };
            if let Some((no_space, why)) = failed {
                tracing::error!(reason = %why, "reopening the log's storage; the journal keeps every acknowledged group");
                self.checkpoint_backoff();
                self.fail(no_space, why);
                return;
            }
            self.checkpoint_failures = 0;
        }
        if Instant::now() < self.checkpoint_not_before {
            return;
        }
        let (Some(journal), Some(store)) = (self.journal.as_mut(), self.store.clone()) else { return };
        let due = journal.len() >= self.checkpoint_bytes
            || (journal.len() > 0 && self.last_checkpoint.elapsed() >= Duration::from_millis(CHECKPOINT_INTERVAL_MS));
        if !due {
            return;
        }
        let through = match journal.rotate() {
            Ok(through) => through,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a new journal file; appends go on in the current one");
                self.checkpoint_backoff();
                return;
            }
        };
        let dir = self.dir.join(journal::JOURNAL_DIR);
        let blobs_seen = self.blobs_seen.clone();
        let (watch, epoch) = (self.flush_watch.clone(), self.epoch);
        let spawned = std::thread::Builder::new().name("questlog-log-checkpoint".into()).spawn(move || {
            let started = Instant::now();
            let mut blobs_seen = blobs_seen.lock().unwrap_or_else(|p| p.into_inner());
            watch.watch_checkpoint(epoch, || store.sync(&mut blobs_seen, &AtomicU64::new(0)))?;
            // `return` fails every log's checkpoint; `return(DIR)` only that of the log in DIR
            // (tests that share a process).
            let failpoint = fail::eval("log.checkpoint", |only| only.is_none_or(|only| Path::new(&only) == store.dir));
            if failpoint == Some(true) {
                return Err(io_error(std::io::Error::other("failpoint log.checkpoint")));
            }
            journal::remove_through(&dir, through).map_err(io_error)?;
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), through, "log checkpoint done");
            Ok(())
        });
        self.last_checkpoint = Instant::now();
        match spawned {
            Ok(handle) => self.checkpoint = Some(handle),
            Err(e) => tracing::warn!(error = %e, "cannot start a checkpoint thread; the journal files stay until the next one"),
        }
    }

    /// After a checkpoint failed or could not start: the next waits 1 s, doubling with each
    /// failure in a row up to [`CHECKPOINT_BACKOFF_MAX_MS`], so a disk that keeps failing
    /// does not cost a reopen (readers told `Recovering`, the dedup window refilled) every
    /// second. The journal keeps every group meanwhile.
    fn checkpoint_backoff(&mut self) {
        self.checkpoint_failures = self.checkpoint_failures.saturating_add(1);
        let wait_ms = (CHECKPOINT_INTERVAL_MS << self.checkpoint_failures.min(16)).min(CHECKPOINT_BACKOFF_MAX_MS);
        self.checkpoint_not_before = Instant::now() + Duration::from_millis(wait_ms);
    }

    /// When the writer stops: waits for a running checkpoint (up to [`FINISH_CHECKPOINT_MS`];
    /// one stuck in sled after a write error is kicked by the watchdog, which runs until the
    /// writer is joined), then, unless it failed, on a healthy
    /// store, syncs sled and removes the journal, so a clean stop leaves nothing to replay.
    /// Whatever this cannot do, the next open replays.
    fn finish(&mut self) {
        if let Some(running) = self.checkpoint.take() {
            let deadline = Instant::now() + Duration::from_millis(FINISH_CHECKPOINT_MS);
            while !running.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !running.is_finished() {
                tracing::warn!("a checkpoint of the log did not end; the next open replays the journal");
                return;
            }
            if !matches!(running.join(), Ok(Ok(()))) {
                tracing::warn!("a checkpoint of the log failed; the next open replays the journal");
                return;
            }
        }
        if self.failed.is_some() || self.counters.is_unwritable() {
            return;
        }
        let (Some(store), Some(journal)) = (&self.store, &self.journal) else { return };
        let mut blobs_seen = self.blobs_seen.lock().unwrap_or_else(|p| p.into_inner());
        let synced = self
            .flush_watch
            .watch_checkpoint(self.epoch, || store.sync(&mut blobs_seen, &AtomicU64::new(0)))
            .and_then(|()| journal::remove_through(&self.dir.join(journal::JOURNAL_DIR), journal.sequence()).map_err(io_error));
        if let Err(e) = synced {
            tracing::warn!(error = %e, "cannot checkpoint the log at shutdown; the next open replays its journal");
        }
    }

    fn commit(&mut self, group: Vec<Request>) {
        let (Some(store), Some(mut journal)) = (self.store.clone(), self.journal.take()) else {
            for req in group {
                let _ = req.reply.send(Err(LogError::Recovering("store not open".into())));
            }
            return;
        };
        journal.begin();
        let started = Instant::now();
        let base = self.next_offset;
        let base_rejected = self.next_rejected;
        let mut offset = base;
        let mut rejected_seq = base_rejected;
        let mut ranges = Vec::with_capacity(group.len());
        // The group's records in offset order, and its blocks as ranges of them.
        let mut kept: Vec<Record> = Vec::with_capacity(group.iter().map(|r| r.batch.records.len()).sum());
        let mut block_start = 0usize;
        let mut block_keys = Vec::new();
        let mut rejected_keys = Vec::new();
        let mut catalog_seq = self.next_catalog;
        let mut latest_catalog = self.latest_catalog.clone();
        let mut catalog_keys = Vec::new();
        let mut schema_seq = self.next_schema;
        let mut new_schemas: Vec<String> = Vec::new();
        let mut schema_keys = Vec::new();
        let mut result: Result<(), LogError> = Ok(());
        // Blocks are cut here and encoded together after the loop, on several threads
        // when there are several (see `encode_blocks`).
        let mut blocks: Vec<(u64, Range<usize>)> = Vec::new();
        let mut reply_to = Vec::with_capacity(group.len());
        let mut remembered: Vec<u128> = Vec::new();
        let mut duplicates_of = Vec::with_capacity(group.len());
        for req in group {
            let first_of_request = offset;
            let mut duplicates = Vec::new();
            match req.meta {
                // In force from here; the same catalogue again is no change.
                Some(Meta::Catalog(hash, content)) if latest_catalog.as_deref() != Some(hash.as_str()) && result.is_ok() => {
                    let rec = CatalogRecord { from_offset: offset, hash: hash.clone(), content, from_partitions: Vec::new() };
                    let bytes = encode_block(std::slice::from_ref(&rec));
                    journal.add(journal::Tree::Catalogs, &block_key(catalog_seq), &bytes);
                    result = store.catalogs.insert(block_key(catalog_seq), bytes).map(|_| ()).map_err(Into::into);
                    catalog_keys.push(catalog_seq);
                    catalog_seq += 1;
                    latest_catalog = Some(hash);
                }
                // In force from here, beside the others; a schema the log holds is no change.
                Some(Meta::Schema(hash, content))
                    if !self.schema_hashes.contains(&hash) && !new_schemas.contains(&hash) && result.is_ok() =>
                {
                    let rec = SchemaRecord { from_offset: offset, hash: hash.clone(), content, from_partitions: Vec::new() };
                    let bytes = encode_block(std::slice::from_ref(&rec));
                    journal.add(journal::Tree::Schemas, &block_key(schema_seq), &bytes);
                    result = store.schemas.insert(block_key(schema_seq), bytes).map(|_| ()).map_err(Into::into);
                    schema_keys.push(schema_seq);
                    schema_seq += 1;
                    new_schemas.push(hash);
                }
                _ => {}
            }
            for (i, r) in req.batch.records.into_iter().enumerate() {
                if let Some(id) = &r.event.event_id {
                    let k = Dedup::key(r.meta.app.as_deref(), id);
                    if !self.dedup.insert(k) {
                        duplicates.push(i as u32);
                        continue;
                    }
                    remembered.push(k);
                }
                kept.push(r);
                offset += 1;
                if kept.len() - block_start == MAX_BLOCK_RECORDS {
                    blocks.push((offset - MAX_BLOCK_RECORDS as u64, block_start..kept.len()));
                    block_start = kept.len();
                }
            }
            ranges.push(first_of_request..offset);
            duplicates_of.push(duplicates);
            // A request's rejected events go into blocks of their own (of at most
            // MAX_BLOCK_RECORDS), keyed by the first one's sequence number: one entry and
            // one compressed payload for a batch's worth, its headers repeated only inside it.
            for part in req.batch.rejected.chunks(MAX_BLOCK_RECORDS) {
                if result.is_ok() {
                    let bytes = encode_block(part);
                    journal.add(journal::Tree::Rejected, &block_key(rejected_seq), &bytes);
                    result = store.rejected.insert(block_key(rejected_seq), bytes).map(|_| ()).map_err(Into::into);
                    rejected_keys.push(rejected_seq);
                }
                rejected_seq += part.len() as u64;
            }
            reply_to.push(req.reply);
        }
        if kept.len() > block_start {
            blocks.push((offset - (kept.len() - block_start) as u64, block_start..kept.len()));
        }
        if result.is_ok() {
            let encoded = self.encoders.encode(kept, blocks);
            for (first, bytes) in encoded {
                journal.add(journal::Tree::Blocks, &block_key(first), &bytes);
                if let Err(e) = store.blocks.insert(block_key(first), bytes) {
                    result = Err(e.into());
                    break;
                }
                block_keys.push(first);
                if let Err(e) = touch(&store.blocks, &block_key(first), SLED_WRITE_TOUCHES) {
                    result = Err(e.into());
                    break;
                }
            }
        }
        let total = offset - base;
        if result.is_ok() && (total > 0 || rejected_seq > base_rejected || !catalog_keys.is_empty() || !schema_keys.is_empty()) {
            self.flush_watch.started_ms.store(self.epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
            // The group's record in the journal, synced: the group survives a crash from
            // here (sled holds it in memory until the next checkpoint).
            let syncing = Instant::now();
            result = journal.commit().map_err(io_error);
            self.counters.fsync_nanos_total.fetch_add(syncing.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if result.is_ok() && fail::eval("log.after_sync", |_| ()).is_some() {
                // Crash tests: the group is on disk, but its appends are told it failed.
                result = Err(io_error(std::io::Error::other("failpoint log.after_sync")));
            }
            self.flush_watch.started_ms.store(0, Ordering::SeqCst);
        }
        let c = &self.counters;
        match result {
            Ok(()) => {
                self.next_offset = offset;
                self.next_rejected = rejected_seq;
                self.next_catalog = catalog_seq;
                self.latest_catalog = latest_catalog;
                c.catalogs_total.store(catalog_seq, Ordering::Release);
                self.next_schema = schema_seq;
                self.schema_hashes.extend(new_schemas);
                c.schemas_total.store(schema_seq, Ordering::Release);
                c.flushes_total.fetch_add(1, Ordering::Relaxed);
                c.flushed_records_total.fetch_add(total, Ordering::Relaxed);
                let bucket = FLUSH_BATCH_BUCKETS.iter().position(|&b| total <= b).unwrap_or(FLUSH_BATCH_BUCKETS.len() - 1);
                c.flush_batch_buckets[bucket].fetch_add(1, Ordering::Relaxed);
                c.flush_nanos_total.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                c.rejected_total.store(rejected_seq, Ordering::Relaxed);
                if c.is_unwritable() {
                    c.set_unwritable(None);
                }
                self.end_tx.send_replace(offset);
                self.dedup.trim();
                for ((reply, range), duplicates) in reply_to.into_iter().zip(ranges).zip(duplicates_of) {
                    let _ = reply.send(Ok(Appended { offsets: range, positions: Vec::new(), duplicates }));
                }
                self.journal = Some(journal);
                self.maybe_checkpoint();
            }
            Err(e) => {
                c.flush_errors_total.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, first_offset = base, records = total, "log append failed; nothing of the group acknowledged");
                // Take back what this group wrote so the offsets stay dense for the next
                // one, and forget its ids so a retry is not taken for a duplicate.
                for k in remembered.into_iter().rev() {
                    self.dedup.forget(k);
                }
                // After a storage error sled 0.34 fails every later operation, and a flush
                // can block for good waiting on the write that failed: leave the store
                // alone; `recover` reopens it and takes whatever reached the disk.
                if !matches!(e, LogError::Storage(_)) {
                    // Nothing of the group reached the journal (its append is the last
                    // step, and fails as `Storage`): appends go on in the same file.
                    self.journal = Some(journal);
                    for k in block_keys {
                        let _ = store.blocks.remove(block_key(k));
                    }
                    for k in rejected_keys {
                        let _ = store.rejected.remove(block_key(k));
                    }
                    for k in catalog_keys {
                        let _ = store.catalogs.remove(block_key(k));
                    }
                    for k in schema_keys {
                        let _ = store.schemas.remove(block_key(k));
                    }
                    let _ = store.db.flush();
                }
                let no_space = e.is_no_space();
                let msg = match &e {
                    LogError::Flush(m) => m.clone(),
                    other => other.to_string(),
                };
                for reply in reply_to {
                    let err = if no_space { LogError::NoSpace(msg.clone()) } else { LogError::Flush(msg.clone()) };
                    let _ = reply.send(Err(err));
                }
                if matches!(e, LogError::Storage(_)) {
                    // sled keeps failing after an I/O error: reopen before the next group.
                    let why = if no_space { format!("disk full: {msg}") } else { format!("storage failed: {msg}") };
                    self.fail(no_space, why);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window remembers at least its last `window` ids, forgets older ones, and its
    /// tables never grow past the room reserved for them: with the generations never
    /// turned (the bound lifted), the table resizes and this fails.
    #[test]
    fn the_dedup_window_keeps_its_last_ids_within_two_generations() {
        let window = 10_000;
        let mut d = Dedup::with_window(window);
        let reserved = d.current.capacity();
        let group = 1_000u128;
        for g in 0..50u128 {
            for i in 0..group {
                assert!(d.insert(g * group + i), "a new id is new");
            }
            // The same group again (a client's retry) is all duplicates.
            assert!((0..group).all(|i| !d.insert(g * group + i)));
            d.trim();
            assert!(d.current.capacity() <= reserved && d.previous.capacity() <= reserved, "a generation grew past its room");
            assert!(d.current.len() + d.previous.len() <= 2 * window);
        }
        let last = 50 * group;
        assert!((last - window as u128..last).all(|k| !d.insert(k)), "one of the last {window} ids was forgotten");
        assert!(d.insert(0), "the oldest ids are forgotten");
        // A failed group's ids are taken back.
        let mut d = Dedup::with_window(window);
        assert!(d.insert(7));
        d.forget(7);
        assert!(d.insert(7));
    }
}
