//! Every word and body a notification carries: the summary line, the message
//! template's placeholders, and the Healthchecks, Slack, Teams, ntfy, JSON and
//! PagerDuty bodies, all made from one [`RunEvent`].

use serde_json::{Value, json};

use crate::apply::Delivery;
use crate::apply::event::{Body, RunError, RunEvent};
use crate::policy::notify::{NotifyState, PagerdutySeverity, WebhookFormat};
use crate::policy::secret::Resolved;
use crate::policy::template::Template;

/// At most this much of the apply report is sent (`send_log`); chat services refuse
/// longer messages.
const LOG_LIMIT: usize = 10_000;
/// PagerDuty's limit on an alert's summary.
const PAGERDUTY_SUMMARY_LIMIT: usize = 1024;

/// A failed delivery, as a warning on standard error.
pub fn warn(delivery: &Delivery) {
    if let Some(error) = &delivery.error {
        super::notice(&format!("{} {}", error.code.id(), error.message));
    }
}

/// The lines the apply report closes with when the policy has notifications.
pub fn report_lines(deliveries: &[Delivery]) -> String {
    if deliveries.is_empty() {
        return String::new();
    }
    let failed: Vec<&Delivery> = deliveries.iter().filter(|d| d.error.is_some()).collect();
    let mut out = format!(
        "Notifications: {} sent, {} not sent.\n",
        deliveries.len() - failed.len(),
        failed.len()
    );
    for error in failed.iter().filter_map(|d| d.error.as_ref()) {
        out.push_str(&format!("  ! {} {}\n", error.code.id(), error.message));
    }
    out
}

/// `started`, `succeeded`, `succeeded with warnings`, `failed`.
fn status(state: NotifyState) -> &'static str {
    match state {
        NotifyState::Start => "started",
        NotifyState::Success => "succeeded",
        NotifyState::Warning => "succeeded with warnings",
        NotifyState::Failure => "failed",
    }
}

/// `4m 12s`; empty for a start.
fn duration(event: &RunEvent) -> String {
    event.duration_seconds.map_or_else(String::new, |s| {
        humantime::format_duration(std::time::Duration::from_secs(s.round() as u64)).to_string()
    })
}

/// One line: `backplan medianest on db1: failed (exit 3): 2 done, 1 failed, 0 skipped in 1m 3s`.
pub fn summary(event: &RunEvent) -> String {
    let head = format!("backplan {} on {}", event.policy, event.host);
    let exit = match event.exit_status {
        Some(code) if event.state == NotifyState::Failure => format!(" (exit {code})"),
        _ => String::new(),
    };
    let status = status(event.state);
    if let Some(error) = &event.error {
        let code = error
            .code
            .as_deref()
            .map_or(String::new(), |c| format!("{c} "));
        return format!("{head}: {status}{exit}: {code}{}", error.message);
    }
    match event.counts {
        None => format!("{head}: {status}"),
        Some(c) if c.done + c.failed + c.skipped == 0 => {
            format!("{head}: {status}: nothing to do")
        }
        Some(c) => format!(
            "{head}: {status}{exit}: {} done, {} failed, {} skipped in {}",
            c.done,
            c.failed,
            c.skipped,
            duration(event)
        ),
    }
}

