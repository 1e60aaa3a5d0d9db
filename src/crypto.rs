//! Sealing bytes at rest (the service seals TOTP secrets): AES-256-GCM with a random 96-bit nonce
//! per seal, caller-given associated data (the service gives the user id, so that a sealed secret
//! copied to another user does not open), and the id of the sealing key kept beside the
//! ciphertext. Several keys may be configured: the first seals, all open. Nothing here knows what
//! the bytes are.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;

const NONCE_BYTES: usize = 12;

/// Why a key ring could not be built or a secret not opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("encryption keys must look like `id:base64,id:base64`; entry {0} does not")]
    MalformedEntry(usize),
    #[error("encryption key `{0}` is not 32 bytes of base64")]
    BadKey(String),
    #[error("encryption key id `{0}` is given twice")]
    DuplicateId(String),
    #[error("no encryption key is configured")]
    Empty,
    #[error("the secret is sealed under key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("the sealed secret does not open (wrong key, wrong user or damaged)")]
    Corrupt,
}

/// The configured AES-256-GCM keys. Debug shows the ids only.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, Aes256Gcm)>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl KeyRing {
    /// Parses `id:base64,id:base64` (the format of `TOTP_ENCRYPTION_KEYS`); the first entry seals.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (index, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (id, encoded) = entry
                .split_once(':')
                .filter(|(id, _)| !id.is_empty())
                .ok_or(CryptoError::MalformedEntry(index + 1))?;
            let bytes = BASE64
                .decode(encoded.trim())
                .map_err(|_| CryptoError::BadKey(id.to_owned()))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| CryptoError::BadKey(id.to_owned()))?;
            if keys.iter().any(|(known, _)| known == id) {
                return Err(CryptoError::DuplicateId(id.to_owned()));
            }
            keys.push((id.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(CryptoError::Empty);
        }
        Ok(KeyRing { keys })
    }

    /// A new random key in the `id:base64` format.
    pub fn generate_entry(id: &str, rng: &mut impl RngCore) -> String {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        format!("{id}:{}", BASE64.encode(key))
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The id of the key that seals.
    pub fn active_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `plaintext`, bound to `associated`, under the active key.
    pub fn seal(&self, plaintext: &[u8], associated: &[u8], rng: &mut impl RngCore) -> Sealed {
        let (key_id, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: associated,
        };
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        Sealed {
            key_id: key_id.clone(),
            bytes,
        }
    }

    /// Opens bytes sealed under the key `key_id` and bound to `associated`.
    pub fn open(
        &self,
        key_id: &str,
        bytes: &[u8],
        associated: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?;
        if bytes.len() < NONCE_BYTES {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad: associated,
        };
        cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| CryptoError::Corrupt)
    }
}

/// Sealed bytes: the nonce and ciphertext, and the id of the key that sealed them.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).expect("valid key ring")
    }

    fn entry(id: &str) -> String {
        KeyRing::generate_entry(id, &mut rand::thread_rng())
    }

    const SECRET: &[u8] = b"twenty bytes secret!";

    fn seal(keys: &KeyRing, associated: &str) -> Sealed {
        keys.seal(SECRET, associated.as_bytes(), &mut rand::thread_rng())
    }

    fn open(keys: &KeyRing, sealed: &Sealed, associated: &str) -> Result<Vec<u8>, CryptoError> {
        keys.open(&sealed.key_id, &sealed.bytes, associated.as_bytes())
    }

    #[test]
    fn seals_and_opens_for_the_same_associated_data() {
        let keys = ring(&entry("k1"));
        let sealed = seal(&keys, "alice");
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.bytes.windows(SECRET.len()).any(|w| w == SECRET));
        assert_eq!(open(&keys, &sealed, "alice"), Ok(SECRET.to_vec()));
    }

    #[test]
    fn bytes_sealed_for_one_user_do_not_open_for_another() {
        let keys = ring(&entry("k1"));
        let sealed = seal(&keys, "alice");
        assert_eq!(open(&keys, &sealed, "mallory"), Err(CryptoError::Corrupt));
    }

    #[test]
    fn older_keys_still_open_while_the_first_seals() {
        let old = entry("old");
        let sealed_by_old = seal(&ring(&old), "alice");
        let rotated = ring(&format!("{},{old}", entry("new")));
        assert_eq!(rotated.active_key_id(), "new");
        assert_eq!(open(&rotated, &sealed_by_old, "alice"), Ok(SECRET.to_vec()));
    }

    #[test]
    fn a_missing_key_is_a_clear_error() {
        let sealed = seal(&ring(&entry("gone")), "alice");
        assert_eq!(
            open(&ring(&entry("k1")), &sealed, "alice"),
            Err(CryptoError::UnknownKey("gone".into()))
        );
    }

    #[test]
    fn debug_shows_no_sealed_bytes() {
        let sealed = seal(&ring(&entry("k1")), "alice");
        let printed = format!("{sealed:?}");
        assert_eq!(
            printed,
            format!("Sealed {{ key_id: \"k1\", bytes: {} }}", sealed.bytes.len())
        );
    }

    #[test]
    fn refuses_malformed_key_lists() {
        assert_eq!(KeyRing::parse("").unwrap_err(), CryptoError::Empty);
        assert_eq!(
            KeyRing::parse("nocolon").unwrap_err(),
            CryptoError::MalformedEntry(1)
        );
        assert_eq!(
            KeyRing::parse("k:c2hvcnQ=").unwrap_err(),
            CryptoError::BadKey("k".into())
        );
        let one = entry("k");
        assert_eq!(
            KeyRing::parse(&format!("{one},{one}")).unwrap_err(),
            CryptoError::DuplicateId("k".into())
        );
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let spec = entry("k1");
        let printed = format!("{:?}", ring(&spec));
        assert_eq!(printed, "KeyRing { key_ids: [\"k1\"] }");
    }
}
