/// mimalloc: replay and projection allocate many small strings on one thread and free
/// them on another; glibc's allocator spent over a third of replay's time there
/// (`perf record`, see benches/HISTORY.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    quiet_broken_pipe();
    questlog::cli::main()
}

/// Ends the process quietly with 141 (128 + SIGPIPE, what a shell reports for `yes | head`)
/// when stdout is a pipe whose reader has gone (`questlog replay | head`): Rust ignores
/// SIGPIPE, so `print!` panics there, with a backtrace. Other panics keep the default hook.
/// (SIGPIPE itself stays ignored: a server writing to a closed socket must not die of it.)
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message =
            payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
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
