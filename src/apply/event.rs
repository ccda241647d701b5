//! What one `apply` run's notifications are made from: the values `notify` gathers
//! and `render::notify` words, kept here, below both.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::policy::notify::NotifyState;

/// What every notification of one run is made from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvent {
    pub state: NotifyState,
    /// The policy file's name without its extension (`medianest`).
    pub policy: String,
    pub host: String,
    /// A UUID shared by the run's start and outcome.
    pub run_id: String,
    pub time: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The exit status of `backplan apply` (outcomes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<u8>,
    /// The actions' outcomes (outcomes of runs that got to carry them out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailedAction>,
    /// What stopped the run before or while it carried out its actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// The apply report as printed, scrubbed; sent only where `send_log` is set.
    #[serde(skip)]
    pub log: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// One failed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedAction {
    /// `backup`, `configure`, `copy`, `repair` or `prune`.
    pub action: &'static str,
    /// The source (the destination, for a repair).
    pub target: String,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
}

/// Whether a webhook body is a Slack, Teams, ntfy or JSON one is the renderer's
/// business; this is what it hands back.
#[derive(Debug)]
pub struct Body {
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub bytes: Vec<u8>,
}
