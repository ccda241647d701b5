//! `backplan apply [PLANFILE]`.

use std::path::Path;

use miette::Severity;

use super::{Exit, inventory, print, runtime};
use std::sync::Arc;

use crate::apply::storage::StorageExecutor;
use crate::apply::{Report, Stop};
use crate::cli::{ApplyArgs, Format, PlanningArgs};
use crate::error::{Code, Failure, Located, PolicyReport};
use crate::inventory::Inventory;
use crate::plan::{FORMAT_VERSION, Plan};
use crate::policy::{Policy, load_file};
use crate::render;
use crate::repo::{open_all, repository_key};

pub fn run(path: &Path, args: &ApplyArgs) -> miette::Result<Exit> {
    let (report, exit) = apply_policy(
        path,
        &Request {
            plan_file: args.plan_file.as_deref(),
            planning: &args.planning,
            parallel: args.parallel,
            metrics_file: args.metrics_file.as_deref(),
            stop: None,
        },
    )?;
    print(&match args.format {
        Format::Json => render::apply::json(&report),
        Format::Human | Format::Markdown => render::apply::human(&report),
    })?;
    report_failures(&report);
    Ok(exit)
}

/// What one apply is asked to do.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// A plan saved with `backplan plan --out`; `None` plans afresh.
    pub plan_file: Option<&'a Path>,
    pub planning: &'a PlanningArgs,
    pub parallel: usize,
    /// Where to write the metrics after the run (`--metrics-file`).
    pub metrics_file: Option<&'a Path>,
    /// A stop request (the daemon's signals): running actions are abandoned.
    pub stop: Option<Stop>,
}

/// Loads the policy, plans (or reads the saved plan) and carries the plan out between
/// the policy's notifications: the one path of `backplan apply` and of every run of
/// `backplan daemon`. The report is not printed yet.
pub(crate) fn apply_policy(path: &Path, request: &Request<'_>) -> miette::Result<(Report, Exit)> {
    let loaded = load_file(path)?;
    // The policy's notifications hear of the run's start and of how it ended, an
    // unset variable included.
    let (report, exit) = crate::notify::notified(&loaded.policy, || {
        refuse_unset_env(path, &loaded.warnings)?;
        carry_out(&loaded.policy, request)
    })?;
    // The metrics read the destinations as the run left them.
    if let Some(file) = request.metrics_file {
        super::status::write_metrics_file(&loaded.policy, file);
    }
    Ok((report, exit))
}

/// The report on stdout names each failure; stderr carries one coded line so that a
/// cron mail or a log watcher sees it too.
pub(crate) fn report_failures(report: &Report) {
    if report.failed() > 0 {
        eprintln!(
            "{:?}",
            miette::Report::new(Failure::new(
                Code::SourcesFailed,
                format!(
                    "{} of {} actions failed",
                    report.failed(),
                    report.outcomes.len()
                ),
            ))
        );
    }
}

/// A reference to an unset variable is a warning when planning, an error here. The
/// report carries every warning, so none is printed twice; without one, the
/// warnings are printed.
fn refuse_unset_env(path: &Path, warnings: &[Located]) -> miette::Result<()> {
    if warnings.iter().any(|w| w.problem.code == Code::UnsetEnv) {
        let problems = warnings
            .iter()
            .cloned()
            .map(|mut w| {
                if w.problem.code == Code::UnsetEnv {
                    w.problem.severity = Severity::Error;
                }
                w
            })
            .collect();
        return Err(PolicyReport {
            path: path.display().to_string(),
            problems,
        }
        .into());
    }
    for warning in warnings {
        eprintln!("{:?}", miette::Report::new(warning.clone()));
    }
    Ok(())
}

