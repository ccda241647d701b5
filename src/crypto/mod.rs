//! The cryptography both the pipeline and the repository use, and nothing else: the
//! repository key and the keyed chunk hash derived from it ([`keys`]), and OpenPGP
//! with sequoia in the shapes the repository needs (this file; SEIPDv1 chunks through
//! OpenSSL in `seipdv1`). It imports no other module of the crate.
//!
//! - **Content** is encrypted to the policy's recipients. A pack holds one *key set*
//!   (the PKESK packets wrapping a random session key for every recipient) and, per
//!   chunk, a SEIPD packet encrypted with that session key. `key set ‖ chunk` is a
//!   complete OpenPGP message: `cat` the two and `gpg --decrypt` reads it. Encrypting a
//!   chunk costs no public-key operation; decrypting caches the session key per key
//!   set, so a restore does one secret-key operation per pack, not per chunk.
//! - **Metadata** (index, manifest bodies, the applied policy) is encrypted with the
//!   repository key: SEIPDv2 with a session key derived from it and no PKESK at all.
//! - **The repository key** itself is stored as an ordinary message to the recipients.
//!
//! Recipients that announce SEIPDv2 (RFC 9580) get AEAD; keys that announce only
//! SEIPDv1 (every GnuPG 2.2 key) get SEIPDv1 with its MDC. Both decrypt the same way.

pub mod keys;
mod seipdv1;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::SessionKey;
use openpgp::packet::prelude::*;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::Serialize as _;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use openpgp::types::{AEADAlgorithm, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle};

const SYM: SymmetricAlgorithm = SymmetricAlgorithm::AES256;

/// A new recipient key pair, armored.
pub struct NewKey {
    pub fingerprint: String,
    pub public: String,
    pub secret: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Makes a key pair for a recipient: a version 4 certificate (Curve25519) with one
/// encryption subkey, no expiry (a recipient key that expires would stop every
/// backup), announcing SEIPDv2 so that content is encrypted with AEAD (AES-256-OCB)
/// rather than SEIPDv1's CFB and SHA-1 MDC. GnuPG reads it: it can import both keys
/// and, with 2.4 or later, decrypt with the secret one.
pub fn generate_key(user_id: &str) -> Result<NewKey> {
    let (cert, _revocation) = CertBuilder::new()
        .set_profile(openpgp::Profile::RFC4880)
        .map_err(err("key"))?
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_userid(user_id)
        .add_subkey(
            openpgp::types::KeyFlags::empty()
                .set_transport_encryption()
                .set_storage_encryption(),
            None,
            None,
        )
        .generate()
        .map_err(err("key"))?;
    let armored = |bytes: openpgp::Result<Vec<u8>>| {
        bytes
            .map_err(err("key"))
            .and_then(|b| String::from_utf8(b).map_err(|e| CryptoError(format!("key: {e}"))))
    };
    Ok(NewKey {
        fingerprint: cert.fingerprint().to_hex(),
        public: armored(openpgp::serialize::SerializeInto::to_vec(&cert.armored()))?,
        secret: armored(openpgp::serialize::SerializeInto::to_vec(
            &cert.as_tsk().armored(),
        ))?,
    })
}

/// An error of this module: a message for the user, never key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoError(pub String);

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CryptoError {}

fn err(context: &str) -> impl Fn(anyhow::Error) -> CryptoError + '_ {
    move |e| CryptoError(format!("{context}: {e}"))
}

type Result<T> = std::result::Result<T, CryptoError>;

/// What a recipient key file holds, as `validate` judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFile {
    /// One public key that can be encrypted to.
    Public,
    /// Secret key material: it must never be on the backup host.
    Secret,
    /// OpenPGP (an armor header or a packet) that does not parse, or not one key.
    Malformed(String),
    /// A public key that cannot be encrypted to (no valid encryption subkey).
    Unusable(String),
    /// Not OpenPGP at all.
    NotOpenPgp,
}

/// Reads a recipient key file the way `apply` will, to refuse at `validate` what
/// `apply` would refuse, and say why.
pub fn inspect_key_file(bytes: &[u8]) -> KeyFile {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let looks_openpgp =
        head.contains("-----BEGIN PGP") || bytes.first().is_some_and(|b| b & 0x80 != 0);
    let parsed = CertParser::from_bytes(bytes)
        .and_then(|parser| parser.collect::<openpgp::Result<Vec<Cert>>>());
    let certs = match parsed {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) if looks_openpgp => return KeyFile::Malformed("it holds no key".into()),
        Err(e) if looks_openpgp => return KeyFile::Malformed(e.to_string()),
        _ => return KeyFile::NotOpenPgp,
    };
    if certs.iter().any(Cert::is_tsk) {
        return KeyFile::Secret;
    }
    if certs.len() > 1 {
        return KeyFile::Malformed(format!(
            "it holds {} keys; name each recipient's key file on its own",
            certs.len()
        ));
    }
    match Recipients::new(certs) {
        Ok(_) => KeyFile::Public,
        Err(e) => KeyFile::Unusable(e.0),
    }
}

