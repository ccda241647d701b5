//! The YAML shape of a policy, version 1. Every struct denies unknown fields; the JSON
//! Schema in `schemas/policy.schema.json` is generated from these types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// A backplan policy: what to back up, where to, how often and for how long.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "backplan policy")]
pub struct PolicyFile {
    /// The policy format version. Always `1`.
    pub version: u32,
    /// Settings every source inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// The OpenPGP recipients that backups are encrypted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Where backups are stored, by name. Each destination holds one repository.
    pub destinations: IndexMap<String, Destination>,
    /// What to back up, by name.
    pub sources: IndexMap<String, Source>,
    /// Who hears how each `apply` run went, by name: Healthchecks-style pings,
    /// webhooks (Slack, Teams, ntfy, JSON), PagerDuty.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub notify: IndexMap<String, super::notify::Notifier>,
    /// Recovery objectives every source is held to: how old its newest good snapshot
    /// may be (`rpo`) and how long its restore may take (`rto`). Restore drills
    /// measure both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// Restore drills (`backplan drill`): when `plan` proposes one, and the secret
    /// key they decrypt with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillSettings>,
}

/// Recovery objectives, as durations (`24h`, `30m`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Recovery point objective: the newest good snapshot may be at most this old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// Recovery time objective: a restore (as a drill measures it) may take at most
    /// this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
}

/// When restore drills are due, and what they decrypt with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillSettings {
    /// Cron expression (five fields, or `@weekly`, …) in the policy's time zone: a
    /// drill of each source is due at its first tick after its last drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// A recipient's OpenPGP secret key for `apply` to run due drills with
    /// (`backplan drill` takes `--secret-key`). Relative paths start at the policy's
    /// folder. Without one, `apply` skips a due drill (BP277). See docs/security.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// Where a database source's drill restores instead of its own server, by
    /// source: a PostgreSQL URL (scratch databases are made and dropped there) or a
    /// Redis URL (an empty server, emptied again after the drill). Passwords as
    /// `${env:NAME}`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub targets: IndexMap<String, Secret>,
}

/// Settings that sources inherit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Cron expression (exactly five fields, or `@daily`, `@hourly`, …). Default `@daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// `UTC` or an IANA `Area/Location` time zone (`Europe/Berlin`; no abbreviations
    /// such as `CET`) for schedules and retention buckets. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Retention used by sources that declare none. Default `keep_daily: 30`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// zstd compression level, 1 to 22. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<i32>,
    /// `backplan status` reports a snapshot that holds more than this many times the
    /// bytes of the one before, or less than the one before divided by it. Above 1;
    /// default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_change_factor: Option<f64>,
}

/// How many snapshots to keep. A snapshot kept by any rule is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep the newest N snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot younger than this, counted back from the newest snapshot
    /// (not from now, so a host that was off loses nothing), e.g. `30d`, `12h`, `2w`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
    /// Never keep fewer good snapshots than this, whatever the rules say. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_keep: Option<u32>,
}

/// OpenPGP recipients.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// Files holding OpenPGP public keys (armored or binary). Relative paths start at
    /// the policy's folder. Any one of the matching secret keys can restore.
    pub recipients: Vec<PathBuf>,
    /// A file holding the repository key (64 hex digits), made by `backplan init`.
    /// The backup host needs it to back up; restores recover it with a recipient's
    /// secret key. Relative paths start at the policy's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_key_file: Option<PathBuf>,
    /// The repository key as a reference, e.g. `${env:BACKPLAN_REPOSITORY_KEY}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_key: Option<Secret>,
}

