//! One file per command: load → compute → render. Commands hold no planning rules and
//! format nothing themselves.

mod apply;
mod completions;
mod daemon;
mod drill;
mod graph;
mod init;
mod keygen;
mod plan;
mod restore;
mod schedule;
mod schema;
mod snapshots;
mod status;
mod unlock;
mod validate;
mod verify;

use std::io::Write;
use std::path::Path;

use crate::cli::{Cli, Command};
pub use crate::error::Exit;
use crate::error::{Code, Failure};
use crate::inventory::Inventory;
use crate::policy::{Loaded, Policy, load_file};

/// Runs the command the command line names.
pub fn run(cli: Cli) -> miette::Result<Exit> {
    let policy = cli.policy;
    match cli.command {
        Command::Init(args) => init::run(&policy, &args.secret),
        Command::Validate(args) => validate::run(&policy, &args),
        Command::Schema(args) => schema::run(&args),
        Command::Graph(args) => graph::run(&policy, &args),
        Command::Plan(args) => plan::run(&policy, &args),
        Command::Apply(args) => apply::run(&policy, &args),
        Command::Snapshots(args) => snapshots::run(&policy, &args),
        Command::Restore(args) => restore::run(&policy, &args),
        Command::Verify(args) => verify::run(&policy, &args),
        Command::Status(args) => status::run(&policy, &args),
        Command::Drill(args) => drill::run(&policy, &args),
        Command::Unlock(args) => unlock::run(&policy, &args),
        Command::Keygen(args) => keygen::run(&args),
        Command::Daemon(args) => daemon::run(&policy, &args),
        Command::Schedule(args) => schedule::run(&policy, &args),
        Command::Completions(args) => completions::completions(&args),

        Command::Man(args) => completions::man(&args),
    }
}

/// Writes to standard output. A closed pipe (`backplan plan | head`) is not an error:
/// the reader has what it wanted, so the process ends quietly with success.
pub(crate) fn print(text: &str) -> miette::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Failure::new(Code::Io, format!("cannot write output: {e}")).into()),
    }
}

/// Loads the policy; its warnings go to standard error.
pub(crate) fn load_policy(path: &Path) -> miette::Result<Loaded> {
    let loaded = load_file(path)?;
    for warning in &loaded.warnings {
        eprintln!("{:?}", miette::Report::new(warning.clone()));
    }
    Ok(loaded)
}

/// The inventory from `--inventory FILE`, or read from the policy's destinations.
pub(crate) fn inventory(policy: &Policy, file: Option<&Path>) -> miette::Result<Inventory> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::new(
                    Code::InventoryUnreadable,
                    format!("cannot read inventory {}: {e}", path.display()),
                )
            })?;
            serde_json::from_str(&text).map_err(|e| {
                Failure::new(
                    Code::InventoryUnreadable,
                    format!("inventory {} is not valid: {e}", path.display()),
                )
                .into()
            })
        }
        None => {
            // Without the key the plan still works; only the applied policy's text
            // (for the diff) stays closed.
            let key = crate::repo::repository_key(policy).ok().flatten();
            Ok(runtime()?.block_on(crate::repo::read_inventory(policy, key.as_ref())))
        }
    }
}

/// The policy's recipients, loaded to encrypt to (or to check against).
pub(crate) fn recipients(policy: &Policy) -> Result<crate::crypto::Recipients, Failure> {
    crate::crypto::Recipients::load(&policy.recipients)
        .map_err(|e| Failure::new(Code::NotAPublicKey, e.0))
}

/// A recipient's secret key from `--secret-key FILE` (or its env variable).
pub(crate) fn secret_keys(
    args: &crate::cli::SecretKeyArgs,
) -> miette::Result<Option<std::sync::Arc<crate::crypto::SecretKeys>>> {
    secret_keys_from(args.secret_key.as_deref())
}

/// A recipient's secret key from a file, when one is named.
pub(crate) fn secret_keys_from(
    path: Option<&Path>,
) -> miette::Result<Option<std::sync::Arc<crate::crypto::SecretKeys>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::new(
            Code::SecretKeyUnusable,
            format!("cannot read secret key {}: {e}", path.display()),
        )
    })?;
    crate::crypto::SecretKeys::from_bytes(&bytes)
        .map(|k| Some(std::sync::Arc::new(k)))
        .map_err(|e| {
            Failure::new(Code::SecretKeyUnusable, format!("{}: {e}", path.display())).into()
        })
}

pub(crate) fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Code::Io, format!("cannot start the async runtime: {e}")).into())
}

/// Writes `text` into a new file at `path` with `mode` (its folder created when
/// missing); an existing file is never overwritten.
pub(crate) fn write_new(path: &Path, text: &str, mode: u32) -> miette::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            Failure::new(Code::Io, format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Failure::new(Code::Io, format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Failure::new(Code::Io, format!("cannot write {}: {e}", path.display())).into())
}

/// Writes `text` to `path`.
pub(crate) fn write_file(path: &Path, text: &str) -> miette::Result<()> {
    std::fs::write(path, text)
        .map_err(|e| Failure::new(Code::Io, format!("cannot write {}: {e}", path.display())).into())
}
