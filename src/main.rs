//! The `backplan` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = backplan::cli::Cli::parse();
    // Plain diagnostics when NO_COLOR is set or stderr is not a terminal (miette's
    // own detection); no terminal hyperlinks, which logs render as noise.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .terminal_links(false)
                .context_lines(1)
                .build(),
        )
    }));

    match backplan::commands::run(cli) {
        Ok(exit) => exit.into(),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}
