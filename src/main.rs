/// mimalloc: replay and projection allocate many small strings on one thread and free
/// them on another; glibc's allocator spent over a third of replay's time there
/// (`perf record`, see benches/HISTORY.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    questlog::cli::main()
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`, as mimalloc's
/// `MIMALLOC_ALLOW_THP=0` would; mimalloc otherwise asks for them with `madvise`). With
/// them, every 2 MiB region a thread's heap touched was zeroed and counted whole: a
/// projection in steps spent 39% of its time in the kernel's `clear_page_erms`, and a
/// `project --rebuild` of 10^6 events peaked at 494–525 MiB against 391–393 MiB without,
/// in the same time (benches/HISTORY.md, item 25). Best effort: on failure nothing changes.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of
    // ours; it only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