/// The recipients' public keys, ready to encrypt to.
#[derive(Debug, Clone)]
pub struct Recipients {
    certs: Vec<Cert>,
    /// Whether every recipient announces SEIPDv2.
    aead: bool,
}

impl Recipients {
    /// Reads OpenPGP certificates (armored or binary) from files.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Recipients> {
        let mut certs = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let cert = Cert::from_file(path).map_err(err(&path.display().to_string()))?;
            certs.push(cert);
        }
        Recipients::new(certs)
    }

    pub fn new(certs: Vec<Cert>) -> Result<Recipients> {
        if certs.is_empty() {
            return Err(CryptoError("no recipients".into()));
        }
        let policy = StandardPolicy::new();
        let mut aead = true;
        for cert in &certs {
            let valid = cert
                .with_policy(&policy, None)
                .map_err(err(&format!("key {}", cert.fingerprint())))?;
            if valid
                .keys()
                .supported()
                .alive()
                .revoked(false)
                .for_storage_encryption()
                .next()
                .is_none()
            {
                return Err(CryptoError(format!(
                    "key {} has no valid encryption subkey",
                    cert.fingerprint()
                )));
            }
            aead &= valid.features().is_some_and(|f| f.supports_seipdv2());
        }
        Ok(Recipients { certs, aead })
    }

    /// The primary key fingerprints, for the restore plan ("secret key needed: …").
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| c.fingerprint().to_hex())
            .collect()
    }

    /// A fresh session key wrapped for every recipient.
    pub fn key_set(&self) -> Result<KeySet> {
        let policy = StandardPolicy::new();
        let session_key = SessionKey::new(SYM.key_size().map_err(err("session key"))?)
            .map_err(err("session key"))?;
        let mut packets = Vec::new();
        for cert in &self.certs {
            let valid = cert.with_policy(&policy, None).map_err(err("key"))?;
            for ka in valid
                .keys()
                .supported()
                .alive()
                .revoked(false)
                .for_storage_encryption()
            {
                let packet: Packet = if self.aead {
                    let mut pkesk = PKESK6::for_recipient(&session_key, ka.key())
                        .map_err(err("wrap session key"))?;
                    pkesk.set_recipient(Some(ka.key().fingerprint()));
                    PKESK::from(pkesk).into()
                } else {
                    let mut pkesk = PKESK3::for_recipient(SYM, &session_key, ka.key())
                        .map_err(err("wrap session key"))?;
                    pkesk.set_recipient(Some(ka.key().keyid()));
                    PKESK::from(pkesk).into()
                };
                packet
                    .serialize(&mut packets)
                    .map_err(err("serialise key set"))?;
            }
        }
        Ok(KeySet {
            packets,
            session_key,
            aead: self.aead,
        })
    }

    /// A complete message to the recipients (for the repository key's copy).
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let set = self.key_set()?;
        let mut out = set.packets.clone();
        out.extend(set.encrypt(plaintext)?);
        Ok(out)
    }
}

/// What a complete message to recipients (the repository key's copy) shows with
/// public material only.
#[derive(Debug, Clone, Default)]
pub struct MessageShape {
    /// The key ids or fingerprints its PKESK packets name; `None` for an anonymous
    /// recipient.
    pub recipients: Vec<Option<KeyHandle>>,
    /// Whether some recipient is a key of the given certificates.
    pub to_known_key: bool,
}

impl Recipients {
    /// Whether `handle` names one of these certificates' keys.
    fn names(&self, handle: &KeyHandle) -> bool {
        names_a_key(&self.certs, handle)
    }

