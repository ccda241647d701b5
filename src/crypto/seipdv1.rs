//! SEIPDv1 packets sealed and opened with OpenSSL's AES-CFB and SHA-1 directly.
//!
//! A recipient that announces only SEIPDv1 (every GnuPG 2.2 and 2.4 key) gets chunks
//! encrypted with AES-256 in CFB mode and a SHA-1 modification detection code (RFC
//! 9580, 5.13.1). sequoia computes every SHA-1 with collision detection, a signature
//! safeguard that the MDC does not need, and that alone was a quarter of a restore's
//! CPU. The chunks backplan wrote have one shape: an SEIPD packet (tag 18, version 1)
//! holding a literal data packet (tag 11) and the MDC packet, each of the first two
//! with a definite or partial body lengths. [`open_in_place`] decrypts exactly that shape with
//! the session key sequoia found for the pack, checks the MDC over the whole
//! plaintext before it returns any of it, and answers `None` for anything else (an
//! unexpected packet, a wrong MDC), which the caller then hands to sequoia: sequoia
//! stays the judge of every packet this does not open, and gives the error. [`seal`]
//! writes that shape (definite lengths, a binary literal packet with no name and no
//! date), which sequoia and GnuPG read like their own.

use openssl::symm::{Cipher, Crypter, Mode};

/// A packet read off the front of a buffer: its tag, its body's pieces, and the bytes
/// after it.
type Packet<'a> = (u8, Vec<&'a [u8]>, &'a [u8]);

/// The pieces of a new-format packet's body at the start of `buf`, gathered over
/// partial body lengths; its tag and what follows it.
fn packet(buf: &[u8]) -> Option<Packet<'_>> {
    let (&first, mut rest) = buf.split_first()?;
    // New format: 0b11TTTTTT.
    if first & 0xC0 != 0xC0 {
        return None;
    }
    let tag = first & 0x3F;
    let mut pieces = Vec::new();
    loop {
        let (&o, after) = rest.split_first()?;
        let (len, partial, after) = match o {
            0..=191 => (usize::from(o), false, after),
            192..=223 => {
                let (&o2, after) = after.split_first()?;
                (
                    (usize::from(o - 192) << 8) + usize::from(o2) + 192,
                    false,
                    after,
                )
            }
            224..=254 => (1usize << (o & 0x1F), true, after),
            255 => {
                let b = after.get(..4)?;
                let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                (usize::try_from(len).ok()?, false, &after[4..])
            }
        };
        let piece = after.get(..len)?;
        pieces.push(piece);
        rest = &after[len..];
        if !partial {
            return Some((tag, pieces, rest));
        }
    }
}

/// Opens an SEIPDv1 `chunk` (an SEIPD packet, nothing before or after it) with the
/// AES-256 session key `key`: the literal data, or `None` when the chunk is not of
/// the shape backplan writes or does not pass its checks.
#[cfg(test)]
pub fn open(key: &[u8], chunk: &[u8]) -> Option<Vec<u8>> {
    let mut plain = Vec::new();
    let literal = open_in_place(key, chunk, &mut plain)?;
    plain.truncate(literal.end);
    plain.drain(..literal.start);
    Some(plain)
}

/// Opens a chunk into `plain` (emptied first; a buffer used chunk after chunk) without
/// a last copy: where its literal data lie in `plain`, contiguous (the literal
/// packet's partial body lengths, if any, are closed up in place).
pub fn open_in_place(
    key: &[u8],
    chunk: &[u8],
    plain: &mut Vec<u8>,
) -> Option<std::ops::Range<usize>> {
    let (18, pieces, []) = packet(chunk)? else {
        return None;
    };
    // Version 1 (version 2 is AEAD, sequoia's).
    if pieces.first()?.first() != Some(&1) {
        return None;
    }
    let cipher = Cipher::aes_256_cfb128();
    if key.len() != cipher.key_len() {
        return None;
    }
    if let [only] = &pieces[..] {
        // The shape backplan writes: one definite length.
        cfb_decrypt(key, &only[1..], plain)?;
    } else {
        let mut crypter = Crypter::new(cipher, Mode::Decrypt, key, Some(&[0u8; 16])).ok()?;
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        plain.clear();
        plain.resize(total + 2 * cipher.block_size(), 0);
        let mut n = 0;
        for (i, piece) in pieces.iter().enumerate() {
            // The first piece starts with the version.
            let piece = if i == 0 { &piece[1..] } else { piece };
            n += crypter.update(piece, &mut plain[n..]).ok()?;
        }
        n += crypter.finalize(&mut plain[n..]).ok()?;
        plain.truncate(n);
    }

    // A random block, its last two bytes again, the literal packet, then the MDC
    // packet: 0xD3 0x14 and SHA-1 over everything before the hash.
    const PREFIX: usize = 16 + 2;
    if plain.len() < PREFIX + 2 + 20 || plain[14..16] != plain[16..18] {
        return None;
    }
    let (hashed, mdc) = plain.split_at(plain.len() - 20);
    if hashed[hashed.len() - 2..] != [0xD3, 0x14] {
        return None;
    }
    if !openssl::memcmp::eq(&openssl::sha::sha1(hashed), mdc) {
        return None;
    }
    let base = hashed.as_ptr() as usize;
    let (11, pieces, []) = packet(&hashed[PREFIX..hashed.len() - 2])? else {
        return None;
    };
    // The literal packet's own header: its format, a file name, a date.
    let first = pieces.first()?;
    let name = usize::from(*first.get(1)?);
    let skip = 2 + name + 4;
    first.get(skip..)?;
    // Each piece's place in `plain` (they are slices of it).
    let spans: Vec<(usize, usize)> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = p.as_ptr() as usize - base;
            if i == 0 {
                (at + skip, p.len() - skip)
            } else {
                (at, p.len())
            }
        })
        .collect();
    let start = spans[0].0;
    let mut end = start + spans[0].1;
    for &(at, len) in &spans[1..] {
        plain.copy_within(at..at + len, end);
        end += len;
    }
    Some(start..end)
}

