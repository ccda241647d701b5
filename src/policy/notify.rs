//! The YAML shape of `notify:`: who hears how each `apply` run went. Sending is in
//! `notify/`; the checks are in `validate`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// How a run stands when a notification is sent: `start` before the actions, then one
/// of the outcomes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NotifyState {
    /// The run begins (before the inventory is read).
    Start,
    /// Every action succeeded (or there was nothing to do).
    Success,
    /// No action failed, but some were skipped (held-back prunes, for instance).
    Warning,
    /// An action failed, or the run stopped with an error.
    Failure,
}

impl NotifyState {
    pub const ALL: [NotifyState; 4] = [
        NotifyState::Start,
        NotifyState::Success,
        NotifyState::Warning,
        NotifyState::Failure,
    ];

    /// The word the policy writes.
    pub fn word(self) -> &'static str {
        match self {
            NotifyState::Start => "start",
            NotifyState::Success => "success",
            NotifyState::Warning => "warning",
            NotifyState::Failure => "failure",
        }
    }
}

/// One notification target.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Notifier {
    /// Pings in the Healthchecks.io protocol (`<url>/start`, `<url>`, `<url>/<exit
    /// status>`), understood by Healthchecks.io, its self-hosted version and the
    /// services that copy it.
    Healthchecks {
        /// The check's ping URL, e.g. `${env:HC_PING_URL}`; secret-capable.
        url: Secret,
        /// The states that send a ping. Default: all four.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        states: Option<Vec<NotifyState>>,
        /// Send the apply report (secrets scrubbed) in the ping's body. Default false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        send_log: bool,
        /// How long one request may take, at most `60s`. Default `10s`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// A POST to a webhook: a Slack, Teams or ntfy message, or backplan's own JSON
    /// event.
    Webhook {
        /// The webhook URL, e.g. `${env:SLACK_WEBHOOK_URL}`; secret-capable.
        url: Secret,
        /// The body's shape: `json` (backplan's event), `slack` (also Mattermost,
        /// Rocket.Chat, Google Chat, Discord's `/slack` URLs), `teams` (an Adaptive
        /// Card, for a Teams workflow) or `ntfy`. Default `json`.
        #[serde(default)]
        format: WebhookFormat,
        /// The message text, with placeholders such as `{status}`, `{policy}`,
        /// `{host}`, `{summary}`, `{failures}` (docs/operations.md lists them all).
        /// Default: the summary line, then one line per failed action.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Extra request headers (an `Authorization` token, an ntfy `Tags`); values
        /// are secret-capable.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, Secret>,
        /// The states that send a message. Default: success, warning, failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        states: Option<Vec<NotifyState>>,
        /// Add the apply report (secrets scrubbed) to the message. Default false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        send_log: bool,
        /// How long one request may take, at most `60s`. Default `10s`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// PagerDuty Events API v2: a failure triggers an alert, the next success resolves
    /// it (one alert per policy and host).
    Pagerduty {
        /// The integration's routing key, e.g. `${env:PAGERDUTY_ROUTING_KEY}`;
        /// secret-capable.
        routing_key: Secret,
        /// The Events API endpoint. Default `https://events.pagerduty.com/v2/enqueue`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<Secret>,
        /// The alert's severity on failure. Default `critical`; a warning run
        /// triggers with `warning`.
        #[serde(default)]
        severity: PagerdutySeverity,
        /// `failure` triggers, `warning` triggers with severity warning, `success`
        /// resolves. Default: success, failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        states: Option<Vec<NotifyState>>,
        /// Add the apply report (secrets scrubbed) to the alert's details. Default false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        send_log: bool,
        /// How long one request may take, at most `60s`. Default `10s`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
}

/// The body a webhook sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
    Teams,
    Ntfy,
}

/// A PagerDuty alert's severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PagerdutySeverity {
    #[default]
    Critical,
    Error,
    Warning,
    Info,
}

/// The default PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// How long one notification request may take by default, and at most.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
pub const MAX_TIMEOUT_SECS: u64 = 60;

impl Notifier {
    /// `healthchecks`, `webhook` or `pagerduty`.
    pub fn kind(&self) -> &'static str {
        match self {
            Notifier::Healthchecks { .. } => "healthchecks",
            Notifier::Webhook { .. } => "webhook",
            Notifier::Pagerduty { .. } => "pagerduty",
        }
    }

    /// The states this kind can send.
    pub fn supported_states(&self) -> &'static [NotifyState] {
        match self {
            Notifier::Healthchecks { .. } | Notifier::Webhook { .. } => &NotifyState::ALL,
            Notifier::Pagerduty { .. } => &[
                NotifyState::Success,
                NotifyState::Warning,
                NotifyState::Failure,
            ],
        }
    }

    /// The states written, or this kind's default.
    pub fn states(&self) -> Vec<NotifyState> {
        let (written, default): (_, &[NotifyState]) = match self {
            Notifier::Healthchecks { states, .. } => (states, &NotifyState::ALL),
            Notifier::Webhook { states, .. } => (
                states,
                &[
                    NotifyState::Success,
                    NotifyState::Warning,
                    NotifyState::Failure,
                ],
            ),
            Notifier::Pagerduty { states, .. } => {
                (states, &[NotifyState::Success, NotifyState::Failure])
            }
        };
        written.clone().unwrap_or_else(|| default.to_vec())
    }

    pub fn send_log(&self) -> bool {
        match self {
            Notifier::Healthchecks { send_log, .. }
            | Notifier::Webhook { send_log, .. }
            | Notifier::Pagerduty { send_log, .. } => *send_log,
        }
    }

    /// The timeout as written.
    pub fn timeout(&self) -> Option<&str> {
        match self {
            Notifier::Healthchecks { timeout, .. }
            | Notifier::Webhook { timeout, .. }
            | Notifier::Pagerduty { timeout, .. } => timeout.as_deref(),
        }
    }

    /// Every secret-capable value, with the field that holds it.
    pub fn secrets(&self) -> Vec<(String, &Secret)> {
        match self {
            Notifier::Healthchecks { url, .. } => vec![("url".into(), url)],
            Notifier::Webhook { url, headers, .. } => std::iter::once(("url".into(), url))
                .chain(headers.iter().map(|(k, v)| (format!("headers.{k}"), v)))
                .collect(),
            Notifier::Pagerduty {
                routing_key, url, ..
            } => std::iter::once(("routing_key".into(), routing_key))
                .chain(url.iter().map(|u| ("url".into(), u)))
                .collect(),
        }
    }
}
