//! Recovery codes: single-use codes a user keeps on paper for the day the authenticator app is
//! gone. A code is 12 characters of RFC 4648 base32 (60 random bits), shown in three groups of
//! four (`ABCD-EFGH-JKLM`); only an Argon2id hash of it is stored.
//!
//! All of a user's codes are hashed with one salt derived from the user id, so that a check
//! hashes the submitted code once, before the decision, and the decision only compares hashes:
//! the slow part runs beside the database's writer, never inside it. User ids are never reused
//! (a deleted user's row stays), so the salt is unique to the user; and with 60 random bits per
//! code a salt shared by ten codes gives a thief of the hashes nothing worth having.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Characters in a code, without the dashes (5 bits each: 60 bits).
pub const CODE_CHARS: usize = 12;
/// Characters between two dashes in a code as shown.
const GROUP_CHARS: usize = 4;
/// RFC 4648 base32: no 0, 1, 8 or 9, so nothing to mistake for O, I, B or g.
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Bytes of a stored hash.
pub const HASH_BYTES: usize = 32;

/// Argon2id's cost: 7 MiB of memory and 5 passes, one of OWASP's equivalent settings for
/// Argon2id (the one with the least memory, so that several checks at once stay small).
fn hasher() -> Argon2<'static> {
    let params = Params::new(7 * 1024, 5, 1, Some(HASH_BYTES)).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A recovery code in clear, as the user gets it once. Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(String);

impl RecoveryCode {
    /// A fresh code from the operating system's generator, grouped for reading.
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        let mut shown = String::with_capacity(CODE_CHARS + CODE_CHARS / GROUP_CHARS);
        for i in 0..CODE_CHARS {
            if i > 0 && i % GROUP_CHARS == 0 {
                shown.push('-');
            }
            shown.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
        }
        RecoveryCode(shown)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

/// The stored form of one code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CodeHash([u8; HASH_BYTES]);

impl CodeHash {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(CodeHash)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeHash(..)")
    }
}

/// The code as typed, reduced to its 12 characters: dashes and spaces dropped, letters in upper
/// case. `None` when what is left cannot be a code.
pub fn normalize(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let valid = code.len() == CODE_CHARS && code.bytes().all(|b| ALPHABET.contains(&b));
    valid.then_some(code)
}

/// The hash of `code` (as typed or as generated) for `user_id`; `None` when it cannot be a code.
/// Slow by design (tens of milliseconds): run it off the async workers.
pub fn hash(user_id: &str, code: &str) -> Option<CodeHash> {
    let code = normalize(code)?;
    let mut out = [0u8; HASH_BYTES];
    hasher()
        .hash_password_into(code.as_bytes(), &salt(user_id), &mut out)
        .expect("a 12-character code and a 16-byte salt are within Argon2's limits");
    Some(CodeHash(out))
}

/// The salt of a user's codes: 16 bytes of SHA-256 over a label and the user id.
fn salt(user_id: &str) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(b"totp-service recovery code\0")
        .chain_update(user_id.as_bytes())
        .finalize();
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&digest[..16]);
    salt
}

/// The position of `candidate` among `stored`, comparing every stored hash in constant time.
pub fn find(stored: &[CodeHash], candidate: &CodeHash) -> Option<usize> {
    let mut found = None;
    for (i, hash) in stored.iter().enumerate() {
        if bool::from(hash.0.ct_eq(&candidate.0)) {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_code_is_three_groups_of_four_base32_characters() {
        let code = RecoveryCode::generate();
        let groups: Vec<&str> = code.expose().split('-').collect();
        assert_eq!(groups.len(), 3, "{}", code.expose());
        for group in groups {
            assert_eq!(group.len(), GROUP_CHARS);
            assert!(group.bytes().all(|b| ALPHABET.contains(&b)), "{group}");
        }
        assert_ne!(
            code,
            RecoveryCode::generate(),
            "60 random bits do not repeat"
        );
        assert_eq!(format!("{code:?}"), "RecoveryCode(<redacted>)");
    }

    #[test]
    fn a_code_matches_however_it_is_typed_but_only_for_its_user() {
        let code = RecoveryCode::generate();
        let stored = [hash("alice", code.expose()).unwrap()];
        let typed = code.expose().to_lowercase().replace('-', " ");
        assert_eq!(find(&stored, &hash("alice", &typed).unwrap()), Some(0));
        assert_eq!(find(&stored, &hash("bob", code.expose()).unwrap()), None);
        let other = RecoveryCode::generate();
        assert_eq!(find(&stored, &hash("alice", other.expose()).unwrap()), None);
    }

    #[test]
    fn what_cannot_be_a_code_has_no_hash() {
        for typed in [
            "",
            "ABCD-EFGH",
            "ABCD-EFGH-IJK1",
            "ABCD-EFGH-IJKLM",
            "ÄBCD-EFGH-IJKL",
        ] {
            assert_eq!(hash("alice", typed), None, "{typed:?}");
        }
    }
}
