//! A point-in-time snapshot over the replication protocol, as `redis-cli --rdb` takes
//! it: `REPLCONF capa eof`, `REPLCONF rdb-only 1`, `SYNC`, then the RDB, announced
//! either as `$<length>` or, for a diskless master, as `$EOF:<40-byte mark>` with the
//! mark after the last byte. [`RdbStream`] yields exactly the RDB's bytes and checks
//! its header and its trailing CRC-64 on the way, so a truncated or damaged transfer
//! is an error before the snapshot could be committed.
//!
//! Why this file talks to the server by hand while every other command goes through
//! the `redis` crate ([`super::client`]): after `SYNC` the server does not answer with
//! a reply but with a raw byte stream (newlines while it forks, then an RDB of any
//! size framed as `$<len>` or `$EOF:<mark>`). The crate parses every byte it reads as
//! RESP and gives no access to the socket, so it would try to hold the whole RDB as
//! one value, or fail on the `$EOF:` framing. This connection therefore has its own
//! socket (TCP, or TLS with the endpoint's rustls setup), sends `AUTH` and the three
//! replication commands itself, and reads only their one-line replies before it
//! streams the RDB.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use super::client::{CONNECT_TIMEOUT, Endpoint, READ_TIMEOUT};
use super::rdb::Crc64;
use crate::error::{Code, Failure};

/// Why `SYNC` did not start.
#[derive(Debug)]
pub enum SyncError {
    /// The server will not replicate to this user or at all (`NOPERM`, a renamed or
    /// disabled command): the logical fallback can run instead.
    Refused(String),
    /// Anything else: the connection, the protocol.
    Failed(Failure),
}

impl From<Failure> for SyncError {
    fn from(f: Failure) -> Self {
        SyncError::Failed(f)
    }
}

/// Whether an error reply means "not allowed here" rather than "broken".
pub fn is_refusal(reply: &str) -> bool {
    let first = reply.split_whitespace().next().unwrap_or_default();
    first == "NOPERM"
        || reply.contains("unknown command")
        || reply.contains("not allowed")
        || reply.contains("disabled")
}

/// The replication connection's socket.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Tcp(_) => "Stream(tcp)",
            Stream::Tls(_) => "Stream(tls)",
        })
    }
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

/// A connection for one snapshot: its socket, buffered, and how to name it.
struct Replica {
    stream: BufReader<Stream>,
    describe: String,
}

impl Replica {
    /// Connects (TLS handshake included, so a certificate problem reads as one) and
    /// logs in.
    fn connect(endpoint: &Endpoint) -> Result<Replica, Failure> {
        let describe = endpoint.describe();
        let error = |message: String| {
            Failure::new(
                Code::DatabaseError,
                format!("Redis at {describe}: {message}"),
            )
        };
        let io = |e: io::Error| error(format!("cannot connect: {e}"));
        let addrs: Vec<_> = (endpoint.host.as_str(), endpoint.port)
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
        let stream = match endpoint.tls() {
            None => Stream::Tcp(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| error(format!("TLS: {e}")))?;
                let client = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| error(format!("TLS: {e}")))?;
                let mut tls = rustls::StreamOwned::new(client, tcp);
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| error(format!("TLS handshake: {e}")))?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        let mut replica = Replica {
            stream: BufReader::with_capacity(256 * 1024, stream),
            describe: endpoint.describe(),
        };
        if let Some(password) = endpoint.password() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = endpoint.username() {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            if let Err(e) = replica.command(&auth)? {
                return Err(replica.error(format!("AUTH refused: {e}")));
            }
        }
        Ok(replica)
    }

    fn error(&self, message: impl std::fmt::Display) -> Failure {
        Failure::new(
            Code::DatabaseError,
            format!("Redis at {}: {message}", self.describe),
        )
    }

    /// Sends one command in RESP's array-of-bulk-strings form; nothing is read.
    fn send(&mut self, args: &[&[u8]]) -> Result<(), Failure> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.send_raw(&out)
    }

    /// Sends bytes as they are.
    fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let s = self.stream.get_mut();
        s.write_all(bytes)
            .and_then(|()| s.flush())
            .map_err(|e| self.error(format!("sending: {e}")))
    }

    /// Sends one command whose reply is one line (`+OK`, or `-ERR …`), and reads
    /// it: `Err` holds the server's error reply.
    fn command(&mut self, args: &[&[u8]]) -> Result<Result<(), String>, Failure> {
        self.send(args)?;
        let mut line = Vec::new();
        let read = self.stream.read_until(b'\n', &mut line);
        match read {
            Ok(_) if line.last() == Some(&b'\n') => {}
            Ok(_) => return Err(self.error("the server closed the connection")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(self.error(format!("no answer within {} s", READ_TIMEOUT.as_secs())));
            }
            Err(e) => return Err(self.error(e)),
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        match text.split_at_checked(1) {
            Some(("-", e)) => Ok(Err(e.to_string())),
            Some(("+", _)) => Ok(Ok(())),
            _ => Err(self.error(format!(
                "unexpected reply to {}: {text:?}",
                String::from_utf8_lossy(args[0])
            ))),
        }
    }
}