/// AES-256-CFB128 decryption of `ct` with a zero IV into `plain` (emptied first).
/// Each plaintext block is its ciphertext block XOR the encryption of the ciphertext
/// block before it (of the IV for the first): every block encryption is known up
/// front, so they run as one ECB pass, which OpenSSL pipelines, where its CFB mode
/// encrypts one block after the other (a restore spent a tenth of its CPU there).
fn cfb_decrypt(key: &[u8], ct: &[u8], plain: &mut Vec<u8>) -> Option<()> {
    const BLOCK: usize = 16;
    plain.clear();
    if ct.is_empty() {
        return Some(());
    }
    let blocks = ct.len().div_ceil(BLOCK);
    // Room for OpenSSL's block of slack past each update.
    plain.resize((blocks + 1) * BLOCK, 0);
    let mut ecb = Crypter::new(Cipher::aes_256_ecb(), Mode::Encrypt, key, None).ok()?;
    ecb.pad(false);
    let mut n = ecb.update(&[0u8; BLOCK], plain).ok()?;
    n += ecb
        .update(&ct[..(blocks - 1) * BLOCK], &mut plain[n..])
        .ok()?;
    if n != blocks * BLOCK {
        return None;
    }
    plain.truncate(ct.len());
    for (p, c) in plain.iter_mut().zip(ct) {
        *p ^= c;
    }
    Some(())
}

/// A new-format packet header with a definite length.
fn header(tag: u8, len: usize, out: &mut Vec<u8>) -> Option<()> {
    out.push(0xC0 | tag);
    match len {
        0..=191 => out.push(len as u8),
        192..=8383 => {
            let l = len - 192;
            out.extend([(l >> 8) as u8 + 192, l as u8]);
        }
        _ => {
            out.push(255);
            out.extend(u32::try_from(len).ok()?.to_be_bytes());
        }
    }
    Some(())
}

/// Encrypts `plaintext` into one SEIPDv1 packet (a literal data packet and the MDC
/// inside) with the AES-256 session key `key`; `None` only if OpenSSL fails.
pub fn seal(key: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + 64);
    seal_into(key, &[plaintext], &mut out)?;
    Some(out)
}

