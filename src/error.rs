//! Diagnostics: every user-facing problem has a stable code, a message and help.
//!
//! Codes are listed once, in [`Code`], with their meaning and fix; `docs/errors.md`
//! documents each of them and a test keeps the two in step. Policy problems carry the
//! span of the YAML they come from, and are reported all at once in a [`PolicyReport`].

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, Severity, SourceSpan};

/// Declares [`Code`] and [`Code::ALL`] from one list, so that no code can be left
/// out of `ALL` (and so out of the test that keeps `docs/errors.md` in step).
macro_rules! codes {
    ($($variant:ident,)*) => {
        /// Every diagnostic code backplan emits. The numbers are a stable contract: a
        /// code is never reused for another meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];
        }
    };
}

codes! {
    // --- the policy file (BP1xx) ---
    PolicyUnreadable,
    YamlSyntax,
    UnknownField,
    InvalidValue,
    MissingField,
    UnsupportedVersion,
    DuplicateName,
    InvalidName,
    UnknownDestination,
    UnknownDependency,
    DependencyCycle,
    BadSchedule,
    BadTimezone,
    RetentionKeepsNothing,
    BadDuration,
    KeyFileUnreadable,
    NotAPublicKey,
    NoDestinations,
    BadCompression,
    EmptyPaths,
    MalformedKey,
    MultipleDocuments,
    NotUtf8,
    PolicyTooLarge,
    NestingTooDeep,
    UnsetEnv,
    InlineSecret,
    UnknownScheme,
    MissingServiceOption,
    InlineServiceSecret,
    ObjectLockTooShort,
    UnknownPlaceholder,
    NotifyEnvUnset,
    InlineNotifySecret,
    BadNotifyState,
    BadDrillTarget,
    // --- planning and applying (BP2xx) ---
    BadTime,
    InventoryUnreadable,
    PlanFileUnreadable,
    StalePlan,
    MaxDeletesExceeded,
    SourcesFailed,
    SecretUnresolved,
    NoExecutor,
    UncoveredSnapshots,
    DestinationUnreadable,
    NewestFailed,
    StaleLock,
    UsageError,
    TimeInFuture,
    UnknownSource,
    PlanOfAnotherPolicy,
    AppendOnly,
    CorruptObject,
    RepositoryVersion,
    RepositoryLocked,
    NoRepositoryKey,
    SnapshotNotFound,
    SecretKeyUnusable,
    RestoreRefused,
    SourceFailed,
    VerifyFailed,
    DatabaseError,
    UncoveredDatabase,
    NotPointInTime,
    PersistenceUnhealthy,
    ConfigRefused,
    NoSpace,
    Unrepairable,
    RestoreFailed,
    DatabaseRolesMissing,
    DatabaseProperties,
    DatabaseLocale,
    SshMissing,
    ObjectLocked,
    ShortObjectLock,
    LockExtensionFailed,
    BucketLockDiffers,
    BackupMissing,
    BackupLate,
    BackupFailed,
    SizeAnomaly,
    CheckFailed,
    NotifyFailed,
    NotifySecretUnresolved,
    Stopped,
    ListenFailed,
    RunNotStarted,
    DrillFailed,
    DrillScratch,
    DrillOverRto,
    DrillOverRpo,
    DrillNeedsSecretKey,
    Io,
}

