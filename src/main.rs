use clap::Parser;

fn main() -> std::process::ExitCode {
    callstream::cli::run(callstream::cli::Cli::parse())
}
