//! CRC-64/REDIS, the checksum at the end of RDB files and DUMP payloads.

use std::fmt;

static CRC64_REDIS: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

/// Incremental CRC-64/REDIS (Jones polynomial, reflected, no final xor), the
/// checksum Redis puts at the end of RDB files and DUMP payloads.
#[derive(Clone)]
pub struct Crc64 {
    digest: crc::Digest<'static, u64, crc::Table<16>>,
}

impl Crc64 {
    /// A fresh checksum over no bytes.
    #[must_use]
    pub fn new() -> Self {
        Self {
            digest: CRC64_REDIS.digest(),
        }
    }

    /// Feeds more bytes into the checksum.
    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
    }

    /// The checksum of every byte fed so far.
    #[must_use]
    pub fn value(&self) -> u64 {
        self.digest.clone().finalize()
    }

    /// A checksum that continues from register value `reg` (what `value()` returned).
    pub(super) fn from_register(reg: u64) -> Self {
        // For this reflected, init-0 algorithm the crate's "initial value" is
        // the bit-reversed register.
        Self {
            digest: CRC64_REDIS.digest_with_initial(reg.reverse_bits()),
        }
    }

    /// The checksum of `bytes` in one go.
    #[must_use]
    pub fn checksum(bytes: &[u8]) -> u64 {
        CRC64_REDIS.checksum(bytes)
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

/// One CRC-64/REDIS slice-by-16 step: register `crc` over the 16 bytes `a`, `b` (LE words).
#[inline(always)]
fn slice16_step(t: &[[u64; 256]; 16], crc: u64, a: u64, b: u64) -> u64 {
    let a = a ^ crc;
    let byte = |w: u64, i: u32| ((w >> (8 * i)) & 0xff) as usize;
    t[15][byte(a, 0)]
        ^ t[14][byte(a, 1)]
        ^ t[13][byte(a, 2)]
        ^ t[12][byte(a, 3)]
        ^ t[11][byte(a, 4)]
        ^ t[10][byte(a, 5)]
        ^ t[9][byte(a, 6)]
        ^ t[8][byte(a, 7)]
        ^ t[7][byte(b, 0)]
        ^ t[6][byte(b, 1)]
        ^ t[5][byte(b, 2)]
        ^ t[4][byte(b, 3)]
        ^ t[3][byte(b, 4)]
        ^ t[2][byte(b, 5)]
        ^ t[1][byte(b, 6)]
        ^ t[0][byte(b, 7)]
}

/// Advances two CRC-64/REDIS registers over the same bytes in one loop.
///
/// A value's bytes belong to two checksums, the file's and the payload's;
/// computing them side by side lets the two independent dependency chains
/// overlap in the CPU, which makes this about twice as fast as two passes
/// (CRC is most of the reader's time). Uses the crc crate's slice-by-16 tables.
pub(super) fn crc64_dual(mut r1: u64, mut r2: u64, bytes: &[u8]) -> (u64, u64) {
    let t = CRC64_REDIS.table();
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        let (lo, hi) = c.split_at(8);
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(lo);
        b.copy_from_slice(hi);
        let (a, b) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
        r1 = slice16_step(t, r1, a, b);
        r2 = slice16_step(t, r2, a, b);
    }
    for &byte in chunks.remainder() {
        r1 = t[0][((r1 ^ u64::from(byte)) & 0xff) as usize] ^ (r1 >> 8);
        r2 = t[0][((r2 ^ u64::from(byte)) & 0xff) as usize] ^ (r2 >> 8);
    }
    (r1, r2)
}

/// Continues a CRC-64/REDIS whose register is `reg` over `bytes`.
pub(super) fn crc64_resume(reg: u64, bytes: &[u8]) -> u64 {
    let mut c = Crc64::from_register(reg);
    c.update(bytes);
    c.value()
}

impl fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Crc64({:#018x})", self.value())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc64_matches_the_redis_check_value() {
        assert_eq!(Crc64::checksum(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let mut c = Crc64::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.value(), 0xe9c6_d914_c4b8_d9ca);
        assert_eq!(Crc64::new().value(), 0);
    }

    #[test]
    fn crc64_dual_and_resume() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for n in (0..40).chain([1000, 65_536, 99_999, 100_000]) {
            let bytes = &data[..n];
            let (x, y) = crc64_dual(0, Crc64::checksum(b"ab"), bytes);
            assert_eq!(x, Crc64::checksum(bytes));
            assert_eq!(y, Crc64::checksum(&[b"ab", bytes].concat()));
            let (a, b) = data.split_at(n);
            assert_eq!(crc64_resume(Crc64::checksum(a), b), Crc64::checksum(&data));
        }
    }
}