/// Connects to `endpoint`, starts a full synchronisation and returns the RDB's bytes
/// as a stream.
pub fn start(endpoint: &Endpoint) -> Result<RdbStream<BufReader<Stream>>, SyncError> {
    let mut replica = Replica::connect(endpoint)?;
    if let Err(e) = replica.command(&[b"REPLCONF", b"capa", b"eof"])? {
        if is_refusal(&e) {
            return Err(SyncError::Refused(e));
        }
    }
    // Asks the master for the snapshot alone, without the command stream after it
    // (Redis 7+; older servers answer with an error and send the stream, which is
    // never read).
    let _ = replica.command(&[b"REPLCONF", b"rdb-only", b"1"])?;
    // Inline, as `redis-cli --rdb` sends it.
    replica.send_raw(b"SYNC\r\n")?;
    let describe = replica.describe.clone();
    let failed = |what: String| {
        SyncError::Failed(Failure::new(
            Code::SourceFailed,
            format!("Redis at {describe}: {what}"),
        ))
    };
    let mut r = replica.stream;
    // While the master forks and writes, it sends a newline now and then.
    let header = loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)
            .map_err(|e| failed(format!("waiting for the snapshot: {e}")))?;
        if line.is_empty() {
            return Err(failed(
                "the server closed the connection before the snapshot".into(),
            ));
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !text.is_empty() {
            break text;
        }
    };
    if let Some(e) = header.strip_prefix('-') {
        return Err(if is_refusal(e) {
            SyncError::Refused(e.to_string())
        } else {
            failed(format!("SYNC failed: {e}"))
        });
    }
    let Some(size) = header.strip_prefix('$') else {
        return Err(failed(format!("unexpected reply to SYNC: {header:?}")));
    };
    let end = match size.strip_prefix("EOF:") {
        Some(mark) if mark.len() == MARK => End::Mark(mark.as_bytes().to_vec()),
        Some(mark) => return Err(failed(format!("an end mark of {} bytes", mark.len()))),
        None => End::Length(
            size.parse()
                .map_err(|_| failed(format!("unexpected reply to SYNC: {header:?}")))?,
        ),
    };
    Ok(RdbStream::new(r, end))
}

/// The length of a diskless transfer's end mark.
const MARK: usize = 40;

#[derive(Debug)]
enum End {
    Length(u64),
    Mark(Vec<u8>),
}

/// The RDB bytes of one transfer. Reading past the end returns 0; an early end, a
/// wrong header or a wrong checksum is an `InvalidData` / `UnexpectedEof` error.
pub struct RdbStream<R> {
    inner: R,
    end: End,
    /// Bytes received and not yet handed out (the possible end mark is held back).
    pending: Vec<u8>,
    taken: usize,
    received: u64,
    finished: bool,
    check: TailCheck,
}

impl<R> std::fmt::Debug for RdbStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RdbStream({} bytes)", self.received)
    }
}

fn end_len(end: &End) -> Option<u64> {
    match end {
        End::Length(n) => Some(*n),
        End::Mark(_) => None,
    }
}

impl<R: BufRead> RdbStream<R> {
    fn new(inner: R, end: End) -> Self {
        RdbStream {
            inner,
            finished: matches!(end_len(&end), Some(0)),
            end,
            pending: Vec::new(),
            taken: 0,
            received: 0,
            check: TailCheck::default(),
        }
    }

    /// Bytes of the RDB handed out so far.
    pub fn bytes(&self) -> u64 {
        self.check.total
    }

    /// Whether the server had checksums off (`rdbchecksum no`): the CRC was 0.
    pub fn unchecked(&self) -> bool {
        self.check.unchecked
    }

    /// Receives more bytes into `pending`; false once the transfer is complete.
    fn fill(&mut self) -> io::Result<bool> {
        if self.finished {
            return Ok(false);
        }
        self.pending.drain(..self.taken);
        self.taken = 0;
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the snapshot stream ended after {} bytes, before its end",
                    self.received
                ),
            ));
        }
        let n = match &self.end {
            End::Length(len) => buf.len().min((len - self.received) as usize),
            End::Mark(_) => buf.len(),
        };
        self.pending.extend_from_slice(&buf[..n]);
        self.inner.consume(n);
        self.received += n as u64;
        match &self.end {
            End::Length(len) => self.finished = self.received == *len,
            End::Mark(mark) => {
                if self.pending.ends_with(mark) {
                    self.pending.truncate(self.pending.len() - MARK);
                    self.finished = true;
                }
            }
        }
        Ok(true)
    }

    /// How many pending bytes may be handed out now.
    fn releasable(&self) -> usize {
        match (&self.end, self.finished) {
            (End::Mark(_), false) => self.pending.len().saturating_sub(MARK),
            _ => self.pending.len(),
        }
    }
}

impl<R: BufRead> Read for RdbStream<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let ready = self.releasable();
            if ready > self.taken {
                let n = (ready - self.taken).min(out.len());
                let bytes = &self.pending[self.taken..self.taken + n];
                out[..n].copy_from_slice(bytes);
                self.check.update(bytes)?;
                self.taken += n;
                return Ok(n);
            }
            if !self.fill()? {
                self.check.finish()?;
                return Ok(0);
            }
        }
    }
}