impl Code {
    /// The stable code, e.g. `BP102`.
    pub fn id(self) -> &'static str {
        self.info().0
    }

    /// A short kebab-case name, e.g. `unknown-field`.
    pub fn name(self) -> &'static str {
        self.info().1
    }

    /// The generic help for this code; a diagnostic may give a more specific one.
    pub fn help(self) -> &'static str {
        self.info().2
    }

    fn info(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Code::PolicyUnreadable => (
                "BP100",
                "policy-unreadable",
                "check the path given with -p/--policy (default: backplan.yaml) and its permissions",
            ),
            Code::YamlSyntax => (
                "BP101",
                "yaml-syntax",
                "fix the YAML syntax at the marked position (indentation, a missing colon or quote)",
            ),
            Code::UnknownField => (
                "BP102",
                "unknown-field",
                "remove the field or correct its spelling; `backplan schema` lists every field",
            ),
            Code::InvalidValue => (
                "BP103",
                "invalid-value",
                "give a value of the type the field expects; docs/policy.md describes every field",
            ),
            Code::MissingField => (
                "BP104",
                "missing-field",
                "add the required field; docs/policy.md describes every field",
            ),
            Code::UnsupportedVersion => (
                "BP105",
                "unsupported-version",
                "this backplan reads policy `version: 1`",
            ),
            Code::DuplicateName => (
                "BP106",
                "duplicate-name",
                "names of sources and destinations must be unique; rename or merge one of them",
            ),
            Code::InvalidName => (
                "BP107",
                "invalid-name",
                "names may hold letters, digits, `-` and `_`, start with a letter and be at most 64 characters",
            ),
            Code::UnknownDestination => (
                "BP110",
                "unknown-destination",
                "name a destination declared under `destinations:`",
            ),
            Code::UnknownDependency => (
                "BP111",
                "unknown-dependency",
                "`depends_on` must name sources declared under `sources:`",
            ),
            Code::DependencyCycle => (
                "BP112",
                "dependency-cycle",
                "remove one `depends_on` edge of the cycle so that an order exists",
            ),
            Code::BadSchedule => (
                "BP113",
                "bad-schedule",
                "use a five-field cron expression (`0 3 * * *`) or an alias such as `@daily` or `@hourly`",
            ),
            Code::BadTimezone => (
                "BP114",
                "bad-timezone",
                "use an IANA time zone name such as `UTC` or `Europe/Berlin`",
            ),
            Code::RetentionKeepsNothing => (
                "BP115",
                "retention-keeps-nothing",
                "set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly or keep_within above zero",
            ),
            Code::BadDuration => (
                "BP116",
                "bad-duration",
                "write a duration such as `30d`, `12h` or `2w`",
            ),
            Code::KeyFileUnreadable => (
                "BP117",
                "key-file-unreadable",
                "check the path (relative paths start at the policy's folder) and the file's permissions",
            ),
            Code::NotAPublicKey => (
                "BP118",
                "not-a-public-key",
                "give an OpenPGP public key (`gpg --export --armor FINGERPRINT`); never put a secret key on the backup host",
            ),
            Code::NoDestinations => (
                "BP119",
                "no-destinations",
                "declare at least one destination and let every source write to one",
            ),
            Code::BadCompression => (
                "BP120",
                "bad-compression",
                "zstd levels run from 1 (fastest) to 22 (smallest); 3 is a good default",
            ),
            Code::EmptyPaths => (
                "BP121",
                "empty-paths",
                "a files or config source needs at least one path to back up",
            ),
            Code::MalformedKey => (
                "BP122",
                "malformed-key",
                "the key file looks like OpenPGP but does not parse; export it again (`gpg --export --armor FINGERPRINT > key.asc`) and copy it whole",
            ),
            Code::MultipleDocuments => (
                "BP123",
                "multiple-documents",
                "a policy is one YAML document: remove the second `---` and what follows, or move it into its own file",
            ),
            Code::NotUtf8 => (
                "BP124",
                "not-utf8",
                "save the policy as UTF-8 text (`iconv -f LATIN1 -t UTF-8`)",
            ),
            Code::PolicyTooLarge => (
                "BP125",
                "policy-too-large",
                "a policy is at most 1 MiB (a real one is a few KiB); check that the right file is given",
            ),
            Code::NestingTooDeep => (
                "BP126",
                "nesting-too-deep",
                "a policy nests at most 64 levels of mappings and lists; a real one needs about 6",
            ),
            Code::UnsetEnv => (
                "BP130",
                "unset-env",
                "export the variable in the environment that runs backplan (a warning for validate and plan, an error for apply)",
            ),
            Code::InlineSecret => (
                "BP131",
                "inline-secret",
                "move the secret out of the policy: `${env:NAME}` or a `*_file` field",
            ),
            Code::UnknownScheme => (
                "BP132",
                "unknown-scheme",
                "use one of the OpenDAL services this backplan is built with (listed in the help and in docs/policy.md)",
            ),
            Code::MissingServiceOption => (
                "BP133",
                "missing-service-option",
                "add the option the message names under the destination's `options:`",
            ),
            Code::InlineServiceSecret => (
                "BP134",
                "inline-service-secret",
                "write the secret as `${env:NAME}`, or put it in a file and name it with `<option>_file`",
            ),
            Code::ObjectLockTooShort => (
                "BP135",
                "object-lock-too-short",
                "make `object_lock.retain_for` (and the bucket's default retention) at least as long as the longest time the sources writing there keep a snapshot",
            ),
            Code::UnknownPlaceholder => (
                "BP136",
                "unknown-placeholder",
                "use one of the placeholders docs/operations.md lists, in braces (`{status}`); write `{{` and `}}` for literal braces",
            ),
            Code::NotifyEnvUnset => (
                "BP137",
                "notify-env-unset",
                "export the variable where backplan runs; until then `apply` backs up as usual and warns that this notification was not sent",
            ),
            Code::InlineNotifySecret => (
                "BP138",
                "inline-notify-secret",
                "anyone who has a ping URL, webhook URL or routing key can send as backplan: write it as `${env:NAME}`",
            ),
            Code::BadNotifyState => (
                "BP139",
                "bad-notify-state",
                "list states this notification can send: start, success, warning, failure (PagerDuty: success, warning, failure)",
            ),
            Code::BadDrillTarget => (
                "BP140",
                "bad-drill-target",
                "name a postgres or redis source of the policy under `drill.targets` (files and config sources are drilled into a temporary folder)",
            ),
            Code::BadTime => (
                "BP200",
                "bad-time",
                "give an RFC 3339 time such as 2026-11-25T03:00:00Z",
            ),
            Code::InventoryUnreadable => (
                "BP201",
                "inventory-unreadable",
                "check the inventory file: it is the JSON that `backplan snapshots --format json` prints",
            ),
            Code::PlanFileUnreadable => (
                "BP202",
                "plan-file-unreadable",
                "give a file written by `backplan plan --out FILE` with this version of backplan",
            ),
            Code::StalePlan => (
                "BP203",
                "stale-plan",
                "the destinations or the policy changed since the plan was made; run `backplan plan` again and review it",
            ),
            Code::MaxDeletesExceeded => (
                "BP204",
                "max-deletes-exceeded",
                "review the prunes, then allow them with --max-deletes N",
            ),
            Code::SourcesFailed => (
                "BP205",
                "sources-failed",
                "the messages above say why each action failed; the others completed",
            ),
            Code::SecretUnresolved => (
                "BP206",
                "secret-unresolved",
                "export the variable or create the file the policy refers to",
            ),
            Code::NoExecutor => (
                "BP207",
                "no-executor",
                "this build of backplan cannot carry out that action yet",
            ),
            Code::UncoveredSnapshots => (
                "BP208",
                "uncovered-snapshots",
                "a destination holds snapshots of a source the policy no longer names; they are kept until removed by hand",
            ),
            Code::DestinationUnreadable => (
                "BP209",
                "destination-unreadable",
                "check the destination's credentials and network; nothing is pruned or repaired on it until it can be read",
            ),
            Code::NewestFailed => (
                "BP210",
                "newest-failed",
                "nothing of this source is pruned while its newest snapshot is a failure; fix the source, and pruning resumes after the next good snapshot",
            ),
            Code::StaleLock => (
                "BP211",
                "stale-lock",
                "a lock's holder stopped refreshing it; check that no backplan runs there, then `backplan unlock`",
            ),
            Code::UsageError => (
                "BP212",
                "usage-error",
                "the command line names an unknown subcommand, flag or value; `backplan --help` lists them (exit code 64)",
            ),
            Code::TimeInFuture => (
                "BP213",
                "time-in-future",
                "give a time in the past: the newest snapshot at or before it is restored; leave out --at for the newest",
            ),
            Code::UnknownSource => (
                "BP214",
                "unknown-source",
                "name a source the policy declares; `backplan graph` lists them",
            ),
            Code::PlanOfAnotherPolicy => (
                "BP215",
                "plan-of-another-policy",
                "apply the plan with the policy it was made from (-p), or make a new plan from this policy",
            ),
            Code::AppendOnly => (
                "BP216",
                "append-only",
                "prunes and repairs of an append-only destination are run by a trusted host: `backplan apply --role prune` there",
            ),
            Code::ObjectLocked => (
                "BP255",
                "object-locked",
                "nothing to do: the held snapshots are deleted by the first prune after the date shown, when their S3 Object Lock has expired",
            ),
            Code::ShortObjectLock => (
                "BP256",
                "short-object-lock",
                "nothing is lost: these packs are protected by the credentials (append-only hosts cannot delete) but no longer by the bucket's lock; `object_lock.extend: true` makes each backup extend the locks of the packs it uses (docs/security.md)",
            ),
            Code::LockExtensionFailed => (
                "BP257",
                "lock-extension-failed",
                "the snapshot is complete, but some of its packs keep a lock that ends before its own; give the backup host's credentials s3:PutObjectRetention and s3:GetObjectRetention with the conditions of docs/security.md, or set `object_lock.extend: false`; the next backup tries again",
            ),
            Code::BucketLockDiffers => (
                "BP258",
                "bucket-lock-differs",
                "make the bucket's default retention (`aws s3api put-object-lock-configuration`) and `object_lock.retain_for` the same period: the dates backplan records and holds prunes by come from `retain_for`",
            ),
            Code::CorruptObject => (
                "BP220",
                "corrupt-object",
                "the named object does not match its checksum or seal; restore from another destination, and run `backplan verify`",
            ),
            Code::RepositoryVersion => (
                "BP221",
                "repository-version",
                "use the backplan version that wrote this repository, or a newer one",
            ),
            Code::RepositoryLocked => (
                "BP222",
                "repository-locked",
                "another backplan holds a lock on the repository; wait, or remove a stale lock with `backplan unlock`",
            ),
            Code::NoRepositoryKey => (
                "BP223",
                "no-repository-key",
                "set `encryption.repository_key_file` (or `repository_key`) and run `backplan init`; on a rebuilt host, `backplan init --secret-key FILE` recovers the key the destinations already use",
            ),
            Code::SnapshotNotFound => (
                "BP224",
                "snapshot-not-found",
                "list the snapshots with `backplan snapshots`",
            ),
            Code::SecretKeyUnusable => (
                "BP225",
                "secret-key-unusable",
                "give a recipient's secret key with --secret-key FILE (or BACKPLAN_SECRET_KEY_FILE); it must be unencrypted (`gpg --export-secret-keys`)",
            ),
            Code::RestoreRefused => (
                "BP226",
                "restore-refused",
                "the restore would overwrite changed files or write outside its target; review with `restore --plan`, then use --force or another --target",
            ),
            Code::SourceFailed => (
                "BP227",
                "source-failed",
                "the source could not be read completely; the snapshot is not committed and the last good one stays",
            ),
            Code::VerifyFailed => (
                "BP228",
                "verify-failed",
                "the named objects are missing or damaged; copy them back from another destination or take a new backup",
            ),
            Code::DatabaseError => (
                "BP229",
                "database-error",
                "the database server refused or failed a request; the message carries its own words",
            ),
            Code::UncoveredDatabase => (
                "BP230",
                "uncovered-database",
                "add the database to a postgres source's `databases`, or accept that it is not backed up",
            ),
            Code::NotPointInTime => (
                "BP231",
                "not-point-in-time",
                "grant the backup user +sync +replconf (or use a server that allows SYNC) for point-in-time snapshots, or accept the logical scan",
            ),
            Code::PersistenceUnhealthy => (
                "BP232",
                "persistence-unhealthy",
                "look at the server's log: a failed background save or AOF write means it is not persisting what it holds",
            ),
            Code::ConfigRefused => (
                "BP233",
                "config-refused",
                "allow CONFIG GET/SET/REWRITE for the backup user, or drop `persistence` from the source and manage it in redis.conf",
            ),
            Code::NoSpace => (
                "BP234",
                "no-space",
                "free space in the spool folder, or spool elsewhere: `restore --spool DIR`, or the source's `spool_dir`; `restore --plan` shows what is needed",
            ),
            Code::Unrepairable => (
                "BP235",
                "unrepairable",
                "no other destination holds these snapshots whole: nothing is deleted; restore what is whole, let the next backup store again what still exists, and add a second destination",
            ),
            Code::RestoreFailed => (
                "BP236",
                "restore-failed",
                "the restore stopped part way: the target may hold part of the data; fix the cause the message names, then restore again into an empty target (or with --clean / --flush / --force)",
            ),
            Code::DatabaseRolesMissing => (
                "BP240",
                "database-roles-missing",
                "create the roles the message names on the target server (the snapshot's globals normally do), then restore again with --clean",
            ),
            Code::DatabaseProperties => (
                "BP241",
                "database-properties",
                "a database's owner, privileges and settings are set by a superuser: restore again as one, with --clean",
            ),
            Code::DatabaseLocale => (
                "BP245",
                "database-locale",
                "create the database by hand with a locale the server has, then restore into it",
            ),
            Code::SshMissing => (
                "BP250",
                "ssh-missing",
                "install OpenSSH's client (Debian: `apt-get install openssh-client`) so that `ssh` is on PATH",
            ),
            Code::NotifyFailed => (
                "BP265",
                "notify-failed",
                "the backup itself is not affected; check the notification's URL, the network and the service's status (the message says what happened)",
            ),
            Code::NotifySecretUnresolved => (
                "BP266",
                "notify-secret-unresolved",
                "export the variable the notification refers to in the environment that runs backplan",
            ),
            Code::BackupMissing => (
                "BP260",
                "backup-missing",
                "run `backplan apply` (or check why the scheduler does not): the source has no good snapshot on this destination",
            ),
            Code::BackupLate => (
                "BP261",
                "backup-late",
                "check that the scheduler runs `backplan apply`, and why the last runs did not back the source up (`backplan plan` shows what is due)",
            ),
            Code::BackupFailed => (
                "BP262",
                "backup-failed",
                "the failure's own code (docs/errors.md) says why; fix it and run `backplan apply` again",
            ),
            Code::SizeAnomaly => (
                "BP263",
                "size-anomaly",
                "compare the snapshot with the one before (`backplan snapshots`): a folder emptied or a database truncated shows here; raise `size_change_factor` if the change is expected",
            ),
            Code::CheckFailed => (
                "BP264",
                "check-failed",
                "run `backplan verify` (or the drill) again to see what it found; `backplan plan` offers repairs from other destinations",
            ),
            Code::Stopped => (
                "BP268",
                "stopped",
                "nothing to fix: backplan was asked to stop; the step left undone runs on the next run, and nothing half-written counts as a snapshot",
            ),
            Code::ListenFailed => (
                "BP269",
                "listen-failed",
                "give --listen (or BACKPLAN_LISTEN) a free host:port this user may bind, or leave it out",
            ),
            Code::RunNotStarted => (
                "BP270",
                "run-not-started",
                "fix what the message names (`backplan validate` checks the policy); the daemon tries again at the next due time",
            ),
            Code::DrillFailed => (
                "BP273",
                "drill-failed",
                "what the drill restored differs from what the snapshot recorded at backup (the message names the tables, databases or files): restore the snapshot into a scratch target by hand, compare, and run `backplan verify --read-data`",
            ),
            Code::DrillScratch => (
                "BP274",
                "drill-scratch",
                "the drill could not make (or remove) its scratch target: check that the database server lets the backup role CREATE DATABASE, that redis-server is installed, and that the temporary folder is writable",
            ),
            Code::DrillOverRto => (
                "BP275",
                "drill-over-rto",
                "the restore took longer than the policy's `objectives.rto`: restore faster (parallel jobs, a nearer destination, more bandwidth) or agree on a longer objective",
            ),
            Code::DrillOverRpo => (
                "BP276",
                "drill-over-rpo",
                "the newest good snapshot was older than the policy's `objectives.rpo`: back up more often (the schedule) or find out why backups fail (`backplan status`)",
            ),
            Code::DrillNeedsSecretKey => (
                "BP277",
                "drill-needs-secret-key",
                "a drill decrypts what it restores: give `--secret-key FILE`, or name `drill.secret_key_file` in the policy on a host meant to hold it",
            ),
            Code::Io => ("BP299", "io", "check the path and its permissions"),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// One problem, with where it is (for policy problems) and what to do.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
    /// Byte span in the policy text, with a short label.
    pub span: Option<(SourceSpan, String)>,
    /// Further spans (e.g. every edge of a dependency cycle).
    pub extra_spans: Vec<(SourceSpan, String)>,
}

