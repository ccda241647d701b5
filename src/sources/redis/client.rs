//! Where a Redis server is, and the ordinary command path to it, through the `redis`
//! crate: connecting over TCP or TLS (rustls), logging in (`AUTH`, with an ACL user
//! when one is named), selecting the URL's database, encoding commands, pipelining
//! and parsing replies. Only the replication stream after `SYNC`, which the crate
//! cannot hand over, is read by hand ([`super::sync`]).
//!
//! Passwords are sent on the wire only; [`Endpoint::describe`] and every message name
//! the host and port, never the password, and the crate's error texts are scrubbed of
//! URL credentials and of the password before they reach a message.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::ConnectionLike;

use crate::error::{Code, Failure};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one reply. The master sends a newline every second while it
/// prepares a snapshot, so this bounds silence, not the length of a snapshot.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a Redis server is and how to log in, resolved from the policy or a `--target`.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub db: u32,
    username: Option<String>,
    password: Option<String>,
    /// The TLS setup of the replication connection; `None`: plain TCP.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The crate's client for commands: address, login, database, trust anchors
    /// (behind an `Arc`: it is large, and an endpoint is cloned and moved around).
    client: Arc<redis::Client>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.describe())
    }
}

impl Endpoint {
    /// Parses `redis://[user[:password]@]host[:port][/db]` or `rediss://…` (TLS). A
    /// password given apart wins over one in the URL; `ca_file` (PEM) replaces the
    /// system's trust store for TLS.
    pub fn parse(
        url: &str,
        username: Option<&str>,
        password: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Endpoint, Failure> {
        let bad = |why: &str| {
            Failure::new(
                Code::InvalidValue,
                format!(
                    "`{}` is not a Redis URL: {why}",
                    crate::policy::secret::redact_url_password(url)
                ),
            )
            .with_help("write redis://host:6379 or rediss://host:6380 (TLS), optionally with /DB")
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => return Err(bad(&format!("the scheme is {other}, not redis or rediss"))),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| bad("it names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port().unwrap_or(6379);
        let db = match parsed.path().trim_start_matches('/') {
            "" => 0,
            d => d
                .parse()
                .map_err(|_| bad(&format!("the database `{d}` is not a number")))?,
        };
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let url_user = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let url_password = parsed.password().map(decode);
        let username = username.map(str::to_string).or(url_user);
        let password = password.or(url_password);
        let tls_failure =
            |why: String| Failure::new(Code::InvalidValue, format!("TLS for {host}:{port}: {why}"));
        let ca_pem = match ca_file.filter(|_| tls) {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| tls_failure(format!("cannot read {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let tls = if tls {
            Some(tls_config(ca_file, ca_pem.as_deref()).map_err(tls_failure)?)
        } else {
            None
        };
        let mut login = redis::RedisConnectionInfo::default()
            .set_db(i64::from(db))
            // No `CLIENT SETINFO`: backplan sends the commands it needs, no others.
            .set_skip_set_lib_name();
        if let Some(password) = &password {
            login = login.set_password(password);
            if let Some(user) = &username {
                login = login.set_username(user);
            }
        }
        let addr = if tls.is_some() {
            redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.clone(), port)
        };
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map_err(|e| bad(&e.to_string()))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
            .set_redis_settings(login);
        let client = match ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| tls_failure(scrub(&e.to_string(), password.as_deref())))?;
        Ok(Endpoint {
            host,
            port,
            db,
            username,
            password,
            tls,
            client: Arc::new(client),
        })
    }

    /// `redis://host:port` or `rediss://host:port`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls.is_some() {
                "rediss"
            } else {
                "redis"
            },
            self.host,
            self.port
        )
    }