/// One OpenDAL service holding one repository.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Destination {
    /// A local folder (or a mounted network file system).
    Fs {
        /// The folder; relative paths start at the policy's folder.
        root: PathBuf,
        /// Hosts with this policy write here with credentials that cannot delete
        /// (ransomware protection): apply backs up and never prunes nor deletes,
        /// except its own lock objects under `locks/`. Prunes are held back for a
        /// trusted host running `--role prune`. Default `false`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        append_only: bool,
    },
    /// Process memory: for tests and trials; nothing survives the process.
    Memory {
        /// A prefix inside the memory store.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<String>,
        /// Hosts with this policy write here with credentials that cannot delete
        /// (ransomware protection): apply backs up and never prunes nor deletes,
        /// except its own lock objects under `locks/`. Prunes are held back for a
        /// trusted host running `--role prune`. Default `false`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        append_only: bool,
    },
    /// Amazon S3 or any S3-compatible store.
    S3 {
        bucket: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// Endpoint URL for S3-compatible stores.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// A prefix inside the bucket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_key_id: Option<Secret>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_access_key: Option<Secret>,
        /// Hosts with this policy write here with credentials that cannot delete
        /// (ransomware protection): apply backs up and never prunes nor deletes,
        /// except its own lock objects under `locks/`. Prunes are held back for a
        /// trusted host running `--role prune`. Default `false`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        append_only: bool,
        /// The bucket has S3 Object Lock with a default retention: every object is
        /// locked (cannot be deleted, even with the bucket owner's credentials in
        /// compliance mode) for `retain_for` after it is written. backplan sends the
        /// checksum locked buckets require, records in each snapshot when its lock
        /// ends, and holds back prunes until then. See docs/security.md.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object_lock: Option<ObjectLock>,
    },
    /// Any other OpenDAL service, by its scheme and options.
    Opendal {
        /// The OpenDAL scheme, e.g. `gcs`, `azblob`, `sftp`, `webdav`.
        scheme: String,
        /// The service's options; values may use `${env:NAME}`.
        #[serde(default)]
        options: BTreeMap<String, Secret>,
        /// Hosts with this policy write here with credentials that cannot delete
        /// (ransomware protection): apply backs up and never prunes nor deletes,
        /// except its own lock objects under `locks/`. Prunes are held back for a
        /// trusted host running `--role prune`. Default `false`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        append_only: bool,
    },
}

/// S3 Object Lock on a destination's bucket (`object_lock:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    /// The bucket's default retention period, e.g. `35d`: how long each object stays
    /// locked after it is written. Set the same period on the bucket (its Object Lock
    /// configuration); make it at least the longest time the sources writing here
    /// keep a snapshot, plus a margin.
    pub retain_for: String,
    /// After each backup (or copy of a snapshot here), extend the lock of the packs
    /// the new snapshot uses whose lock ends before its own (packs written by
    /// earlier snapshots and reused), in the mode they have. Needs `s3:GetObjectRetention` and `s3:PutObjectRetention`
    /// for the backup host's credentials, with the conditions docs/security.md
    /// gives. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extend: bool,
}

impl Destination {
    /// The destination's S3 Object Lock settings, if its bucket has them.
    pub fn object_lock(&self) -> Option<&ObjectLock> {
        match self {
            Destination::S3 { object_lock, .. } => object_lock.as_ref(),
            _ => None,
        }
    }

    /// Whether hosts with this policy may only add to this destination
    /// (`append_only: true`).
    pub fn append_only(&self) -> bool {
        match self {
            Destination::Fs { append_only, .. }
            | Destination::Memory { append_only, .. }
            | Destination::S3 { append_only, .. }
            | Destination::Opendal { append_only, .. } => *append_only,
        }
    }

    /// The OpenDAL scheme this destination uses.
    pub fn scheme(&self) -> &str {
        match self {
            Destination::Fs { .. } => "fs",
            Destination::Memory { .. } => "memory",
            Destination::S3 { .. } => "s3",
            Destination::Opendal { scheme, .. } => scheme,
        }
    }

    /// Every secret the destination refers to, with the field that holds it.
    pub fn secrets(&self) -> Vec<(String, &Secret)> {
        match self {
            Destination::S3 {
                access_key_id,
                secret_access_key,
                ..
            } => [
                ("access_key_id", access_key_id),
                ("secret_access_key", secret_access_key),
            ]
            .into_iter()
            .filter_map(|(field, s)| s.as_ref().map(|s| (field.to_string(), s)))
            .collect(),
            Destination::Opendal { options, .. } => options
                .iter()
                .map(|(k, s)| (format!("options.{k}"), s))
                .collect(),
            Destination::Fs { .. } | Destination::Memory { .. } => Vec::new(),
        }
    }
}