    /// Checks that `message` is a complete OpenPGP message of the shape
    /// [`Recipients::encrypt`] writes (PKESK packets, then one encrypted data packet,
    /// whole, and nothing after), and which of its recipients are these keys. What a
    /// changed byte inside the encrypted packets does is found only by decrypting.
    pub fn message_shape(&self, message: &[u8]) -> Result<MessageShape> {
        use openpgp::parse::{PacketParser, PacketParserResult};
        let bad = |why: String| CryptoError(why);
        let mut shape = MessageShape::default();
        let mut encrypted = 0usize;
        let mut ppr = PacketParser::from_bytes(message)
            .map_err(|e| bad(format!("not an OpenPGP message: {e}")))?;
        while let PacketParserResult::Some(mut pp) = ppr {
            if let Err(e) = pp.buffer_unread_content() {
                return Err(bad(format!("{} packet: {e}", pp.packet.tag())));
            }
            match &pp.packet {
                Packet::PKESK(p) => {
                    if encrypted > 0 {
                        return Err(bad("a PKESK packet after the encrypted data".into()));
                    }
                    let handle = p.recipient();
                    shape.to_known_key |= handle.as_ref().is_some_and(|h| self.names(h));
                    shape.recipients.push(handle);
                }
                Packet::SEIP(_) => encrypted += 1,
                Packet::Unknown(u) => {
                    return Err(bad(format!("{} packet: {}", u.tag(), u.error())));
                }
                other => return Err(bad(format!("an unexpected {} packet", other.tag()))),
            }
            ppr = pp
                .next()
                .map_err(|e| bad(format!("cut short or damaged: {e}")))?
                .1;
        }
        if shape.recipients.is_empty() {
            return Err(bad("no recipient (PKESK) packet".into()));
        }
        if encrypted != 1 {
            return Err(bad(format!(
                "{encrypted} encrypted data packets where one belongs"
            )));
        }
        Ok(shape)
    }
}

/// Whether `handle` names a key of `certs` (primary or subkey, valid now or not: a
/// message may be older than a subkey's expiry).
fn names_a_key(certs: &[Cert], handle: &KeyHandle) -> bool {
    certs
        .iter()
        .any(|c| c.keys().any(|ka| handle.aliases(ka.key().key_handle())))
}

/// A session key and the packets that wrap it for the recipients.
pub struct KeySet {
    /// The serialised PKESK packets, stored once per pack.
    pub packets: Vec<u8>,
    session_key: SessionKey,
    aead: bool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("packets", &self.packets.len())
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Encrypts `plaintext` into one SEIPD packet (a literal data packet inside):
    /// SEIPDv2 by sequoia, SEIPDv1 by OpenSSL directly (see `seipdv1`).
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if self.aead || SYM != SymmetricAlgorithm::AES256 {
            return seal_with(&self.session_key, self.aead, plaintext);
        }
        seipdv1::seal(&self.session_key, plaintext)
            .ok_or_else(|| CryptoError("encrypt: OpenSSL failed".into()))
    }

    /// Appends to `out` the packet [`KeySet::encrypt`] makes of the concatenation of
    /// `parts`. SEIPDv1 is sealed in place in `out` (the plaintext copied once, no
    /// packet of its own); on an error `out` is as it was.
    pub fn encrypt_into(&self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<()> {
        if self.aead || SYM != SymmetricAlgorithm::AES256 {
            let packet = seal_with(&self.session_key, self.aead, &parts.concat())?;
            out.extend_from_slice(&packet);
            return Ok(());
        }
        seipdv1::seal_into(&self.session_key, parts, out)
            .ok_or_else(|| CryptoError("encrypt: OpenSSL failed".into()))
    }

    /// Appends to `out` the packet [`KeySet::encrypt_into`] makes, for SEIPDv1 only
    /// laid out in clear (answers `true`): [`KeySet::encrypt_laid_out`] then encrypts
    /// several such packets together, which is faster than one by one (see
    /// `seipdv1::encrypt_laid_out`). SEIPDv2 is sealed at once (answers `false`).
    pub fn lay_out_into(&self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<bool> {
        if self.aead || SYM != SymmetricAlgorithm::AES256 {
            self.encrypt_into(parts, out)?;
            return Ok(false);
        }
        seipdv1::lay_out(parts, out)
            .map(|()| true)
            .ok_or_else(|| CryptoError("encrypt: no random bytes".into()))
    }

    /// Encrypts in place packets [`KeySet::lay_out_into`] left in clear, each slice one
    /// whole packet.
    pub fn encrypt_laid_out(&self, packets: &mut [&mut [u8]]) -> Result<()> {
        seipdv1::encrypt_laid_out(&self.session_key, packets)
            .ok_or_else(|| CryptoError("encrypt: not a packet laid out for SEIPDv1".into()))
    }
}

fn seal_with(session_key: &SessionKey, aead: bool, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + 128);
    {
        let message = Message::new(&mut out);
        let mut encryptor = Encryptor::with_session_key(message, SYM, session_key.clone())
            .map_err(err("encrypt"))?;
        if aead {
            encryptor = encryptor.aead_algo(AEADAlgorithm::default());
        }
        let message = encryptor.build().map_err(err("encrypt"))?;
        let mut literal = LiteralWriter::new(message)
            .build()
            .map_err(err("encrypt"))?;
        literal
            .write_all(plaintext)
            .map_err(|e| CryptoError(format!("encrypt: {e}")))?;
        literal.finalize().map_err(err("encrypt"))?;
    }
    Ok(out)
}

