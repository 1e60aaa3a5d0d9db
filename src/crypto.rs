//! Sealing TOTP secrets at rest: AES-256-GCM with a random 96-bit nonce per seal, the user id as
//! associated data (a sealed secret copied to another user does not open), and a key id stored
//! beside each ciphertext. Several keys may be configured: the first seals, all open.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;

use crate::domain::totp::Secret;
use crate::domain::types::SealedSecret;

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

    /// Seals `secret` for `user_id` under the active key.
    pub fn seal(&self, user_id: &str, secret: &Secret, rng: &mut impl RngCore) -> SealedSecret {
        let (key_id, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.expose(),
            aad: user_id.as_bytes(),
        };
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        SealedSecret {
            key_id: key_id.clone(),
            ciphertext: sealed,
        }
    }

    /// Opens a secret sealed for `user_id` under any configured key.
    pub fn open(&self, user_id: &str, sealed: &SealedSecret) -> Result<Secret, CryptoError> {
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.ciphertext.len() < NONCE_BYTES {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.ciphertext.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad: user_id.as_bytes(),
        };
        cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map(Secret::from_bytes)
            .map_err(|_| CryptoError::Corrupt)
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

    #[test]
    fn seals_and_opens_for_the_same_user() {
        let keys = ring(&entry("k1"));
        let secret = Secret::generate(&mut rand::thread_rng());
        let sealed = keys.seal("alice", &secret, &mut rand::thread_rng());
        assert_eq!(sealed.key_id, "k1");
        assert!(
            !sealed
                .ciphertext
                .windows(secret.expose().len())
                .any(|w| w == secret.expose())
        );
        assert_eq!(keys.open("alice", &sealed), Ok(secret));
    }

    #[test]
    fn a_secret_copied_to_another_user_does_not_open() {
        let keys = ring(&entry("k1"));
        let sealed = keys.seal(
            "alice",
            &Secret::generate(&mut rand::thread_rng()),
            &mut rand::thread_rng(),
        );
        assert_eq!(keys.open("mallory", &sealed), Err(CryptoError::Corrupt));
    }

    #[test]
    fn older_keys_still_open_while_the_first_seals() {
        let old = entry("old");
        let secret = Secret::generate(&mut rand::thread_rng());
        let sealed_by_old = ring(&old).seal("alice", &secret, &mut rand::thread_rng());
        let rotated = ring(&format!("{},{old}", entry("new")));
        assert_eq!(rotated.active_key_id(), "new");
        assert_eq!(rotated.open("alice", &sealed_by_old), Ok(secret));
    }

    #[test]
    fn a_missing_key_is_a_clear_error() {
        let sealed = ring(&entry("gone")).seal(
            "alice",
            &Secret::generate(&mut rand::thread_rng()),
            &mut rand::thread_rng(),
        );
        assert_eq!(
            ring(&entry("k1")).open("alice", &sealed),
            Err(CryptoError::UnknownKey("gone".into()))
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
