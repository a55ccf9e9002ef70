fn main() -> std::process::ExitCode {
    questlog::cli::main()
}