    /// The ACL user to log in as, if any.
    pub(super) fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password to log in with, if any. Never put it in a message.
    pub(super) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The TLS setup for a connection of its own (the replication stream).
    pub(super) fn tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// Connects, logs in (`AUTH`, with the ACL user when one is named) and selects the
    /// URL's database.
    pub fn connect(&self) -> Result<Conn, Failure> {
        let describe = self.describe();
        let secret = self.password.clone();
        let failure = |e: redis::RedisError| {
            let why = match e.kind() {
                redis::ErrorKind::AuthenticationFailed => format!(
                    "AUTH refused: {}",
                    e.detail()
                        .unwrap_or("the user name or password is wrong, or the user is disabled")
                ),
                _ if e.to_string().contains("switch database") => format!(
                    "SELECT refused: {}",
                    e.detail().unwrap_or("the database does not exist")
                ),
                _ => match tls_reason(&e) {
                    Some(tls) => format!("TLS handshake: {tls}"),
                    None => format!("cannot connect: {e}"),
                },
            };
            Failure::new(
                Code::DatabaseError,
                format!("Redis at {describe}: {}", scrub(&why, secret.as_deref())),
            )
        };
        let inner = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(failure)?;
        inner
            .set_read_timeout(Some(READ_TIMEOUT))
            .and_then(|()| inner.set_write_timeout(Some(READ_TIMEOUT)))
            .map_err(failure)?;
        Ok(Conn {
            inner,
            describe: self.describe(),
            secret: self.password.clone(),
        })
    }
}

/// The rustls configuration of the replication connection: the CA file's
/// certificates (already read as `pem`), or the system's trust store.
fn tls_config(
    ca_file: Option<&Path>,
    pem: Option<&[u8]>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match (ca_file, pem) {
        (Some(path), Some(pem)) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        _ => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The TLS reason inside a crate error (a certificate the trust store does not
/// vouch for, a handshake the server broke off), if it is one.
fn tls_reason(e: &redis::RedisError) -> Option<String> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let source = std::error::Error::source(e)?;
    // The crate keeps an I/O error behind an `Arc`, and rustls's error inside that.
    let io = match source.downcast_ref::<Shared>() {
        Some(shared) => shared.downcast_ref::<std::io::Error>()?,
        None => source.downcast_ref::<std::io::Error>()?,
    };
    io.get_ref()?
        .downcast_ref::<rustls::Error>()
        .map(ToString::to_string)
}

/// An error text of the crate, safe for a message: any URL's credentials and the
/// password itself replaced by `***`.
fn scrub(text: &str, password: Option<&str>) -> String {
    let text = crate::policy::secret::redact_url_password(text);
    match password.filter(|p| !p.is_empty()) {
        Some(p) => text.replace(p, "***"),
        None => text,
    }
}

/// A reply, in the shapes RESP2 has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    Simple(String),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
    /// The server's error reply, e.g. `NOPERM this user has no permissions …`.
    Error(String),
}

impl Value {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

impl From<redis::Value> for Value {
    fn from(v: redis::Value) -> Self {
        use redis::Value as R;
        match v {
            R::Nil => Value::Nil,
            R::Int(n) => Value::Int(n),
            R::BulkString(b) => Value::Bulk(b),
            R::Array(items) | R::Set(items) => {
                Value::Array(items.into_iter().map(Value::from).collect())
            }
            R::Map(pairs) => Value::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [Value::from(k), Value::from(v)])
                    .collect(),
            ),
            R::SimpleString(s) => Value::Simple(s),
            R::Okay => Value::Simple("OK".into()),
            R::VerbatimString { text, .. } => Value::Bulk(text.into_bytes()),
            R::Attribute { data, .. } => Value::from(*data),
            R::ServerError(e) => Value::Error(
                match e.details() {
                    Some(details) => format!("{} {details}", e.code()),
                    None => e.code().to_string(),
                }
                .trim_end()
                .to_string(),
            ),
            other => Value::Simple(format!("{other:?}")),
        }
    }
}

/// Builds one command from binary arguments.
pub fn command(args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for a in args {
        c.arg(*a);
    }
    c
}

/// One connection to a server.
pub struct Conn {
    inner: redis::Connection,
    describe: String,
    secret: Option<String>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.describe)
    }
}

impl Conn {
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn error(&self, message: impl std::fmt::Display) -> Failure {
        Failure::new(
            Code::DatabaseError,
            format!(
                "Redis at {}: {}",
                self.describe,
                scrub(&message.to_string(), self.secret.as_deref())
            ),
        )
    }

