//! RFC 6238 time-based one-time passwords: secrets, codes, the accepted window and the otpauth URI.
//! The HMAC-based codes and the secrets' generation and base32 come from the `totp-rs` crate;
//! the rules on top are ours: a check matches a code against the steps the user has not used yet,
//! so a step is accepted once (RFC 6238 §5.2), and comparisons are constant-time.

use std::fmt;

use subtle::ConstantTimeEq;

/// Bytes in a newly generated secret (160 bits, as RFC 4226 recommends and ZITADEL uses).
pub const SECRET_BYTES: usize = 20;
/// Shortest secret accepted on import (128 bits, RFC 4226 §4's minimum).
pub const MIN_SECRET_BYTES: usize = 16;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Seconds per time step.
pub const PERIOD: u32 = 30;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: i64 = 1;

/// The HMAC behind a code. Only SHA-1 is issued (every authenticator app supports it); the others
/// exist for the RFC's test vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn in_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
            Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
            Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

/// A TOTP shared secret. Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A fresh random secret of [`SECRET_BYTES`] (totp-rs draws it from the operating system's
    /// generator).
    pub fn generate() -> Self {
        let secret = Secret(totp_rs::Secret::generate().as_bytes().to_vec());
        debug_assert_eq!(secret.0.len(), SECRET_BYTES);
        secret
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// Parses base32 (RFC 4648, case-insensitive, padding and spaces allowed) of at least
    /// [`MIN_SECRET_BYTES`]; `None` when it is not.
    pub fn from_base32(text: &str) -> Option<Self> {
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = totp_rs::Secret::try_from_base32(&cleaned)
            .ok()?
            .as_bytes()
            .to_vec();
        (bytes.len() >= MIN_SECRET_BYTES).then_some(Secret(bytes))
    }

    /// Base32 without padding, as authenticator apps take it (32 characters for 20 bytes).
    pub fn to_base32(&self) -> String {
        totp_rs::Secret::from(self.0.clone()).to_base32()
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The time step that contains `unix_seconds`.
pub fn step_at(unix_seconds: i64, period: u32) -> i64 {
    unix_seconds.div_euclid(i64::from(period))
}

/// The code for one time step, zero-padded to `digits` (RFC 4226's truncation, by totp-rs).
/// Steps before 1970 have no code (an empty string, which matches nothing).
pub fn code_for_step(secret: &Secret, step: i64, digits: u32, algorithm: Algorithm) -> String {
    let Ok(counter) = u64::try_from(step) else {
        return String::new();
    };
    // totp-rs counts steps as `time / step_duration`; with a duration of one second, the time it
    // is given is the step itself.
    totp_rs::Builder::new()
        .with_algorithm(algorithm.in_totp_rs())
        .with_digits(digits as u8)
        .with_step_duration(1)
        .with_secret(secret.expose().to_vec())
        .build_noncompliant()
        .generate(counter)
        .to_string()
}

/// What a submitted code matched in the accepted window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMatch {
    /// The code matches no step of the window (or is not `digits` ASCII digits).
    NoMatch,
    /// The code matches this step, and it is later than the last used one.
    Fresh(i64),
    /// The code matches only steps used before (a replay).
    AlreadyUsed,
}

/// Matches `submitted`, trimmed of surrounding white space, against the accepted window (current
/// step, one back, one ahead), given the last step the user consumed.
///
/// Six-digit codes of neighbouring steps coincide about once in a million; so the answer is the
/// *earliest* matching step later than `last_used_step`, not merely some matching step. Taking the
/// newest match would consume a step the user has not reached yet and refuse their next code as
/// used; taking a used one would refuse a fresh code. Every candidate is computed and compared in
/// constant time, so timing does not tell which step matched.
pub fn match_code(
    secret: &Secret,
    submitted: &str,
    unix_seconds: i64,
    digits: u32,
    period: u32,
    last_used_step: Option<i64>,
) -> CodeMatch {
    let code = submitted.trim();
    if code.len() != digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return CodeMatch::NoMatch;
    }
    let current = step_at(unix_seconds, period);
    let mut fresh = None;
    let mut matched_used = false;
    for step in (current - SKEW_STEPS)..=(current + SKEW_STEPS) {
        let expected = code_for_step(secret, step, digits, Algorithm::Sha1);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            if last_used_step.is_some_and(|last| step <= last) {
                matched_used = true;
            } else if fresh.is_none() {
                fresh = Some(step);
            }
        }
    }
    match (fresh, matched_used) {
        (Some(step), _) => CodeMatch::Fresh(step),
        (None, true) => CodeMatch::AlreadyUsed,
        (None, false) => CodeMatch::NoMatch,
    }
}