/// Encrypts metadata with a key derived from the repository key.
pub fn seal(meta_key: &[u8; 32], plaintext: &[u8]) -> Result<Vec<u8>> {
    seal_with(&SessionKey::from(&meta_key[..]), true, plaintext)
}

/// Decrypts what [`seal`] wrote; fails on any change to it.
pub fn open(meta_key: &[u8; 32], ciphertext: &[u8]) -> Result<Vec<u8>> {
    let helper = KnownKey {
        key: SessionKey::from(&meta_key[..]),
    };
    decrypt(ciphertext, helper)
}

struct KnownKey {
    key: SessionKey,
}

impl VerificationHelper for KnownKey {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for KnownKey {
    fn decrypt(
        &mut self,
        _pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        if decrypt(sym_algo.or(Some(SYM)), &self.key) {
            Ok(None)
        } else {
            Err(anyhow::anyhow!(
                "the repository key does not open this object"
            ))
        }
    }
}

fn decrypt<H: VerificationHelper + DecryptionHelper>(
    ciphertext: &[u8],
    helper: H,
) -> Result<Vec<u8>> {
    let policy = StandardPolicy::new();
    let mut reader = DecryptorBuilder::from_bytes(ciphertext)
        .map_err(err("decrypt"))?
        .with_policy(&policy, None, helper)
        .map_err(err("decrypt"))?;
    // The plaintext is a little shorter than the ciphertext: one allocation.
    let mut out = Vec::with_capacity(ciphertext.len());
    reader
        .read_to_end(&mut out)
        .map_err(|e| CryptoError(format!("decrypt: {e}")))?;
    if !reader.message_processed() {
        return Err(CryptoError("decrypt: the message is truncated".into()));
    }
    Ok(out)
}

/// A decrypted session key, remembered per key set (by the set's BLAKE3).
type SessionCache = HashMap<[u8; 32], (Option<SymmetricAlgorithm>, SessionKey)>;

/// Secret keys that can open content, with a session-key cache per key set.
pub struct SecretKeys {
    certs: Vec<Cert>,
    cache: Mutex<SessionCache>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeys")
            .field("fingerprints", &self.fingerprints())
            .finish_non_exhaustive()
    }
}

impl SecretKeys {
    /// Reads secret keys (armored or binary, unencrypted) from bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKeys> {
        let certs: Vec<Cert> = CertParser::from_bytes(bytes)
            .map_err(err("secret key"))?
            .collect::<openpgp::Result<Vec<Cert>>>()
            .map_err(err("secret key"))?;
        if !certs.iter().any(|c| c.is_tsk()) {
            return Err(CryptoError("the key holds no secret key material".into()));
        }
        Ok(SecretKeys {
            certs,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| c.fingerprint().to_hex())
            .collect()
    }

    /// Whether one of these keys is among a message's named recipients (an anonymous
    /// recipient may be any key).
    pub fn is_recipient(&self, shape: &MessageShape) -> bool {
        shape.recipients.iter().any(|r| match r {
            None => true,
            Some(handle) => names_a_key(&self.certs, handle),
        })
    }

    /// Decrypts `key set ‖ packet` (a chunk) or a whole message (`key_set` empty).
    pub fn decrypt(&self, key_set: &[u8], packet: &[u8]) -> Result<Vec<u8>> {
        let mut plain = Vec::new();
        let range = self.decrypt_into(key_set, packet, &mut plain)?;
        plain.truncate(range.end);
        plain.drain(..range.start);
        Ok(plain)
    }

