//! The config kind: named files and folders, kept as the files kind keeps a folder
//! (its restore and preview are those of [`super::files`]); entries are absolute
//! paths, so a restore goes under `/` unless `--target` says otherwise.

use std::path::PathBuf;
use std::sync::Arc;

use super::{
    BackupJob, Checked, CurrentSize, OpenSnapshot, Preview, PropertiesRead, RestoreContext,
    Restored, Seam, files,
};
use crate::error::Failure;
use crate::pipeline::fetch::RepoFetcher;
use crate::policy::model::ConfigSource;
use crate::policy::{Policy, ResolvedSource};
use crate::repo::tree::PackedTree;

#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    pub(super) source: &'a ResolvedSource,
    pub(super) c: &'a ConfigSource,
}

impl Config<'_> {
    /// The named paths, absolute.
    fn paths(&self, policy: &Policy) -> Vec<PathBuf> {
        self.c
            .paths
            .iter()
            .map(|p| {
                std::path::absolute(policy.resolve_path(p))
                    .unwrap_or_else(|_| policy.resolve_path(p))
            })
            .collect()
    }
}

impl Seam for Config<'_> {
    fn name(&self) -> &str {
        &self.source.name
    }

    /// Config entries are absolute paths without their leading `/`.
    fn home(&self, _policy: &Policy) -> String {
        "/".to_string()
    }

    async fn prepare_backup(&self, policy: &Arc<Policy>) -> Result<BackupJob, Failure> {
        let paths = self.paths(policy);
        Ok(Box::new(move |parent, sink| {
            files::backed(crate::sources::files::backup_paths(&paths, parent, sink))
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
        files::preview(cx, target, tree)
    }

    async fn restore(
        &self,
        cx: &RestoreContext<'_>,
        target: &str,
        tree: PackedTree,
        fetcher: RepoFetcher,
        _read: &PropertiesRead,
    ) -> Result<Restored, Failure> {
        files::restore(cx, target, tree, fetcher).await
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

    /// A temporary folder: the entries' absolute paths go under it.
    fn scratch(&self, _policy: &Policy) -> Result<super::scratch::Scratch, Failure> {
        super::scratch::Scratch::folder(&self.source.name)
    }

    /// The named paths walked as a backup walks them, each regular file sized from
    /// its metadata.
    async fn current_size(&self, policy: &Policy) -> Result<CurrentSize, Failure> {
        let paths = self.paths(policy);
        let m = tokio::task::block_in_place(|| crate::sources::files::measure_paths(&paths))?;
        Ok(CurrentSize::Files {
            files: m.files,
            bytes: m.bytes,
        })
    }
}
