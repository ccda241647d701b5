//! The command line: clap structs (close to the raw flags, only validation) and their
//! resolution into the settings the commands consume. No policies, storage or tokio.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{Code, Failure};
use crate::plan::DEFAULT_MAX_DELETES;

/// The exit codes, as the README lists them.
const EXIT_CODES: &str = "Exit codes: 0 success (plan --detailed-exitcode: nothing to do; status: \
healthy); 1 error, nothing changed; 2 plan --detailed-exitcode: changes pending; 3 apply: some \
actions failed; 4 status: warnings; 5 status: critical findings; 64 usage error (unknown \
subcommand, flag or value).";

/// Declarative backups of a production stack.
///
/// One YAML policy declares sources (postgres, redis, files, config), destinations,
/// schedules and retention. `backplan plan` shows what is due and what retention
/// would delete, and why; `backplan apply` does it.
#[derive(Debug, Parser)]
#[command(
    name = "backplan",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The policy file.
    #[arg(
        short = 'p',
        long,
        global = true,
        default_value = "backplan.yaml",
        env = "BACKPLAN_POLICY",
        value_name = "FILE"
    )]
    pub policy: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter policy to the --policy path (never overwrites); with a policy,
    /// make the repository key (or recover it with --secret-key) and the repositories.
    Init(InitArgs),
    /// Check the policy and report every problem at once.
    Validate(ValidateArgs),
    /// Print the JSON Schema of the policy.
    Schema(SchemaArgs),
    /// Show the order sources are backed up and restored in.
    Graph(GraphArgs),
    /// Compare the policy with what the destinations hold and show the actions.
    Plan(PlanArgs),
    /// Carry out a plan: a saved one, or a fresh one made now.
    Apply(ApplyArgs),
    /// List the snapshots every destination holds.
    Snapshots(SnapshotsArgs),
    /// Restore snapshots; `--plan` shows what would happen and changes nothing.
    Restore(RestoreArgs),
    /// Check that every snapshot's data is present and intact.
    Verify(VerifyArgs),
    /// Show the health of every source on every destination, from the destinations
    /// alone: exit 0 healthy, 4 warnings, 5 critical (a monitoring check by itself).
    Status(StatusArgs),
    /// Restore the newest good snapshot of each source into scratch targets, check
    /// it, remove them, and record how long it took: exit 0 passed, 3 a drill
    /// failed, 4 an objective (RPO, RTO) missed.
    Drill(DrillArgs),
    /// Remove stale locks: expired ones, and this host's whose process is gone (every
    /// lock with --all).
    Unlock(UnlockArgs),
    /// Make a key pair for a recipient: the public key for the policy, the secret key
    /// for restores (keep it off the backup host).
    Keygen(KeygenArgs),
    /// Run forever: apply whenever the policy's schedules make a run due, catching up
    /// a missed one once; serve /healthz and /metrics.
    Daemon(DaemonArgs),
    /// Print systemd units (service and timer) or a crontab line that run backplan on
    /// the host's own scheduler.
    Schedule(ScheduleArgs),
    /// Print shell completions.
    Completions(CompletionsArgs),
    /// Write the man pages into a folder.
    Man(ManArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Json,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Output format (human diagnostics on stderr, or a JSON list on stdout).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
}

/// Flags shared by plan and apply.
#[derive(Debug, Args)]
pub struct PlanningArgs {
    /// Plan as of this time (RFC 3339), instead of now: for reviews and tests.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Allow a plan to delete at most this many snapshots; more are held back
    /// [default: 10].
    #[arg(long, value_name = "N")]
    pub max_deletes: Option<usize>,
    /// Read the inventory from this JSON file instead of the destinations.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// What this host may do: `backup` only adds to append-only destinations (their
    /// prunes are held back); `prune` is the trusted host that prunes and repairs
    /// everywhere and backs nothing up [default: backup].
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<RoleArg>,
}

/// `--role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Backup,
    Prune,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub planning: PlanningArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Save the plan to FILE, for `backplan apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error (64 on
    /// a usage error, never 2).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `backplan plan --out`; without it a fresh plan is made and
    /// carried out at once (for cron).
    #[arg(value_name = "PLANFILE")]
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub planning: PlanningArgs,
    /// How many actions of one graph level run at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub parallel: usize,
    /// Output format of the report.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// After the run, write the status as Prometheus metrics to this file (for
    /// node_exporter's textfile collector), atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The status as of this time (RFC 3339), instead of now: for reviews and tests.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Read the inventory from this JSON file instead of the destinations.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = StatusFormat::Human)]
    pub format: StatusFormat,
}

/// `status --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Human,
    Json,
    /// Prometheus's text exposition format.
    Prometheus,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Drill only this source (repeatable; default: every source).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// With a secret key, a missing repository key file is recovered from the
    /// destinations (the key of their newest snapshot) instead of made anew: for a
    /// rebuilt backup host.
    #[command(flatten)]
    pub secret: SecretKeyArgs,
}

