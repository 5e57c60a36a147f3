//! The minisign file formats: public keys, unencrypted secret keys and detached
//! signatures, with signing and verification.
//!
//! Both signature algorithms are verified: `Ed` (ed25519 over the message) and `ED`
//! (ed25519 over the message's BLAKE2b-512 hash, minisign's default). Signing always
//! produces `ED`. The global signature over the trusted comment is always checked.
//! Formats follow minisign 0.11; files written here are read by the stock tool.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use blake2::{Blake2b512, Digest};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// The largest signature file accepted, in bytes. Stock minisign writes up to a
/// 1 KiB untrusted comment and a trusted comment of about 4 KiB, which verify
/// with `minisign -V`; the cap leaves room for both and the two base64 lines.
pub const MAX_SIGNATURE_BYTES: usize = 8192;
/// The largest key file accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

const ALG_PLAIN: [u8; 2] = *b"Ed";
const ALG_HASHED: [u8; 2] = *b"ED";
const KDF_NONE: [u8; 2] = [0, 0];
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const CHK_BLAKE2B: [u8; 2] = *b"B2";

/// Why a minisign file was refused or a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MinisignError {
    #[error("{what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("cannot read: {0}")]
    Io(String),
    #[error("secret key is encrypted; warden reads unencrypted minisign keys (minisign -G -W or warden keygen)")]
    EncryptedKey,
    #[error("secret key checksum does not match (corrupt key file)")]
    KeyChecksum,
    #[error("signature does not verify with key {0}")]
    BadSignature(KeyId),
    #[error("trusted comment signature does not verify with key {0}")]
    BadGlobalSignature(KeyId),
}

fn malformed(what: &'static str, why: impl Into<String>) -> MinisignError {
    MinisignError::Malformed {
        what,
        why: why.into(),
    }
}

/// A minisign key id: 8 random bytes, shown as minisign shows them (upper-case hex
/// of the little-endian integer).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = MinisignError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // from_str_radix alone would take a sign (`+34E7...` as a 15-digit id).
        if s.len() != 16 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(malformed("key id", format!("{s:?} is not 16 hex digits")));
        }
        let n = u64::from_str_radix(s, 16)
            .map_err(|_| malformed("key id", format!("{s:?} is not 16 hex digits")))?;
        Ok(KeyId(n.to_le_bytes()))
    }
}

/// A minisign public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: KeyId,
    pub key: VerifyingKey,
}

impl PublicKey {
    /// Parses a public key file (`untrusted comment:` line, then the base64 key) or
    /// the bare base64 line that `minisign -P` takes.
    pub fn parse(text: &str) -> Result<PublicKey, MinisignError> {
        let mut lines = text.lines();
        let line = match lines.next() {
            Some(first) if first.starts_with("untrusted comment:") => lines.next(),
            first => first,
        }
        .ok_or_else(|| malformed("public key", "file is empty"))?;
        // One key per file: a second one would be silently not pinned.
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(malformed(
                "public key",
                "more than one key in the file: pin each in a .pub file of its own",
            ));
        }
        let raw = decode_b64("public key", line.trim(), 42)?;
        if raw[..2] != ALG_PLAIN {
            return Err(malformed("public key", "algorithm is not Ed"));
        }
        let key_id = KeyId(raw[2..10].try_into().expect("length checked"));
        let key_bytes: [u8; 32] = raw[10..42].try_into().expect("length checked");
        let key = VerifyingKey::from_bytes(&key_bytes)
            .map_err(|_| malformed("public key", "not a valid ed25519 point"))?;
        Ok(PublicKey { key_id, key })
    }

    /// The public key file text, as `minisign -G` writes it.
    pub fn to_file(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(&ALG_PLAIN);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id,
            B64.encode(raw)
        )
    }

    /// Verifies `sig` over `message`: the key id, the signature (Ed or ED) and the
    /// global signature over the trusted comment.
    pub fn verify(&self, message: &[u8], sig: &SignatureFile) -> Result<(), MinisignError> {
        if sig.key_id != self.key_id {
            return Err(MinisignError::BadSignature(self.key_id));
        }
        let signature = ed25519_dalek::Signature::from_bytes(&sig.signature);
        let ok = if sig.algorithm == ALG_HASHED {
            self.key
                .verify_strict(&Blake2b512::digest(message), &signature)
                .is_ok()
        } else {
            self.key.verify_strict(message, &signature).is_ok()
        };
        if !ok {
            return Err(MinisignError::BadSignature(self.key_id));
        }
        let global = ed25519_dalek::Signature::from_bytes(&sig.global_signature);
        let mut signed = Vec::with_capacity(64 + sig.trusted_comment.len());
        signed.extend_from_slice(&sig.signature);
        signed.extend_from_slice(&sig.trusted_comment);
        self.key
            .verify_strict(&signed, &global)
            .map_err(|_| MinisignError::BadGlobalSignature(self.key_id))
    }
}

