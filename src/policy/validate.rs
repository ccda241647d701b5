//! Semantic checks of a policy that parsed: names that must exist, schedules, time
//! zones, retention, key files, secrets, the dependency graph. Every problem is
//! collected with its span; a policy with no errors is resolved into a [`Policy`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use indexmap::IndexMap;

use super::load::Parsed;
use super::model::{Destination, PolicyFile, Retention, SourceKind, builtin_retention};
use super::notify::{MAX_TIMEOUT_SECS, Notifier};
use super::schedule::{Schedule, is_accepted_zone_name, parse_timezone, timezone_for_abbreviation};
use super::secret::{Secret, mask_url_passwords, url_has_inline_password};
use super::services;
use super::spans::{SpanIndex, join, join_index};
use super::{
    DEFAULT_COMPRESSION, DEFAULT_SCHEDULE, DEFAULT_TIMEZONE, EffectiveRetention, Policy,
    ResolvedSource, digest, load::suggest, resolve_path,
};
use crate::crypto::{KeyFile, inspect_key_file};
use crate::error::{Code, Problem};
use crate::graph::SourceGraph;
use crate::policy::template::{PLACEHOLDERS, Template, TemplateError};

/// `text` with every character of the values that [`Code::InlineServiceSecret`] and
/// [`Code::InlineNotifySecret`] problems point at, and of every literal password in a URL, replaced by `*` (byte
/// for byte, so that every span still fits).
pub(super) fn mask_inline_secrets(text: &str, problems: &[Problem]) -> String {
    // Passwords inside URLs (BP131) too, wherever they stand.
    let mut out = mask_url_passwords(text);
    for problem in problems {
        let Some((span, _)) = &problem.span else {
            continue;
        };
        let range = span.offset()..span.offset() + span.len();
        let secret = matches!(
            problem.code,
            Code::InlineServiceSecret | Code::InlineNotifySecret
        );
        if !secret || text.get(range.clone()).is_none() {
            continue;
        }
        let masked: String = text[range.clone()]
            .chars()
            .map(|c| "*".repeat(c.len_utf8()))
            .collect();
        out.replace_range(range, &masked);
    }
    out
}

/// Whether a healthchecks or webhook field holds a secret, so that writing it inline
/// is BP138: the URL, and headers that carry credentials.
fn secret_field(field: &str) -> bool {
    match field.strip_prefix("headers.") {
        Some(header) => {
            let header = header.to_ascii_lowercase();
            header == "authorization"
                || ["token", "key", "secret", "password"]
                    .iter()
                    .any(|w| header.contains(w))
        }
        None => field == "url",
    }
}

struct Checker<'a> {
    spans: &'a SpanIndex,
    dir: &'a Path,
    problems: &'a mut Vec<Problem>,
    /// Schedules parsed so far, by expression and zone: sources share them.
    schedules: HashMap<(String, Tz), Schedule>,
}

