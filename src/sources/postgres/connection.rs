//! Reaching a server: the connection resolved from the policy, and the probe.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

use crate::error::{Code, Failure};
use crate::policy::Policy;
use crate::policy::model::PostgresSource;

use super::*;

/// How to reach a server, resolved from the policy.
#[derive(Clone)]
pub struct Connection {
    config: Config,
    host: String,
    port: u16,
    pub(super) user: String,
    password: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.describe())
    }
}

impl Connection {
    /// Resolves the URL and the password reference.
    pub fn new(pg: &PostgresSource, policy: &Policy) -> Result<Connection, Failure> {
        let url = pg
            .url
            .resolve()
            .map_err(|e| Failure::new(Code::SecretUnresolved, format!("postgres url: {e}")))?;
        Connection::from_url(url.expose(), password(pg, policy)?)
    }

    /// A connection to `url`, with an optional password.
    pub fn from_url(url: &str, password: Option<String>) -> Result<Connection, Failure> {
        let mut config = Config::from_str(url).map_err(|e| {
            Failure::new(
                Code::InvalidValue,
                format!(
                    "`{}` is not a PostgreSQL URL: {e}",
                    crate::policy::secret::redact_url_password(url)
                ),
            )
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres").to_string();
        let password = password.or_else(|| {
            config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        });
        if let Some(p) = &password {
            config.password(p.as_str());
        }
        Ok(Connection {
            config,
            host,
            port,
            user,
            password,
        })
    }

    /// `user@host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// The database the URL names.
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The same server, another database.
    pub fn with_database(&self, db: &str) -> Connection {
        let mut c = self.clone();
        c.config.dbname(db);
        c
    }

    pub(super) fn command(&self, tool: &Path) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args([
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.user,
        ]);
        cmd.env("PGCONNECT_TIMEOUT", "10");
        match &self.password {
            Some(p) => {
                cmd.env("PGPASSWORD", p);
            }
            None => {
                cmd.env_remove("PGPASSWORD");
            }
        }
        cmd
    }

    /// The password libpq would find in `$PGPASSFILE` or `~/.pgpass` for this host,
    /// port, database and user; the tools read the file themselves, tokio-postgres
    /// does not.
    fn pgpass_password(&self) -> Option<String> {
        let file = crate::sources::pgpass::default_path()?;
        let wanted = crate::sources::pgpass::Wanted {
            host: &self.host,
            port: self.port,
            database: self.config.get_dbname().unwrap_or(&self.user),
            user: &self.user,
        };
        crate::sources::pgpass::lookup(&file, &wanted)
    }

    /// A client connection; without a password from the policy or the URL, with the
    /// one `.pgpass` gives, as `pg_dump` would use.
    pub async fn client(&self) -> Result<tokio_postgres::Client, Failure> {
        let mut config = self.config.clone();
        if self.password.is_none()
            && let Some(p) = self.pgpass_password()
        {
            config.password(p);
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| db_error(self, &e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

fn password(pg: &PostgresSource, policy: &Policy) -> Result<Option<String>, Failure> {
    crate::sources::password(
        pg.password.as_ref(),
        pg.password_file.as_ref(),
        policy,
        "postgres password",
    )
}

/// What the server says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub server_version_num: u32,
    /// Every database that accepts connections (templates excluded), with its size.
    pub databases: BTreeMap<String, u64>,
    pub in_recovery: bool,
}

impl Probe {
    pub fn major(&self) -> u32 {
        self.server_version_num / 10_000
    }
}

/// The server's `server_version_num` (`170002`); 0 when it does not parse.
pub(super) async fn server_version_num(
    client: &tokio_postgres::Client,
    conn: &Connection,
) -> Result<u32, Failure> {
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(|e| db_error(conn, &e))?
        .get(0);
    Ok(version.trim().parse().unwrap_or(0))
}

/// Reads the server version and the databases.
pub async fn probe(conn: &Connection) -> Result<Probe, Failure> {
    let client = conn.client().await?;
    let q = |e: tokio_postgres::Error| db_error(conn, &e);
    let server_version_num = server_version_num(&client, conn).await?;
    let rows = client
        .query(
            "SELECT datname, pg_database_size(datname)::bigint FROM pg_database \
             WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await
        .map_err(q)?;
    let databases = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
        .collect();
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(q)?
        .get(0);
    Ok(Probe {
        server_version_num,
        databases,
        in_recovery,
    })
}
