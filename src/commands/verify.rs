//! `backplan verify [--read-data[=FRACTION]] [--restore-test]`: each destination
//! checked under its shared lock ([`crate::verify`]), the database sources' newest
//! snapshots read as their servers would read them ([`check_databases`]), and the
//! findings rendered.

use std::path::Path;

use super::{Exit, load_policy, print, runtime, secret_keys};
use crate::cli::{Format, VerifyArgs};
use crate::error::{Code, Failure};
use crate::repo::lock;
use crate::repo::{open_all, repository_key};
use crate::verify::{Findings, check, check_databases, check_keys, record, record_run};

pub fn run(path: &Path, args: &VerifyArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let policy = &loaded.policy;
    let host = repository_key(policy)?;
    let secret = secret_keys(&args.secret)?;
    if (args.read_data.is_some() || args.restore_test) && secret.is_none() {
        return Err(Failure::new(
            Code::SecretKeyUnusable,
            "--read-data and --restore-test decrypt what they read, which needs a recipient's secret key",
        )
        .into());
    }
    let fraction = args.read_data.map(|f| f.clamp(0.0, 1.0));
    // The key copies' recipients are checked against the policy's, when it names any.
    let recipients = if policy.recipients.is_empty() {
        None
    } else {
        Some(super::recipients(policy)?)
    };
    let rt = runtime()?;
    let mut all = Vec::new();
    let mut refused = Vec::new();
    let now = chrono::Utc::now();
    for repo in open_all(policy)? {
        // A destination without a repository has nothing to verify, and gets no lock.
        let holds_one = matches!(rt.block_on(repo.marker()), Ok(Some(_)));
        let locked = holds_one && !args.no_lock;
        let work = async {
            let mut findings = check(&repo, host.as_ref(), secret.clone(), fraction, now).await;
            if holds_one {
                check_keys(
                    &repo,
                    recipients.as_ref(),
                    host.as_ref(),
                    secret.as_deref(),
                    &mut findings,
                )
                .await;
            }
            if (args.restore_test || args.read_data.is_some())
                && let Some(secret) = &secret
            {
                check_databases(
                    policy,
                    &repo,
                    host.as_ref(),
                    secret.clone(),
                    args.restore_test,
                    &mut findings,
                )
                .await;
            }
            // Only under the lock: without one, verify writes nothing.
            if locked && let Err(e) = record(&repo, &mut findings, now).await {
                findings
                    .problems
                    .entry(String::new())
                    .or_default()
                    .push(Failure {
                        message: format!(
                            "what was found could not be recorded for a repair: {}",
                            e.message
                        ),
                        ..e
                    });
            }
            if locked && let Err(e) = record_run(&repo, &findings, now, fraction).await {
                findings
                    .problems
                    .entry(String::new())
                    .or_default()
                    .push(Failure {
                        message: format!("this verify could not be recorded: {}", e.message),
                        ..e
                    });
            }
            findings
        };
        let findings = if !locked {
            rt.block_on(work)
        } else {
            match rt.block_on(lock::reading(&repo, work)) {
                Ok(findings) => findings,
                Err(f) => {
                    all.push(Findings::not_verified(&repo.name, &f.message));
                    refused.push(f);
                    continue;
                }
            }
        };
        all.push(findings);
    }
    let bad: usize = all.iter().map(Findings::problem_count).sum();
    print(&match args.format {
        Format::Json => crate::render::json(&all),
        Format::Human | Format::Markdown => crate::render::verify::human(&all),
    })?;
    if bad > 0 {
        let mut message = format!("{bad} problem(s) found");
        if !refused.is_empty() {
            message.push_str(&format!("; {} destination(s) not verified", refused.len()));
        }
        return Err(Failure::new(Code::VerifyFailed, message).into());
    }
    if let Some(f) = refused.into_iter().next() {
        return Err(f.into());
    }
    Ok(Exit::Ok)
}