pub(super) fn validate(
    parsed: Parsed,
    text: &str,
    path: &Path,
    dir: &Path,
    spans: SpanIndex,
    problems: &mut Vec<Problem>,
) -> Option<Policy> {
    let errors_before = problems.iter().filter(|p| p.is_error()).count();
    let Parsed {
        file,
        complete,
        source_names,
        destination_names,
        encryption_broken,
    } = parsed;
    let mut c = Checker {
        spans: &spans,
        dir,
        problems,
        schedules: HashMap::new(),
    };

    // Emptiness is judged on what was declared: an entry that did not parse is there.
    if destination_names.as_ref().is_some_and(Vec::is_empty) {
        c.error(
            Problem::error(Code::NoDestinations, "the policy declares no destination"),
            "destinations",
        );
    }
    if source_names.as_ref().is_some_and(Vec::is_empty) {
        c.error(
            Problem::error(Code::MissingField, "the policy declares no source")
                .with_help("declare at least one source under `sources:`"),
            "sources",
        );
    }

    let default_tz = match &file.defaults.timezone {
        Some(name) => c.timezone(name, "defaults.timezone").unwrap_or(Tz::UTC),
        None => parse_timezone(DEFAULT_TIMEZONE).unwrap_or(Tz::UTC),
    };
    let default_schedule = file
        .defaults
        .schedule
        .as_deref()
        .unwrap_or(DEFAULT_SCHEDULE);
    if file.defaults.schedule.is_some() {
        c.schedule(default_schedule, default_tz, "defaults.schedule");
    }
    let builtin = builtin_retention();
    let default_retention = file.defaults.retention.as_ref().unwrap_or(&builtin);
    let default_effective = c.retention(default_retention, "defaults.retention");
    let compression = file.defaults.compression.unwrap_or(DEFAULT_COMPRESSION);
    if !(1..=22).contains(&compression) {
        c.error(
            Problem::error(
                Code::BadCompression,
                format!("compression level {compression} is outside 1..=22"),
            ),
            "defaults.compression",
        );
    }

    c.size_change_factor(file.defaults.size_change_factor, "defaults");

    let recipients = if encryption_broken {
        Vec::new()
    } else {
        c.recipients(&file)
    };

    for (name, dest) in &file.destinations {
        let base = join("destinations", name);
        for (field, secret) in dest.secrets() {
            c.secret(secret, &join(&base, &field));
        }
        if let Destination::Opendal {
            scheme, options, ..
        } = dest
        {
            c.service(name, scheme, options, &base);
        }
    }

    for (name, notifier) in &file.notify {
        c.notifier(name, notifier);
    }

    let mut sources = IndexMap::new();
    for (name, source) in &file.sources {
        let base = join("sources", name);
        let tz = match &source.common.timezone {
            Some(tz) => c
                .timezone(tz, &join(&base, "timezone"))
                .unwrap_or(default_tz),
            None => default_tz,
        };
        let schedule = match &source.common.schedule {
            Some(expr) => c.schedule(expr, tz, &join(&base, "schedule")),
            None => c.parsed_schedule(default_schedule, tz).ok(),
        };
        let retention = match &source.common.retention {
            Some(r) => c.retention(r, &join(&base, "retention")),
            None => default_effective.clone(),
        };
        let destinations = match &source.common.destinations {
            Some(list) => {
                if list.is_empty() {
                    c.error(
                        Problem::error(
                            Code::NoDestinations,
                            format!("source `{name}` writes to no destination"),
                        ),
                        &join(&base, "destinations"),
                    );
                }
                // Unknown only if not declared at all (with `destinations` itself broken,
                // that has been reported already).
                let declared = destination_names.as_deref().unwrap_or_default();
                for (i, dest) in list.iter().enumerate() {
                    if destination_names.is_some() && !declared.contains(dest) {
                        let mut p = Problem::error(
                            Code::UnknownDestination,
                            format!("source `{name}` names an unknown destination `{dest}`"),
                        );
                        if let Some(near) = suggest(dest, declared.iter().map(String::as_str)) {
                            p = p.with_help(format!("did you mean `{near}`?"));
                        }
                        c.error_value(p, &join_index(&join(&base, "destinations"), i));
                    }
                }
                list.clone()
            }
            None => file.destinations.keys().cloned().collect(),
        };
        let declared = source_names.as_deref().unwrap_or_default();
        for (i, dep) in source.common.depends_on.iter().enumerate() {
            if !declared.contains(dep) {
                let mut p = Problem::error(
                    Code::UnknownDependency,
                    format!("source `{name}` depends on an unknown source `{dep}`"),
                );
                if let Some(near) = suggest(dep, declared.iter().map(String::as_str)) {
                    p = p.with_help(format!("did you mean `{near}`?"));
                }
                c.error_value(p, &join_index(&join(&base, "depends_on"), i));
            }
        }
        c.kind(&source.kind, &base);
        c.size_change_factor(source.common.size_change_factor, &base);

        if let (Some(schedule), Some(retention)) = (schedule, retention) {
            let kind_json = serde_json::to_vec(&source.kind).unwrap_or_default();
            sources.insert(
                name.clone(),
                ResolvedSource {
                    name: name.clone(),
                    type_name: source.kind.type_name(),
                    schedule,
                    retention,
                    destinations,
                    depends_on: source.common.depends_on.clone(),
                    digest: digest(&kind_json),
                    kind: source.kind.clone(),
                },
            );
        }
    }

    c.object_locks(&file, &sources);

    let edges: Vec<(&str, &[String])> = file
        .sources
        .iter()
        .map(|(name, s)| (name.as_str(), s.common.depends_on.as_slice()))
        .collect();
    let graph = SourceGraph::new(&edges);
    if let Err(cycle) = &graph {
        let mut p = Problem::error(
            Code::DependencyCycle,
            format!(
                "the sources depend on each other in a cycle: {}",
                cycle.join(" → ")
            ),
        );
        let first = cycle.first().cloned().unwrap_or_default();
        p = p.at(
            c.spans.key(&join(&join("sources", &first), "depends_on")),
            "the cycle starts here",
        );
        for pair in cycle.windows(2).skip(1) {
            p = p.also_at(
                c.spans.key(&join(&join("sources", &pair[0]), "depends_on")),
                format!("{} depends on {}", pair[0], pair[1]),
            );
        }
        c.problems.push(p);
    }

    let objectives = file.objectives.clone().unwrap_or_default();
    let mut duration = |text: &Option<String>, path: &str| {
        let text = text.as_deref()?;
        match super::parse_duration(text) {
            Ok(d) if d > chrono::Duration::zero() => Some(d),
            Ok(_) => {
                c.error_value(
                    Problem::error(Code::BadDuration, format!("{path} must be longer than 0")),
                    path,
                );
                None
            }
            Err(message) => {
                c.error_value(
                    Problem::error(Code::BadDuration, format!("{path} {message}")),
                    path,
                );
                None
            }
        }
    };
    let objectives = super::ResolvedObjectives {
        rpo: duration(&objectives.rpo, "objectives.rpo"),
        rto: duration(&objectives.rto, "objectives.rto"),
    };
    for (name, url) in file.drill.iter().flat_map(|d| &d.targets) {
        let path = join(&join("drill", "targets"), name);
        c.secret(url, &path);
        let kind = file.sources.get(name).map(|s| &s.kind);
        if !matches!(
            kind,
            Some(SourceKind::Postgres(_)) | Some(SourceKind::Redis(_))
        ) {
            let why = match kind {
                None => format!("`{name}` is not a source of the policy"),
                Some(_) => format!("`{name}` is drilled into a temporary folder, not a server"),
            };
            c.error(
                Problem::error(Code::BadDrillTarget, format!("drill target {why}")),
                &path,
            );
        }
    }
    let drill_schedule = file
        .drill
        .as_ref()
        .and_then(|d| d.schedule.as_deref())
        .and_then(|expr| c.schedule(expr, default_tz, "drill.schedule"));

    let errors_after = c.problems.iter().filter(|p| p.is_error()).count();
    if errors_after > errors_before || !complete {
        return None;
    }
    // A cycle is an error above, so the graph is there.
    let graph = graph.ok()?;
    Some(Policy {
        objectives,
        drill_schedule,
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        location: std::fs::canonicalize(path).ok(),
        text: text.to_string(),
        digest: digest(text.as_bytes()),
        file,
        spans,
        sources,
        recipients,
        compression,
        graph,
    })
}

