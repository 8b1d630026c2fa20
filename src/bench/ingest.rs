use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Events to send in total.
    #[arg(long, default_value_t = 500_000)]
    pub events: usize,
}

pub fn run(_args: IngestArgs) -> ExitCode {
    ExitCode::FAILURE
}
