//! [`Writer`]: an RDB file assembled from DUMP payloads, for a cold start from a
//! `dump.rdb` and for the RDB that scan mode stores.

use std::fmt;
use std::io::{self, Write};

use super::*;

/// Writes an RDB file from DUMP payloads, for a cold start from a `dump.rdb`.
///
/// The file's version should be at least the version in every payload (a
/// payload of a newer version may hold encodings an older loader rejects, so
/// [`Writer::key`] refuses it).
pub struct Writer<W: Write> {
    inner: W,
    crc: Crc64,
    version: u16,
}

impl<W: Write> fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("version", &self.version)
            .field("crc", &self.crc)
            .finish_non_exhaustive()
    }
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl<W: Write> Writer<W> {
    /// Writes the header for RDB `version` (5..=[`MAX_RDB_VERSION`]: 5 is the
    /// first with a checksum) and a `backplan-ver` AUX field naming the writer.
    pub fn new(inner: W, version: u16) -> io::Result<Self> {
        if !(5..=MAX_RDB_VERSION).contains(&version) {
            return Err(invalid_input(format!(
                "cannot write RDB version {version}: this writer supports 5..={MAX_RDB_VERSION}"
            )));
        }
        let mut w = Self {
            inner,
            crc: Crc64::new(),
            version,
        };
        w.put(format!("REDIS{version:04}").as_bytes())?;
        w.aux(b"backplan-ver", env!("CARGO_PKG_VERSION").as_bytes())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }

    fn put_len(&mut self, len: u64) -> io::Result<()> {
        let mut buf = Vec::with_capacity(9);
        encode_len(len, &mut buf);
        self.put(&buf)
    }

    fn put_string(&mut self, s: &[u8]) -> io::Result<()> {
        self.put_len(s.len() as u64)?;
        self.put(s)
    }

    /// Writes an AUX field (loaders ignore names they do not know).
    pub fn aux(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.put(&[OP_AUX])?;
        self.put_string(key)?;
        self.put_string(value)
    }

    /// Starts the keys of database `db`.
    pub fn select_db(&mut self, db: u64) -> io::Result<()> {
        self.put(&[OP_SELECTDB])?;
        self.put_len(db)
    }

    /// Checks the payload, then writes EXPIRETIME_MS (if any), the type byte,
    /// the key as an RDB string, and the value bytes (the payload without its
    /// 10-byte footer).
    pub fn key(&mut self, key: &[u8], expire_ms: Option<i64>, payload: &[u8]) -> io::Result<()> {
        let (type_id, version) = check_dump_payload(payload)?;
        if !is_value_type(type_id) {
            return Err(invalid_input(format!(
                "the payload for a key starts with 0x{type_id:02x}, which is not a value type \
                 this writer can store"
            )));
        }
        if version > self.version {
            return Err(invalid_input(format!(
                "a payload of RDB version {version} cannot go into an RDB file of version {}",
                self.version
            )));
        }
        if let Some(ms) = expire_ms {
            self.put(&[OP_EXPIRETIME_MS])?;
            self.put(&ms.to_le_bytes())?;
        }
        self.put(&[type_id])?;
        self.put_string(key)?;
        self.put(&payload[1..payload.len() - DUMP_FOOTER_LEN])
    }

    /// Writes the function libraries of a `FUNCTION DUMP` payload (or of an
    /// [`Item::Function`]).
    pub fn function(&mut self, payload: &[u8]) -> io::Result<()> {
        let (first, version) = check_dump_payload(payload)?;
        if first != OP_FUNCTION2 {
            return Err(invalid_input(format!(
                "a function payload starts with 0x{OP_FUNCTION2:02x}, this one with 0x{first:02x}"
            )));
        }
        if version > self.version {
            return Err(invalid_input(format!(
                "a function payload of RDB version {version} cannot go into an RDB file of \
                 version {}",
                self.version
            )));
        }
        // The payload body is a run of FUNCTION2 records, as in the file.
        self.put(&payload[..payload.len() - DUMP_FOOTER_LEN])
    }

    /// Writes the EOF opcode and the CRC-64, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[OP_EOF])?;
        let crc = self.crc.value();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Appends `len` in RDB length encoding (`rdbSaveLen`).
fn encode_len(len: u64, out: &mut Vec<u8>) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if let Ok(l32) = u32::try_from(len) {
        out.push(0x80);
        out.extend_from_slice(&l32.to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sources::redis::rdb::testdata::*;

    #[test]
    fn writer_output_reads_back_to_the_same_payloads() {
        let (file, _) = sample_file();
        let items = read_all(&file).unwrap();
        let mut w = Writer::new(Vec::new(), 12).unwrap();
        let mut db = None;
        for item in &items {
            match item {
                Item::Key(k) => {
                    if db != Some(k.db) {
                        w.select_db(k.db).unwrap();
                        db = Some(k.db);
                    }
                    w.key(&k.key, k.expire_ms, &k.payload).unwrap();
                }
                Item::Function { payload } => w.function(payload).unwrap(),
                _ => {}
            }
        }
        let out = w.finish().unwrap();
        let again = read_all(&out).unwrap();
        assert_eq!(
            again[0],
            Item::Aux {
                key: b"backplan-ver".to_vec(),
                value: env!("CARGO_PKG_VERSION").as_bytes().to_vec()
            }
        );
        let functions = |items: &[Item]| {
            items
                .iter()
                .filter(|i| matches!(i, Item::Function { .. }))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(functions(&items), functions(&again));
        let (a, b) = (keys(&items), keys(&again));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.db, &x.key, x.expire_ms, x.type_id),
                (y.db, &y.key, y.expire_ms, y.type_id)
            );
            assert_eq!(x.payload, y.payload);
        }

        // What the writer refuses.
        let mut w = Writer::new(Vec::new(), 10).unwrap();
        let v12 = &b[0].payload;
        assert!(
            w.key(b"k", None, v12).is_err(),
            "a v12 payload in a v10 file"
        );
        assert!(w.key(b"k", None, &REAL_DUMP_STRING[..5]).is_err());
        assert!(w.function(REAL_DUMP_STRING).is_err());
        w.key(b"k", Some(-1), REAL_DUMP_STRING).unwrap();
        assert!(Writer::new(Vec::new(), 13).is_err());
        assert!(Writer::new(Vec::new(), 4).is_err());
    }
}
