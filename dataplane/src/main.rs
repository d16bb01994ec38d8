//! The `squall` binary; all logic lives in the library (`dataplane::cli`).

fn main() {
    if let Err(e) = dataplane::cli::main() {
        eprintln!("squall: error: {e:#}");
        std::process::exit(2);
    }
}