/// Plans (or takes the saved plan) and carries it out; the report is not printed yet.
fn carry_out(policy: &Policy, request: &Request<'_>) -> miette::Result<(Report, Exit)> {
    let planning = request.planning.resolve()?;
    let inventory = inventory(policy, planning.inventory.as_deref())?;
    let plan = match request.plan_file {
        Some(file) => {
            let flags = request.planning.shaping_flags();
            if !flags.is_empty() {
                return Err(Failure::new(
                    Code::PlanFileUnreadable,
                    format!(
                        "{} shape a new plan; a saved plan carries its own",
                        flags.join(" and ")
                    ),
                )
                .with_help("make the plan again with these flags, or drop them")
                .into());
            }
            let saved = read_plan(file)?;
            check_fresh(&saved, policy, &inventory)?;
            saved
        }
        // The same plan `backplan plan` shows, servers asked included.
        None => crate::plan::plan_with(
            policy,
            &policy.graph,
            &inventory,
            &runtime()?.block_on(crate::sources::probe_all(policy)),
            planning.now,
            planning.settings,
        ),
    };
    if !plan.has_changes() {
        return Ok((Report::default(), Exit::Ok));
    }
    let policy = Arc::new(policy.clone());
    let key = repository_key(&policy)?.ok_or_else(|| {
        Failure::new(
            Code::NoRepositoryKey,
            "backing up needs the repository key, and the policy names none or its file does not exist",
        )
        .with_help("set `encryption.repository_key_file` and run `backplan init`; on a rebuilt host, `backplan init --secret-key FILE` recovers the key the destinations already use")
    })?;
    let recipients = super::recipients(&policy)?;
    let rt = runtime()?;
    let now = chrono::Utc::now();
    let repos = open_all(&policy)?;
    for repo in &repos {
        // A destination seen for the first time gets its repository now. One that
        // cannot be reached fails its own actions, not the others'.
        if let Err(f) = rt.block_on(repo.init(&key, &recipients, now)) {
            eprintln!("{:?}", miette::Report::new(f));
        }
    }
    let mut executor = StorageExecutor::new(policy.clone(), key, recipients, repos, now);
    if let Some(stop) = &request.stop {
        executor = executor.with_stop(stop.clone());
    }
    let progress = render::progress::Progress::for_terminal();
    let report = rt.block_on(crate::apply::apply(
        &plan,
        &executor,
        request.parallel,
        &|event| progress.event(event),
    ));

    if report.done() > 0 {
        rt.block_on(executor.record_policy(chrono::Utc::now()))?;
        for f in rt.block_on(executor.compact_catalogs(plan.settings.role)) {
            eprintln!("{:?}", miette::Report::new(f.with_help(
                "the snapshot catalog is only a cache: the inventory is read one snapshot at a time until the next apply rewrites it",
            )));
        }
    }
    // A step abandoned on a stop may leave a blocking task behind (a source read
    // waiting on its input); it holds no lock, and the runtime waits for it briefly.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    let exit = if report.failed() > 0 {
        Exit::Partial
    } else {
        Exit::Ok
    };
    Ok((report, exit))
}

fn read_plan(file: &Path) -> miette::Result<Plan> {
    let unreadable = |why: String| {
        Failure::new(
            Code::PlanFileUnreadable,
            format!("cannot use plan {}: {why}", file.display()),
        )
    };
    let text = std::fs::read_to_string(file).map_err(|e| unreadable(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    let version = value.get("format_version").and_then(|v| v.as_u64());
    if version != Some(u64::from(FORMAT_VERSION)) {
        return Err(unreadable(format!(
            "its format_version is {}, this backplan reads {FORMAT_VERSION}",
            version.map_or("missing".to_string(), |v| v.to_string())
        ))
        .into());
    }
    serde_json::from_value(value).map_err(|e| unreadable(e.to_string()).into())
}

/// Refuses a saved plan whose policy or inventory moved on since it was made.
pub fn check_fresh(plan: &Plan, policy: &Policy, inventory: &Inventory) -> Result<(), Failure> {
    if plan.policy.is_other_than(policy) {
        let then = plan.policy.location.as_deref().unwrap_or(&plan.policy.path);
        let here = policy
            .location
            .as_deref()
            .unwrap_or(&policy.path)
            .display()
            .to_string();
        return Err(Failure::new(
            Code::PlanOfAnotherPolicy,
            format!("saved plan was made from another policy ({then}), not from {here}"),
        )
        .with_help(format!(
            "apply it with `-p {then}`, or make a new plan from {here}"
        )));
    }
    if plan.policy.digest != policy.digest {
        return Err(Failure::new(
            Code::StalePlan,
            format!(
                "saved plan is stale: the policy {} changed since the plan was made",
                policy.path.display()
            ),
        ));
    }
    if plan.inventory_digest != inventory.digest_for(policy.file.sources.keys()) {
        return Err(Failure::new(
            Code::StalePlan,
            "saved plan is stale: the destinations changed since the plan was made",
        ));
    }
    Ok(())
}
