//! `backplan status [--format human|json|prometheus]`, and the metrics file that
//! `apply --metrics-file` writes after its run.

use std::path::Path;

use chrono::Utc;

use super::{Exit, inventory, load_policy, print};
use crate::cli::{StatusArgs, StatusFormat, parse_time};
use crate::error::{Code, Failure};
use crate::policy::Policy;
use crate::render;
use crate::status::{Health, status};

pub fn run(path: &Path, args: &StatusArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let now = match &args.now {
        Some(text) => parse_time(text)?,
        None => Utc::now(),
    };
    let inventory = inventory(&loaded.policy, args.inventory.as_deref())?;
    let report = status(&loaded.policy, &inventory, now);
    print(&match args.format {
        StatusFormat::Human => render::status::human(&report),
        StatusFormat::Json => render::json(&report),
        StatusFormat::Prometheus => render::metrics::text(&report),
    })?;
    Ok(match report.health {
        Health::Ok => Exit::Ok,
        Health::Warning => Exit::Warning,
        Health::Critical => Exit::Critical,
    })
}

/// Writes the metrics of the destinations as they are now to `path`: into a
/// temporary file in the same folder, then renamed over it, so that a collector
/// never reads half a file. A failure is reported on standard error: the run it
/// follows is not undone by it.
pub(crate) fn write_metrics_file(policy: &Policy, path: &Path) {
    let written = super::runtime().map_err(|e| e.to_string()).and_then(|rt| {
        let key = crate::repo::repository_key(policy).ok().flatten();
        let inventory = rt.block_on(crate::repo::read_inventory(policy, key.as_ref()));
        let text = render::metrics::text(&status(policy, &inventory, Utc::now()));
        replace_file(path, &text).map_err(|e| e.to_string())
    });
    if let Err(why) = written {
        let failure = Failure::new(
            Code::Io,
            format!("cannot write the metrics file {}: {why}", path.display()),
        );
        eprintln!("{:?}", miette::Report::new(failure));
    }
}

/// Replaces `path` with `text` atomically: a temporary file beside it (hidden, and
/// not ending in `.prom`, so that node_exporter skips it), then a rename.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
