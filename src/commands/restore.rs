//! `backplan restore [--plan]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Exit, inventory, load_policy, print, runtime, secret_keys};
use crate::cli::{Format, RestoreArgs, parse_time};
use crate::crypto::keys::RepoKey;
use crate::crypto::{Recipients, SecretKeys};
use crate::error::{Code, Failure};
use crate::inventory::{Inventory, PackState};
use crate::pipeline::fetch::RepoFetcher;
use crate::policy::{Policy, SourceKind};
use crate::render;
use crate::repo::format::pack_path;
use crate::repo::lock;
use crate::repo::store::Repo;
use crate::repo::{key_for, repository_key};
use crate::restore::{
    DatabaseLocalePlan, DatabaseProperties, Preview, RestorePlan, Selection, Step, TargetLocale,
    restore_plan,
};
use crate::sources::{files, postgres, redis};

fn selection(args: &RestoreArgs) -> Result<Selection, Failure> {
    let mut targets = BTreeMap::new();
    for t in &args.target {
        let (name, place) = t.split_once('=').ok_or_else(|| {
            Failure::new(
                Code::InvalidValue,
                format!("--target {t}: write NAME=PATH or NAME=postgres://…"),
            )
        })?;
        targets.insert(name.to_string(), place.to_string());
    }
    let at = args.at.as_deref().map(parse_time).transpose()?;
    let now = chrono::Utc::now();
    if let (Some(at), Some(text)) = (at, &args.at)
        && at > now
    {
        return Err(Failure::new(
            Code::TimeInFuture,
            format!(
                "--at {text} is in the future (it is {} now): no snapshot is from then",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    Ok(Selection {
        at,
        snapshot: args.snapshot.clone(),
        only: args.only.clone(),
        targets,
        include: args.include.clone(),
        as_file: args.as_file.as_ref().map(|d| d.display().to_string()),
    })
}

/// Everything a step needs besides the plan.
struct Context<'a> {
    policy: &'a Policy,
    args: &'a RestoreArgs,
    selection: &'a Selection,
    host: Option<&'a RepoKey>,
    inventory: &'a Inventory,
}

pub fn run(path: &Path, args: &RestoreArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let policy = &loaded.policy;
    // The command line is checked before any destination is read.
    let selection = selection(args)?;
    let inventory = inventory(policy, None)?;
    let graph = &policy.graph;
    let fingerprints = Recipients::load(&policy.recipients)
        .map(|r| r.fingerprints())
        .unwrap_or_default();
    let mut plan = restore_plan(policy, graph, &inventory, &selection, fingerprints)?;
    let host_key = repository_key(policy)?;
    let secret = secret_keys(&args.secret)?;
    // Only the destinations the restore reads from: opening a local folder that does
    // not exist would create it.
    let mut repos: BTreeMap<String, Repo> = BTreeMap::new();
    for name in plan.steps.iter().flat_map(|s| &s.from) {
        if let (false, Some(dest)) = (repos.contains_key(name), policy.file.destinations.get(name))
        {
            repos.insert(name.clone(), crate::repo::open(name, dest, policy)?);
        }
    }
    let rt = runtime()?;
    let cx = Context {
        policy,
        args,
        selection: &selection,
        host: host_key.as_ref(),
        inventory: &inventory,
    };

    if args.plan {
        // A preview only: it takes no lock and writes nothing.
        rt.block_on(preview(&cx, &mut plan, &repos, secret.clone()));
        print(&match args.format {
            Format::Json => render::json(&plan),
            Format::Human | Format::Markdown => render::restore::human(&plan),
        })?;
        return Ok(Exit::Ok);
    }
    let Some(secret) = secret else {
        return Err(Failure::new(
            Code::SecretKeyUnusable,
            "restoring needs a recipient's secret key",
        )
        .into());
    };
    let held = if args.no_lock {
        Vec::new()
    } else {
        let (held, refused) = rt.block_on(lock_sources(&mut plan, &repos))?;
        for (dest, f) in refused {
            let others: BTreeSet<&String> = plan.steps.iter().flat_map(|s| &s.from).collect();
            let others: Vec<&str> = others.into_iter().map(String::as_str).collect();
            eprintln!(
                "{:?}",
                miette::Report::new(f.with_help(format!(
                    "nothing is read from {dest}; the restore reads from {}",
                    others.join(", ")
                )))
            );
        }
        held
    };
    let result = restore_locked(&rt, &cx, &mut plan, &repos, secret);
    rt.block_on(lock::release_all(held));
    result
}

/// Takes a shared lock on every destination the restore may read, as a backup does,
/// so that no prune deletes what it reads. A destination that cannot be locked is
/// dropped from the steps' fallbacks and returned with why; a step left with no
/// destination fails the restore before anything is read or written.
async fn lock_sources(
    plan: &mut RestorePlan,
    repos: &BTreeMap<String, Repo>,
) -> Result<(Vec<lock::Held>, BTreeMap<String, Failure>), Failure> {
    let wanted: BTreeSet<String> = plan.steps.iter().flat_map(|s| s.from.clone()).collect();
    let mut held = Vec::new();
    let mut refused = BTreeMap::new();
    for dest in wanted {
        let Some(repo) = repos.get(&dest) else {
            continue;
        };
        match lock::acquire_for_reading(repo).await {
            Ok(h) => held.push(h),
            Err(f) => {
                refused.insert(dest, f);
            }
        }
    }
    for step in &mut plan.steps {
        let first = step.from.first().cloned();
        step.from.retain(|d| !refused.contains_key(d));
        if step.from.is_empty()
            && let Some(f) = first.and_then(|d| refused.remove(&d))
        {
            lock::release_all(held).await;
            return Err(f);
        }
    }
    Ok((held, refused))
}

/// The restore proper, under the locks `run` took: the preview, the checks that must
/// pass before anything is written, then every step.
fn restore_locked(
    rt: &tokio::runtime::Runtime,
    cx: &Context<'_>,
    plan: &mut RestorePlan,
    repos: &BTreeMap<String, Repo>,
    secret: Arc<SecretKeys>,
) -> miette::Result<Exit> {
    let args = cx.args;
    let policy = cx.policy;
    let properties_read = rt.block_on(preview(cx, plan, repos, Some(secret.clone())));
    for step in &plan.steps {
        if let Some(p) = &step.preview
            && !p.overwrite.is_empty()
            && !args.force
        {
            return Err(Failure::new(
                Code::RestoreRefused,
                format!(
                    "restoring {} would overwrite {} changed file{}: {}",
                    step.source,
                    p.overwrite.len(),
                    if p.overwrite.len() == 1 { "" } else { "s" },
                    p.overwrite
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into());
        }
    }
    // Servers are checked before anything is restored: a refusal leaves every target
    // untouched.
    for step in &plan.steps {
        if let Some(SourceKind::Redis(r)) = policy.sources.get(&step.source).map(|s| &s.kind)
            && args.as_file.is_none()
        {
            let endpoint = redis_target(cx, &step.source, r)?;
            redis::check_target(&endpoint, args.flush)?;
        }
    }
    let mut out = String::new();
    for step in &plan.steps {
        let mut last_error = None;
        for dest in &step.from {
            let Some(repo) = repos.get(dest) else {
                continue;
            };
            let done = rt.block_on(restore_step(
                cx,
                step,
                repo,
                secret.clone(),
                &properties_read,
            ));
            // A tool or server that fails a restore step fails the restore, not the
            // source (its "not committed" help would mislead here).
            let done = done.map_err(|f| match f.code {
                Code::SourceFailed => Failure {
                    code: Code::RestoreFailed,
                    ..f
                },
                _ => f,
            });
            match done {
                Ok(done) => {
                    out.push_str(&format!(
                        "  ✓ {} → {}   {done} from {dest}\n",
                        step.source, step.target
                    ));
                    last_error = None;
                    break;
                }
                // A refusal or a failed step is about the target, and a spool without
                // room about this machine, not the copy: another copy would fail just
                // the same (a damaged copy fails with its own code before any tool
                // sees its bytes).
                Err(f)
                    if matches!(
                        f.code,
                        Code::RestoreRefused
                            | Code::RestoreFailed
                            | Code::DatabaseRolesMissing
                            | Code::DatabaseProperties
                            | Code::DatabaseError
                            | Code::NoSpace
                    ) =>
                {
                    return Err(f.into());
                }
                Err(f) => last_error = Some(lost_help(cx, dest, f)),
            }
        }
        if let Some(f) = last_error {
            return Err(f.into());
        }
    }
    for m in &plan.missing {
        out.push_str(&format!("  ✗ {m}: no good snapshot to restore\n"));
    }
    for warning in render::restore::locale_warnings(plan) {
        out.push_str(&format!("  ! {warning}\n"));
    }
    out.push_str(&format!("\nRestore: {} step(s) done.\n", plan.steps.len()));
    print(&out)?;
    // A source asked for and not restored is not a success.
    if !plan.missing.is_empty() {
        return Err(Failure::new(
            Code::SnapshotNotFound,
            format!(
                "nothing restored for {}: no good snapshot",
                plan.missing.join(", ")
            ),
        )
        .into());
    }
    Ok(Exit::Ok)
}

/// A failed step's failure, with what `verify` recorded lost on `dest`: the likely
/// cause when a chunk is in no pack there.
fn lost_help(cx: &Context<'_>, dest: &str, f: Failure) -> Failure {
    let Some(lost) = cx.inventory.destinations.get(dest).map(|d| &d.lost) else {
        return f;
    };
    if lost.packs.is_empty() {
        return f;
    }
    let packs: Vec<String> = lost
        .packs
        .iter()
        .take(3)
        .map(|p| {
            let state = match p.state {
                PackState::Missing => "missing",
                PackState::Damaged => "damaged",
            };
            format!("{} ({state})", pack_path(&p.id))
        })
        .collect();
    let more = lost.packs.len().saturating_sub(packs.len());
    f.with_help(format!(
        "verify found packs lost on {dest}: {}{}; restore from a destination that holds the snapshot whole, or repair {dest} from one: `backplan plan` shows the repair",
        packs.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    ))
}

/// The snapshot's tree and a fetcher for its chunks.
pub(crate) async fn open_snapshot(
    repo: &Repo,
    id: &str,
    host: Option<&RepoKey>,
    secret: Arc<SecretKeys>,
) -> Result<(crate::repo::format::Tree, RepoFetcher), Failure> {
    let (header, _) = repo.snapshot_objects(id).await?;
    let key = key_for(repo, &header.key_id, host, Some(&secret)).await?;
    let (_, tree) = repo.read_snapshot(&key, id).await?;
    let fetcher = RepoFetcher::new(
        repo.clone(),
        Arc::new(repo.load_index(&key).await?),
        &key,
        secret,
        tokio::runtime::Handle::current(),
    );
    Ok((tree, fetcher))
}

/// Restores one step from one repository; returns a line for the report. A
/// database's properties come from `properties_read` where the preview read them.
async fn restore_step(
    cx: &Context<'_>,
    step: &Step,
    repo: &Repo,
    secret: Arc<SecretKeys>,
    properties_read: &PropertiesRead,
) -> Result<String, Failure> {
    let kind = cx.policy.sources.get(&step.source).map(|s| s.kind.clone());
    let (tree, mut fetcher) = open_snapshot(repo, &step.snapshot.id, cx.host, secret).await?;
    match kind {
        Some(SourceKind::Postgres(pg)) => {
            let targets = pg_targets(cx, &step.source, &pg, &tree)?;
            let tools = postgres::find_tools(
                pg.bin_dir
                    .as_ref()
                    .map(|d| cx.policy.resolve_path(d))
                    .as_deref(),
                0,
            )?;
            // Every target and every spool first: a refusal must leave all of them
            // untouched.
            for (archive, target) in &targets {
                postgres::check_target(target).await?;
                if let postgres::Feed::Spool { dir, .. } = pg_feed(cx, archive) {
                    let files = postgres::spool_files(archive, target);
                    tokio::task::block_in_place(|| {
                        postgres::check_space(archive, files, &dir, &mut fetcher)
                    })?;
                }
            }
            let mut restored = Vec::new();
            for (archive, target) in &targets {
                let feed = pg_feed(cx, archive);
                let (archive, target, tools) = (archive.clone(), target.clone(), tools.clone());
                let globals = tree
                    .entries
                    .iter()
                    .find(|e| e.path == postgres::GLOBALS)
                    .cloned();
                let read_before = properties_read
                    .get(&(step.source.clone(), archive.name()))
                    .cloned();
                let moved = tokio::task::spawn_blocking(move || {
                    let mut fetcher = fetcher;
                    let runtime = tokio::runtime::Handle::current();
                    let exists = runtime.block_on(postgres::check_target(&target))?;
                    // The archive's own entries, before anything changes: how its
                    // database was made, for one the restore creates, and (restored
                    // whole) the database's properties.
                    let read = match read_before {
                        _ if !target.whole() && exists => None,
                        Some(read) => Some(read),
                        None => Some(postgres::database_properties(
                            &tools,
                            &archive,
                            &feed,
                            &mut fetcher,
                        )?),
                    };
                    let said = match &globals {
                        Some(g) => {
                            Some(postgres::restore_globals(&target, &tools, g, &mut fetcher)?)
                        }
                        None => None,
                    };
                    // After the globals, which may make the archive's tablespace.
                    if !exists {
                        let creation = read.as_ref().and_then(postgres::Properties::creation);
                        runtime.block_on(postgres::create_database(&target, creation))?;
                    }
                    // A whole database comes with its own properties (owner, settings,
                    // privileges, comment), applied last; their roles are checked
                    // before its data.
                    let properties = read.filter(|_| target.whole());
                    if let Some(p) = &properties {
                        postgres::check_roles(&target, p, said.as_deref())?;
                    }
                    postgres::restore_database(&target, &tools, &archive, &feed, &mut fetcher)?;
                    postgres::analyze(&target, &tools, feed.jobs())?;
                    if let Some(p) = &properties {
                        postgres::apply_properties(&target, p)?;
                    }
                    Ok::<_, Failure>((fetcher, target))
                })
                .await
                .map_err(|e| Failure::new(Code::Io, format!("the restore stopped: {e}")))??;
                fetcher = moved.0;
                restored.push(moved.1.database.clone());
            }
            Ok(format!(
                "database{} {} restored",
                if restored.len() == 1 { "" } else { "s" },
                restored.join(", ")
            ))
        }
        Some(SourceKind::Redis(r)) => {
            let (force, flush) = (cx.args.force, cx.args.flush);
            let into = match &cx.args.as_file {
                Some(dir) => RedisInto::File(dir.clone()),
                None => RedisInto::Server(redis_target(cx, &step.source, &r)?),
            };
            tokio::task::spawn_blocking(move || match into {
                RedisInto::File(dir) => {
                    let (path, n) = redis::restore_file(&dir, force, &tree, &mut fetcher)?;
                    Ok(format!("{} written ({})", path.display(), render::bytes(n)))
                }
                RedisInto::Server(endpoint) => {
                    let done = redis::restore(&endpoint, flush, &tree, &mut fetcher)?;
                    Ok(format!(
                        "{} keys restored{}, {} already expired and skipped{}",
                        done.keys,
                        if done.split > 0 {
                            format!(" ({} too large for RESTORE, as commands)", done.split)
                        } else {
                            String::new()
                        },
                        done.expired,
                        if done.functions > 0 {
                            format!(", {} function libraries", done.functions)
                        } else {
                            String::new()
                        }
                    ))
                }
            })
            .await
            .map_err(|e| Failure::new(Code::Io, format!("the restore stopped: {e}")))?
        }
        _ => {
            let target = PathBuf::from(&step.target);
            let options = files::RestoreOptions {
                include: cx.selection.include.clone(),
                force: cx.args.force,
                numeric_owner: cx.args.numeric_owner,
            };
            let entries = tree.entries.len();
            let (report, fetched) = tokio::task::spawn_blocking(move || {
                let r = files::restore_with(&tree, &target, &options, &mut fetcher);
                (r, fetcher.bytes_fetched())
            })
            .await
            .map_err(|e| Failure::new(Code::Io, format!("the restore stopped: {e}")))?;
            let report = report.map_err(Failure::from)?;
            for warning in &report.warnings {
                eprintln!("warning: {}: {warning}", step.source);
            }
            Ok(format!(
                "{entries} entries, {} fetched{}",
                render::bytes(fetched),
                if report.warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warning(s)", report.warnings.len())
                }
            ))
        }
    }
}

/// Where a redis snapshot goes: a running server, or a `dump.rdb` in a folder.
enum RedisInto {
    Server(redis::client::Endpoint),
    File(PathBuf),
}

/// Where a redis source is restored: `--target NAME=redis://…` (with its own
/// credentials only), or the source's own server.
fn redis_target(
    cx: &Context<'_>,
    name: &str,
    r: &crate::policy::model::RedisSource,
) -> Result<redis::client::Endpoint, Failure> {
    match cx.selection.targets.get(name) {
        Some(url) => redis::target_endpoint(url, r, cx.policy),
        None => redis::endpoint(r, cx.policy),
    }
}

/// What restoring a redis snapshot would do: what it holds, and what the target
/// holds now.
fn redis_notes(
    cx: &Context<'_>,
    step: &Step,
    r: &crate::policy::model::RedisSource,
    tree: &crate::repo::format::Tree,
    fetcher: Option<&mut RepoFetcher>,
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(fetcher) = fetcher {
        match tokio::task::block_in_place(|| redis::read_meta(tree, fetcher)) {
            Ok(meta) => notes.push(format!(
                "{} keys in {} database{} from Redis {}, {}",
                meta.total_keys(),
                meta.keys.len(),
                crate::plan::plural(meta.keys.len()),
                meta.redis_version,
                match meta.mode {
                    redis::Taken::Sync => "one point in time (sync)",
                    redis::Taken::Scan => "not one point in time (scan)",
                }
            )),
            Err(f) => notes.push(f.message),
        }
    }
    if let Some(dir) = &cx.args.as_file {
        let file = dir.join(redis::DUMP);
        notes.push(if !file.exists() {
            format!("writes {} for a cold start", file.display())
        } else if cx.args.force {
            format!("overwrites {} (--force)", file.display())
        } else {
            format!("{} exists: needs --force", file.display())
        });
        return notes;
    }
    let state = redis_target(cx, &step.source, r)
        .and_then(|e| tokio::task::block_in_place(|| redis::target_keys(&e)));
    notes.push(match state {
        Ok(0) => "the target holds no keys; RESTORE … REPLACE ABSTTL per key".to_string(),
        Ok(n) if cx.args.flush => format!("the target holds {n} keys: --flush empties it first"),
        Ok(n) => format!("the target holds {n} keys: needs --flush"),
        Err(f) => f.message,
    });
    notes
}

/// How pg_restore reads `archive`: streamed, or from a spool (`--jobs`, `--spool`, or
/// a directory-format archive).
fn pg_feed(cx: &Context<'_>, archive: &postgres::Archive) -> postgres::Feed {
    postgres::Feed::choose(archive, cx.args.jobs, cx.args.spool.as_deref())
}

/// What the restore plan says of a spool: the jobs, where, what it needs and what is
/// there. For a streamed restore, whether `--jobs` would restore it by sections;
/// else `None`.
fn spool_note(
    archive: &postgres::Archive,
    target: &postgres::RestoreTarget,
    feed: &postgres::Feed,
) -> Option<String> {
    let postgres::Feed::Spool { dir, jobs } = feed else {
        return postgres::by_sections(archive, target).then(|| {
            "streamed into one pg_restore; --jobs N restores it by sections, N tables at once"
                .to_string()
        });
    };
    let why = if postgres::by_sections(archive, target) && archive.needs_spool() {
        ", a directory-format archive, restored by sections: its tables' data copied straight from the repository"
    } else if postgres::by_sections(archive, target) {
        ", restored by sections: the spool holds the table of contents and large objects, \
         its tables' data copied straight from the repository"
    } else if archive.needs_spool() {
        ", a directory-format archive"
    } else {
        ""
    };
    let files = postgres::spool_files(archive, target);
    // Of a custom-format archive by sections the plan knows only the archive's size:
    // its layout, which says what the skeleton takes, is read by the restore.
    let at_most = files == postgres::Files::TablesOfContents && !archive.needs_spool();
    Some(match postgres::space_for(archive, files, dir) {
        Ok(space) => format!(
            "pg_restore -j {jobs} from a spool in {} (needs {}{} free, {} available{why}){}",
            dir.display(),
            if at_most { "at most " } else { "" },
            render::bytes(space.needed),
            render::bytes(space.available),
            match (space.fits(), at_most) {
                (true, _) => "",
                (false, true) => ": it may not fit, the restore checks before it starts (BP234)",
                (false, false) => ": not enough space, the restore would stop (BP234)",
            }
        ),
        Err(f) => format!(
            "pg_restore -j {jobs} from a spool in {} (needs {} free{why}): {}",
            dir.display(),
            render::bytes(archive.spool_bytes(files)),
            f.message
        ),
    })
}

/// The database restores of a postgres snapshot: each database's archive (`DB.dump`
/// or `DB.dir/…`) with where it goes (the same database on the source's server, or
/// `--target NAME=URL`).
fn pg_targets(
    cx: &Context<'_>,
    name: &str,
    pg: &crate::policy::model::PostgresSource,
    tree: &crate::repo::format::Tree,
) -> Result<Vec<(postgres::Archive, postgres::RestoreTarget)>, Failure> {
    let dumps = postgres::archives(tree);
    // pg_restore matches --table by name alone: `media.files` would restore nothing,
    // and succeed.
    if let Some((schema, table)) = cx.args.table.iter().find_map(|t| t.split_once('.')) {
        return Err(Failure::new(
            Code::InvalidValue,
            format!("--table {schema}.{table}: pg_restore takes a table name without its schema"),
        )
        .with_help(format!("write --schema {schema} --table {table}")));
    }
    let source = postgres::Connection::new(pg, cx.policy)?;
    let given = cx.selection.targets.get(name);
    if given.is_some() && dumps.len() > 1 {
        return Err(Failure::new(
            Code::InvalidValue,
            "this snapshot holds several databases; --target restores one: use --snapshot with a one-database source",
        ));
    }
    let mut out = Vec::new();
    for archive in dumps {
        let db = archive.database.clone();
        let (conn, database) = match given {
            Some(url) => {
                let conn = postgres::Connection::from_url(url, None)?;
                let database = conn.database().map(str::to_string).unwrap_or(db.clone());
                (conn, database)
            }
            None => (source.clone(), db),
        };
        out.push((
            archive,
            postgres::RestoreTarget {
                conn,
                database,
                clean: cx.args.clean,
                tables: cx.args.table.clone(),
                schemas: cx.args.schema.clone(),
            },
        ));
    }
    Ok(out)
}

/// The database properties a preview read, by source and archive name: the restore
/// that follows applies them without reading the archive's table of contents again.
type PropertiesRead = BTreeMap<(String, String), postgres::Properties>;

/// Fills each step's preview: what restoring it would do to its target. Returns the
/// database properties it read on the way.
async fn preview(
    cx: &Context<'_>,
    plan: &mut RestorePlan,
    repos: &BTreeMap<String, Repo>,
    secret: Option<Arc<SecretKeys>>,
) -> PropertiesRead {
    let mut properties_read = PropertiesRead::new();
    let include = plan.include.clone();
    for step in &mut plan.steps {
        let Some(repo) = step.from.first().and_then(|d| repos.get(d)) else {
            continue;
        };
        let result: Result<Preview, Failure> = async {
            let (header, _) = repo.snapshot_objects(&step.snapshot.id).await?;
            let key = key_for(repo, &header.key_id, cx.host, secret.as_deref()).await?;
            let (_, tree) = repo.read_snapshot(&key, &step.snapshot.id).await?;
            let kind = cx.policy.sources.get(&step.source).map(|s| s.kind.clone());
            if let Some(SourceKind::Redis(r)) = &kind {
                let mut fetcher = match &secret {
                    Some(s) => Some(
                        open_snapshot(repo, &step.snapshot.id, cx.host, s.clone())
                            .await?
                            .1,
                    ),
                    None => None,
                };
                return Ok(Preview {
                    entries: tree.entries.len(),
                    bytes: tree.entries.iter().map(|e| e.size).sum(),
                    notes: redis_notes(cx, step, r, &tree, fetcher.as_mut()),
                    ..Preview::default()
                });
            }
            if let Some(SourceKind::Postgres(pg)) = kind {
                let mut notes = Vec::new();
                let mut database_properties = Vec::new();
                let mut database_locales = Vec::new();
                // The archives' own entries are read for their encoding and locale:
                // with a secret key and the tools.
                let mut reader = match &secret {
                    Some(s) => {
                        match open_snapshot(repo, &step.snapshot.id, cx.host, s.clone()).await {
                            Ok((_, fetcher)) => {
                                let bin_dir =
                                    pg.bin_dir.as_ref().map(|d| cx.policy.resolve_path(d));
                                postgres::find_tools(bin_dir.as_deref(), 0)
                                    .map(|tools| (tools, fetcher))
                                    .map_err(|f| f.message)
                            }
                            Err(f) => Err(f.message),
                        }
                    }
                    None => Err("the snapshot is read with --secret-key".to_string()),
                };
                for (archive, target) in pg_targets(cx, &step.source, &pg, &tree)? {
                    database_properties.push(DatabaseProperties {
                        archive: archive.name(),
                        database: target.database.clone(),
                        applied: target.whole(),
                    });
                    let state = postgres::target_state(&target.conn, &target.database).await;
                    let note = match &state {
                        Ok((false, _)) => format!("{} will be created", target.database),
                        Ok((true, 0)) => format!("{} exists and is empty", target.database),
                        Ok((true, n)) if target.clean => format!(
                            "{} holds {n} tables: --clean replaces them",
                            target.database
                        ),
                        Ok((true, n)) => {
                            format!("{} holds {n} tables: needs --clean", target.database)
                        }
                        Err(f) => format!("{}: {}", target.database, f.message),
                    };
                    notes.push(format!("{}: {note}", archive.name()));
                    if let Some(spool) = spool_note(&archive, &target, &pg_feed(cx, &archive)) {
                        notes.push(format!("{}: {spool}", archive.name()));
                    }
                    let read = match &mut reader {
                        Ok((tools, fetcher)) => {
                            // Not into --spool, which a plan leaves alone: a `DB.dir/`'s
                            // toc.dat goes into the temporary folder for a moment.
                            let feed = postgres::Feed::Stream;
                            tokio::task::block_in_place(|| {
                                postgres::database_properties(tools, &archive, &feed, fetcher)
                            })
                            .map(|p| {
                                let creation = p.creation().cloned();
                                properties_read.insert((step.source.clone(), archive.name()), p);
                                creation
                            })
                            .map_err(|f| f.message)
                        }
                        Err(why) => Err(why.clone()),
                    };
                    let snapshot = read
                        .as_ref()
                        .ok()
                        .and_then(|c| c.as_ref().map(|c| c.locale().clone()));
                    let locale = match (read, state) {
                        (Err(why), _) => TargetLocale::Unknown { why },
                        (_, Err(f)) => TargetLocale::Unknown { why: f.message },
                        (Ok(creation), Ok((false, _))) => TargetLocale::Created {
                            tablespace: creation
                                .as_ref()
                                .and_then(|c| c.tablespace().map(str::to_string)),
                        },
                        (Ok(None), Ok((true, _))) => TargetLocale::Unknown {
                            why: "the snapshot has no CREATE DATABASE".to_string(),
                        },
                        (Ok(Some(creation)), Ok((true, _))) => {
                            match postgres::database_locale(&target.conn, &target.database).await {
                                Ok(own) if creation.locale().matches(&own) => TargetLocale::Same,
                                Ok(own) => TargetLocale::Differs { own },
                                Err(f) => TargetLocale::Unknown { why: f.message },
                            }
                        }
                    };
                    database_locales.push(DatabaseLocalePlan {
                        archive: archive.name(),
                        database: target.database.clone(),
                        snapshot,
                        target: locale,
                    });
                }
                return Ok(Preview {
                    entries: tree.entries.len(),
                    bytes: tree.entries.iter().map(|e| e.size).sum(),
                    notes,
                    database_properties,
                    database_locales,
                    ..Preview::default()
                });
            }
            let p = files::plan_restore(&tree, Path::new(&step.target), &include)
                .map_err(Failure::from)?;
            let mut notes = Vec::new();
            if tree.entries.iter().any(|e| e.uid.is_some()) && uzers::get_effective_uid() != 0 {
                notes.push(
                    "owners are left to the restoring user: only a restore run as root sets them"
                        .to_string(),
                );
            }
            Ok(Preview {
                entries: p.create.len() + p.overwrite.len() + p.identical.len(),
                bytes: p.bytes_to_write,
                create: p.create.len(),
                unchanged: p.identical.len(),
                overwrite: p.overwrite,
                notes,
                database_properties: Vec::new(),
                database_locales: Vec::new(),
                unknown: None,
            })
        }
        .await;
        step.preview = Some(result.unwrap_or_else(|f| Preview {
            unknown: Some(f.message),
            ..Preview::default()
        }));
    }
    properties_read
}
