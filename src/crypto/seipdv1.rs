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
    let start = out.len();
    lay_out(parts, out)?;
    let sealed = encrypt_laid_out(key, &mut [&mut out[start..]]);
    if sealed.is_none() {
        out.truncate(start);
    }
    sealed
}

/// Appends to `out` the packet [`seal_into`] makes, with its encrypted part still in
/// clear: the random block and its last two bytes again, the literal packet and the
/// MDC, behind the SEIPD header and version. [`encrypt_laid_out`] encrypts it where
/// it lies. On `None` (no random bytes, a packet over 4 GiB) `out` is as it was.
pub fn lay_out(parts: &[&[u8]], out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    let laid = (|| {
        let plain_len: usize = parts.iter().map(|p| p.len()).sum();
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
        Some(())
    })();
    if laid.is_none() {
        out.truncate(start);
    }
    laid
}

/// Encrypts in place packets that [`lay_out`] wrote (each slice one whole packet)
/// with the AES-256 session key `key`. `None` for a wrong key length or a slice that
/// does not start with an SEIPD header.
pub fn encrypt_laid_out(key: &[u8], packets: &mut [&mut [u8]]) -> Option<()> {
    let mut bodies = Vec::with_capacity(packets.len());
    for packet in packets.iter_mut() {
        // The tag, the length (one, two or five octets), the version.
        let skip = match packet.get(..2)? {
            [0xD2, 0..=191] => 3,
            [0xD2, 192..=223] => 4,
            [0xD2, 255] => 7,
            _ => return None,
        };
        bodies.push(packet.get_mut(skip..)?);
    }
    cfb_encrypt_many(key, &mut bodies)
}

/// AES-256-CFB128 encryption with a zero IV of each of `bodies` in place, several of
/// them side by side. CFB encrypts a message one block after the other, each block's
/// encryption waiting for the ciphertext block before it, so one message keeps the
/// AES unit waiting on its latency (OpenSSL's CFB mode: about 400 MB/s a core, a
/// quarter of a first backup's CPU). Independent messages do not wait on each other:
/// up to [`CFB_LANES`] of them take a step together, their blocks encrypted in one
/// call that the `aes` crate pipelines (AES-NI where the CPU has it).
fn cfb_encrypt_many(key: &[u8], bodies: &mut [&mut [u8]]) -> Option<()> {
    use aes::cipher::{BlockEncrypt, KeyInit};
    const BLOCK: usize = 16;
    let aes = aes::Aes256::new_from_slice(key).ok()?;
    // Each lane's message and how far it is encrypted; its next block to encrypt (the
    // IV, then its last ciphertext block) in `blocks`.
    let mut lanes = [(0usize, 0usize); CFB_LANES];
    let mut blocks = [aes::Block::default(); CFB_LANES];
    let mut active = 0;
    let mut next = 0;
    loop {
        while active < CFB_LANES && next < bodies.len() {
            if !bodies[next].is_empty() {
                lanes[active] = (next, 0);
                blocks[active] = aes::Block::default();
                active += 1;
            }
            next += 1;
        }
        if active == 0 {
            return Some(());
        }
        aes.encrypt_blocks(&mut blocks[..active]);
        let mut i = 0;
        while i < active {
            let (b, pos) = lanes[i];
            let body = &mut *bodies[b];
            let end = (pos + BLOCK).min(body.len());
            let stream = &mut blocks[i];
            for (byte, k) in body[pos..end].iter_mut().zip(stream.iter_mut()) {
                *byte ^= *k;
                *k = *byte;
            }
            if end < body.len() {
                lanes[i].1 = end;
                i += 1;
            } else {
                // Done: the last lane (not yet stepped) takes this place.
                active -= 1;
                lanes[i] = lanes[active];
                blocks[i] = blocks[active];
            }
        }
    }
}

/// How many messages [`cfb_encrypt_many`] encrypts side by side: the blocks the `aes`
/// crate's AES-NI backend encrypts in one pass.
const CFB_LANES: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfb_decryption_as_one_ecb_pass_matches_openssls_cfb_mode_at_every_length() {
        let key: Vec<u8> = (0..32u8).collect();
        let mut plain = Vec::new();
        for len in (0..70).chain([1000, 4099, 65_536, 1_048_577]) {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
            let ct = openssl_cfb(&key, &data);
            cfb_decrypt(&key, &ct, &mut plain).expect("decrypts");
            assert_eq!(plain, data, "{len} bytes");
        }
    }

    /// Encrypts `data` with OpenSSL's own AES-256-CFB128 mode, zero IV.
    fn openssl_cfb(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = Crypter::new(
            Cipher::aes_256_cfb128(),
            Mode::Encrypt,
            key,
            Some(&[0u8; 16]),
        )
        .expect("crypter");
        let mut ct = vec![0u8; data.len() + 16];
        let n = c.update(data, &mut ct).expect("encrypt");
        let n = n + c.finalize(&mut ct[n..]).expect("finalize");
        ct.truncate(n);
        ct
    }

    /// More messages than lanes, of every length around the block size and a few
    /// large ones, empty ones among them: each comes out as OpenSSL's CFB mode
    /// encrypts it alone.
    #[test]
    fn messages_encrypted_side_by_side_match_openssls_cfb_mode_one_by_one() {
        let key: Vec<u8> = (100..132u8).collect();
        let lengths: Vec<usize> = (0..40).chain([0, 1000, 65_537, 16, 0, 300_001]).collect();
        let plain: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(m, &len)| (0..len).map(|i| ((i * 31 + m * 7) % 256) as u8).collect())
            .collect();
        let mut bodies = plain.clone();
        let mut slices: Vec<&mut [u8]> = bodies.iter_mut().map(|b| &mut b[..]).collect();
        cfb_encrypt_many(&key, &mut slices).expect("encrypts");
        for ((body, data), len) in bodies.iter().zip(&plain).zip(&lengths) {
            assert_eq!(*body, openssl_cfb(&key, data), "a message of {len} bytes");
        }
        assert_eq!(cfb_encrypt_many(&key[..16], &mut []), None, "a short key");
    }

    /// Packets laid out in clear into one buffer and encrypted together open like
    /// packets sealed one at a time.
    #[test]
    fn packets_laid_out_and_encrypted_together_open_with_their_plaintext() {
        let key = [3u8; 32];
        let plains: Vec<Vec<u8>> = [0usize, 100, 191, 5000, 70_000]
            .iter()
            .map(|&len| (0..len).map(|i| (i % 253) as u8).collect())
            .collect();
        let mut out = b"before".to_vec();
        let mut ends = Vec::new();
        for p in &plains {
            lay_out(&[&p[..10.min(p.len())], &p[10.min(p.len())..]], &mut out).expect("laid");
            ends.push(out.len());
        }
        let (_, mut rest) = out.split_at_mut(6);
        let mut packets = Vec::new();
        let mut at = 6;
        for end in &ends {
            let (packet, after) = rest.split_at_mut(end - at);
            packets.push(packet);
            rest = after;
            at = *end;
        }
        encrypt_laid_out(&key, &mut packets).expect("encrypts");
        let mut at = 6;
        for (p, end) in plains.iter().zip(&ends) {
            assert_eq!(open(&key, &out[at..*end]).as_deref(), Some(&p[..]));
            at = *end;
        }
        // Not an SEIPD packet: refused, nothing encrypted.
        assert_eq!(encrypt_laid_out(&key, &mut [&mut [0xCB, 1, 0][..]]), None);
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
