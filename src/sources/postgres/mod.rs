//! The `postgres` source: `pg_dump -Fc -Z0` streamed into the sink (compression is the
//! pipeline's), `pg_dumpall --globals-only` as its own entry, a `pg_dump` whose major
//! version is at least the server's; restore with `pg_restore` fed from the
//! repository, globals first, `ANALYZE` afterwards (`vacuumdb`, as parallel as the restore).
//!
//! The password reaches the tools through `PGPASSWORD` in their environment, never on
//! a command line; messages name hosts and databases, never the password. Without one
//! in the policy, the tools read `.pgpass` themselves and backplan's own connections
//! read it the same way (see [`super::pgpass`]).
//!
//! With `jobs` above 1 a database is dumped in directory format (`pg_dump -Fd -j N`)
//! into a fresh folder under the source's `spool_dir`, and each file of it is stored as
//! its own entry (`DB.dir/toc.dat`, `DB.dir/1234.dat`); the folder goes afterwards.
//! A streamed dump's layout (where each table's rows lie in the archive, `custom`) is
//! read as it streams by and stored beside it.
//!
//! A restore writes an archive to a spool when `pg_restore` needs a file or a folder
//! (`--jobs N`, or any directory-format archive), after checking that it fits; a
//! whole restore goes by sections instead when it can (a directory-format archive,
//! or a custom-format one with its layout): only the tables of contents are spooled,
//! and the tables' rows are copied straight into the server (`sections`). A whole
//! restore also gives the database the archive's own properties of it (owner,
//! settings, privileges, comment: `properties`), last. A database that the restore
//! creates gets the archive's encoding and locale, from `template0`
//! ([`create_database`]).
//!
//! The code: reaching a server (`connection`), finding and running the tools
//! (`tools`), the backup (`dump`), archives in a snapshot and their spools
//! (`archive`), the restore (`restore`, `sections`, `properties`, `custom`) and the
//! checks of a restored database (`check`). Other modules use what this file
//! re-exports.

use std::time::Duration;

use crate::error::{Code, Failure};

mod archive;
mod check;
mod connection;
mod custom;
mod dump;
mod properties;
mod restore;
mod sections;
mod tools;

// What the submodules share with each other.
use archive::{
    Rows, RowsIn, Spooled, check_room, each_chunk, feed, file_name, on_disk, plain_file_name,
    spool_archive, write_file,
};
use connection::server_version_num;
use tools::{Checked, Tool, fed_output, run_fed, run_tool, tool_failed};

pub use archive::{
    Archive, ArchiveFormat, Feed, Files, NoRoom, SpaceCheck, Spool, archives, available_space,
    check_space, space_for,
};
pub use check::{
    CHECKSUM_METHOD, CHECKSUMS, Checksums, RowCountDifference, TableRows, restore_test,
    stable_row_text, table_rows,
};
pub use connection::{Connection, Probe, probe};
pub use custom::LAYOUT_SUFFIX;
pub use dump::{Prepared, backup, prepare};
pub use properties::{Creation, DatabaseLocale, Properties};
pub use restore::{
    MissingRoles, RestoreTarget, RolesFromGlobals, analyze, apply_properties, by_sections,
    check_roles, check_target, create_database, database_locale, database_properties, list_archive,
    ready_target, restore_database, restore_globals, spool_files, target_state,
};
pub use tools::{Tools, find_tools};

/// The entry that holds roles and tablespaces.
pub const GLOBALS: &str = "globals.sql";
/// The suffix of a database's entry (`medianest.dump`).
pub const DUMP_SUFFIX: &str = ".dump";
/// The suffix of the folder of a database's directory-format archive: its files are
/// the entries `medianest.dir/toc.dat`, `medianest.dir/1234.dat`, ….
pub const DIR_SUFFIX: &str = ".dir";
/// The suffix of the entry with a database's row counts at backup time.
pub const COUNTS_SUFFIX: &str = ".counts.json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(message: impl Into<String>) -> Failure {
    Failure::new(Code::SourceFailed, message)
}

/// A server's error, with the server's own message where it gave one.
fn db_error(conn: &Connection, e: &tokio_postgres::Error) -> Failure {
    // tokio-postgres's own text leaves out the cause ("error connecting to server").
    let detail = match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(d), _) => d.message().to_string(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    };
    Failure::new(
        Code::DatabaseError,
        format!("PostgreSQL at {}: {detail}", conn.describe()),
    )
}