    /// [`SecretKeys::decrypt`] into `buf` (a buffer used chunk after chunk), without
    /// a last copy of the plaintext: where the plaintext lies in `buf`.
    pub fn decrypt_into(
        &self,
        key_set: &[u8],
        packet: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>> {
        let id = *blake3::hash(key_set).as_bytes();
        // A chunk of a pack whose session key is known, as SEIPDv1: opened without
        // sequoia's SHA-1 collision detection (see `seipdv1`), else by sequoia.
        let known = self.cache.lock().ok().and_then(|c| c.get(&id).cloned());
        if let Some((Some(SymmetricAlgorithm::AES256), key)) = known
            && !key_set.is_empty()
            && let Some(range) = seipdv1::open_in_place(&key, packet, buf)
        {
            return Ok(range);
        }
        let mut message = Vec::with_capacity(key_set.len() + packet.len());
        message.extend_from_slice(key_set);
        message.extend_from_slice(packet);
        let helper = SecretHelper { keys: self, id };
        *buf = decrypt(&message, helper)?;
        Ok(0..buf.len())
    }
}

struct SecretHelper<'a> {
    keys: &'a SecretKeys,
    id: [u8; 32],
}

impl VerificationHelper for SecretHelper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for SecretHelper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let cached = self
            .keys
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&self.id).cloned());
        if let Some((algo, key)) = cached
            && decrypt(algo, &key)
        {
            return Ok(None);
        }
        let policy = StandardPolicy::new();
        for pkesk in pkesks {
            for cert in &self.keys.certs {
                let Ok(valid) = cert.with_policy(&policy, None) else {
                    continue;
                };
                for ka in valid
                    .keys()
                    .unencrypted_secret()
                    .for_storage_encryption()
                    .for_transport_encryption()
                {
                    if let Some(recipient) = pkesk.recipient()
                        && !recipient.aliases(ka.key().key_handle())
                    {
                        continue;
                    }
                    let Ok(mut pair) = ka.key().clone().into_keypair() else {
                        continue;
                    };
                    if let Some((algo, key)) = pkesk.decrypt(&mut pair, sym_algo)
                        && decrypt(algo, &key)
                    {
                        if let Ok(mut cache) = self.keys.cache.lock() {
                            cache.insert(self.id, (algo, key));
                        }
                        return Ok(None);
                    }
                }
            }
        }
        Err(anyhow::anyhow!(
            "none of the given secret keys ({}) opens this data",
            self.keys.fingerprints().join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    fn secret_keys(path: &str) -> SecretKeys {
        SecretKeys::from_bytes(&std::fs::read(fixture(path)).expect("secret key file"))
            .expect("secret key")
    }

    /// The demo recipient: a key `keygen` made, announcing SEIPDv2.
    fn demo_recipients() -> Recipients {
        Recipients::load(&[fixture("policies/keys/demo-recipient.asc")]).expect("public key")
    }

    fn demo_secret() -> SecretKeys {
        secret_keys("tests/fixtures/keys/demo-recipient.secret.asc")
    }

    /// Encrypts two chunks with one key set and decrypts each with `secret`.
    fn round_trip_two_chunks(recipients: &Recipients, secret: &SecretKeys) {
        let set = recipients.key_set().expect("key set");
        let a = set.encrypt(b"first chunk").expect("encrypt");
        let b = set.encrypt(b"second chunk").expect("encrypt");
        assert_eq!(secret.decrypt(&set.packets, &a).expect("a"), b"first chunk");
        assert_eq!(
            secret.decrypt(&set.packets, &b).expect("b"),
            b"second chunk"
        );
    }

    #[test]
    fn a_gnupg_2_2_key_gets_seipdv1_and_round_trips_chunks_through_one_key_set() {
        let recipients =
            Recipients::load(&[fixture("tests/fixtures/keys/gnupg-2.2.asc")]).expect("key");
        assert!(!recipients.aead);
        round_trip_two_chunks(
            &recipients,
            &secret_keys("tests/fixtures/keys/gnupg-2.2.secret.asc"),
        );
    }

    #[test]
    fn seipdv1_chunks_of_every_size_round_trip_without_sequoia_sequoia_reads_them_and_a_flipped_byte_never_opens()
     {
        let recipients =
            Recipients::load(&[fixture("tests/fixtures/keys/gnupg-2.2.asc")]).expect("key");
        let secret = secret_keys("tests/fixtures/keys/gnupg-2.2.secret.asc");
        let set = recipients.key_set().expect("key set");
        // Sizes across sequoia's partial body lengths, up to the largest chunk.
        for size in [0usize, 1, 191, 192, 8383, 8384, 65_536, 1_000_003, 4 << 20] {
            let plain: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
            let chunk = set.encrypt(&plain).expect("encrypt");
            let opened = seipdv1::open(&set.session_key, &chunk);
            assert_eq!(opened.as_deref(), Some(&plain[..]), "{size} bytes");
            // sequoia itself (a fresh cache) reads what was sealed.
            let fresh = secret_keys("tests/fixtures/keys/gnupg-2.2.secret.asc");
            assert_eq!(fresh.decrypt(&set.packets, &chunk).expect("decrypt"), plain);
            assert_eq!(
                secret.decrypt(&set.packets, &chunk).expect("decrypt"),
                plain
            );
            // Any flipped byte: neither opens it (the fast path leaves it to sequoia,
            // which refuses it).
            for at in [0, chunk.len() / 2, chunk.len() - 1] {
                let mut bad = chunk.clone();
                bad[at] ^= 0x40;
                assert_eq!(seipdv1::open(&set.session_key, &bad), None);
                assert!(secret.decrypt(&set.packets, &bad).is_err(), "{size}: {at}");
            }
        }
        // (That GnuPG reads what it seals is tested on the repository key's copy, in
        // tests/it/repository.rs.) A SEIPDv2 chunk is not one it opens.
        let v2 = demo_recipients().key_set().expect("key set");
        let chunk = v2.encrypt(b"aead").expect("encrypt");
        assert_eq!(seipdv1::open(&v2.session_key, &chunk), None);
    }

    #[test]
    fn a_chunk_sealed_from_parts_after_other_bytes_opens_as_their_concatenation() {
        let v1 = Recipients::load(&[fixture("tests/fixtures/keys/gnupg-2.2.asc")]).expect("key");
        let cases = [
            (v1, secret_keys("tests/fixtures/keys/gnupg-2.2.secret.asc")),
            (demo_recipients(), demo_secret()),
        ];
        for (recipients, secret) in cases {
            let set = recipients.key_set().expect("key set");
            let head = [0xA5u8; 100];
            let body: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
            let parts: [&[u8]; 3] = [&head[..7], &body, b""];
            let mut out = b"earlier packets".to_vec();
            set.encrypt_into(&parts, &mut out).expect("sealed");
            assert_eq!(&out[..15], b"earlier packets", "aead: {}", recipients.aead);
            let plain = secret.decrypt(&set.packets, &out[15..]).expect("opens");
            assert_eq!(plain, parts.concat(), "aead: {}", recipients.aead);
        }
    }

    #[test]
    fn a_generated_key_announces_seipdv2_and_round_trips_chunks() {
        let key = generate_key("Ops <ops@example.invalid>").expect("a key");
        let cert = Cert::from_bytes(key.public.as_bytes()).expect("the public key");
        assert_eq!(cert.fingerprint().to_hex(), key.fingerprint);
        assert!(!cert.is_tsk());
        let recipients = Recipients::new(vec![cert]).expect("a recipient");
        assert!(recipients.aead);
        let secret = SecretKeys::from_bytes(key.secret.as_bytes()).expect("the secret key");
        round_trip_two_chunks(&recipients, &secret);
        // The demo recipient is such a key too.
        assert!(demo_recipients().aead);
        round_trip_two_chunks(&demo_recipients(), &demo_secret());
    }

    #[test]
    fn a_flipped_byte_in_a_chunk_is_detected() {
        let set = demo_recipients().key_set().expect("key set");
        let mut c = set.encrypt(&[7u8; 4096]).expect("encrypt");
        let n = c.len();
        c[n / 2] ^= 1;
        assert!(demo_secret().decrypt(&set.packets, &c).is_err());
    }

    #[test]
    fn metadata_opens_only_with_the_repository_key() {
        let key = [9u8; 32];
        let sealed = seal(&key, b"index").expect("seal");
        assert_eq!(open(&key, &sealed).expect("open"), b"index");
        assert!(open(&[8u8; 32], &sealed).is_err());
        let mut bad = sealed.clone();
        let n = bad.len();
        bad[n - 5] ^= 1;
        assert!(open(&key, &bad).is_err());
    }

    #[test]
    fn whole_message_to_recipients_decrypts_with_the_secret_key() {
        let msg = demo_recipients()
            .encrypt(b"repository key")
            .expect("encrypt");
        assert_eq!(
            demo_secret().decrypt(&[], &msg).expect("decrypt"),
            b"repository key"
        );
    }

    #[test]
    fn a_public_key_is_not_accepted_as_a_secret_key() {
        let bytes = std::fs::read(fixture("policies/keys/demo-recipient.asc")).expect("file");
        assert!(SecretKeys::from_bytes(&bytes).is_err());
    }
}