/// `backup db (BP227), prune media (BP209)`, or `none`.
fn failures(event: &RunEvent) -> String {
    if event.failures.is_empty() {
        return "none".into();
    }
    event
        .failures
        .iter()
        .map(|f| format!("{} {} ({})", f.action, f.target, f.code))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value of one placeholder of a message template.
fn placeholder(event: &RunEvent, name: &str) -> String {
    let count = |f: fn(&crate::apply::event::Counts) -> usize| {
        event.counts.as_ref().map_or(0, f).to_string()
    };
    match name {
        "state" => event.state.word().into(),
        "status" => status(event.state).into(),
        "policy" => event.policy.clone(),
        "host" => event.host.clone(),
        "summary" => summary(event),
        "done" => count(|c| c.done),
        "failed" => count(|c| c.failed),
        "skipped" => count(|c| c.skipped),
        "failures" => failures(event),
        "exit_status" => event.exit_status.map_or(String::new(), |s| s.to_string()),
        "time" => event
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "duration" => duration(event),
        "run_id" => event.run_id.clone(),
        // The policy check refuses any other name.
        _ => String::new(),
    }
}

/// The message: the template filled in, or the summary line and one line per failed
/// action.
pub fn message(template: Option<&Template>, event: &RunEvent) -> String {
    match template {
        Some(t) => t.render(|name| placeholder(event, name)),
        None => {
            let mut out = summary(event);
            for f in &event.failures {
                out.push_str(&format!(
                    "\n✗ {} {}: {} {}",
                    f.action, f.target, f.code, f.message
                ));
            }
            out
        }
    }
}

/// The report, cut to [`LOG_LIMIT`] bytes.
fn log_text(log: &str) -> String {
    if log.len() <= LOG_LIMIT {
        return log.to_string();
    }
    let mut end = LOG_LIMIT;
    while !log.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… (cut at {} KB)\n", &log[..end], LOG_LIMIT / 1000)
}

/// What the report says of a run that stopped with an error.
pub fn error_log(error: &RunError) -> String {
    match &error.code {
        Some(code) => format!("{code}: {}\n", error.message),
        None => format!("{}\n", error.message),
    }
}

/// A Healthchecks ping's body: the message, then the report when asked for.
pub fn healthchecks(event: &RunEvent, log: Option<&str>) -> String {
    let mut out = message(None, event);
    out.push('\n');
    if let Some(log) = log {
        out.push('\n');
        out.push_str(&log_text(log));
    }
    out
}

/// A webhook's body in its format.
pub fn webhook(format: WebhookFormat, event: &RunEvent, message: &str, log: Option<&str>) -> Body {
    let log = log.map(log_text);
    let json_body = |value: Value| Body {
        content_type: "application/json",
        headers: Vec::new(),
        bytes: value.to_string().into_bytes(),
    };
    match format {
        WebhookFormat::Json => {
            let mut value = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
            if let Value::Object(map) = &mut value {
                map.insert("format_version".into(), json!(1));
                map.insert("message".into(), json!(message));
                if let Some(log) = log {
                    map.insert("log".into(), json!(log));
                }
            }
            json_body(value)
        }
        WebhookFormat::Slack => {
            let text = match log {
                Some(log) => format!("{message}\n```\n{log}```"),
                None => message.to_string(),
            };
            json_body(json!({ "text": text }))
        }
        WebhookFormat::Teams => {
            let mut blocks = vec![
                json!({"type": "TextBlock", "text": summary(event), "weight": "Bolder", "wrap": true}),
                json!({"type": "TextBlock", "text": message, "wrap": true}),
            ];
            if let Some(log) = log {
                blocks.push(json!({"type": "TextBlock", "text": log, "fontType": "Monospace", "wrap": true}));
            }
            json_body(json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": blocks,
                    }
                }]
            }))
        }
        WebhookFormat::Ntfy => {
            let (priority, tag) = match event.state {
                NotifyState::Start => ("low", "arrow_forward"),
                NotifyState::Success => ("default", "white_check_mark"),
                NotifyState::Warning => ("default", "warning"),
                NotifyState::Failure => ("high", "rotating_light"),
            };
            let mut text = message.to_string();
            if let Some(log) = log {
                text.push_str("\n\n");
                text.push_str(&log);
            }
            Body {
                content_type: "text/plain; charset=utf-8",
                headers: vec![
                    (
                        "Title".into(),
                        format!(
                            "backplan {} on {}: {}",
                            event.policy,
                            event.host,
                            status(event.state)
                        ),
                    ),
                    ("Priority".into(), priority.into()),
                    ("Tags".into(), tag.into()),
                ],
                bytes: text.into_bytes(),
            }
        }
    }
}

