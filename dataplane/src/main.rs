//! The `squall` binary; all logic lives in the library (`dataplane::cli`).

fn main() -> std::process::ExitCode {
    // Fail points (`FAILPOINTS=name=return;…`) are compiled in only in the
    // test build (`dataplane::crash_point!`); elsewhere this does nothing.
    let _failpoints = fail::FailScenario::setup();
    dataplane::cli::main()
}
