//! `backplan completions SHELL` and `backplan man DIR`, generated from the clap model.

use clap::CommandFactory;

use super::{Exit, print};
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::{Code, Failure};

pub fn completions(args: &CompletionsArgs) -> miette::Result<Exit> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "backplan", &mut out);
    print(&String::from_utf8_lossy(&out))?;
    Ok(Exit::Ok)
}

pub fn man(args: &ManArgs) -> miette::Result<Exit> {
    let fail = |e: std::io::Error| {
        Failure::new(
            Code::Io,
            format!("cannot write man pages to {}: {e}", args.dir.display()),
        )
    };
    std::fs::create_dir_all(&args.dir).map_err(fail)?;
    clap_mangen::generate_to(Cli::command(), &args.dir).map_err(fail)?;
    Ok(Exit::Ok)
}