/// An unencrypted minisign secret key.
pub struct SecretKey {
    pub key_id: KeyId,
    key: SigningKey,
}

impl SecretKey {
    /// Generates a new key pair from the operating system's random source.
    pub fn generate() -> Result<SecretKey, std::io::Error> {
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut seed).map_err(std::io::Error::other)?;
        getrandom::getrandom(&mut id).map_err(std::io::Error::other)?;
        Ok(SecretKey {
            key_id: KeyId(id),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Parses a minisign secret key file written without a password
    /// (`minisign -G -W`, or `warden keygen`).
    pub fn parse(text: &str) -> Result<SecretKey, MinisignError> {
        let line = text
            .lines()
            .find(|l| !l.starts_with("untrusted comment:") && !l.trim().is_empty())
            .ok_or_else(|| malformed("secret key", "file has no key line"))?;
        let raw = decode_b64("secret key", line.trim(), 158)?;
        if raw[0..2] != ALG_PLAIN || raw[4..6] != CHK_BLAKE2B {
            return Err(malformed("secret key", "algorithms are not Ed/B2"));
        }
        match [raw[2], raw[3]] {
            KDF_NONE => {}
            KDF_SCRYPT => return Err(MinisignError::EncryptedKey),
            _ => return Err(malformed("secret key", "unknown key derivation")),
        }
        let keynum = &raw[54..158];
        let key_id = KeyId(keynum[0..8].try_into().expect("length checked"));
        let sk: [u8; 64] = keynum[8..72].try_into().expect("length checked");
        // minisign 0.11 leaves the checksum zeroed in keys written with -W; the
        // keypair consistency check below still catches a corrupt key.
        let stored = &keynum[72..104];
        if stored != [0u8; 32] && stored != Self::checksum(&key_id, &sk) {
            return Err(MinisignError::KeyChecksum);
        }
        let key = SigningKey::from_keypair_bytes(&sk).map_err(|_| MinisignError::KeyChecksum)?;
        Ok(SecretKey { key_id, key })
    }

    /// The secret key file text, unencrypted, in minisign's format.
    pub fn to_file(&self) -> String {
        let sk = self.key.to_keypair_bytes();
        let mut raw = Vec::with_capacity(158);
        raw.extend_from_slice(&ALG_PLAIN);
        raw.extend_from_slice(&KDF_NONE);
        raw.extend_from_slice(&CHK_BLAKE2B);
        raw.extend_from_slice(&[0u8; 32 + 8 + 8]); // salt, opslimit, memlimit: unused
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&sk);
        raw.extend_from_slice(&Self::checksum(&self.key_id, &sk));
        format!(
            "untrusted comment: minisign secret key {} (unencrypted, keep it private)\n{}\n",
            self.key_id,
            B64.encode(raw)
        )
    }

    fn checksum(key_id: &KeyId, sk: &[u8; 64]) -> [u8; 32] {
        let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
        h.update(ALG_PLAIN);
        h.update(key_id.0);
        h.update(sk);
        h.finalize().into()
    }

    /// Signs `message` with the hashed (`ED`) algorithm and a trusted comment.
    pub fn sign(&self, message: &[u8], trusted_comment: &str) -> SignatureFile {
        let signature = self.key.sign(&Blake2b512::digest(message)).to_bytes();
        let mut signed = Vec::with_capacity(64 + trusted_comment.len());
        signed.extend_from_slice(&signature);
        signed.extend_from_slice(trusted_comment.as_bytes());
        SignatureFile {
            algorithm: ALG_HASHED,
            key_id: self.key_id,
            signature,
            trusted_comment: trusted_comment.as_bytes().to_vec(),
            global_signature: self.key.sign(&signed).to_bytes(),
        }
    }
}

/// A detached minisign signature file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureFile {
    algorithm: [u8; 2],
    pub key_id: KeyId,
    signature: [u8; 64],
    /// As signed: any bytes but a line break (minisign does not require UTF-8).
    pub trusted_comment: Vec<u8>,
    global_signature: [u8; 64],
}