/// Where a recipient's secret key comes from.
#[derive(Debug, Args)]
pub struct SecretKeyArgs {
    /// A recipient's OpenPGP secret key (unencrypted), needed to decrypt content.
    #[arg(long, value_name = "FILE", env = "BACKPLAN_SECRET_KEY_FILE")]
    pub secret_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Show the restore plan and change nothing (the disaster-recovery dry run).
    #[arg(long)]
    pub plan: bool,
    /// Restore the newest snapshots at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME", conflicts_with = "snapshot")]
    pub at: Option<String>,
    /// Restore one snapshot by id.
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Restore only this source (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Restore source NAME into PATH instead of where it came from (repeatable).
    #[arg(long, value_name = "NAME=PATH")]
    pub target: Vec<String>,
    /// Restore only the entries matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Overwrite files that differ from the snapshot.
    #[arg(long)]
    pub force: bool,
    /// Files: set owners by the recorded user and group ids only, never by name (as
    /// tar's --numeric-owner). Owners are set only when running as root.
    #[arg(long)]
    pub numeric_owner: bool,
    /// Databases: replace the contents of a non-empty target database.
    #[arg(long)]
    pub clean: bool,
    /// Databases: restore only this table (repeatable).
    #[arg(long, value_name = "TABLE")]
    pub table: Vec<String>,
    /// Databases: restore only this schema (repeatable).
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Vec<String>,
    /// Databases: restore with N parallel pg_restore jobs (`pg_restore -j N`) from a
    /// copy of the archive spooled to disk; without it a custom-format archive streams
    /// into pg_restore and no disk is used.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Databases: where a spooled archive is written (a fresh folder in DIR, removed
    /// afterwards); default the system's temporary folder ($TMPDIR or /tmp). It holds
    /// decrypted data while the restore runs.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Redis: empty a target server that holds keys (FLUSHALL) before restoring.
    #[arg(long)]
    pub flush: bool,
    /// Redis: write `dump.rdb` into DIR for a cold start instead of restoring into a
    /// running server.
    #[arg(long, value_name = "DIR")]
    pub as_file: Option<std::path::PathBuf>,
    /// Read without taking the destinations' shared lock, for read-only access to the
    /// storage; a prune that runs meanwhile may delete what the restore reads.
    #[arg(long)]
    pub no_lock: bool,

    #[command(flatten)]
    pub secret: SecretKeyArgs,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also read the data: every pack (or this fraction of them, e.g. 0.1), checked
    /// against its name, each chunk decrypted and re-hashed (needs a secret key).
    #[arg(long, value_name = "FRACTION", num_args = 0..=1, default_missing_value = "1")]
    pub read_data: Option<f64>,
    /// Restore the newest snapshot of every postgres source into a scratch database
    /// on its server, compare row counts with those taken at backup time, drop it.
    #[arg(long)]
    pub restore_test: bool,
    /// Read without taking each destination's shared lock, for read-only access to the
    /// storage: nothing is written, so what is found is not recorded for a repair, and
    /// a prune that runs meanwhile may delete what verify reads.
    #[arg(long)]
    pub no_lock: bool,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no backplan runs).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The key's user ID, e.g. "Backups <ops@example.com>".
    #[arg(long, value_name = "USER_ID")]
    pub user_id: String,
    /// Where to write the public key: a file the policy's `recipients` names.
    #[arg(long, value_name = "FILE")]
    pub public: PathBuf,
    /// Where to write the secret key (mode 0600). Never overwritten.
    #[arg(long, value_name = "FILE")]
    pub secret: PathBuf,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Serve /healthz and /metrics here (host:port); no HTTP without it.
    #[arg(long, value_name = "ADDR", env = "BACKPLAN_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Start each run up to this long after it is due, at random (e.g. 10m), so that
    /// many hosts do not hit one destination at once.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub jitter: Option<std::time::Duration>,
    /// Do what the daemon would do now, then exit: one run if one is due, nothing
    /// otherwise (for a host scheduler that starts backplan often).
    #[arg(long)]
    pub once: bool,
    /// Allow a run to delete at most this many snapshots; more are held back
    /// [default: 10].
    #[arg(long, value_name = "N")]
    pub max_deletes: Option<usize>,
    /// What this host may do, as for `apply` [default: backup].
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<RoleArg>,
    /// How many actions of one graph level run at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub parallel: usize,
}

/// `backplan schedule`'s scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheduler {
    Systemd,
    Cron,
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[arg(value_enum)]
    pub scheduler: Scheduler,
    /// The backplan binary on the host that runs the units.
    #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/backplan")]
    pub bin: PathBuf,
    /// The policy's path on that host [default: its absolute path here].
    #[arg(long, value_name = "PATH")]
    pub policy_path: Option<PathBuf>,
    /// systemd: start each run up to this long after its time, at random
    /// (RandomizedDelaySec).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub jitter: Option<std::time::Duration>,
    /// Write the files into DIR instead of printing them: backplan.service and
    /// backplan.timer, or backplan.crontab.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The folder to write `backplan.1` and one page per subcommand into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

impl PlanningArgs {
    /// The flags that shape a new plan and so have no meaning with a saved one.
    pub fn shaping_flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        if self.now.is_some() {
            flags.push("--now");
        }
        if self.max_deletes.is_some() {
            flags.push("--max-deletes");
        }
        if self.role.is_some() {
            flags.push("--role");
        }
        flags
    }
}

/// Planning settings resolved from the flags.

#[derive(Debug, Clone)]
pub struct Planning {
    pub now: DateTime<Utc>,
    pub settings: crate::plan::Settings,
    pub inventory: Option<PathBuf>,
}

impl PlanningArgs {
    /// Resolves `--now` (default: the clock) and the plan settings.
    pub fn resolve(&self) -> Result<Planning, Failure> {
        let now = match &self.now {
            Some(text) => parse_time(text)?,
            None => Utc::now(),
        };
        Ok(Planning {
            now,
            settings: crate::plan::Settings {
                max_deletes: self.max_deletes.unwrap_or(DEFAULT_MAX_DELETES),
                role: match self.role {
                    Some(RoleArg::Prune) => crate::plan::Role::Prune,
                    Some(RoleArg::Backup) | None => crate::plan::Role::Backup,
                },
            },
            inventory: self.inventory.clone(),
        })
    }
}

/// Parses an RFC 3339 time.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Failure::new(
                Code::BadTime,
                format!("`{text}` is not an RFC 3339 time: {e}"),
            )
        })
}