/// One thing to back up. The common fields sit beside the type's own fields.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    #[serde(flatten)]
    pub kind: SourceKind,
    #[serde(flatten)]
    pub common: SourceCommon,
}

/// Fields every source type has.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceCommon {
    /// Sources that must be backed up before this one and restored before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Cron expression; inherits `defaults.schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// `UTC` or an IANA `Area/Location` time zone; inherits `defaults.timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Retention; replaces `defaults.retention` as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Destinations to write to; default: every destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
    /// The size change `backplan status` reports; inherits
    /// `defaults.size_change_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_change_factor: Option<f64>,
}

impl SourceCommon {
    /// The keys of the common fields, as they appear in YAML.
    pub const KEYS: &'static [&'static str] = &[
        "depends_on",
        "schedule",
        "timezone",
        "retention",
        "destinations",
        "size_change_factor",
    ];
}

/// The source types.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceKind {
    /// PostgreSQL databases, dumped with pg_dump.
    Postgres(PostgresSource),
    /// A Redis server, snapshotted over the replication protocol.
    Redis(RedisSource),
    /// A folder tree, backed up incrementally.
    Files(FilesSource),
    /// Named configuration and secret files; never printed.
    Config(ConfigSource),
}

impl SourceKind {
    /// Server settings the policy declares for this source, in the server's own form
    /// (a Redis server's `save` and `appendonly` as `CONFIG GET` reports them).
    pub fn declared_settings(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let SourceKind::Redis(RedisSource {
            persistence: Some(p),
            ..
        }) = self
        {
            if let Some(save) = &p.save {
                out.insert(
                    "save".to_string(),
                    save.split_whitespace().collect::<Vec<_>>().join(" "),
                );
            }
            if let Some(aof) = p.appendonly {
                out.insert(
                    "appendonly".to_string(),
                    if aof { "yes" } else { "no" }.to_string(),
                );
            }
        }
        out
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::Postgres(_) => "postgres",
            SourceKind::Redis(_) => "redis",
            SourceKind::Files(_) => "files",
            SourceKind::Config(_) => "config",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// Connection URL without a password, e.g. `postgres://backup@db:5432/medianest`.
    pub url: Secret,
    /// Password reference, e.g. `${env:PGPASSWORD}`; `.pgpass` works too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Databases to dump; default: the database of the URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Also dump roles and tablespaces (`pg_dumpall --globals-only`). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<bool>,
    /// How long pg_dump waits for a lock before failing, e.g. `30s`. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_timeout: Option<String>,
    /// A dump smaller than this fraction of the last good one fails. Default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size_ratio: Option<f64>,
    /// The folder holding pg_dump and pg_restore; default: searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<PathBuf>,
    /// Parallel pg_dump workers per database. Default 1: `pg_dump -Fc` streamed, no
    /// disk used. Above 1, a directory-format dump (`pg_dump -Fd -j N`) is written
    /// into `spool_dir` first, each of its files then stored, the folder removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub jobs: Option<u32>,
    /// Where a parallel dump is written before it is stored (unencrypted, in a fresh
    /// folder only the backup user can read); required when `jobs` is above 1.
    /// Relative paths start at the policy's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// Also record a checksum of every table's rows at backup (an md5 of each row's
    /// text, read in the same pass as the row count), which a restore drill compares.
    /// It costs the server an md5 per row at every backup. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSource {
    /// `redis://host:port` or `rediss://` for TLS; no password in it.
    pub url: Secret,
    /// ACL user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password reference, e.g. `${env:REDIS_PASSWORD}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A PEM file of the CA that signed the server's certificate, for `rediss://`
    /// servers the system does not trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// `sync` (point in time, over replication), `scan` (logical, for managed Redis)
    /// or `auto` (sync, falling back to scan). Default `auto`.
    #[serde(default)]
    pub mode: RedisMode,
    /// An RDB smaller than this fraction of the last good one fails. Default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size_ratio: Option<f64>,
    /// The persistence the server should have; `plan` shows drift, `apply` fixes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<RedisPersistence>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    #[default]
    Auto,
    Sync,
    Scan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisPersistence {
    /// RDB save points, as in redis.conf: `"3600 1 300 100 60 10000"`, or `""` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<String>,
    /// Whether the append-only file is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appendonly: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesSource {
    /// The folder to back up; relative paths start at the policy's folder.
    pub path: PathBuf,
    /// gitignore-style patterns of what to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Fail the snapshot when a file cannot be read (default: report and go on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_on_unreadable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSource {
    /// Files and folders (`.env`, compose files, TLS material); relative paths start
    /// at the policy's folder. Their contents are never printed.
    pub paths: Vec<PathBuf>,
}

impl JsonSchema for Source {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Source".into()
    }

    /// The schema of [`SourceKind`] with the common fields added to every variant, so
    /// that editors complete both and `additionalProperties: false` holds per type.
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let common = SourceCommon::json_schema(generator);
        let common_props = common
            .get("properties")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        let mut variants = Vec::new();
        for (name, description, variant) in [
            (
                "postgres",
                "PostgreSQL databases, dumped with pg_dump.",
                PostgresSource::json_schema(generator),
            ),
            (
                "redis",
                "A Redis server, snapshotted over the replication protocol.",
                RedisSource::json_schema(generator),
            ),
            (
                "files",
                "A folder tree, backed up incrementally.",
                FilesSource::json_schema(generator),
            ),
            (
                "config",
                "Named configuration and secret files; never printed.",
                ConfigSource::json_schema(generator),
            ),
        ] {
            let mut props = variant
                .get("properties")
                .and_then(|p| p.as_object())
                .cloned()
                .unwrap_or_default();
            props.insert("type".into(), serde_json::json!({ "const": name }));
            if let Some(common) = common_props.as_object() {
                props.extend(common.clone());
            }
            let mut required: Vec<serde_json::Value> = variant
                .get("required")
                .and_then(|r| r.as_array())
                .cloned()
                .unwrap_or_default();
            required.insert(0, serde_json::json!("type"));
            variants.push(json_schema!({
                "type": "object",
                "description": description,
                "properties": props,
                "required": required,
                "additionalProperties": false,
            }));
        }
        json_schema!({ "oneOf": variants })
    }
}