/// Checks an RDB as it streams past: the `REDIS` magic at the start, and the CRC-64
/// of everything before the last eight bytes against those bytes.
#[derive(Debug, Default)]
pub struct TailCheck {
    crc: Crc64,
    /// The last eight bytes seen, not yet in the CRC: they may be the checksum.
    tail: Vec<u8>,
    total: u64,
    head: Vec<u8>,
    unchecked: bool,
}

impl TailCheck {
    pub fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.head.len() < 5 {
            let take = (5 - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            if !b"REDIS".starts_with(&self.head) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the snapshot does not start like an RDB file",
                ));
            }
        }
        self.total += bytes.len() as u64;
        if bytes.len() >= 8 {
            self.crc.update(&self.tail);
            self.crc.update(&bytes[..bytes.len() - 8]);
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - 8..]);
        } else {
            self.tail.extend_from_slice(bytes);
            let over = self.tail.len().saturating_sub(8);
            self.crc.update(&self.tail[..over]);
            self.tail.drain(..over);
        }
        Ok(())
    }

    /// At the end: the last eight bytes must be the CRC-64 (or 0: checksums off).
    pub fn finish(&mut self) -> io::Result<()> {
        if self.tail.len() < 8 || self.head.len() < 5 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the snapshot is only {} bytes: not an RDB file", self.total),
            ));
        }
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&self.tail);
        let stored = u64::from_le_bytes(stored);
        if stored == 0 {
            self.unchecked = true;
            return Ok(());
        }
        let computed = self.crc.value();
        if stored != computed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the snapshot's checksum is wrong: the file says {stored:016x}, its bytes give {computed:016x}"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid RDB: header, EOF opcode, CRC-64.
    fn tiny_rdb() -> Vec<u8> {
        let mut rdb = b"REDIS0010\xfe\x00\xff".to_vec();
        let mut crc = Crc64::default();
        crc.update(&rdb);
        rdb.extend_from_slice(&crc.value().to_le_bytes());
        rdb
    }

    fn drain(mut r: impl Read, step: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_length_prefixed_transfer_yields_exactly_the_rdb() {
        let rdb = tiny_rdb();
        let mut wire = rdb.clone();
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        for cap in [1, 3, 64] {
            let mut r = io::BufReader::with_capacity(cap, &wire[..]);
            let s = RdbStream::new(&mut r, End::Length(rdb.len() as u64));
            assert_eq!(drain(s, 2).unwrap(), rdb);
        }
    }

    #[test]
    fn an_end_mark_split_across_reads_ends_the_transfer() {
        let rdb = tiny_rdb();
        let mark = b"0123456789012345678901234567890123456789".to_vec();
        let mut wire = rdb.clone();
        wire.extend_from_slice(&mark);
        // Buffers of 1, 7 and 33 bytes cut the mark at every place.
        for cap in [1, 7, 33, 4096] {
            let mut r = io::BufReader::with_capacity(cap, &wire[..]);
            let s = RdbStream::new(&mut r, End::Mark(mark.clone()));
            assert_eq!(drain(s, 5).unwrap(), rdb, "buffer of {cap}");
        }
    }

    #[test]
    fn a_transfer_cut_short_is_an_error() {
        let rdb = tiny_rdb();
        let cut = &rdb[..rdb.len() - 3];
        let mut r = io::BufReader::new(cut);
        let s = RdbStream::new(&mut r, End::Length(rdb.len() as u64));
        assert_eq!(
            drain(s, 4).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut r = io::BufReader::new(cut);
        let s = RdbStream::new(&mut r, End::Mark(vec![b'x'; MARK]));
        assert!(drain(s, 4).is_err());
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let mut rdb = tiny_rdb();
        rdb[10] ^= 0x01;
        let mut r = io::BufReader::new(&rdb[..]);
        let s = RdbStream::new(&mut r, End::Length(rdb.len() as u64));
        let e = drain(s, 3).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn something_that_is_not_an_rdb_is_refused_at_once() {
        let wire = b"HELLO0010\xff\0\0\0\0\0\0\0\0";
        let mut r = io::BufReader::new(&wire[..]);
        let s = RdbStream::new(&mut r, End::Length(wire.len() as u64));
        assert_eq!(drain(s, 64).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_zero_checksum_means_checksums_were_off() {
        let mut rdb = b"REDIS0010\xff".to_vec();
        rdb.extend_from_slice(&[0; 8]);
        let mut r = io::BufReader::new(&rdb[..]);
        let mut s = RdbStream::new(&mut r, End::Length(rdb.len() as u64));
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(s.unchecked());
        assert_eq!(out, rdb);
    }

    #[test]
    fn refusals_are_told_from_failures() {
        assert!(is_refusal(
            "NOPERM User backup has no permissions to run the 'sync' command"
        ));
        assert!(is_refusal(
            "ERR unknown command 'SYNC', with args beginning with: "
        ));
        assert!(!is_refusal("ERR Background save already in progress"));
    }
}
