use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sesrelay::cli::run(sesrelay::cli::Cli::parse())
}
