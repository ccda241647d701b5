//! The words for what sources report: the attributes a files
//! restore could not set, the roles a database restore misses, a spool that does not
//! fit.

use std::fmt;

use crate::error::{Code, Failure};
use crate::plan::plural;
use crate::sources::files::MetaWarning;
use crate::sources::postgres::{MissingRoles, NoRoom, RolesFromGlobals};

/// `entry` or `entries`.
fn entries(n: u64) -> &'static str {
    if n == 1 { "entry" } else { "entries" }
}

impl fmt::Display for MetaWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaWarning::OwnersNotSet {
                entries: n,
                examples,
            } => write!(
                f,
                "the owner of {n} {} could not be set ({}{})",
                entries(*n),
                examples.join("; "),
                if *n > examples.len() as u64 {
                    "; …"
                } else {
                    ""
                }
            ),
            MetaWarning::XattrsUnsupported { entries: n, names } => write!(
                f,
                "the target's filesystem does not support these extended attributes ({}): \
                 they were not restored on {n} {}",
                names.join(", "),
                entries(*n)
            ),
        }
    }
}

impl From<MissingRoles> for Failure {
    fn from(m: MissingRoles) -> Failure {
        let help = match &m.globals {
            RolesFromGlobals::NoGlobals => {
                "this snapshot holds no globals (the source has `globals: false`): create the \
                 roles on the target (CREATE ROLE …) and restore again, with --clean"
                    .to_string()
            }
            RolesFromGlobals::NotCreated => {
                "the snapshot's globals (globals.sql) do not create them: create the roles on \
                 the target (CREATE ROLE …) and restore again, with --clean"
                    .to_string()
            }
            RolesFromGlobals::Refused(said) => format!(
                "psql could not create them from the snapshot's globals ({}): restore as a \
                 superuser, or create the roles on the target (CREATE ROLE …), and restore \
                 again, with --clean",
                said.join("; ")
            ),
        };
        Failure::new(
            Code::DatabaseRolesMissing,
            format!(
                "database {}: its owner, privileges or settings name role{} {} that {} not on \
                 {}; its data was not restored",
                m.database,
                plural(m.roles.len()),
                m.roles.join(", "),
                if m.roles.len() == 1 { "is" } else { "are" },
                m.server
            ),
        )
        .with_help(help)
    }
}

impl From<NoRoom> for Failure {
    fn from(n: NoRoom) -> Failure {
        Failure::new(
            Code::NoSpace,
            format!(
                "the spool for {} needs {} in {}, which has {} available; nothing was restored",
                n.archive,
                super::bytes(n.space.needed),
                n.dir.display(),
                super::bytes(n.space.available)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_warnings_count_entries_and_say_when_examples_are_cut() {
        let one = MetaWarning::OwnersNotSet {
            entries: 1,
            examples: vec!["a: Operation not permitted".into()],
        };
        assert_eq!(
            one.to_string(),
            "the owner of 1 entry could not be set (a: Operation not permitted)"
        );
        let many = MetaWarning::OwnersNotSet {
            entries: 5,
            examples: vec!["a: x".into(), "b: x".into(), "c: x".into()],
        };
        assert_eq!(
            many.to_string(),
            "the owner of 5 entries could not be set (a: x; b: x; c: x; …)"
        );
        let xattrs = MetaWarning::XattrsUnsupported {
            entries: 2,
            names: vec!["user.a".into(), "security.b".into()],
        };
        assert_eq!(
            xattrs.to_string(),
            "the target's filesystem does not support these extended attributes \
             (user.a, security.b): they were not restored on 2 entries"
        );
    }

    #[test]
    fn missing_roles_are_a_coded_failure_whose_help_says_what_the_globals_did() {
        let failure = Failure::from(MissingRoles {
            database: "shop".into(),
            roles: vec!["app".into()],
            server: "postgres@db:5432".into(),
            globals: RolesFromGlobals::Refused(vec![
                "CREATE ROLE app: permission denied to create role".into(),
            ]),
        });
        assert_eq!(failure.code, Code::DatabaseRolesMissing);
        assert_eq!(
            failure.message,
            "database shop: its owner, privileges or settings name role app that is not on \
             postgres@db:5432; its data was not restored"
        );
        assert!(failure.help.as_deref().is_some_and(|h| h.starts_with(
            "psql could not create them from the snapshot's \
                                               globals (CREATE ROLE app: permission denied"
        )));
    }
}
