//! RFC 6238 time-based one-time passwords: secrets, codes, the accepted window, the otpauth URI we
//! issue and the credentials we import. The HMAC-based codes, the secrets' generation and base32,
//! and the parsing of imported otpauth URIs come from the `totp-rs` crate;
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

/// The HMAC behind a code. Secrets this service issues use SHA-1 (every authenticator app supports
/// it); imported ones may use the others.
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

    /// The name in an otpauth URI and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// The algorithm named `name` (as [`Self::as_str`] writes it, any case).
    pub fn parse(name: &str) -> Option<Self> {
        [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512]
            .into_iter()
            .find(|algorithm| algorithm.as_str().eq_ignore_ascii_case(name))
    }
}

/// How a credential's codes are made: its HMAC, the digits of a code and the seconds of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parameters {
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u32,
}

impl Parameters {
    /// What this service issues, and what every authenticator app understands.
    pub const ISSUED: Parameters = Parameters {
        algorithm: Algorithm::Sha1,
        digits: DIGITS,
        period: PERIOD,
    };
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
    parameters: Parameters,
    last_used_step: Option<i64>,
) -> CodeMatch {
    let Parameters {
        algorithm,
        digits,
        period,
    } = parameters;
    let code = submitted.trim();
    if code.len() != digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return CodeMatch::NoMatch;
    }
    let current = step_at(unix_seconds, period);
    let mut fresh = None;
    let mut matched_used = false;
    for step in (current - SKEW_STEPS)..=(current + SKEW_STEPS) {
        let expected = code_for_step(secret, step, digits, algorithm);
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

/// Shortest and longest step accepted on import, in seconds: shorter steps leave a user no time to
/// type a code, longer ones keep a code valid for minutes.
pub const IMPORT_PERIODS: std::ops::RangeInclusive<u32> = 15..=120;

/// A credential brought from another system: its secret and how its codes are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub secret: Secret,
    pub parameters: Parameters,
}

/// The part of an imported credential that is not acceptable, so that the refusal can name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportProblem {
    /// Not an `otpauth://totp/` URI.
    Uri,
    Algorithm,
    Digits,
    Period,
    Secret,
}

/// Reads an `otpauth://totp/…` URI (Key Uri Format; parsed by totp-rs): its secret, algorithm,
/// digits and period, each checked as [`import`] does. The label and issuer are not kept.
pub fn parse_otpauth_uri(uri: &str) -> Result<Imported, ImportProblem> {
    use totp_rs::TotpError;
    let parsed = totp_rs::Totp::from_url_unchecked(uri).map_err(|error| match error {
        TotpError::InvalidAlgorithm { .. } => ImportProblem::Algorithm,
        TotpError::DigitsParse { .. } | TotpError::InvalidDigits { .. } => ImportProblem::Digits,
        TotpError::StepParse { .. } | TotpError::InvalidStepZero => ImportProblem::Period,
        TotpError::InvalidSecret | TotpError::SecretNotSet | TotpError::SecretTooShort { .. } => {
            ImportProblem::Secret
        }
        _ => ImportProblem::Uri,
    })?;
    let algorithm = match parsed.algorithm() {
        totp_rs::Algorithm::SHA1 => Algorithm::Sha1,
        totp_rs::Algorithm::SHA256 => Algorithm::Sha256,
        totp_rs::Algorithm::SHA512 => Algorithm::Sha512,
        #[allow(unreachable_patterns)]
        _ => return Err(ImportProblem::Algorithm),
    };
    let period = u32::try_from(parsed.step()).map_err(|_| ImportProblem::Period)?;
    import(
        Secret(parsed.secret().as_bytes().to_vec()),
        Parameters {
            algorithm,
            digits: u32::from(parsed.digits()),
            period,
        },
    )
}