impl SignatureFile {
    /// Parses the four-line signature file format. The comments may be any bytes
    /// (minisign signs and shows them as they are); the other lines are base64.
    pub fn parse(text: &[u8]) -> Result<SignatureFile, MinisignError> {
        if text.len() > MAX_SIGNATURE_BYTES {
            return Err(malformed("signature", "file is too large"));
        }
        // Lines as `str::lines` cuts them: at `\n`, less a `\r` before it.
        let mut lines = text
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let mut next = |what: &'static str| {
            lines
                .next()
                .ok_or_else(|| malformed("signature", format!("missing the {what} line")))
        };
        let b64_line = |what: &'static str, line: &[u8], len: usize| {
            let line = std::str::from_utf8(line)
                .map_err(|_| malformed("signature", format!("the {what} line is not base64")))?;
            decode_b64("signature", line.trim(), len)
        };
        if !next("untrusted comment")?.starts_with(b"untrusted comment:") {
            return Err(malformed(
                "signature",
                "first line is not an untrusted comment",
            ));
        }
        let raw = b64_line("signature", next("signature")?, 74)?;
        let trusted = next("trusted comment")?;
        let trusted_comment = trusted
            .strip_prefix(b"trusted comment: ")
            .ok_or_else(|| malformed("signature", "third line is not a trusted comment"))?
            .to_vec();
        let global = b64_line("global signature", next("global signature")?, 64)?;
        let algorithm = [raw[0], raw[1]];
        if algorithm != ALG_PLAIN && algorithm != ALG_HASHED {
            return Err(malformed("signature", "algorithm is neither Ed nor ED"));
        }
        Ok(SignatureFile {
            algorithm,
            key_id: KeyId(raw[2..10].try_into().expect("length checked")),
            signature: raw[10..74].try_into().expect("length checked"),
            trusted_comment,
            global_signature: global[..].try_into().expect("length checked"),
        })
    }

    /// Whether the message was hashed with BLAKE2b-512 before signing (`ED`).
    pub fn is_prehashed(&self) -> bool {
        self.algorithm == ALG_HASHED
    }

    /// The file's bytes, as minisign writes them.
    pub fn to_file(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(74);
        raw.extend_from_slice(&self.algorithm);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        let mut out = format!(
            "untrusted comment: signature from warden secret key {}\n{}\ntrusted comment: ",
            self.key_id,
            B64.encode(raw),
        )
        .into_bytes();
        out.extend_from_slice(&self.trusted_comment);
        out.push(b'\n');
        out.extend_from_slice(B64.encode(self.global_signature).as_bytes());
        out.push(b'\n');
        out
    }
}