/// A PagerDuty Events API v2 event: a trigger with `severity`, or (with none) the
/// resolve of the alert `dedup_key` names.
pub fn pagerduty(
    event: &RunEvent,
    routing_key: &Resolved,
    dedup_key: &str,
    severity: Option<PagerdutySeverity>,
    message: &str,
    log: Option<&str>,
) -> Vec<u8> {
    let Some(severity) = severity else {
        return json!({
            "routing_key": routing_key.expose(),
            "event_action": "resolve",
            "dedup_key": dedup_key,
        })
        .to_string()
        .into_bytes();
    };
    let summary: String = message
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(PAGERDUTY_SUMMARY_LIMIT)
        .collect();
    let mut details = json!({
        "run_id": event.run_id,
        "exit_status": event.exit_status,
        "counts": event.counts,
        "failures": event.failures,
        "error": event.error,
    });
    if let (Some(log), Value::Object(map)) = (log, &mut details) {
        map.insert("log".into(), json!(log_text(log)));
    }
    json!({
        "routing_key": routing_key.expose(),
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "backplan",
        "payload": {
            "summary": summary,
            "source": event.host,
            "severity": severity,
            "timestamp": event.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "component": event.policy,
            "group": "backplan",
            "class": "backup run",
            "custom_details": details,
        }
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::event::{Counts, FailedAction};
    use crate::policy::template::PLACEHOLDERS;

    fn event(state: NotifyState) -> RunEvent {
        let t = |s: &str| s.parse().expect("time");
        RunEvent {
            state,
            policy: "medianest".into(),
            host: "db1".into(),
            run_id: "0b8f3c1e-2d4a-4f6b-9c1d-7e5f3a2b1c0d".into(),
            time: t("2026-12-06T03:01:03Z"),
            started_at: t("2026-12-06T03:00:00Z"),
            duration_seconds: Some(63.0),
            exit_status: Some(3),
            counts: Some(Counts {
                done: 2,
                failed: 1,
                skipped: 0,
            }),
            failures: vec![FailedAction {
                action: "backup",
                target: "db".into(),
                code: "BP227",
                message: "pg_dump exited with status 1".into(),
            }],
            error: None,
            log: None,
        }
    }

    #[test]
    fn the_summary_says_who_what_and_how_it_ended() {
        assert_eq!(
            summary(&event(NotifyState::Failure)),
            "backplan medianest on db1: failed (exit 3): 2 done, 1 failed, 0 skipped in 1m 3s"
        );
        let mut start = event(NotifyState::Start);
        start.counts = None;
        assert_eq!(summary(&start), "backplan medianest on db1: started");
        let mut idle = event(NotifyState::Success);
        idle.counts = Some(Counts {
            done: 0,
            failed: 0,
            skipped: 0,
        });
        assert_eq!(
            summary(&idle),
            "backplan medianest on db1: succeeded: nothing to do"
        );
        let mut stopped = event(NotifyState::Failure);
        stopped.exit_status = Some(1);
        stopped.counts = None;
        stopped.error = Some(RunError {
            code: Some("BP223".into()),
            message: "no repository key".into(),
        });
        assert_eq!(
            summary(&stopped),
            "backplan medianest on db1: failed (exit 1): BP223 no repository key"
        );
    }

    #[test]
    fn a_template_fills_in_every_placeholder() {
        let template = Template::parse(
            "{state}|{status}|{policy}|{host}|{done}|{failed}|{skipped}|{failures}|{exit_status}|{time}|{duration}|{run_id}",
        )
        .expect("template");
        assert_eq!(
            message(Some(&template), &event(NotifyState::Failure)),
            "failure|failed|medianest|db1|2|1|0|backup db (BP227)|3|2026-12-06T03:01:03Z|1m 3s|0b8f3c1e-2d4a-4f6b-9c1d-7e5f3a2b1c0d"
        );
        // No placeholder is left without a value.
        for name in PLACEHOLDERS {
            assert!(
                !placeholder(&event(NotifyState::Failure), name).is_empty(),
                "{{{name}}} has no value"
            );
        }
    }

    #[test]
    fn the_default_message_lists_each_failed_action() {
        assert_eq!(
            message(None, &event(NotifyState::Failure)),
            "backplan medianest on db1: failed (exit 3): 2 done, 1 failed, 0 skipped in 1m 3s\n✗ backup db: BP227 pg_dump exited with status 1"
        );
    }

    #[test]
    fn each_webhook_format_is_the_body_its_service_expects() {
        let e = event(NotifyState::Failure);
        let parse = |b: &Body| -> Value { serde_json::from_slice(&b.bytes).expect("JSON") };
        let slack = webhook(WebhookFormat::Slack, &e, "hi", Some("the log"));
        assert_eq!(parse(&slack), json!({"text": "hi\n```\nthe log```"}));
        let teams = parse(&webhook(WebhookFormat::Teams, &e, "hi", None));
        assert_eq!(teams["type"], "message");
        let card = &teams["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["body"][1]["text"], "hi");
        let own = parse(&webhook(WebhookFormat::Json, &e, "hi", None));
        assert_eq!(own["state"], "failure");
        assert_eq!(own["message"], "hi");
        assert_eq!(own["failures"][0]["code"], "BP227");
        assert!(own.get("log").is_none(), "no log unless asked");
        let ntfy = webhook(WebhookFormat::Ntfy, &e, "hi", None);
        assert_eq!(ntfy.bytes, b"hi");
        assert!(ntfy.headers.contains(&("Priority".into(), "high".into())));
    }

    #[test]
    fn a_long_log_is_cut() {
        let log = "é".repeat(LOG_LIMIT);
        let cut = log_text(&log);
        assert!(cut.len() < LOG_LIMIT + 50);
        assert!(cut.ends_with("… (cut at 10 KB)\n"));
    }
}
