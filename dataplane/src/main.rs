//! The `squall` binary; all logic lives in the library (`dataplane::cli`).

fn main() -> std::process::ExitCode {
    dataplane::cli::main()
}