/// Checks an imported credential: a secret of at least [`MIN_SECRET_BYTES`], 6 or 8 digits (what
/// authenticator apps show) and a period in [`IMPORT_PERIODS`].
pub fn import(secret: Secret, parameters: Parameters) -> Result<Imported, ImportProblem> {
    if secret.0.len() < MIN_SECRET_BYTES {
        return Err(ImportProblem::Secret);
    }
    if !matches!(parameters.digits, 6 | 8) {
        return Err(ImportProblem::Digits);
    }
    if !IMPORT_PERIODS.contains(&parameters.period) {
        return Err(ImportProblem::Period);
    }
    Ok(Imported { secret, parameters })
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
                match_code(&secret, &code, now, Parameters::ISSUED, None),
                CodeMatch::Fresh(current + offset)
            );
            assert_eq!(
                match_code(&secret, &code, now, Parameters::ISSUED, Some(current - 2)),
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
            match_code(&secret, &code, now, Parameters::ISSUED, None),
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
                match_code(&secret, &code, now, Parameters::ISSUED, Some(current)),
                CodeMatch::AlreadyUsed
            );
        }
        let next = code_for_step(&secret, current + 1, DIGITS, Algorithm::Sha1);
        assert_eq!(
            match_code(&secret, &next, now, Parameters::ISSUED, Some(current)),
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
            match_code(
                &secret,
                "070562",
                at_first,
                Parameters::ISSUED,
                Some(first - 1)
            ),
            CodeMatch::Fresh(first)
        );
        // With the first step used, the same code is still a fresh code for the second.
        assert_eq!(
            match_code(&secret, "070562", at_first, Parameters::ISSUED, Some(first)),
            CodeMatch::Fresh(second)
        );
        assert_eq!(
            match_code(
                &secret,
                "070562",
                at_first,
                Parameters::ISSUED,
                Some(second)
            ),
            CodeMatch::AlreadyUsed
        );
    }

    #[test]
    fn trims_white_space_but_refuses_wrong_lengths_and_non_digits() {
        let secret = ascii_secret("12345678901234567890");
        let now = 1_111_111_111;
        let code = code_for_step(&secret, step_at(now, PERIOD), DIGITS, Algorithm::Sha1);
        let check = |submitted: &str| match_code(&secret, submitted, now, Parameters::ISSUED, None);
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

    const RFC_SECRET_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn an_imported_uri_keeps_its_algorithm_digits_and_period() {
        let uri = format!(
            "otpauth://totp/Keycloak:alice%40example.com?secret={RFC_SECRET_BASE32}&algorithm=SHA256&digits=8&period=60&issuer=Keycloak"
        );
        let imported = parse_otpauth_uri(&uri).unwrap();
        assert_eq!(imported.secret, ascii_secret("12345678901234567890"));
        assert_eq!(
            imported.parameters,
            Parameters {
                algorithm: Algorithm::Sha256,
                digits: 8,
                period: 60
            }
        );
    }

    #[test]
    fn an_imported_uri_without_parameters_takes_sha1_six_digits_and_thirty_seconds() {
        let uri = format!("otpauth://totp/alice?secret={RFC_SECRET_BASE32}");
        assert_eq!(
            parse_otpauth_uri(&uri).unwrap().parameters,
            Parameters::ISSUED
        );
    }

    #[test]
    fn an_imported_uri_names_the_parameter_it_refuses() {
        let with = |query: &str| format!("otpauth://totp/alice?secret={RFC_SECRET_BASE32}&{query}");
        let cases = [
            (
                "https://example.com/?secret=x".to_owned(),
                ImportProblem::Uri,
            ),
            (
                format!("otpauth://hotp/alice?secret={RFC_SECRET_BASE32}"),
                ImportProblem::Uri,
            ),
            ("not a uri".to_owned(), ImportProblem::Uri),
            (with("algorithm=MD5"), ImportProblem::Algorithm),
            (with("digits=7"), ImportProblem::Digits),
            (with("digits=six"), ImportProblem::Digits),
            (with("digits=300"), ImportProblem::Digits),
            (with("period=14"), ImportProblem::Period),
            (with("period=121"), ImportProblem::Period),
            (with("period=0"), ImportProblem::Period),
            (with("period=99999999999"), ImportProblem::Period),
            (
                "otpauth://totp/alice?digits=6".to_owned(),
                ImportProblem::Secret,
            ),
            (
                "otpauth://totp/alice?secret=GEZDGNBV".to_owned(),
                ImportProblem::Secret,
            ),
            (
                "otpauth://totp/alice?secret=not-base32!".to_owned(),
                ImportProblem::Secret,
            ),
        ];
        for (uri, problem) in cases {
            assert_eq!(parse_otpauth_uri(&uri), Err(problem), "{uri}");
        }
    }

    #[test]
    fn imported_periods_and_digits_at_the_edges() {
        let secret = ascii_secret("12345678901234567890");
        let with = |digits, period| {
            import(
                secret.clone(),
                Parameters {
                    algorithm: Algorithm::Sha512,
                    digits,
                    period,
                },
            )
        };
        assert!(with(6, 15).is_ok());
        assert!(with(8, 120).is_ok());
        assert_eq!(with(6, 14), Err(ImportProblem::Period));
        assert_eq!(with(6, 121), Err(ImportProblem::Period));
        assert_eq!(with(7, 30), Err(ImportProblem::Digits));
        assert_eq!(with(10, 30), Err(ImportProblem::Digits));
        let short = Secret::from_bytes(vec![7; MIN_SECRET_BYTES - 1]);
        assert_eq!(
            import(short, Parameters::ISSUED),
            Err(ImportProblem::Secret)
        );
    }

    #[test]
    fn codes_of_an_imported_credential_follow_its_parameters() {
        let secret = ascii_secret("12345678901234567890123456789012");
        let parameters = Parameters {
            algorithm: Algorithm::Sha256,
            digits: 8,
            period: 60,
        };
        // RFC 6238's SHA-256 vector at 1,111,111,109 s with 30-second steps is step 37,037,036;
        // with 60-second steps that step number is reached at twice the time.
        let now = 37_037_036 * 60 + 5;
        assert_eq!(
            match_code(&secret, "68084774", now, parameters, None),
            CodeMatch::Fresh(37_037_036)
        );
        assert_eq!(
            match_code(&secret, "68084774", now, Parameters::ISSUED, None),
            CodeMatch::NoMatch
        );
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
