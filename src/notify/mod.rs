//! Telling others how an `apply` run went: the policy's `notify:` entries get a typed
//! [`RunEvent`] when the run starts and when it ends, as Healthchecks-style pings,
//! webhooks or PagerDuty events. The bodies are shaped in `crate::render::notify`;
//! this module decides what is sent where and sends it ([`send`]).
//!
//! A notification never changes a run: one that cannot be sent (a reference that is
//! not set, an unreachable service, a non-2xx answer, no answer within its timeout)
//! is a warning, printed and recorded in the apply report as a [`Delivery`].
//! Secrets (URLs, routing keys, header values) are resolved here and never printed;
//! what a notification carries of the run is scrubbed of every secret the policy
//! refers to.

mod send;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::apply::event::{Counts, FailedAction, RunError, RunEvent};
use crate::apply::{Delivery, Report, Status};
use crate::error::Exit;
use crate::error::{Code, Failure};
use crate::plan::Action;
use crate::policy::Policy;
use crate::policy::model::SourceKind;
use crate::policy::notify::{
    DEFAULT_TIMEOUT_SECS, Notifier, NotifyState, PAGERDUTY_URL, PagerdutySeverity,
};
use crate::policy::secret::{Resolved, Secret, redact_url_password};
use crate::policy::template::Template;
use crate::render;
use send::Request;

/// The policy's notifications for one run.
#[derive(Debug)]
pub struct Notifications {
    targets: Vec<Target>,
    policy: String,
    host: String,
    run_id: String,
    started_at: DateTime<Utc>,
    scrub: Scrub,
}

#[derive(Debug)]
struct Target {
    name: String,
    notifier: Notifier,
    states: Vec<NotifyState>,
    timeout: Duration,
    template: Option<Template>,
}

/// Runs one `apply` between its notifications: the start before `run`, the outcome
/// after it, each failed delivery printed as a warning as it happens. With `Ok`, the
/// report carries every delivery. Without `notify:` in the policy, this is `run()`.
/// `apply` and the daemon call it outside an async runtime (it starts its own for the
/// requests); inside one, [`Notifications::send`] does the sending.
pub fn notified(
    policy: &Policy,
    run: impl FnOnce() -> miette::Result<(Report, Exit)>,
) -> miette::Result<(Report, Exit)> {
    let notifications = Notifications::new(policy);
    if notifications.is_empty() {
        return run();
    }
    let send = |event: &RunEvent| -> Vec<Delivery> {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(notifications.send(event)),
            Err(e) => notifications
                .undelivered(event.state, &format!("cannot start the async runtime: {e}")),
        }
    };
    let mut deliveries = send(&notifications.start());
    let result = run();
    let outcome = notifications.outcome(result.as_ref().map(|(r, e)| (r, *e)));
    deliveries.extend(send(&outcome));
    result.map(|(mut report, exit)| {
        report.notifications = deliveries;
        (report, exit)
    })
}

