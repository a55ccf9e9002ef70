//! `serve`'s projector: steps in the background at a low priority as the log grows,
//! catches a step's panic and reopens from the published tables, backs off after
//! failures, and keeps its figures ([`ProjectionStats`]) for `/healthz` and `/metrics`.

use std::sync::Arc;

use indicatif::ProgressBar;

use super::{ProjectError, Projector};
use crate::log::EventLog;

/// After a step failed for lack of space, the projector retries as soon as the free space
/// has grown by this much, instead of sitting out its backoff.
const SPACE_REGAINED_BYTES: u64 = 4 * 1024 * 1024;

/// Nice value of the continuous projector's thread, and of the decode and Parquet writer
/// threads it starts (Linux threads inherit it). Ingest answers clients that wait and
/// projection can lag a little, so under load the scheduler runs the API first: on 2 cores
/// with `wrk` at 64 connections, p99 latency was 4.8–5.7 ms at nice 10 against 5.5–54 ms
/// at equal priority, and ~3 ms without projection (benches/HISTORY.md, item 15).
const PROJECTOR_NICE: libc::c_int = 10;

/// Whether the Delta runtime's threads run at [`PROJECTOR_NICE`]: set by a server before
/// it opens its projector ([`run_delta_in_background`]).
static DELTA_IN_BACKGROUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the threads of Delta runtimes started from now on run at [`PROJECTOR_NICE`], as
/// the projector's own do: they do its I/O and commits (tokio's blocking pool, spawned
/// from whichever thread first needed one: in `serve`, 26 of them ran at the API's
/// priority and took a quarter of the server's CPU under one-event requests;
/// benches/HISTORY.md, item 32). For servers only: a batch command has no API to yield to.
pub fn run_delta_in_background() {
    DELTA_IN_BACKGROUND.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `on_thread_start` of the Delta runtime (see [`run_delta_in_background`]).
pub(super) fn delta_thread_start() {
    if DELTA_IN_BACKGROUND.load(std::sync::atomic::Ordering::Relaxed) {
        set_thread_nice(PROJECTOR_NICE);
    }
}

/// Lowers the calling thread's scheduling priority to [`PROJECTOR_NICE`]. Best effort: a
/// failure leaves the priority as it was.
fn lower_thread_priority() {
    set_thread_nice(PROJECTOR_NICE);
}

/// Sets the calling thread's nice value (threads it starts afterwards inherit it), so work
/// in the background of a server yields the cores to the API's threads. Best effort: a
/// failure leaves the priority as it was.
pub fn set_thread_nice(nice: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers and touch no
        // memory of ours; on Linux, setpriority on a thread id changes that thread only.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The continuous projector's own figures: what it has published and whether it fails.
/// `commands::serve` hands them to the API for `/healthz` and `/metrics`.
#[derive(Default)]
pub struct ProjectionStats {
    /// Log offset the published tables reach.
    pub projected_offset: std::sync::atomic::AtomicU64,
    pub steps_total: std::sync::atomic::AtomicU64,
    /// Steps or compactions that failed or panicked.
    pub errors_total: std::sync::atomic::AtomicU64,
    /// Panics caught (each restarts the projector from the published tables).
    pub panics_total: std::sync::atomic::AtomicU64,
    /// Why projection fails now; `None` while it works.
    error: std::sync::Mutex<Option<String>>,
    /// Tables from a topic: each partition's place (see [`PartitionProgress`]).
    partitions: std::sync::Mutex<Vec<PartitionProgress>>,
}

/// Where the tables are in one partition of a topic, as this node's projector last saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: u32,
    /// The next offset every table holds (the smallest of the tables').
    pub tables_offset: u64,
    /// One past the last record of the partition, as the brokers said at the last look.
    pub topic_end: u64,
    /// Whether this node's projector holds the partition (a member of the group).
    pub held_here: bool,
}

/// How often a topic projector asks the brokers for the partitions' ends and reads the
/// tables again (for the live page's freshness): a metadata round trip per partition, and
/// each table's newest commits.
pub const PARTITION_ENDS_INTERVAL_MS: u64 = 1_000;

impl ProjectionStats {
    /// Tables from a topic: each partition's place.
    pub fn partitions(&self) -> Vec<PartitionProgress> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_partitions(&self, partitions: Vec<PartitionProgress>) {
        *self.partitions.lock().unwrap_or_else(|p| p.into_inner()) = partitions;
    }

    /// Records why projection fails now, or `None` once it works again.
    pub fn set_error(&self, why: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Continuous projection for `serve`: a thread that steps the projector every interval
/// (like the seed's Spark streaming job) and once more when stopped.
pub struct Continuous {
    stop: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The projection period: a step starts this long after the last one started, less the
/// time the last one took ([`Schedule`]), and a caught-up projector looks for new events
/// this often. Each step pays a fixed cost (five table commits, and the files that merges
/// later take in), so the period trades freshness for CPU the API could use: at 400 ms the
/// tables stay within p99 0.31 s of the log at 20,000 events/s on 2 cores (0.20 s at 250
/// ms), and one event per request runs 17% faster (58.5-60.6k against 49.8-51.8k requests/s
/// side by side, the seed's Flask 5.8k: ~10.4x against ~8.8x; benches/HISTORY.md, item 37).
pub const DEFAULT_PROJECT_INTERVAL_MS: u64 = 400;

/// When the continuous projector starts its next step. Each event should reach the
/// tables about one period after it reached the log, and each step should carry as many
/// events as that allows: a step starts a period after the last one started, less the
/// time the last one took (so an event that arrived just after a step began waits about a
/// period), and at once when the last step took half a period or more.
///
/// Under one event per request, a step that started as soon as the last one ended carried
/// a couple of thousand events and paid five table commits each time: 11-18 steps a
/// second, a core the API lacked (benches/HISTORY.md, items 34-35).
#[derive(Debug, Clone, Copy)]
struct Schedule {
    period: std::time::Duration,
    /// When the last step started and how long it took (none yet: the first runs at once).
    last: Option<(std::time::Instant, std::time::Duration)>,
}

impl Schedule {
    fn new(interval_ms: u64) -> Schedule {
        Schedule { period: std::time::Duration::from_millis(interval_ms.clamp(1, MAX_PROJECT_INTERVAL_MS)), last: None }
    }

    fn stepped(&mut self, started: std::time::Instant, took: std::time::Duration) {
        self.last = Some((started, took));
    }

    /// The earliest the next step may start (`None`: at once).
    fn next_step_at(&self) -> Option<std::time::Instant> {
        let (started, took) = self.last?;
        started.checked_add(self.period.saturating_sub(took))
    }
}

/// Longest wait between projection attempts after repeated failures: a minute keeps a
/// failing disk from costing CPU while noticing a fix quickly enough.
pub const MAX_PROJECT_BACKOFF_MS: u64 = 60_000;

/// Longest interval `serve --project-interval-ms` takes: a day. Longer would mean tables
/// that never follow the log; the bound also keeps deadline arithmetic far from overflow.
pub const MAX_PROJECT_INTERVAL_MS: u64 = 24 * 60 * 60 * 1000;

/// How a step or compaction of the continuous projector failed (already counted and
/// reported by [`guarded`]).
enum Failure {
    Error(ProjectError),
    /// The projector is in an unknown state: it is reopened from the published tables.
    Panic,
}

/// Runs one step or compaction of the continuous projector, catching a panic, and records
/// the outcome in `stats`: success clears the reported error; an error or a panic is
/// counted and becomes the reported error.
fn guarded<T>(stats: &ProjectionStats, what: &str, work: impl FnOnce() -> Result<T, ProjectError>) -> Result<T, Failure> {
    use std::sync::atomic::Ordering;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(Ok(v)) => {
            stats.set_error(None);
            Ok(v)
        }
        Ok(Err(e)) => {
            stats.errors_total.fetch_add(1, Ordering::Relaxed);
            stats.set_error(Some(e.to_string()));
            tracing::error!(error = %e, "{what} failed; retrying with backoff");
            Err(Failure::Error(e))
        }
        Err(panic) => {
            let why = format!("the projector panicked: {}; it restarts from the published tables", super::panic_message(panic.as_ref()));
            stats.panics_total.fetch_add(1, Ordering::Relaxed);
            stats.errors_total.fetch_add(1, Ordering::Relaxed);
            stats.set_error(Some(why.clone()));
            tracing::error!("{why}");
            Err(Failure::Panic)
        }
    }
}

/// `serve`'s projector on a topic: a step after another (each waits for records itself,
/// see `group.rs`), a member of its consumer group; failures back off as on the sled log.
fn follow_topic(projector: Projector, log: Arc<dyn EventLog>, stats: Arc<ProjectionStats>, stop: Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    lower_thread_priority();
    let hidden = ProgressBar::hidden();
    let restart = projector.restart();
    let mut projector = Some(projector);
    let mut failures: u32 = 0;
    let n = log.partitions();
    let mut ends = vec![0u64; n as usize];
    let mut ends_at: Option<std::time::Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        if projector.is_none() {
            match restart.reopen() {
                Ok(p) => {
                    stats.set_error(None);
                    projector = Some(p.in_background());
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    stats.set_error(Some(format!("reopening the tables: {e}")));
                    tracing::error!(error = %e, failures, "cannot reopen the tables; retrying with backoff");
                }
            }
        }
        if let Some(p) = projector.as_mut() {
            match guarded(&stats, "projection step", || p.step(log.as_ref(), &hidden)) {
                Ok(s) => {
                    failures = 0;
                    if s.events > 0 {
                        stats.steps_total.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.projected_offset.store(p.offset(), Ordering::Relaxed);
                    if ends_at.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(PARTITION_ENDS_INTERVAL_MS)) {
                        ends_at = Some(std::time::Instant::now());
                        // Other members' partitions, as the tables hold them now.
                        if let Err(e) = p.refresh() {
                            tracing::warn!(error = %e, "cannot read the tables again");
                        }
                        for (q, end) in ends.iter_mut().enumerate() {
                            if let Ok((_, e)) = log.partition_bounds(q as u32) {
                                *end = e;
                            }
                        }
                    }
                    let tables = p.partition_offsets();
                    let held = s.partitions_held.unwrap_or_default();
                    stats.set_partitions(
                        (0..n)
                            .map(|q| PartitionProgress {
                                partition: q,
                                tables_offset: tables.get(q as usize).copied().unwrap_or(0),
                                // The brokers' end can lag what they serve (Tansu's does).
                                topic_end: ends[q as usize].max(tables.get(q as usize).copied().unwrap_or(0)),
                                held_here: held.contains(&q),
                            })
                            .collect(),
                    );
                }
                Err(Failure::Error(e)) if e.is_no_space() => failures = failures.saturating_add(1),
                Err(_) => {
                    failures = failures.saturating_add(1);
                    projector = None;
                }
            }
        }
        if failures > 0 {
            let backoff_ms = (DEFAULT_PROJECT_INTERVAL_MS << failures.min(16)).min(MAX_PROJECT_BACKOFF_MS);
            let until = std::time::Instant::now() + std::time::Duration::from_millis(backoff_ms);
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::thread::park_timeout(std::time::Duration::from_millis(100));
            }
        }
    }
    if let Some(p) = projector.as_mut() {
        let _ = guarded(&stats, "compaction", || p.finish_merge());
    }
}

impl Continuous {
    pub fn start(projector: Projector, log: Arc<dyn EventLog>, stats: Arc<ProjectionStats>, interval_ms: u64) -> Continuous {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let wake = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let wake2 = wake.clone();
        stats.projected_offset.store(projector.offset(), Ordering::Relaxed);
        let projector = projector.in_background();
        if projector.settings.layout.partitioned() {
            let thread = std::thread::Builder::new()
                .name("questlog-projector".into())
                .spawn(move || follow_topic(projector, log, stats, stop2))
                .expect("spawning the projector thread");
            return Continuous { stop, wake, thread: Some(thread) };
        }
        let restart = projector.restart();
        let thread = std::thread::Builder::new()
            .name("questlog-projector".into())
            .spawn(move || {
                lower_thread_priority();
                let hidden = ProgressBar::hidden();
                let mut failures: u32 = 0;
                // Free bytes when the last step failed for lack of space.
                let mut free_at_failure: Option<u64> = None;
                // `None` after a panic, until the projector is reopened from disk.
                let mut projector = Some(projector);
                let mut compaction_failed = false;
                let mut schedule = Schedule::new(interval_ms);
                loop {
                    let stopping = stop2.load(Ordering::SeqCst);
                    if projector.is_none() {
                        match restart.reopen() {
                            Ok(p) => {
                                tracing::warn!(
                                    projected_offset = p.offset(),
                                    "projector reopened the tables after a panic or a conflicting commit"
                                );
                                stats.projected_offset.store(p.offset(), Ordering::Relaxed);
                                stats.set_error(None);
                                projector = Some(p);
                            }
                            Err(e) => {
                                failures = failures.saturating_add(1);
                                stats.set_error(Some(format!("reopening the tables: {e}")));
                                tracing::error!(error = %e, failures, "cannot reopen the tables; retrying with backoff");
                            }
                        }
                    }
                    // A compaction that failed after its step was published is retried when
                    // there is no new step to run it after (its merge waited for here, so
                    // that only a commit clears the error), and a merge that finished
                    // meanwhile is committed.
                    if let Some(p) =
                        projector.as_mut().filter(|p| (compaction_failed || p.merge_finished()) && p.offset() >= log.durable_end())
                    {
                        let retry = compaction_failed;
                        match guarded(&stats, "compaction", || {
                            let merged = p.compact()?;
                            Ok(if retry { merged + p.finish_merge()? } else { merged })
                        }) {
                            Ok(_) => {
                                compaction_failed = false;
                                failures = 0;
                                free_at_failure = None;
                            }
                            Err(failure) => {
                                failures = failures.saturating_add(1);
                                compaction_failed = true;
                                // The space to regain is counted from this failure, not an
                                // older one (else the backoff is skipped on every pass).
                                free_at_failure = match &failure {
                                    Failure::Error(e) if e.is_no_space() => p.free_bytes(),
                                    _ => None,
                                };
                                if matches!(failure, Failure::Panic) || matches!(&failure, Failure::Error(e) if !e.is_no_space()) {
                                    projector = None;
                                }
                            }
                        }
                    }
                    // Steps follow the [`Schedule`]; when stopping, every event left is
                    // projected at once.
                    while let Some(p) = projector.as_mut().filter(|p| p.offset() < log.durable_end()) {
                        // After a failure the backoff below is the wait, not the schedule.
                        if !stopping && failures == 0 && schedule.next_step_at().is_some_and(|t| t > std::time::Instant::now()) {
                            break;
                        }
                        let before = p.offset();
                        let started = std::time::Instant::now();
                        let result = guarded(&stats, "projection step", || p.step(log.as_ref(), &hidden));
                        schedule.stepped(started, started.elapsed());
                        // Whatever happened after it, a published step moved the tables.
                        stats.projected_offset.store(p.offset(), Ordering::Relaxed);
                        match result {
                            Ok(s) => {
                                failures = 0;
                                free_at_failure = None;
                                compaction_failed = false;
                                stats.steps_total.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(
                                    from = s.from_offset,
                                    to = s.to_offset,
                                    files = s.files_written,
                                    compacted = s.files_compacted,
                                    vacuumed = s.files_vacuumed,
                                    seconds = s.seconds,
                                    "projection step"
                                );
                            }
                            Err(Failure::Error(e)) => {
                                failures = failures.saturating_add(1);
                                free_at_failure = if e.is_no_space() { p.free_bytes() } else { None };
                                // The step was published; what failed came after it.
                                compaction_failed = p.offset() > before;
                                if !e.is_no_space() {
                                    // Another writer may have moved the tables, or a commit
                                    // landed that could not be read back: read them again.
                                    projector = None;
                                }
                                break;
                            }
                            Err(Failure::Panic) => {
                                failures = failures.saturating_add(1);
                                free_at_failure = None;
                                projector = None;
                                break;
                            }
                        }
                    }
                    if stopping {
                        // The merge running beside the steps is finished and committed.
                        if let Some(p) = projector.as_mut() {
                            let _ = guarded(&stats, "compaction", || p.finish_merge());
                        }
                    }
                    // Caught up (or failing): the plain view shows the last commit. (While
                    // behind, each step publishes it no more often than its own bound.)
                    if let Some(p) = projector.as_mut().filter(|p| failures > 0 || p.offset() >= log.durable_end()) {
                        if let Err(e) = p.publish_views() {
                            tracing::warn!(error = %e, "cannot update the plain-directory view");
                        }
                    }
                    if stopping {
                        return;
                    }
                    // After failures (a full disk, say), wait longer each time instead of
                    // re-reading and re-encoding the same range every interval.
                    let now = std::time::Instant::now();
                    let deadline = if failures == 0 {
                        // The next step's time, or a period from now when that is past
                        // (caught up: look again in a period).
                        schedule.next_step_at().filter(|t| *t > now).or_else(|| now.checked_add(schedule.period))
                    } else {
                        let backoff_ms = (interval_ms.max(1) << failures.min(16)).min(MAX_PROJECT_BACKOFF_MS);
                        now.checked_add(std::time::Duration::from_millis(backoff_ms))
                    };
                    loop {
                        if stop2.load(Ordering::SeqCst) {
                            break;
                        }
                        if wake2.swap(false, Ordering::SeqCst) {
                            // Asked for a step now (see [`Continuous::nudge`]).
                            schedule = Schedule::new(interval_ms);
                            break;
                        }
                        let now = std::time::Instant::now();
                        // No deadline (past what the clock can add) means: until woken.
                        let left = deadline.map_or(std::time::Duration::MAX, |d| d.saturating_duration_since(now));
                        if left.is_zero() {
                            break;
                        }
                        if let (Some(before), Some(free)) = (free_at_failure, projector.as_ref().and_then(|p| p.free_bytes())) {
                            if free >= before.saturating_add(SPACE_REGAINED_BYTES) {
                                break; // space came back: no need to sit out the backoff
                            }
                        }
                        std::thread::park_timeout(
                            left.min(std::time::Duration::from_millis(interval_ms.clamp(1, MAX_PROJECT_INTERVAL_MS))),
                        );
                    }
                }
            })
            .expect("spawning the projector thread");
        Continuous { stop, wake, thread: Some(thread) }
    }

    /// Asks for one more step now (e.g. after a batch was appended).
    pub fn nudge(&self) {
        self.wake.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Projects what is left and stops.
    pub fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;
    use std::time::{Duration, Instant};

    #[test]
    fn a_step_starts_a_period_after_the_last_less_its_duration() {
        let mut s = Schedule::new(250);
        assert_eq!(s.next_step_at(), None, "the first step runs at once");
        let t0 = Instant::now();
        s.stepped(t0, Duration::from_millis(50));
        // Not at once after a short step: under one event per request that is what
        // made steps small and frequent.
        assert_eq!(s.next_step_at(), Some(t0 + Duration::from_millis(200)));
        // A step as long as the period (or longer) is followed at once.
        s.stepped(t0, Duration::from_millis(400));
        assert_eq!(s.next_step_at(), Some(t0));
    }
}