impl PolicyFile {
    /// The retention a source uses as written: its own, else the defaults', else the
    /// built-in `keep_daily: 30`.
    pub fn retention_for(&self, source: &str) -> Retention {
        self.sources
            .get(source)
            .and_then(|s| s.common.retention.clone())
            .or_else(|| self.defaults.retention.clone())
            .unwrap_or_else(builtin_retention)
    }

    /// The schedule expression a source uses.
    pub fn schedule_for(&self, source: &str) -> String {
        self.sources
            .get(source)
            .and_then(|s| s.common.schedule.clone())
            .or_else(|| self.defaults.schedule.clone())
            .unwrap_or_else(|| super::DEFAULT_SCHEDULE.to_string())
    }

    /// The size change factor a source's snapshots are checked with.
    pub fn size_change_factor_for(&self, source: &str) -> f64 {
        self.sources
            .get(source)
            .and_then(|s| s.common.size_change_factor)
            .or(self.defaults.size_change_factor)
            .unwrap_or(super::DEFAULT_SIZE_CHANGE_FACTOR)
    }

    /// The destinations a source writes to.
    pub fn destinations_for(&self, source: &str) -> Vec<String> {
        self.sources
            .get(source)
            .and_then(|s| s.common.destinations.clone())
            .unwrap_or_else(|| self.destinations.keys().cloned().collect())
    }
}

/// The retention used where the policy sets none.
pub fn builtin_retention() -> Retention {
    Retention {
        keep_daily: Some(super::DEFAULT_KEEP_DAILY),
        ..Retention::default()
    }
}
