//! The `backplan` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = backplan::cli::Cli::parse();
    match backplan::commands::run(cli) {
        Ok(exit) => exit.into(),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}