impl Notifications {
    pub fn new(policy: &Policy) -> Notifications {
        let targets = policy
            .file
            .notify
            .iter()
            .map(|(name, notifier)| Target {
                name: name.clone(),
                notifier: notifier.clone(),
                states: notifier.states(),
                timeout: notifier
                    .timeout()
                    .and_then(|t| crate::policy::parse_duration(t).ok())
                    .and_then(|d| d.to_std().ok())
                    .unwrap_or(Duration::from_secs(DEFAULT_TIMEOUT_SECS)),
                template: match notifier {
                    Notifier::Webhook {
                        message: Some(m), ..
                    } => Template::parse(m).ok(),
                    _ => None,
                },
            })
            .collect();
        Notifications {
            targets,
            policy: policy
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "backplan".into()),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            run_id: run_id(),
            started_at: Utc::now(),
            scrub: Scrub::of(policy),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The event sent before the run's actions.
    pub fn start(&self) -> RunEvent {
        self.event(NotifyState::Start, self.started_at)
    }

    /// The event of a run that ended with a report, or stopped with an error.
    pub fn outcome(&self, result: Result<(&Report, Exit), &miette::Report>) -> RunEvent {
        let now = Utc::now();
        let wants_log = self.targets.iter().any(|t| t.notifier.send_log());
        match result {
            Ok((report, exit)) => {
                let state = if exit != Exit::Ok || report.failed() > 0 {
                    NotifyState::Failure
                } else if report.skipped() > 0 {
                    NotifyState::Warning
                } else {
                    NotifyState::Success
                };
                RunEvent {
                    exit_status: Some(exit as u8),
                    counts: Some(Counts {
                        done: report.done(),
                        failed: report.failed(),
                        skipped: report.skipped(),
                    }),
                    failures: report
                        .outcomes
                        .iter()
                        .filter_map(|o| match &o.status {
                            Status::Failed { error } => Some(FailedAction {
                                action: action_kind(&o.action),
                                target: action_target(&o.action),
                                code: error.code.id(),
                                message: self.scrub.apply(&error.message),
                            }),
                            _ => None,
                        })
                        .collect(),
                    log: wants_log.then(|| self.scrub.apply(&render::apply::human(report))),
                    ..self.event(state, now)
                }
            }
            Err(error) => {
                // A policy report says how many problems it has; its first error
                // says what is wrong.
                let report: &dyn miette::Diagnostic = &**error;
                let first = report.related().and_then(|mut r| {
                    r.find(|d| d.severity().is_none_or(|s| s == miette::Severity::Error))
                });
                let error = RunError {
                    code: report.code().map(|c| c.to_string()),
                    message: self
                        .scrub
                        .apply(&first.map_or_else(|| report.to_string(), |d| d.to_string())),
                };
                RunEvent {
                    exit_status: Some(1),
                    log: wants_log.then(|| render::notify::error_log(&error)),
                    error: Some(error),
                    ..self.event(NotifyState::Failure, now)
                }
            }
        }
    }

    fn event(&self, state: NotifyState, time: DateTime<Utc>) -> RunEvent {
        RunEvent {
            state,
            policy: self.policy.clone(),
            host: self.host.clone(),
            run_id: self.run_id.clone(),
            time,
            started_at: self.started_at,
            duration_seconds: (state != NotifyState::Start)
                .then(|| (time - self.started_at).num_milliseconds() as f64 / 1000.0),
            exit_status: None,
            counts: None,
            failures: Vec::new(),
            error: None,
            log: None,
        }
    }

    /// Sends `event` to every entry that wants its state, all at once; each failed
    /// delivery is printed as a warning.
    pub async fn send(&self, event: &RunEvent) -> Vec<Delivery> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("backplan/", env!("CARGO_PKG_VERSION")))
            .build();
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                return self.undelivered(
                    event.state,
                    &format!("cannot make an HTTP client: {}", e.without_url()),
                );
            }
        };
        let client = &client;
        let wanted = self
            .targets
            .iter()
            .filter(|t| t.states.contains(&event.state));
        let sends = wanted.map(|target| async move {
            let error = match self.request(target, event) {
                Ok(None) => return None,
                Ok(Some(request)) => send::post(client, &request, target.timeout)
                    .await
                    .err()
                    .map(|why| {
                        Failure::new(
                            Code::NotifyFailed,
                            format!(
                                "notification `{}` ({}) of the {} was not sent: {}",
                                target.name,
                                target.notifier.kind(),
                                event.state.word(),
                                self.scrub.apply(&why)
                            ),
                        )
                    }),
                Err(failure) => Some(failure),
            };
            Some(Delivery {
                notifier: target.name.clone(),
                kind: target.notifier.kind(),
                state: event.state,
                error,
            })
        });
        let deliveries: Vec<Delivery> = futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect();
        for delivery in &deliveries {
            render::notify::warn(delivery);
        }
        deliveries
    }

    /// Every wanted delivery of `state`, failed for the same reason.
    fn undelivered(&self, state: NotifyState, why: &str) -> Vec<Delivery> {
        let deliveries: Vec<Delivery> = self
            .targets
            .iter()
            .filter(|t| t.states.contains(&state))
            .map(|t| Delivery {
                notifier: t.name.clone(),
                kind: t.notifier.kind(),
                state,
                error: Some(Failure::new(Code::NotifyFailed, why)),
            })
            .collect();
        for delivery in &deliveries {
            render::notify::warn(delivery);
        }
        deliveries
    }

    /// The request `target` sends for `event`; `None` when it sends nothing for it.
    fn request(&self, target: &Target, event: &RunEvent) -> Result<Option<Request>, Failure> {
        let resolve = |field: &str, secret: &Secret| -> Result<Resolved, Failure> {
            secret.resolve().map_err(|e| {
                Failure::new(
                    Code::NotifySecretUnresolved,
                    format!(
                        "notification `{}` ({}) of the {} was not sent: `{field}`: {e}",
                        target.name,
                        target.notifier.kind(),
                        event.state.word()
                    ),
                )
            })
        };
        let address = |field: &str, value: &str| -> Result<url::Url, Failure> {
            url::Url::parse(value)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    Failure::new(
                        Code::NotifyFailed,
                        format!(
                            "notification `{}` ({}) of the {} was not sent: `{field}` is not an http:// or https:// URL",
                            target.name,
                            target.notifier.kind(),
                            event.state.word()
                        ),
                    )
                })
        };
        let log = event.log.as_deref().filter(|_| target.notifier.send_log());
        let request = match &target.notifier {
            Notifier::Healthchecks { url, .. } => {
                let mut url = address("url", resolve("url", url)?.expose())?;
                let suffix = match event.state {
                    NotifyState::Start => Some("start".to_string()),
                    NotifyState::Success | NotifyState::Warning => None,
                    NotifyState::Failure => Some(
                        event
                            .exit_status
                            .map_or_else(|| "fail".to_string(), |s| s.to_string()),
                    ),
                };
                if let Some(suffix) = suffix
                    && let Ok(mut path) = url.path_segments_mut()
                {
                    path.pop_if_empty().push(&suffix);
                }
                url.query_pairs_mut().append_pair("rid", &event.run_id);
                Request {
                    url,
                    content_type: "text/plain; charset=utf-8",
                    headers: Vec::new(),
                    body: render::notify::healthchecks(event, log).into_bytes(),
                }
            }
            Notifier::Webhook {
                url,
                format,
                headers,
                ..
            } => {
                let url = address("url", resolve("url", url)?.expose())?;
                let message = render::notify::message(target.template.as_ref(), event);
                let body = render::notify::webhook(*format, event, &message, log);
                let mut all = body.headers;
                for (name, value) in headers {
                    all.push((
                        name.clone(),
                        resolve(&format!("headers.{name}"), value)?
                            .expose()
                            .to_string(),
                    ));
                }
                Request {
                    url,
                    content_type: body.content_type,
                    headers: all,
                    body: body.bytes,
                }
            }
            Notifier::Pagerduty {
                routing_key,
                url,
                severity,
                ..
            } => {
                let endpoint = match url {
                    Some(url) => address("url", resolve("url", url)?.expose())?,
                    None => address("url", PAGERDUTY_URL)?,
                };
                let key = resolve("routing_key", routing_key)?;
                let severity = match event.state {
                    NotifyState::Start => return Ok(None),
                    NotifyState::Success => None,
                    NotifyState::Warning => Some(PagerdutySeverity::Warning),
                    NotifyState::Failure => Some(*severity),
                };
                Request {
                    url: endpoint,
                    content_type: "application/json",
                    headers: Vec::new(),
                    body: render::notify::pagerduty(
                        event,
                        &key,
                        &format!("backplan/{}/{}", event.host, event.policy),
                        severity,
                        &render::notify::message(None, event),
                        log,
                    ),
                }
            }
        };
        Ok(Some(request))
    }
}

