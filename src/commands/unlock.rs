//! `backplan unlock`: removes stale locks (expired, or this host's whose process is
//! gone), saying which.

use std::path::Path;

use super::{Exit, load_policy, print, runtime};
use crate::cli::UnlockArgs;
use crate::repo::{lock, open_all};

pub fn run(path: &Path, args: &UnlockArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let repos = open_all(&loaded.policy)?;
    let rt = runtime()?;
    let mut out = String::new();
    for repo in &repos {
        let removed = rt.block_on(lock::unlock(repo, args.all))?;
        if removed.is_empty() {
            out.push_str(&format!("{}: no lock to remove\n", repo.name));
        }
        for r in removed {
            out.push_str(&format!("{}: removed {r}\n", repo.name));
        }
    }
    print(&out)?;
    Ok(Exit::Ok)
}