impl Checker<'_> {
    /// One `notify:` entry: its references (an unset one is its own warning, BP137: a
    /// notification never stops a backup), secrets written inline (BP138), the URL,
    /// the states it can send (BP139), the timeout and the message template (BP136).
    fn notifier(&mut self, name: &str, notifier: &Notifier) {
        let base = join("notify", name);
        for (field, secret) in notifier.secrets() {
            let at = join(&base, &field);
            match secret.env_names() {
                Err(e) => {
                    self.error_value(
                        Problem::error(Code::InvalidValue, format!("`{at}`: {e}")),
                        &at,
                    );
                    continue;
                }
                Ok(names) => {
                    for var in names.into_iter().filter(|n| std::env::var_os(n).is_none()) {
                        let span = self.spans.nearest(&at);
                        self.problems.push(
                            Problem::warning(
                                Code::NotifyEnvUnset,
                                format!("`{at}` refers to ${{env:{var}}}, which is not set here: `apply` would not send this notification"),
                            )
                            .at(span, "refers to an unset variable"),
                        );
                    }
                }
            }
            let holds_secret = match notifier {
                Notifier::Pagerduty { .. } => field == "routing_key",
                _ => secret_field(&field),
            };
            if holds_secret && !secret.is_reference() {
                self.problems.push(
                    Problem::warning(
                        Code::InlineNotifySecret,
                        format!("`{at}` is written inline: it is a secret"),
                    )
                    .with_help(format!(
                        "anyone who has it can send as backplan: write `{}: ${{env:NAME}}` and export NAME",
                        field.rsplit('.').next().unwrap_or(&field)
                    ))
                    .at(self.spans.value(&at), "secret written inline"),
                );
            }
            if field == "url" && !secret.template().starts_with("${") {
                // References stand for some text; the URL's shape is checked with them
                // filled in, its value never shown.
                let sample = secret.resolve_with(|_| Some("x".into()));
                let usable = sample.ok().and_then(|s| url::Url::parse(s.expose()).ok());
                if !usable.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
                    self.error_value(
                        Problem::error(
                            Code::InvalidValue,
                            format!("`{at}` is not an http:// or https:// URL"),
                        ),
                        &at,
                    );
                }
            }
        }
        if let Notifier::Webhook { headers, .. } = notifier {
            for key in headers.keys() {
                // An HTTP token (RFC 9110, 5.6.2).
                let token = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token {
                    self.error(
                        Problem::error(
                            Code::InvalidValue,
                            format!("`{key}` is not an HTTP header name"),
                        ),
                        &join(&join(&base, "headers"), key),
                    );
                }
            }
        }

        let states_at = join(&base, "states");
        let written = match notifier {
            Notifier::Healthchecks { states, .. }
            | Notifier::Webhook { states, .. }
            | Notifier::Pagerduty { states, .. } => states.as_deref(),
        };
        if written.is_some_and(<[_]>::is_empty) {
            self.error_value(
                Problem::error(
                    Code::BadNotifyState,
                    format!("notification `{name}` lists no state: it would never be sent"),
                )
                .with_help("list the states to send, or remove the notification"),
                &states_at,
            );
        }
        for (i, state) in written.unwrap_or_default().iter().enumerate() {
            if !notifier.supported_states().contains(state) {
                self.error_value(
                    Problem::error(
                        Code::BadNotifyState,
                        format!(
                            "a {} notification cannot send `{}`",
                            notifier.kind(),
                            state.word()
                        ),
                    )
                    .with_help(format!(
                        "it sends: {}",
                        notifier
                            .supported_states()
                            .iter()
                            .map(|s| s.word())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    &join_index(&states_at, i),
                );
            }
        }

        if let Some(text) = notifier.timeout() {
            let at = join(&base, "timeout");
            match super::parse_duration(text) {
                Err(message) => self.error_value(
                    Problem::error(Code::BadDuration, format!("timeout {message}")),
                    &at,
                ),
                Ok(d)
                    if d < chrono::Duration::seconds(1)
                        || d > chrono::Duration::seconds(MAX_TIMEOUT_SECS as i64) =>
                {
                    self.error_value(
                        Problem::error(
                            Code::InvalidValue,
                            format!("timeout {text} is outside 1s..={MAX_TIMEOUT_SECS}s"),
                        )
                        .with_help(
                            "a notification must not hold up the run: a few seconds is plenty",
                        ),
                        &at,
                    )
                }
                Ok(_) => {}
            }
        }

        if let Notifier::Webhook {
            message: Some(text),
            ..
        } = notifier
        {
            self.message_template(text, &join(&base, "message"));
        }
    }

    /// A message template: known placeholders, balanced braces. The span narrows to
    /// the placeholder when the policy writes it as is.
    fn message_template(&mut self, text: &str, at: &str) {
        let (problem, written) = match Template::parse(text) {
            Ok(_) => return,
            Err(TemplateError::Unknown { name, .. }) => {
                let mut p = Problem::error(
                    Code::UnknownPlaceholder,
                    format!("the message names an unknown placeholder `{{{name}}}`"),
                );
                p = match suggest(name.trim(), PLACEHOLDERS.iter().copied()) {
                    Some(near) => p.with_help(format!("did you mean `{{{near}}}`?")),
                    None => p.with_help(format!(
                        "the placeholders are: {}",
                        PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                (p, format!("{{{name}}}"))
            }
            Err(TemplateError::Unbalanced { at: offset }) => (
                Problem::error(
                    Code::UnknownPlaceholder,
                    "the message has a brace that opens or closes no placeholder",
                ),
                text[offset..].chars().take(1).collect(),
            ),
        };
        let value = self.spans.value(at).or_else(|| self.spans.nearest(at));
        let narrowed = value.and_then(|span| {
            let raw = self.spans.text(span)?;
            let start = raw.find(&written)?;
            Some(miette::SourceSpan::new(
                (span.offset() + start).into(),
                written.len(),
            ))
        });
        self.problems.push(problem.at(narrowed.or(value), "here"));
    }

    /// Each `object_lock:`: a duration, and (a warning, BP135) at least as long as
    /// the longest time a source writing there keeps a snapshot, so that no snapshot
    /// outlives its lock.
    fn object_locks(&mut self, file: &PolicyFile, sources: &IndexMap<String, ResolvedSource>) {
        for (name, dest) in &file.destinations {
            let Some(lock) = dest.object_lock() else {
                continue;
            };
            let path = join(
                &join(&join("destinations", name), "object_lock"),
                "retain_for",
            );
            let period = match super::parse_duration(&lock.retain_for) {
                Ok(d) if d > chrono::Duration::zero() => d,
                Ok(_) => {
                    self.error_value(
                        Problem::error(Code::BadDuration, "retain_for must be longer than 0"),
                        &path,
                    );
                    continue;
                }
                Err(message) => {
                    self.error_value(
                        Problem::error(Code::BadDuration, format!("retain_for {message}")),
                        &path,
                    );
                    continue;
                }
            };
            let longest = sources
                .values()
                .filter(|s| s.destinations.iter().any(|d| d == name))
                .filter_map(|s| s.retention.longest_keep().map(|d| (d, s.name.as_str())))
                .max();
            if let Some((need, source)) = longest
                && period < need
            {
                let span = self
                    .spans
                    .value(&path)
                    .or_else(|| self.spans.nearest(&path));
                self.problems.push(
                    Problem::warning(
                        Code::ObjectLockTooShort,
                        format!(
                            "destination `{name}` locks objects for {}, but source `{source}` keeps snapshots there up to {}: the older ones are unprotected",
                            super::format_duration(period),
                            super::format_duration(need),
                        ),
                    )
                    .at(span, "shorter than the retention"),
                );
            }
        }
    }

    /// Records an error pointing at the key at `path`.
    fn error(&mut self, problem: Problem, path: &str) {
        let span = self.spans.nearest(path);
        self.problems.push(problem.at(span, "here"));
    }

    /// Records an error pointing at the value at `path`.
    fn error_value(&mut self, problem: Problem, path: &str) {
        let span = self.spans.value(path).or_else(|| self.spans.nearest(path));
        self.problems.push(problem.at(span, "here"));
    }

    fn timezone(&mut self, name: &str, path: &str) -> Option<Tz> {
        match parse_timezone(name) {
            Ok(tz) => Some(tz),
            Err(message) => {
                let mut p = Problem::error(Code::BadTimezone, message);
                if let Some(zone) = timezone_for_abbreviation(name) {
                    p = p.with_help(format!(
                        "did you mean `{zone}`? Name the place whose clock the schedules follow, as `Area/Location` (or `UTC`)"
                    ));
                } else if let Some(near) = suggest(
                    name,
                    chrono_tz::TZ_VARIANTS
                        .iter()
                        .map(|t| t.name())
                        .filter(|n| is_accepted_zone_name(n)),
                ) {
                    p = p.with_help(format!("did you mean `{near}`?"));
                }
                self.error_value(p, path);
                None
            }
        }
    }

    /// Parses a schedule, or returns the one parsed before for the same expression
    /// and zone.
    fn parsed_schedule(&mut self, expr: &str, tz: Tz) -> Result<Schedule, String> {
        let key = (expr.to_string(), tz);
        if let Some(s) = self.schedules.get(&key) {
            return Ok(s.clone());
        }
        let s = Schedule::parse(expr, tz)?;
        self.schedules.insert(key, s.clone());
        Ok(s)
    }

    fn schedule(&mut self, expr: &str, tz: Tz, path: &str) -> Option<Schedule> {
        match self.parsed_schedule(expr, tz) {
            Ok(s) => Some(s),
            Err(message) => {
                self.error_value(
                    Problem::error(
                        Code::BadSchedule,
                        format!("`{expr}` is not a cron expression: {message}"),
                    ),
                    path,
                );
                None
            }
        }
    }

    fn retention(&mut self, r: &Retention, path: &str) -> Option<EffectiveRetention> {
        let effective = match EffectiveRetention::from_written(r) {
            Ok(e) => e,
            Err(message) => {
                self.error_value(
                    Problem::error(Code::BadDuration, format!("keep_within {message}")),
                    &join(path, "keep_within"),
                );
                return None;
            }
        };
        if !effective.keeps_something() {
            self.error(
                Problem::error(
                    Code::RetentionKeepsNothing,
                    format!("`{path}` keeps no snapshot"),
                ),
                path,
            );
            return None;
        }
        Some(effective)
    }

    fn recipients(&mut self, file: &PolicyFile) -> Vec<PathBuf> {
        let Some(encryption) = &file.encryption else {
            self.problems.push(
                Problem::error(Code::MissingField, "the policy has no `encryption`")
                    .with_help("add `encryption: { recipients: [path/to/public-key.asc] }`; backups are always encrypted")
                    .at(self.spans.value(""), "add `encryption:`"),
            );
            return Vec::new();
        };
        if encryption.repository_key.is_some() && encryption.repository_key_file.is_some() {
            self.error(
                Problem::error(
                    Code::InvalidValue,
                    "give the repository key once: `repository_key` or `repository_key_file`",
                ),
                "encryption.repository_key",
            );
        }
        if let Some(secret) = &encryption.repository_key {
            self.secret(secret, "encryption.repository_key");
        }
        if encryption.recipients.is_empty() {
            self.error(
                Problem::error(Code::MissingField, "`encryption.recipients` lists no key"),
                "encryption.recipients",
            );
        }
        let mut out = Vec::new();
        for (i, key) in encryption.recipients.iter().enumerate() {
            let path = resolve_path(self.dir, key);
            let at = join_index("encryption.recipients", i);
            match std::fs::read(&path) {
                Err(e) => self.error_value(
                    Problem::error(
                        Code::KeyFileUnreadable,
                        format!("cannot read key file {}: {e}", path.display()),
                    ),
                    &at,
                ),
                Ok(bytes) => match inspect_key_file(&bytes) {
                    KeyFile::Public => out.push(path),
                    KeyFile::Secret => self.error_value(
                        Problem::error(
                            Code::NotAPublicKey,
                            format!(
                                "{} holds a SECRET key: a secret key must never be on the backup host",
                                path.display()
                            ),
                        )
                        .with_help("name the public key only (`gpg --export --armor FINGERPRINT > key.asc`); move the secret key off this host, to where restores are done"),
                        &at,
                    ),
                    KeyFile::Malformed(why) => self.error_value(
                        Problem::error(
                            Code::MalformedKey,
                            format!("{} is not a readable OpenPGP key: {why}", path.display()),
                        ),
                        &at,
                    ),
                    KeyFile::Unusable(why) => self.error_value(
                        Problem::error(
                            Code::NotAPublicKey,
                            format!("{} cannot be encrypted to: {why}", path.display()),
                        )
                        .with_help("give a key with a valid (unexpired, unrevoked) encryption subkey"),
                        &at,
                    ),
                    KeyFile::NotOpenPgp => self.error_value(
                        Problem::error(
                            Code::NotAPublicKey,
                            format!("{} is not an OpenPGP public key", path.display()),
                        ),
                        &at,
                    ),
                },
            }
        }
        out
    }

    fn secret(&mut self, secret: &Secret, base: &str) {
        match secret.env_names() {
            Err(e) => self.error(
                Problem::error(Code::InvalidValue, format!("`{base}`: {e}")),
                base,
            ),
            Ok(names) => {
                for name in names {
                    if std::env::var_os(name).is_none() {
                        let span = self.spans.nearest(base);
                        self.problems.push(
                            Problem::warning(
                                Code::UnsetEnv,
                                format!(
                                    "`{base}` refers to ${{env:{name}}}, which is not set here"
                                ),
                            )
                            .at(span, "refers to an unset variable"),
                        );
                    }
                }
            }
        }
        if url_has_inline_password(secret.template()) {
            let span = self.spans.nearest(base);
            self.problems.push(
                Problem::warning(
                    Code::InlineSecret,
                    format!("`{base}` holds a password inline"),
                )
                .at(span, "inline password"),
            );
        }
    }

    /// A `type: opendal` destination: a compiled-in scheme, the options it takes and
    /// needs, its secrets only as references or files. Values are never printed.
    fn service(
        &mut self,
        name: &str,
        scheme: &str,
        options: &std::collections::BTreeMap<String, Secret>,
        base: &str,
    ) {
        let Some(service) = services::service(scheme) else {
            let known: Vec<&str> = services::schemes().collect();
            let mut help = String::new();
            if let Some(near) = suggest(scheme, known.iter().copied()) {
                help.push_str(&format!("did you mean `{near}`? "));
            }
            help.push_str(&format!(
                "this backplan is built with: {}",
                known.join(", ")
            ));
            self.error_value(
                Problem::error(
                    Code::UnknownScheme,
                    format!(
                        "destination `{name}` uses OpenDAL scheme `{scheme}`, which this backplan is not built with"
                    ),
                )
                .with_help(help),
                &join(base, "scheme"),
            );
            return;
        };
        let opts = join(base, "options");
        for (key, value) in options {
            let at = join(&opts, key);
            if !service.takes(key) {
                let mut p = Problem::error(
                    Code::UnknownField,
                    format!("destination `{name}`: {scheme} takes no option `{key}`"),
                );
                let known = service.options.unwrap_or_default().iter().copied();
                let files: Vec<String> = service
                    .secrets
                    .iter()
                    .map(|s| format!("{s}_file"))
                    .collect();
                if let Some(near) = suggest(key, known.chain(files.iter().map(String::as_str))) {
                    p = p.with_help(format!("did you mean `{near}`?"));
                }
                self.error(p, &at);
                continue;
            }
            if let Some((_, words)) = service.choices.iter().find(|(k, _)| k == key)
                && !words.contains(&value.template().to_ascii_lowercase().as_str())
            {
                self.error_value(
                    Problem::error(
                        Code::InvalidValue,
                        format!("`{at}` is `{}`", value.template()),
                    )
                    .with_help(format!("one of: {}", words.join(", "))),
                    &at,
                );
            }
            if let Some(secret) = service.secret_of_file_option(key) {
                if options.contains_key(secret) {
                    self.error(
                        Problem::error(
                            Code::InvalidValue,
                            format!(
                                "destination `{name}` sets both `options.{secret}` and `options.{key}`"
                            ),
                        )
                        .with_help("keep one of them"),
                        &at,
                    );
                }
                continue;
            }
            if service.secrets.contains(&key.as_str()) && !value.is_reference() {
                self.error_value(
                    Problem::error(
                        Code::InlineServiceSecret,
                        format!("`{at}` holds a secret inline"),
                    )
                    .with_help(format!(
                        "write `{key}: ${{env:NAME}}`, or put the secret in a file readable only by backplan and write `{key}_file: /path/to/it`"
                    )),
                    &at,
                );
            }
        }
        for required in service.required {
            let file = format!("{required}_file");
            if !options.contains_key(*required) && !options.contains_key(&file) {
                let how = if service.secrets.contains(required) {
                    format!("`options.{required}` (or `options.{file}`)")
                } else {
                    format!("`options.{required}`")
                };
                self.error(
                    Problem::error(
                        Code::MissingServiceOption,
                        format!("destination `{name}` ({scheme}) needs {how}"),
                    )
                    .with_help(service.hint),
                    &opts,
                );
            }
        }
        for (required, why) in service.required_given(options) {
            self.error(
                Problem::error(
                    Code::MissingServiceOption,
                    format!("destination `{name}` ({scheme}) needs `options.{required}`"),
                )
                .with_help(why),
                &opts,
            );
        }
    }

    /// `size_change_factor` is above 1: a change by that factor either way is
    /// reported.
    fn size_change_factor(&mut self, factor: Option<f64>, base: &str) {
        if let Some(factor) = factor
            && !(factor.is_finite() && factor > 1.0)
        {
            self.error_value(
                Problem::error(
                    Code::InvalidValue,
                    format!("size_change_factor {factor} is not above 1"),
                )
                .with_help("give a factor above 1, e.g. 2: a snapshot twice or half the size of the one before is reported"),
                &join(base, "size_change_factor"),
            );
        }
    }

    /// `min_size_ratio` is a fraction.
    fn ratio(&mut self, ratio: Option<f64>, base: &str) {
        if let Some(ratio) = ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            self.error_value(
                Problem::error(
                    Code::InvalidValue,
                    format!("min_size_ratio {ratio} is outside 0.0..=1.0"),
                ),
                &join(base, "min_size_ratio"),
            );
        }
    }

    /// `jobs` is at least 1, and a parallel dump (`jobs` above 1) has a `spool_dir`
    /// to be written into: a directory-format dump cannot be streamed.
    fn parallel_dump(&mut self, jobs: Option<u32>, spool_dir: Option<&Path>, base: &str) {
        match jobs {
            Some(0) => self.error_value(
                Problem::error(Code::InvalidValue, "jobs 0: give 1 or more pg_dump workers")
                    .with_help("1 (the default) streams the dump; above 1 dumps in parallel into `spool_dir`"),
                &join(base, "jobs"),
            ),
            Some(n) if n > 1 && spool_dir.is_none() => self.error(
                Problem::error(
                    Code::MissingField,
                    format!("jobs {n} needs a `spool_dir`: a parallel dump is written to disk before it is stored"),
                )
                .with_help("add `spool_dir: /var/tmp/backplan` (a folder with room for the largest database's dump), or drop `jobs` to stream the dump"),
                &join(base, "jobs"),
            ),
            _ => {}
        }
        if spool_dir.is_some_and(|d| d.as_os_str().is_empty()) {
            self.error(
                Problem::error(Code::InvalidValue, "`spool_dir` is empty")
                    .with_help("name the folder a parallel dump is written into"),
                &join(base, "spool_dir"),
            );
        }
    }

    fn kind(&mut self, kind: &SourceKind, base: &str) {
        match kind {
            SourceKind::Postgres(pg) => {
                self.secret(&pg.url, &join(base, "url"));
                if let Some(p) = &pg.password {
                    self.secret(p, &join(base, "password"));
                }
                self.ratio(pg.min_size_ratio, base);
                if let Some(t) = &pg.lock_wait_timeout
                    && let Err(message) = super::parse_duration(t)
                {
                    self.error_value(
                        Problem::error(Code::BadDuration, format!("lock_wait_timeout {message}")),
                        &join(base, "lock_wait_timeout"),
                    );
                }
                self.parallel_dump(pg.jobs, pg.spool_dir.as_deref(), base);
            }
            SourceKind::Redis(r) => {
                self.secret(&r.url, &join(base, "url"));
                if let Some(p) = &r.password {
                    self.secret(p, &join(base, "password"));
                }
                self.ratio(r.min_size_ratio, base);
                if let Some(save) = r.persistence.as_ref().and_then(|p| p.save.as_ref()) {
                    let fields: Vec<&str> = save.split_whitespace().collect();
                    if fields.len() % 2 == 1 || fields.iter().any(|f| f.parse::<u64>().is_err()) {
                        self.error_value(
                            Problem::error(
                                Code::InvalidValue,
                                format!(
                                    "save {save:?} is not a list of \"SECONDS CHANGES\" pairs"
                                ),
                            )
                            .with_help(
                                "write save points as in redis.conf, e.g. \"3600 1 300 100 60 10000\", or \"\" for none",
                            ),
                            &join(&join(base, "persistence"), "save"),
                        );
                    }
                }
            }
            SourceKind::Files(f) => {
                if f.path.as_os_str().is_empty() {
                    self.error(
                        Problem::error(Code::EmptyPaths, "the files source has an empty `path`"),
                        &join(base, "path"),
                    );
                }
            }
            SourceKind::Config(cfg) => {
                if cfg.paths.is_empty() {
                    self.error(
                        Problem::error(Code::EmptyPaths, "the config source lists no paths"),
                        &join(base, "paths"),
                    );
                }
            }
        }
    }
}