impl Problem {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Problem {
            code,
            severity: Severity::Error,
            message: message.into(),
            help: None,
            span: None,
            extra_spans: Vec::new(),
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(code, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn at(mut self, span: Option<SourceSpan>, label: impl Into<String>) -> Self {
        if let Some(span) = span {
            self.span = Some((span, label.into()));
        }
        self
    }

    pub fn also_at(mut self, span: Option<SourceSpan>, label: impl Into<String>) -> Self {
        if let Some(span) = span {
            self.extra_spans.push((span, label.into()));
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A [`Problem`] bound to the text it points into, ready for miette.
#[derive(Debug, Clone)]
pub struct Located {
    pub problem: Problem,
    pub source: Option<Arc<NamedSource<String>>>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for Located {}

impl Diagnostic for Located {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.problem.code.id()))
    }

    fn severity(&self) -> Option<Severity> {
        Some(self.problem.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(
            self.problem
                .help
                .as_deref()
                .unwrap_or(self.problem.code.help()),
        ))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_deref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let first =
            self.problem.span.iter().map(|(span, label)| {
                LabeledSpan::new_primary_with_span(Some(label.clone()), *span)
            });
        let rest = self
            .problem
            .extra_spans
            .iter()
            .map(|(span, label)| LabeledSpan::new_with_span(Some(label.clone()), *span));
        Some(Box::new(first.chain(rest)))
    }
}

/// Every problem found in one policy, reported at once.
#[derive(Debug, Clone)]
pub struct PolicyReport {
    pub path: String,
    pub problems: Vec<Located>,
}

impl PolicyReport {
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.problem.is_error())
            .count()
    }
}

impl fmt::Display for PolicyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.errors();
        let warnings = self.problems.len() - errors;
        write!(
            f,
            "policy {} has {} error{} and {} warning{}",
            self.path,
            errors,
            if errors == 1 { "" } else { "s" },
            warnings,
            if warnings == 1 { "" } else { "s" },
        )
    }
}

