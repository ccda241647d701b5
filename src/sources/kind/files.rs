//! The files kind: a folder backed up incrementally, restored to its place or
//! another. Its restore and preview serve the config kind too: both keep files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    Backed, BackupJob, Checked, CurrentSize, Note, OpenSnapshot, Preview, PropertiesRead,
    RestoreContext, Restored, Seam, Stored, stopped,
};
use crate::error::{Code, Failure};
use crate::pipeline::fetch::RepoFetcher;
use crate::policy::model::FilesSource;
use crate::policy::{Policy, ResolvedSource};
use crate::repo::tree::{PackedTree, TreeWalk, WalkError};
use crate::sources::files::{self, ScanReport};

#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    pub(super) source: &'a ResolvedSource,
    pub(super) f: &'a FilesSource,
}

/// A scan's figures: files read or reused.
pub(super) fn backed(scan: Result<ScanReport, files::ScanError>) -> Result<Backed, Failure> {
    let scan = scan.map_err(|e| Failure::new(Code::SourceFailed, e.message))?;
    let stored = Stored::Files {
        files: scan.files,
        unchanged: scan.files_reused,
    };
    Ok(Backed::new(scan, stored))
}

/// What restoring `tree` into the folder `target` would do: which entries it would
/// create, leave or overwrite.
pub(super) fn preview(
    cx: &RestoreContext<'_>,
    target: &str,
    tree: &PackedTree,
) -> Result<Preview, Failure> {
    let p = files::plan_restore(tree, Path::new(target), cx.include, 0).map_err(Failure::from)?;
    let mut notes = Vec::new();
    if uzers::get_effective_uid() != 0 && records_owners(tree) {
        notes.push(Note::OwnersLeftToUser);
    }
    Ok(Preview {
        entries: p.create + p.overwrite.len() + p.identical,
        bytes: p.bytes_to_write,
        create: p.create,
        unchanged: p.identical,
        overwrite: p.overwrite,
        notes,
        ..Preview::default()
    })
}

/// Whether any entry of `tree` records its owner (the walk stops at the first that
/// does: every entry of a tree written since owners are recorded).
fn records_owners(tree: &PackedTree) -> bool {
    let found = tree.walk(|e| match e.uid {
        Some(_) => Err(()),
        None => Ok(()),
    });
    matches!(found, Err(WalkError::Stopped(())))
}

/// Writes `tree` under the folder `target`.
pub(super) async fn restore(
    cx: &RestoreContext<'_>,
    target: &str,
    tree: PackedTree,
    mut fetcher: RepoFetcher,
) -> Result<Restored, Failure> {
    let target = PathBuf::from(target);
    let options = files::RestoreOptions {
        include: cx.include.to_vec(),
        force: cx.options.force,
        numeric_owner: cx.options.numeric_owner,
    };
    let entries = tree.len();
    let (report, fetched) = tokio::task::spawn_blocking(move || {
        let r = files::restore_with(&tree, &target, &options, &mut fetcher);
        (r, fetcher.bytes_fetched())
    })
    .await
    .map_err(stopped("the restore"))?;
    let report = report.map_err(Failure::from)?;
    Ok(Restored::Files {
        entries,
        fetched,
        warnings: report.warnings,
    })
}

impl Seam for Files<'_> {
    fn name(&self) -> &str {
        &self.source.name
    }

    fn home(&self, policy: &Policy) -> String {
        policy.resolve_path(&self.f.path).display().to_string()
    }

    async fn prepare_backup(&self, policy: &Arc<Policy>) -> Result<BackupJob, Failure> {
        let root = policy.resolve_path(&self.f.path);
        let (exclude, fail_on_unreadable) = (self.f.exclude.clone(), self.f.fail_on_unreadable);
        Ok(Box::new(move |parent, sink| {
            backed(files::backup_folder(
                &root,
                &exclude,
                fail_on_unreadable,
                parent,
                sink,
            ))
        }))
    }

    async fn preview(
        &self,
        cx: &RestoreContext<'_>,
        target: &str,
        tree: &PackedTree,
        _data: Option<&dyn OpenSnapshot>,
        _read: &mut PropertiesRead,
    ) -> Result<Preview, Failure> {
        preview(cx, target, tree)
    }

    async fn restore(
        &self,
        cx: &RestoreContext<'_>,
        target: &str,
        tree: PackedTree,
        fetcher: RepoFetcher,
        _read: &PropertiesRead,
    ) -> Result<Restored, Failure> {
        restore(cx, target, tree, fetcher).await
    }

    /// Every chunk's hash is what `verify --read-data` checks of files already.
    async fn check(
        &self,
        _policy: &Policy,
        _snapshot: &dyn OpenSnapshot,
        _restore: bool,
    ) -> Result<Option<Checked>, Failure> {
        Ok(None)
    }

    fn scratch(&self, _policy: &Policy) -> Result<super::scratch::Scratch, Failure> {
        super::scratch::Scratch::folder(&self.source.name)
    }

    /// The folder walked as a backup walks it (its excludes honoured), each regular
    /// file sized from its metadata.
    async fn current_size(&self, policy: &Policy) -> Result<CurrentSize, Failure> {
        let root = policy.resolve_path(&self.f.path);
        let m = tokio::task::block_in_place(|| files::measure_folder(&root, &self.f.exclude))?;
        Ok(CurrentSize::Files {
            files: m.files,
            bytes: m.bytes,
        })
    }
}