/// Appends to `out` one SEIPDv1 packet whose plaintext is the concatenation of
/// `parts`, as [`seal`] does. The plaintext is copied once, into `out`, and encrypted
/// there in place (CFB needs no room beyond its input): a backup seals each chunk
/// straight into its pack this way. On `None` (OpenSSL failed) `out` is as it was.
pub fn seal_into(key: &[u8], parts: &[&[u8]], out: &mut Vec<u8>) -> Option<()> {
    let cipher = openssl::cipher::Cipher::aes_256_cfb128();
    if key.len() != cipher.key_length() {
        return None;
    }
    let start = out.len();
    let sealed = (|| {
        let plain_len: usize = parts.iter().map(|p| p.len()).sum();
        // The random block and its last two bytes again, the literal packet, the MDC.
        let mut literal = Vec::with_capacity(8);
        header(11, plain_len + 6, &mut literal)?;
        let inner_len = 18 + literal.len() + 6 + plain_len + 22;
        header(18, inner_len + 1, out)?;
        out.push(1);
        let at = out.len();
        out.reserve(inner_len);
        let mut prefix = [0u8; 16];
        openssl::rand::rand_bytes(&mut prefix).ok()?;
        out.extend_from_slice(&prefix);
        out.extend_from_slice(&prefix[14..]);
        out.extend_from_slice(&literal);
        out.extend_from_slice(&[b'b', 0, 0, 0, 0, 0]);
        for part in parts {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&[0xD3, 0x14]);
        let mdc = openssl::sha::sha1(&out[at..]);
        out.extend_from_slice(&mdc);
        let mut ctx = openssl::cipher_ctx::CipherCtx::new().ok()?;
        ctx.encrypt_init(Some(cipher), Some(key), Some(&[0u8; 16]))
            .ok()?;
        let inner = &mut out[at..];
        let n = ctx.cipher_update_inplace(inner, inner.len()).ok()?;
        (n == inner_len).then_some(())
    })();
    if sealed.is_none() {
        out.truncate(start);
    }
    sealed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfb_decryption_as_one_ecb_pass_matches_openssls_cfb_mode_at_every_length() {
        let key: Vec<u8> = (0..32u8).collect();
        let cipher = Cipher::aes_256_cfb128();
        let mut plain = Vec::new();
        for len in (0..70).chain([1000, 4099, 65_536, 1_048_577]) {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
            let mut c = Crypter::new(cipher, Mode::Encrypt, &key, Some(&[0u8; 16])).expect("c");
            let mut ct = vec![0u8; len + 16];
            let n = c.update(&data, &mut ct).expect("encrypt");
            let n = n + c.finalize(&mut ct[n..]).expect("finalize");
            ct.truncate(n);
            cfb_decrypt(&key, &ct, &mut plain).expect("decrypts");
            assert_eq!(plain, data, "{len} bytes");
        }
    }

    /// A literal packet in partial body lengths (as sequoia streams one) is opened in
    /// place: its pieces closed up into one run of plaintext.
    #[test]
    fn a_literal_packet_in_partial_body_lengths_opens_in_place_as_one_run() {
        let key = [7u8; 32];
        let plain: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        // The literal body: its header (binary, no name, no date), then the data, in
        // pieces of 512 (partial, 224 + 9) and 1024 (224 + 10), then the rest.
        let mut body = vec![b'b', 0, 0, 0, 0, 0];
        body.extend_from_slice(&plain);
        let mut inner = vec![0x55u8; 16];
        inner.extend([0x55, 0x55]);
        inner.push(0xC0 | 11);
        inner.push(224 + 9);
        inner.extend_from_slice(&body[..512]);
        inner.push(224 + 10);
        inner.extend_from_slice(&body[512..1536]);
        let rest = &body[1536..];
        let l = rest.len() - 192;
        inner.extend([(l >> 8) as u8 + 192, l as u8]);
        inner.extend_from_slice(rest);
        inner.extend([0xD3, 0x14]);
        let mdc = openssl::sha::sha1(&inner);
        inner.extend_from_slice(&mdc);
        let cipher = Cipher::aes_256_cfb128();
        let mut crypter =
            Crypter::new(cipher, Mode::Encrypt, &key, Some(&[0u8; 16])).expect("crypter");
        let mut sealed = vec![0u8; inner.len() + 16];
        let n = crypter.update(&inner, &mut sealed).expect("encrypt");
        sealed.truncate(n);
        let mut chunk = Vec::new();
        header(18, sealed.len() + 1, &mut chunk).expect("a header");
        chunk.push(1);
        chunk.extend_from_slice(&sealed);

        // Into a buffer that held a larger chunk before.
        let mut buf = vec![9u8; 10_000];
        let range = open_in_place(&key, &chunk, &mut buf).expect("opens");
        assert_eq!(&buf[range], &plain[..]);
        assert_eq!(open(&key, &chunk).as_deref(), Some(&plain[..]));
        // With any other key it does not.
        assert_eq!(open_in_place(&[8u8; 32], &chunk, &mut buf), None);
    }

    #[test]
    fn new_format_lengths_of_every_kind_and_partial_bodies_are_read() {
        // One-octet, two-octet and five-octet lengths.
        assert_eq!(
            packet(&[0xCB, 2, 7, 8, 9]),
            Some((11, vec![&[7u8, 8][..]], &[9u8][..]))
        );
        let mut two = vec![0xD2, 192, 8];
        two.extend(vec![5u8; 200]);
        let (tag, pieces, rest) = packet(&two).expect("a packet");
        assert_eq!((tag, pieces[0].len(), rest.len()), (18, 200, 0));
        let mut five = vec![0xD2, 255, 0, 0, 1, 0];
        five.extend(vec![1u8; 256]);
        assert_eq!(packet(&five).expect("a packet").1[0].len(), 256);
        // A partial body of 2 bytes (224 + 1), then the last 3.
        let partial = [0xCB, 225, 1, 2, 3, 4, 5, 6];
        let (_, pieces, rest) = packet(&partial).expect("a packet");
        assert_eq!(pieces, vec![&[1u8, 2][..], &[4u8, 5, 6][..]]);
        assert!(rest.is_empty());
        // Cut short, or old format: none.
        assert_eq!(packet(&[0xCB, 5, 1]), None);
        assert_eq!(packet(&[0x8B, 1, 1]), None);
        // What `header` writes reads back, at each length's edges.
        for len in [0usize, 191, 192, 8383, 8384, 70_000] {
            let mut bytes = Vec::new();
            header(11, len, &mut bytes).expect("a header");
            bytes.extend(vec![0u8; len]);
            let (tag, pieces, rest) = packet(&bytes).expect("a packet");
            assert_eq!(
                (tag, pieces.len(), pieces[0].len(), rest.len()),
                (11, 1, len, 0)
            );
        }
    }
}