    /// A failure of the connection (not an error reply), as a message.
    fn broken(&self, e: &redis::RedisError) -> Failure {
        if e.is_timeout() {
            self.error(format!("no answer within {} s", READ_TIMEOUT.as_secs()))
        } else if let Some(tls) = tls_reason(e) {
            self.error(format!("TLS handshake: {tls}"))
        } else if e.is_connection_dropped() {
            self.error("the server closed the connection")
        } else {
            self.error(e)
        }
    }

    /// Sends one command and reads its reply (an error reply is a [`Value::Error`]).
    pub fn cmd(&mut self, args: &[&[u8]]) -> Result<Value, Failure> {
        match self.inner.req_command(&command(args)) {
            Ok(v) => Ok(Value::from(v)),
            Err(e) => Err(self.broken(&e)),
        }
    }

    /// Like [`Conn::cmd`], with an error reply as a failure that quotes it.
    pub fn ok(&mut self, args: &[&[u8]]) -> Result<Value, Failure> {
        match self.cmd(args)? {
            Value::Error(e) => Err(self.error(format!(
                "{} refused: {e}",
                String::from_utf8_lossy(args.first().copied().unwrap_or_default())
            ))),
            v => Ok(v),
        }
    }

    /// Sends a pipeline without reading; its replies are then read in order with
    /// [`Conn::reply`], one at a time, so that no more than one value (a `DUMP`
    /// payload can be hundreds of megabytes) is held at once.
    pub fn send(&mut self, pipe: &redis::Pipeline) -> Result<(), Failure> {
        self.inner
            .send_packed_command(&pipe.get_packed_pipeline())
            .map_err(|e| self.broken(&e))
    }

    /// Reads the next reply of a pipeline sent with [`Conn::send`] (an error reply is
    /// a [`Value::Error`]).
    pub fn reply(&mut self) -> Result<Value, Failure> {
        match self.inner.recv_response() {
            Ok(v) => Ok(Value::from(v)),
            Err(e) => Err(self.broken(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_password_and_db_are_parsed_and_never_described() {
        let e = Endpoint::parse(
            "redis://app:s%40cret@cache.internal:6380/2",
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!((e.host.as_str(), e.port, e.db), ("cache.internal", 6380, 2));
        assert_eq!(e.password.as_deref(), Some("s@cret"));
        assert_eq!(e.username.as_deref(), Some("app"));
        assert_eq!(e.describe(), "redis://cache.internal:6380");
        assert!(!format!("{e:?}").contains("cret"));
    }

    #[test]
    fn a_url_of_another_scheme_is_refused_without_its_password() {
        let f = Endpoint::parse("postgres://u:hunter2@h/db", None, None, None).unwrap_err();
        assert!(f.message.contains("not redis"), "{}", f.message);
        assert!(!f.message.contains("hunter2"), "{}", f.message);
    }

    #[test]
    fn error_texts_lose_url_credentials_and_the_password() {
        assert_eq!(
            scrub("at redis://app:hunter2@h:6379/0: refused", None),
            "at redis://app:***@h:6379/0: refused"
        );
        assert_eq!(
            scrub("AUTH hunter2 failed", Some("hunter2")),
            "AUTH *** failed"
        );
    }

    #[test]
    fn a_certificate_failure_inside_a_crate_error_is_told_as_tls() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls_error.clone(),
        ));
        assert_eq!(tls_reason(&e), Some(rustls_error.to_string()));
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(tls_reason(&refused), None);
    }

    #[test]
    fn server_error_replies_keep_their_code_and_text() {
        let reply = |wire: &[u8]| Value::from(redis::parse_redis_value(wire).expect("a reply"));
        assert_eq!(
            reply(b"-NOPERM User backup has no permissions to run the 'sync' command\r\n"),
            Value::Error("NOPERM User backup has no permissions to run the 'sync' command".into())
        );
        assert_eq!(
            reply(b"-ERR unknown command 'SYNC'\r\n"),
            Value::Error("ERR unknown command 'SYNC'".into())
        );
        assert_eq!(Value::from(redis::Value::Okay), Value::Simple("OK".into()));
        assert_eq!(
            Value::from(redis::Value::Array(vec![
                redis::Value::Nil,
                redis::Value::BulkString(b"k".to_vec())
            ])),
            Value::Array(vec![Value::Nil, Value::Bulk(b"k".to_vec())])
        );
    }
}
