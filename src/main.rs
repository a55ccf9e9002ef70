/// mimalloc: replay and projection allocate many small strings on one thread and free
/// them on another; glibc's allocator spent over a third of replay's time there
/// (`perf record`, see benches/HISTORY.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    questlog::cli::main()
}
