//! A small, blocking RESP2 client over TCP or TLS. It sends commands and pipelines,
//! and after `SYNC` it hands over the raw byte stream the replication protocol sends,
//! which no general-purpose client exposes; so one connection type (one TLS setup,
//! one `AUTH`) serves commands and snapshots alike.
//!
//! Passwords are sent on the wire only; [`Endpoint::describe`] and every message name
//! the host and port, never the password.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Code, Failure};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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
    tls: Option<Arc<rustls::ClientConfig>>,
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
        let tls = if tls {
            Some(tls_config(ca_file).map_err(|why| {
                Failure::new(Code::InvalidValue, format!("TLS for {host}:{port}: {why}"))
            })?)
        } else {
            None
        };
        Ok(Endpoint {
            host,
            port,
            db,
            username: username.map(str::to_string).or(url_user),
            password: password.or(url_password),
            tls,
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

    /// Connects, logs in (`AUTH`, with the ACL user when one is named) and selects the
    /// URL's database.
    pub fn connect(&self) -> Result<Conn, Failure> {
        let io = |e: io::Error| self.error(format!("cannot connect: {e}"));
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(io)?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            io(last.unwrap_or_else(|| io::Error::other("the host has no address")))
        })?;
        tcp.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
        tcp.set_write_timeout(Some(READ_TIMEOUT)).map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Tcp(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| self.error(format!("TLS: {e}")))?;
                let client = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| self.error(format!("TLS: {e}")))?;
                let mut tls = rustls::StreamOwned::new(client, tcp);
                // Handshake now, so that a certificate problem reads as one.
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| self.error(format!("TLS handshake: {e}")))?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        let mut conn = Conn {
            stream: BufReader::with_capacity(256 * 1024, stream),
            describe: self.describe(),
        };
        if let Some(password) = &self.password {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &self.username {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            conn.ok(&auth)?;
        }
        if self.db != 0 {
            conn.ok(&[b"SELECT", self.db.to_string().as_bytes()])?;
        }
        Ok(conn)
    }

    fn error(&self, message: String) -> Failure {
        Failure::new(
            Code::DatabaseError,
            format!("Redis at {}: {message}", self.describe()),
        )
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
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

enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A RESP2 reply.
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

/// One connection to a server.
pub struct Conn {
    stream: BufReader<Stream>,
    describe: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.describe)
    }
}

/// Appends one command in RESP's array-of-bulk-strings form.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Conn {
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn error(&self, message: impl std::fmt::Display) -> Failure {
        Failure::new(
            Code::DatabaseError,
            format!("Redis at {}: {message}", self.describe),
        )
    }

    /// Sends bytes already encoded with [`encode`] (a pipeline), without reading.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let s = self.stream.get_mut();
        s.write_all(bytes)
            .and_then(|()| s.flush())
            .map_err(|e| self.error(format!("sending: {e}")))
    }

    /// Sends one command and reads its reply (an error reply is a [`Value::Error`]).
    pub fn cmd(&mut self, args: &[&[u8]]) -> Result<Value, Failure> {
        let mut buf = Vec::new();
        encode(&mut buf, args);
        self.send_raw(&buf)?;
        self.read_value()
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

    /// Reads one reply.
    pub fn read_value(&mut self) -> Result<Value, Failure> {
        read_value(&mut self.stream).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                self.error(format!("no answer within {} s", READ_TIMEOUT.as_secs()))
            }
            io::ErrorKind::UnexpectedEof => self.error("the server closed the connection"),
            _ => self.error(e),
        })
    }

    /// The raw stream, buffered, for what follows `SYNC`.
    pub fn raw(&mut self) -> &mut dyn BufRead {
        &mut self.stream
    }
}

fn line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(buf)
}

fn number(bytes: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a number: {:?}", String::from_utf8_lossy(bytes)),
            )
        })
}

/// Reads one RESP2 value.
pub fn read_value(r: &mut impl BufRead) -> io::Result<Value> {
    let l = line(r)?;
    let Some((&kind, rest)) = l.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "an empty reply"));
    };
    Ok(match kind {
        b'+' => Value::Simple(String::from_utf8_lossy(rest).into_owned()),
        b'-' => Value::Error(String::from_utf8_lossy(rest).into_owned()),
        b':' => Value::Int(number(rest)?),
        b'$' => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let mut data = vec![0u8; n as usize + 2];
            r.read_exact(&mut data)?;
            data.truncate(n as usize);
            Value::Bulk(data)
        }
        b'*' => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let mut items = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                items.push(read_value(r)?);
            }
            Value::Array(items)
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected reply type {:?}", other as char),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_reply_type() {
        let wire = b"+OK\r\n-ERR bad\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n";
        let mut r = BufReader::new(&wire[..]);
        assert_eq!(read_value(&mut r).unwrap(), Value::Simple("OK".into()));
        assert_eq!(read_value(&mut r).unwrap(), Value::Error("ERR bad".into()));
        assert_eq!(read_value(&mut r).unwrap(), Value::Int(42));
        assert_eq!(read_value(&mut r).unwrap(), Value::Bulk(b"a\r\n".to_vec()));
        assert_eq!(read_value(&mut r).unwrap(), Value::Nil);
        assert_eq!(
            read_value(&mut r).unwrap(),
            Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Bulk(vec![])])])
        );
        assert_eq!(
            read_value(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_truncated_bulk_reply_is_an_error_not_a_short_value() {
        let mut r = BufReader::new(&b"$10\r\nabc"[..]);
        assert!(read_value(&mut r).is_err());
    }

    #[test]
    fn encodes_binary_arguments_as_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k\r\n", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n");
    }

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
}