impl std::error::Error for PolicyReport {}

impl Diagnostic for PolicyReport {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        // The code of the first error names the report, so a script can match on it.
        self.problems
            .iter()
            .find(|p| p.problem.is_error())
            .map(|p| Box::new(p.problem.code.id()) as Box<dyn fmt::Display>)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.problems.iter().map(|p| p as &dyn Diagnostic)))
    }
}

/// One warning line on standard error, for what the user must hear of while a
/// command runs (a stale lock removed, a storage request retried). Here, at the
/// bottom, so that the repository can say so without reaching up to `render`.
pub fn notice(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "warning: {text}");
}

/// An error outside the policy (planning, applying, reading files), with code and help.
/// In JSON it is `{code, message, help}`, the help being the code's own unless the
/// failure names a more precise one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    pub help: Option<String>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The help shown with the failure: its own, else its code's.
    pub fn help_text(&self) -> &str {
        self.help.as_deref().unwrap_or(self.code.help())
    }
}

impl serde::Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Failure", 3)?;
        s.serialize_field("code", self.code.id())?;
        s.serialize_field("message", &self.message)?;
        s.serialize_field("help", self.help_text())?;
        s.end()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Diagnostic for Failure {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code.id()))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.help_text()))
    }
}

/// How a command ended, as the process exit code (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `plan --detailed-exitcode`, nothing to do.
    Ok = 0,
    /// `plan --detailed-exitcode`: the plan has changes.
    Changes = 2,
    /// `apply`: some actions failed (the others completed).
    Partial = 3,
    /// `status`: warnings (a backup late, a size changed beyond its factor, a stale
    /// lock), nothing critical.
    Warning = 4,
    /// `status`: critical findings (a backup missing or failed, a destination
    /// unreadable, a verify or drill failed).
    Critical = 5,
    /// The command line is wrong: an unknown subcommand, flag or value (`EX_USAGE`
    /// of sysexits.h). Never 2, which `plan --detailed-exitcode` means as changes.
    Usage = 64,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> std::process::ExitCode {
        std::process::ExitCode::from(e as u8)
    }
}
