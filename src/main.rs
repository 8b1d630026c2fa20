use clap::Parser;

/// Ingest allocates many short-lived strings and maps per event on several threads; glibc's
/// allocator spent ~17 % of the server's CPU on them (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    callstream::cli::run(callstream::cli::Cli::parse())
}