/// The values of the environment variables the policy's secrets refer to, and URL
/// passwords: replaced by `***` in whatever a notification carries of the run.
#[derive(Debug)]
struct Scrub(Vec<String>);

impl Scrub {
    fn of(policy: &Policy) -> Scrub {
        let file = &policy.file;
        let mut secrets: Vec<&Secret> = Vec::new();
        for dest in file.destinations.values() {
            secrets.extend(dest.secrets().into_iter().map(|(_, s)| s));
        }
        for source in file.sources.values() {
            match &source.kind {
                SourceKind::Postgres(pg) => {
                    secrets.extend([&pg.url].into_iter().chain(&pg.password))
                }
                SourceKind::Redis(r) => secrets.extend([&r.url].into_iter().chain(&r.password)),
                SourceKind::Files(_) | SourceKind::Config(_) => {}
            }
        }
        if let Some(key) = file
            .encryption
            .as_ref()
            .and_then(|e| e.repository_key.as_ref())
        {
            secrets.push(key);
        }
        for notifier in file.notify.values() {
            secrets.extend(notifier.secrets().into_iter().map(|(_, s)| s));
        }
        let mut values: Vec<String> = secrets
            .iter()
            .filter_map(|s| s.env_names().ok())
            .flatten()
            .filter_map(|name| std::env::var(name).ok())
            // A value this short would blot out ordinary words.
            .filter(|v| v.len() >= 4)
            .collect();
        // The longest first, so that a value holding another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Scrub(values)
    }

    fn apply(&self, text: &str) -> String {
        let mut out = redact_url_password(text);
        for value in &self.0 {
            out = out.replace(value.as_str(), "***");
        }
        out
    }
}

/// `backup`, `prune`, …
fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::Backup(_) => "backup",
        Action::Configure(_) => "configure",
        Action::Copy(_) => "copy",
        Action::Repair(_) => "repair",
        Action::Prune(_) => "prune",
        Action::Drill(_) => "drill",
    }
}

fn action_target(action: &Action) -> String {
    match action {
        Action::Backup(b) => b.source.clone(),
        Action::Configure(c) => c.source.clone(),
        Action::Copy(c) => c.source.clone(),
        Action::Repair(r) => r.destination.clone(),
        Action::Prune(p) => p.source.clone(),
        Action::Drill(d) => d.source.clone(),
    }
}

/// A random (version 4) UUID: Healthchecks accepts a run id only in that form.
fn run_id() -> String {
    let mut b = [0u8; 16];
    // Without randomness the id is zeros: runs are then not told apart, nothing else.
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_is_a_version_4_uuid() {
        let id = run_id();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, run_id());
    }

    #[test]
    fn scrubbing_replaces_secret_values_and_url_passwords() {
        let scrub = Scrub(vec!["hunter2-long".into(), "tok3n".into()]);
        assert_eq!(
            scrub.apply("auth tok3n failed for postgres://u:pw@db/app with hunter2-long"),
            "auth *** failed for postgres://u:***@db/app with ***"
        );
    }
}