/// Percent-encodes a URI label or query value: keeps RFC 3986 unreserved characters and `@`
/// (so an e-mail account stays readable), encodes everything else, spaces as `%20`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `otpauth://` URI an authenticator app scans (Key Uri Format), query keys sorted:
/// `otpauth://totp/<issuer>:<account>?algorithm=SHA1&digits=6&issuer=<issuer>&period=30&secret=<S>`.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &Secret) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?algorithm=SHA1&digits={DIGITS}&issuer={issuer}&period={PERIOD}&secret={secret}",
        account = percent_encode(account),
        secret = secret.to_base32(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ascii_secret(text: &str) -> Secret {
        Secret::from_bytes(text.as_bytes().to_vec())
    }

    /// RFC 6238 appendix B: 8-digit codes at fixed times, for each HMAC.
    #[test]
    fn matches_the_rfc_6238_appendix_b_vectors() {
        let sha1 = ascii_secret("12345678901234567890");
        let sha256 = ascii_secret("12345678901234567890123456789012");
        let sha512 =
            ascii_secret("1234567890123456789012345678901234567890123456789012345678901234");
        let vectors: [(i64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (time, want_sha1, want_sha256, want_sha512) in vectors {
            let step = step_at(time, 30);
            assert_eq!(
                code_for_step(&sha1, step, 8, Algorithm::Sha1),
                want_sha1,
                "SHA1 at {time}"
            );
            assert_eq!(
                code_for_step(&sha256, step, 8, Algorithm::Sha256),
                want_sha256,
                "SHA256 at {time}"
            );
            assert_eq!(
                code_for_step(&sha512, step, 8, Algorithm::Sha512),
                want_sha512,
                "SHA512 at {time}"
            );
        }
    }

    #[test]
    fn accepts_the_current_previous_and_next_step_and_reports_which() {
        let secret = ascii_secret("12345678901234567890");
        let now = 1_111_111_111;
        let current = step_at(now, PERIOD);
        for offset in [-1, 0, 1] {
            let code = code_for_step(&secret, current + offset, DIGITS, Algorithm::Sha1);
            assert_eq!(
                match_code(&secret, &code, now, DIGITS, PERIOD, None),
                CodeMatch::Fresh(current + offset)
            );
            assert_eq!(
                match_code(&secret, &code, now, DIGITS, PERIOD, Some(current - 2)),
                CodeMatch::Fresh(current + offset)
            );
        }
    }

    #[test]
    fn rejects_a_code_from_two_steps_ago() {
        let secret = ascii_secret("12345678901234567890");
        let now = 1_111_111_111;
        let code = code_for_step(&secret, step_at(now, PERIOD) - 2, DIGITS, Algorithm::Sha1);
        assert_eq!(
            match_code(&secret, &code, now, DIGITS, PERIOD, None),
            CodeMatch::NoMatch
        );
    }

    #[test]
    fn refuses_a_step_used_before_and_any_earlier_one() {
        let secret = ascii_secret("12345678901234567890");
        let now = 1_111_111_111;
        let current = step_at(now, PERIOD);
        for offset in [-1, 0] {
            let code = code_for_step(&secret, current + offset, DIGITS, Algorithm::Sha1);
            assert_eq!(
                match_code(&secret, &code, now, DIGITS, PERIOD, Some(current)),
                CodeMatch::AlreadyUsed
            );
        }
        let next = code_for_step(&secret, current + 1, DIGITS, Algorithm::Sha1);
        assert_eq!(
            match_code(&secret, &next, now, DIGITS, PERIOD, Some(current)),
            CodeMatch::Fresh(current + 1)
        );
    }

    /// For the RFC 6238 SHA-1 secret, steps 50,424,280 and 50,424,281 share the code 070562
    /// (found by searching; such pairs occur about once per million steps).
    #[test]
    fn a_code_shared_by_two_steps_takes_the_earliest_fresh_one() {
        let secret = ascii_secret("12345678901234567890");
        let (first, second) = (50_424_280, 50_424_281);
        assert_eq!(
            code_for_step(&secret, first, DIGITS, Algorithm::Sha1),
            "070562"
        );
        assert_eq!(
            code_for_step(&secret, second, DIGITS, Algorithm::Sha1),
            "070562"
        );
        // At the first step, the code is taken as that step: the second stays for the next login.
        let at_first = first * i64::from(PERIOD);
        assert_eq!(
            match_code(&secret, "070562", at_first, DIGITS, PERIOD, Some(first - 1)),
            CodeMatch::Fresh(first)
        );
        // With the first step used, the same code is still a fresh code for the second.
        assert_eq!(
            match_code(&secret, "070562", at_first, DIGITS, PERIOD, Some(first)),
            CodeMatch::Fresh(second)
        );
        assert_eq!(
            match_code(&secret, "070562", at_first, DIGITS, PERIOD, Some(second)),
            CodeMatch::AlreadyUsed
        );
    }

    #[test]
    fn trims_white_space_but_refuses_wrong_lengths_and_non_digits() {
        let secret = ascii_secret("12345678901234567890");
        let now = 1_111_111_111;
        let code = code_for_step(&secret, step_at(now, PERIOD), DIGITS, Algorithm::Sha1);
        let check = |submitted: &str| match_code(&secret, submitted, now, DIGITS, PERIOD, None);
        assert!(matches!(check(&format!(" {code} ")), CodeMatch::Fresh(_)));
        for malformed in [
            &format!("{code}0")[..],
            &code[..5],
            "12345a",
            "１２３４５６",
        ] {
            assert_eq!(check(malformed), CodeMatch::NoMatch, "{malformed:?}");
        }
    }

    #[test]
    fn generated_secrets_are_32_base32_characters_and_round_trip() {
        let secret = Secret::generate();
        let text = secret.to_base32();
        assert_eq!(text.len(), 32);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
        assert_eq!(Secret::from_base32(&text.to_lowercase()), Some(secret));
    }

    #[test]
    fn refuses_imported_secrets_shorter_than_16_bytes_or_not_base32() {
        assert!(Secret::from_base32("JBSWY3DPEHPK3PXP").is_none()); // 10 bytes
        assert!(Secret::from_base32("not base32 at all!").is_none());
        assert!(Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").is_some()); // 20 bytes
    }

    #[test]
    fn builds_the_otpauth_uri_with_sorted_keys_and_encoded_labels() {
        let secret = ascii_secret("12345678901234567890");
        let uri = otpauth_uri("ACME Corp", "alice@example.com", &secret);
        assert_eq!(
            uri,
            "otpauth://totp/ACME%20Corp:alice@example.com?algorithm=SHA1&digits=6&issuer=ACME%20Corp&period=30&secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let secret = ascii_secret("12345678901234567890");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