fn decode_b64(what: &'static str, line: &str, len: usize) -> Result<Vec<u8>, MinisignError> {
    let raw = B64
        .decode(line)
        .map_err(|e| malformed(what, format!("invalid base64: {e}")))?;
    if raw.len() != len {
        // The commonest mix-up: a public key where a secret key goes.
        let hint = match (what, raw.len()) {
            ("secret key", 42) => " (that is a public key: give the .key file keygen wrote)",
            ("public key", 158) => " (that is a secret key: give the .pub file)",
            _ => "",
        };
        return Err(malformed(
            what,
            format!("decodes to {} bytes, expected {len}{hint}", raw.len()),
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files() {
        let sk = SecretKey::generate().unwrap();
        let sk2 = SecretKey::parse(&sk.to_file()).unwrap();
        assert_eq!(sk2.key_id, sk.key_id);
        assert_eq!(
            PublicKey::parse(&sk.public().to_file()).unwrap(),
            sk.public()
        );
        let bare = sk.public().to_file().lines().nth(1).unwrap().to_owned();
        assert_eq!(PublicKey::parse(&bare).unwrap(), sk.public());
        // Two keys in one file: refused, not the first one pinned silently.
        let other = SecretKey::generate().unwrap();
        let two = format!("{}{}", sk.public().to_file(), other.public().to_file());
        let e = PublicKey::parse(&two).unwrap_err().to_string();
        assert!(e.contains("more than one key"), "{e}");
    }

    #[test]
    fn sign_verify_and_every_tamper_fails() {
        let sk = SecretKey::generate().unwrap();
        let pk = sk.public();
        let sig = sk.sign(b"hello", "timestamp:1");
        assert!(sig.is_prehashed());
        let parsed = SignatureFile::parse(&sig.to_file()).unwrap();
        assert_eq!(parsed, sig);
        pk.verify(b"hello", &parsed).unwrap();
        assert_eq!(
            pk.verify(b"hellp", &parsed),
            Err(MinisignError::BadSignature(pk.key_id))
        );
        let mut t = parsed.clone();
        t.trusted_comment.push(b'x');
        assert_eq!(
            pk.verify(b"hello", &t),
            Err(MinisignError::BadGlobalSignature(pk.key_id))
        );
        let mut t = parsed.clone();
        t.signature[0] ^= 1;
        assert!(matches!(
            pk.verify(b"hello", &t),
            Err(MinisignError::BadSignature(_))
        ));
        let mut t = parsed;
        t.algorithm = ALG_PLAIN;
        assert!(matches!(
            pk.verify(b"hello", &t),
            Err(MinisignError::BadSignature(_))
        ));
    }

    #[test]
    fn legacy_plain_algorithm_verifies() {
        let sk = SecretKey::generate().unwrap();
        let signature = sk.key.sign(b"msg").to_bytes();
        let mut signed = signature.to_vec();
        signed.extend_from_slice(b"c");
        let sig = SignatureFile {
            algorithm: ALG_PLAIN,
            key_id: sk.key_id,
            signature,
            trusted_comment: b"c".to_vec(),
            global_signature: sk.key.sign(&signed).to_bytes(),
        };
        sk.public().verify(b"msg", &sig).unwrap();
    }

    #[test]
    fn key_id_displays_like_minisign() {
        let id = KeyId([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]);
        assert_eq!(id.to_string(), "0807060504030201");
        assert_eq!("0807060504030201".parse::<KeyId>().unwrap(), id);
    }

    #[test]
    fn malformed_files_are_refused() {
        assert!(SignatureFile::parse(b"").is_err());
        assert!(SignatureFile::parse(b"untrusted comment: x\n!!!\n").is_err());
        assert!(PublicKey::parse("untrusted comment: x\nAAAA\n").is_err());
        let raw = SecretKey::generate().unwrap().to_file();
        let mut lines: Vec<String> = raw.lines().map(str::to_owned).collect();
        let mut bytes = B64.decode(&lines[1]).unwrap();
        bytes[100] ^= 1;
        lines[1] = B64.encode(&bytes);
        assert!(matches!(
            SecretKey::parse(&lines.join("\n")),
            Err(MinisignError::KeyChecksum)
        ));
    }
}
