//! The `backplan` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use backplan::commands::Exit;
use backplan::error::{Code, Failure};
use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
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
    let cli = match backplan::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };

    match backplan::commands::run(cli) {
        Ok(exit) => exit.into(),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}

/// `--help` and `--version` print and exit 0. Anything else clap refuses (an unknown
/// subcommand, flag or value) is a usage error: exit 64, which no success path uses
/// (clap's own 2 is what `plan --detailed-exitcode` means by "changes pending").
fn usage(e: clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // `backplan` alone: the help, then the coded line.
        let _ = e.print();
        eprintln!(
            "{:?}",
            miette::Report::new(Failure::new(
                Code::UsageError,
                "no command given: backplan needs a subcommand"
            ))
        );
        return Exit::Usage.into();
    }
    let text = e.render().to_string();
    let text = text.trim_end();
    let message = text.strip_prefix("error: ").unwrap_or(text);
    eprintln!(
        "{:?}",
        miette::Report::new(Failure::new(Code::UsageError, message))
    );
    Exit::Usage.into()
}
