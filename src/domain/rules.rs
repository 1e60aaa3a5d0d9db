//! The rules of a factor's life, as pure functions: each takes the user's state as a [`Draft`]
//! (a snapshot seen at a moment by a caller), the request's input, and the settings and keys it
//! needs, and changes the draft or refuses. It does no I/O and reads no clock: the service asks
//! the store to apply a rule to a user, and the store writes the draft's changes only if the
//! user's row is still the one the rule saw.

use std::time::Duration;

use serde_json::json;

use super::clock::Timestamp;
use super::error::{self, Error, Rejection};
use super::recovery::{self, CodeHash};
use super::store::{Changes, NewEvent, Outcome, Snapshot, TotpChange};
use super::totp::{self, CodeMatch, Parameters, Secret};
use super::types::{SealedSecret, TotpCode, TotpRecord, TotpState, UserRecord, UserState};
use crate::crypto::{CryptoError, KeyRing};

/// Event names, as ZITADEL names them.
pub mod events {
    pub const USER_ADDED: &str = "user.human.added";
    pub const USER_REMOVED: &str = "user.removed";
    pub const USER_LOCKED: &str = "user.locked";
    pub const USER_UNLOCKED: &str = "user.unlocked";
    pub const OTP_ADDED: &str = "user.human.mfa.otp.added";
    pub const OTP_VERIFIED: &str = "user.human.mfa.otp.verified";
    pub const OTP_REMOVED: &str = "user.human.mfa.otp.removed";
    pub const OTP_CHECK_SUCCEEDED: &str = "user.human.mfa.otp.check.succeeded";
    pub const OTP_CHECK_FAILED: &str = "user.human.mfa.otp.check.failed";
    pub const RECOVERY_CODES_ADDED: &str = "user.human.mfa.recoverycodes.added";
    pub const RECOVERY_CODES_REMOVED: &str = "user.human.mfa.recoverycodes.removed";
    pub const RECOVERY_CODE_CHECK_SUCCEEDED: &str = "user.human.mfa.recoverycodes.check.succeeded";
}

/// Rules that come from configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The issuer shown in authenticator apps.
    pub otp_issuer: String,
    /// Wrong codes before the user is locked; 0 turns lockout off.
    pub max_attempts: u32,
    /// How long an automatic lock lasts; `None` means until UnlockUser.
    pub lockout_duration: Option<Duration>,
    /// Longest a command may take before it is abandoned (its transaction rolls back) with code 4.
    pub request_timeout: Duration,
    /// Most recovery codes a user may hold unused (ZITADEL's `RecoveryCodes.MaxCount`).
    pub max_recovery_codes: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            otp_issuer: "totp-service".to_owned(),
            max_attempts: 5,
            lockout_duration: Some(Duration::from_secs(300)),
            request_timeout: Duration::from_secs(10),
            max_recovery_codes: 10,
        }
    }
}

/// A user's state being changed by a rule; collects the events.
#[derive(Clone, Debug)]
pub struct Draft {
    pub user: UserRecord,
    pub totp: Option<TotpRecord>,
    totp_change: TotpChange,
    events: Vec<NewEvent>,
    /// When the rule runs.
    pub at: Timestamp,
    /// Who asks (the token's subject).
    pub creator: String,
}

impl Draft {
    /// The state of `snapshot` at `at`, as `creator` changes it. An automatic lock that has run
    /// out by then ends by itself, with a fresh count of attempts.
    pub fn new(snapshot: Snapshot, at: Timestamp, creator: String) -> Self {
        let mut user = snapshot.user;
        if user.state == UserState::Locked && !user.is_locked_at(at) {
            user.state = UserState::Active;
            user.locked_until = None;
            user.failed_attempts = 0;
        }
        Draft {
            user,
            totp: snapshot.totp,
            totp_change: TotpChange::Keep,
            events: Vec::new(),
            at,
            creator,
        }
    }

    /// A draft of a user not yet stored.
    pub fn of_new_user(user: UserRecord, at: Timestamp, creator: String) -> Self {
        Draft {
            user,
            totp: None,
            totp_change: TotpChange::Keep,
            events: Vec::new(),
            at,
            creator,
        }
    }

    pub fn append(&mut self, event_type: &'static str, payload: serde_json::Value) {
        self.events.push(NewEvent {
            event_type,
            payload,
        });
    }

    /// The events appended so far.
    pub fn events(&self) -> &[NewEvent] {
        &self.events
    }

    pub fn put_totp(&mut self, record: TotpRecord) {
        self.totp = Some(record.clone());
        self.totp_change = TotpChange::Put(record);
    }

    fn remove_totp(&mut self) {
        if self.totp.take().is_some() {
            self.totp_change = TotpChange::Delete;
        }
    }

    /// The changes to write, answered by `outcome`.
    pub fn finish(mut self, outcome: Outcome) -> Changes {
        if !self.events.is_empty() {
            self.user.sequence += self.events.len() as u64;
            self.user.change_date = self.at;
        }
        Changes {
            at: self.at,
            creator: self.creator,
            events: self.events,
            user: self.user,
            totp: self.totp_change,
            outcome,
        }
    }

    /// Whether the caller is the user itself, and the user is locked now.
    fn is_locked_self_service(&self) -> bool {
        self.creator == self.user.user_id && self.user.is_locked_at(self.at)
    }
}

/// The TOTP calls that take a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeUse {
    /// VerifyTOTPRegistration: the first code makes a pending factor ready.
    Verify,
    /// CheckTOTP: a login-time check of a ready factor.
    Check,
}

/// RegisterTOTP: a new pending secret (replacing a pending one), unless one is verified. A locked
/// user may not change its own second factor: a stolen session of a locked account must not swap
/// the factor that locked it (an administrator still may).
pub fn register(draft: &mut Draft, sealed: SealedSecret) -> Result<Outcome, Error> {
    may_set_a_factor(draft)?;
    draft.put_totp(TotpRecord {
        state: TotpState::Pending,
        secret: sealed,
        parameters: Parameters::ISSUED,
        last_used_step: None,
        created_at: draft.at,
    });
    draft.append(events::OTP_ADDED, json!({}));
    Ok(Outcome::Accept)
}

/// Whether a new factor may take the place of the user's: not over a ready one, and not by a
/// locked user itself (see [`register`]).
fn may_set_a_factor(draft: &Draft) -> Result<(), Error> {
    if draft.is_locked_self_service() {
        return Err(error::USER_LOCKED.into());
    }
    if draft
        .totp
        .as_ref()
        .is_some_and(|t| t.state == TotpState::Ready)
    {
        return Err(error::TOTP_ALREADY_SET_UP.into());
    }
    Ok(())
}

/// ImportTOTP: a credential from another system with its own parameters, ready at once (its user
/// has been using it) unless `pending` asks for a first code as RegisterTOTP's would. Like
/// [`register`], it replaces a pending factor and refuses over a ready one.
pub fn import(
    draft: &mut Draft,
    sealed: SealedSecret,
    parameters: Parameters,
    pending: bool,
) -> Result<Outcome, Error> {
    may_set_a_factor(draft)?;
    draft.put_totp(TotpRecord {
        state: if pending {
            TotpState::Pending
        } else {
            TotpState::Ready
        },
        secret: sealed,
        parameters,
        last_used_step: None,
        created_at: draft.at,
    });
    draft.append(
        events::OTP_ADDED,
        json!({
            "imported": true,
            "algorithm": parameters.algorithm.as_str(),
            "digits": parameters.digits,
            "period": parameters.period,
        }),
    );
    if !pending {
        draft.append(events::OTP_VERIFIED, json!({ "imported": true }));
    }
    Ok(Outcome::Accept)
}

/// VerifyTOTPRegistration and CheckTOTP, in ZITADEL's order: a factor exists and is in the state
/// the call needs, the user is not locked, the code matches a step of the window, and that step
/// was not used before. Every rejected code counts as a failed attempt (see [`record_failure`]).
pub fn use_code(
    draft: &mut Draft,
    code: &TotpCode,
    purpose: CodeUse,
    settings: &Settings,
    keys: &KeyRing,
) -> Result<Outcome, Error> {
    let Some(record) = draft.totp.clone() else {
        return Err(error::TOTP_NOT_REGISTERED.into());
    };
    match (purpose, record.state) {
        (CodeUse::Verify, TotpState::Ready) => return Err(error::TOTP_ALREADY_VERIFIED.into()),
        (CodeUse::Check, TotpState::Pending) => return Err(error::TOTP_NOT_READY.into()),
        _ => {}
    }
    if draft.user.is_locked_at(draft.at) {
        return Err(error::USER_LOCKED.into());
    }
    let secret = open_secret(keys, &draft.user.user_id, &record)?;
    let matched = totp::match_code(
        &secret,
        code.expose(),
        draft.at.unix_seconds(),
        record.parameters,
        record.last_used_step,
    );
    let step = match matched {
        CodeMatch::Fresh(step) => step,
        CodeMatch::NoMatch => {
            return Ok(record_failure(
                draft,
                "invalid code",
                error::INVALID_CODE,
                settings,
            ));
        }
        CodeMatch::AlreadyUsed => {
            return Ok(record_failure(
                draft,
                "code already used",
                error::CODE_ALREADY_USED,
                settings,
            ));
        }
    };
    draft.user.failed_attempts = 0;
    draft.put_totp(TotpRecord {
        state: TotpState::Ready,
        last_used_step: Some(step),
        ..record
    });
    let event = match purpose {
        CodeUse::Verify => events::OTP_VERIFIED,
        CodeUse::Check => events::OTP_CHECK_SUCCEEDED,
    };
    draft.append(event, json!({}));
    Ok(Outcome::Accept)
}

/// Counts a rejected code: appends `check.failed`, and locks the user at `max_attempts` (for the
/// lockout duration, or until UnlockUser).
fn record_failure(
    draft: &mut Draft,
    reason: &str,
    refusal: Rejection,
    settings: &Settings,
) -> Outcome {
    draft.append(events::OTP_CHECK_FAILED, json!({ "reason": reason }));
    draft.user.failed_attempts += 1;
    let limit = settings.max_attempts;
    if limit > 0 && draft.user.failed_attempts >= limit {
        draft.user.state = UserState::Locked;
        draft.user.failed_attempts = 0;
        draft.user.locked_until = settings.lockout_duration.map(|d| draft.at.plus(d));
        draft.append(
            events::USER_LOCKED,
            json!({ "reason": "too many failed attempts", "lockedUntilMicros": draft.user.locked_until.map(|t| t.0) }),
        );
    }
    Outcome::RecordAndRefuse(refusal)
}

/// RemoveTOTP: removes a pending or ready factor (a locked user not its own, see [`register`]).
pub fn remove(draft: &mut Draft) -> Result<Outcome, Error> {
    if draft.is_locked_self_service() {
        return Err(error::USER_LOCKED.into());
    }
    if draft.totp.is_none() {
        return Err(error::TOTP_NOT_FOUND_ON_REMOVE.into());
    }
    draft.remove_totp();
    draft.append(events::OTP_REMOVED, json!({}));
    Ok(Outcome::Accept)
}

/// GenerateRecoveryCodes: adds the hashes of new codes to the ones not used yet, as long as the
/// user then holds at most the configured maximum (a locked user not for itself, see [`register`]).
pub fn add_recovery_codes(
    draft: &mut Draft,
    hashes: &[CodeHash],
    settings: &Settings,
) -> Result<Outcome, Error> {
    if draft.is_locked_self_service() {
        return Err(error::USER_LOCKED.into());
    }
    let codes = &mut draft.user.recovery_codes;
    if codes.len() + hashes.len() > settings.max_recovery_codes as usize {
        return Err(error::TOO_MANY_RECOVERY_CODES.into());
    }
    codes.extend_from_slice(hashes);
    let count = hashes.len();
    draft.append(events::RECOVERY_CODES_ADDED, json!({ "count": count }));
    Ok(Outcome::Accept)
}

/// RemoveRecoveryCodes: drops every code not used yet (a locked user not its own).
pub fn remove_recovery_codes(draft: &mut Draft) -> Result<Outcome, Error> {
    if draft.is_locked_self_service() {
        return Err(error::USER_LOCKED.into());
    }
    if draft.user.recovery_codes.is_empty() {
        return Err(error::NO_RECOVERY_CODES.into());
    }
    draft.user.recovery_codes.clear();
    draft.append(events::RECOVERY_CODES_REMOVED, json!({}));
    Ok(Outcome::Accept)
}

/// CheckRecoveryCode, in CheckTOTP's order: the user has codes, is not locked, and the code is
/// one of them, which it uses up. A wrong code (`None`: not even shaped like one) is a failed
/// attempt exactly as a wrong TOTP code is (see [`record_failure`]).
pub fn use_recovery_code(
    draft: &mut Draft,
    candidate: Option<CodeHash>,
    settings: &Settings,
) -> Result<Outcome, Error> {
    if draft.user.recovery_codes.is_empty() {
        return Err(error::NO_RECOVERY_CODES.into());
    }
    if draft.user.is_locked_at(draft.at) {
        return Err(error::USER_LOCKED.into());
    }
    let found = candidate.and_then(|hash| recovery::find(&draft.user.recovery_codes, &hash));
    let Some(index) = found else {
        return Ok(record_failure(
            draft,
            "invalid recovery code",
            error::INVALID_CODE,
            settings,
        ));
    };
    draft.user.recovery_codes.remove(index);
    draft.user.failed_attempts = 0;
    let remaining = draft.user.recovery_codes.len();
    draft.append(
        events::RECOVERY_CODE_CHECK_SUCCEEDED,
        json!({ "remaining": remaining }),
    );
    Ok(Outcome::Accept)
}

/// DeleteUser: marks the user removed and drops its TOTP secret.
pub fn delete(draft: &mut Draft) -> Result<Outcome, Error> {
    draft.user.state = UserState::Deleted;
    draft.user.locked_until = None;
    draft.remove_totp();
    draft.append(events::USER_REMOVED, json!({}));
    Ok(Outcome::Accept)
}

/// LockUser: locks until UnlockUser.
pub fn lock(draft: &mut Draft) -> Result<Outcome, Error> {
    if draft.user.state == UserState::Locked {
        return Err(error::ALREADY_LOCKED.into());
    }
    draft.user.state = UserState::Locked;
    draft.user.locked_until = None;
    draft.append(
        events::USER_LOCKED,
        json!({ "reason": "locked by an administrator" }),
    );
    Ok(Outcome::Accept)
}

/// UnlockUser: ends a lock and clears the count of failed attempts.
pub fn unlock(draft: &mut Draft) -> Result<Outcome, Error> {
    if draft.user.state != UserState::Locked {
        return Err(error::NOT_LOCKED.into());
    }
    draft.user.state = UserState::Active;
    draft.user.locked_until = None;
    draft.user.failed_attempts = 0;
    draft.append(events::USER_UNLOCKED, json!({}));
    Ok(Outcome::Accept)
}

/// Re-seals the user's secret under the active key, or refuses with `NOTHING_TO_RESEAL` when it
/// has none or it is sealed under the active key already.
pub fn reseal(draft: &mut Draft, keys: &KeyRing) -> Result<Outcome, Error> {
    let record = draft
        .totp
        .clone()
        .filter(|record| record.secret.key_id != keys.active_key_id())
        .ok_or(Error::Rejected(error::NOTHING_TO_RESEAL))?;
    let secret = open_secret(keys, &draft.user.user_id, &record)?;
    let sealed = seal_secret(keys, &draft.user.user_id, &secret);
    draft.put_totp(TotpRecord {
        secret: sealed,
        ..record
    });
    Ok(Outcome::Accept)
}

/// Seals `secret` for `user_id` (bound to it: copied to another user, it does not open).
pub fn seal_secret(keys: &KeyRing, user_id: &str, secret: &Secret) -> SealedSecret {
    let sealed = keys.seal(secret.expose(), user_id.as_bytes(), &mut rand::thread_rng());
    SealedSecret {
        key_id: sealed.key_id,
        ciphertext: sealed.bytes,
    }
}

/// Opens the secret of `record`, sealed for `user_id`.
fn open_secret(keys: &KeyRing, user_id: &str, record: &TotpRecord) -> Result<Secret, Error> {
    let sealed = &record.secret;
    keys.open(&sealed.key_id, &sealed.ciphertext, user_id.as_bytes())
        .map(Secret::from_bytes)
        .map_err(|err| match err {
            CryptoError::UnknownKey(key_id) => {
                tracing::error!(
                    user_id,
                    key_id,
                    "TOTP secret sealed under a key that is not configured"
                );
                Error::Rejected(error::SECRET_KEY_UNAVAILABLE)
            }
            other => Error::Internal(format!(
                "opening the TOTP secret of user {user_id}: {other}"
            )),
        })
}

#[cfg(test)]
mod tests {
    //! The rules without a database or a server: a user's state in, changes (or a refusal) out.

    use std::time::Duration;

    use super::*;
    use crate::domain::totp::Algorithm;
    use crate::domain::types::Profile;

    /// The middle of a time step, so that the window is the step before and after it.
    const NOW: Timestamp = Timestamp(1_800_000_015_000_000);
    const USER: &str = "alice";

    struct Fixture {
        key_spec: String,
        keys: KeyRing,
        secret: Secret,
        settings: Settings,
    }

    impl Fixture {
        fn new() -> Self {
            let key_spec = KeyRing::generate_entry("k1", &mut rand::thread_rng());
            Fixture {
                keys: KeyRing::parse(&key_spec).unwrap(),
                key_spec,
                secret: Secret::generate(),
                settings: Settings {
                    max_attempts: 3,
                    lockout_duration: Some(Duration::from_secs(300)),
                    ..Settings::default()
                },
            }
        }

        /// Alice with a factor in `state` (none for `None`), as of `NOW`.
        fn snapshot(&self, state: Option<TotpState>) -> Snapshot {
            let user = UserRecord {
                user_id: USER.into(),
                resource_owner: "acme".into(),
                username: "alice".into(),
                email: "alice@example.com".into(),
                email_verified: true,
                profile: Profile::default(),
                state: UserState::Active,
                sequence: 2,
                created_at: Timestamp(0),
                change_date: Timestamp(0),
                failed_attempts: 0,
                locked_until: None,
                recovery_codes: Vec::new(),
                version: 7,
            };
            let totp = state.map(|state| TotpRecord {
                state,
                secret: seal_secret(&self.keys, USER, &self.secret),
                parameters: Parameters::ISSUED,
                last_used_step: None,
                created_at: Timestamp(0),
            });
            Snapshot { user, totp }
        }

        /// The code of the step `offset` steps from `NOW`'s.
        fn code(&self, offset: i64) -> TotpCode {
            let step = totp::step_at(NOW.unix_seconds(), totp::PERIOD) + offset;
            let code = totp::code_for_step(&self.secret, step, totp::DIGITS, Algorithm::Sha1);
            TotpCode::parse(&code, "CheckTOTPRequest").unwrap()
        }

        fn wrong_code(&self) -> TotpCode {
            let right = self.code(0);
            let wrong = if right.expose() == "000000" {
                "111111"
            } else {
                "000000"
            };
            TotpCode::parse(wrong, "CheckTOTPRequest").unwrap()
        }

        fn check(&self, draft: &mut Draft, code: &TotpCode) -> Result<Outcome, Error> {
            use_code(draft, code, CodeUse::Check, &self.settings, &self.keys)
        }
    }

    fn draft(snapshot: Snapshot) -> Draft {
        Draft::new(snapshot, NOW, "admin".into())
    }

    fn event_types(changes: &Changes) -> Vec<&'static str> {
        changes.events.iter().map(|e| e.event_type).collect()
    }

    #[test]
    fn a_ready_factor_accepts_its_current_code_once_and_records_the_step() {
        let f = Fixture::new();
        let mut alice = draft(f.snapshot(Some(TotpState::Ready)));
        assert_eq!(f.check(&mut alice, &f.code(0)), Ok(Outcome::Accept));
        let changes = alice.finish(Outcome::Accept);
        assert_eq!(event_types(&changes), [events::OTP_CHECK_SUCCEEDED]);
        assert_eq!(changes.user.sequence, 3);
        let TotpChange::Put(after) = &changes.totp else {
            panic!("the used step is written: {:?}", changes.totp)
        };
        let step = totp::step_at(NOW.unix_seconds(), totp::PERIOD);
        assert_eq!(after.last_used_step, Some(step));

        let mut again = draft(Snapshot {
            user: changes.user.clone(),
            totp: Some(after.clone()),
        });
        assert_eq!(
            f.check(&mut again, &f.code(0)),
            Ok(Outcome::RecordAndRefuse(error::CODE_ALREADY_USED)),
            "a step is accepted once"
        );
        assert_eq!(
            again.user.failed_attempts, 1,
            "a reused step counts as a failure"
        );
    }

    #[test]
    fn the_window_is_the_previous_current_and_next_step() {
        let f = Fixture::new();
        for (offset, accepted) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let mut alice = draft(f.snapshot(Some(TotpState::Ready)));
            let outcome = f.check(&mut alice, &f.code(offset)).unwrap();
            let expected = if accepted {
                Outcome::Accept
            } else {
                Outcome::RecordAndRefuse(error::INVALID_CODE)
            };
            assert_eq!(outcome, expected, "step offset {offset}");
        }
    }

    #[test]
    fn a_step_older_than_the_last_accepted_one_is_refused() {
        let f = Fixture::new();
        let mut snapshot = f.snapshot(Some(TotpState::Ready));
        let now_step = totp::step_at(NOW.unix_seconds(), totp::PERIOD);
        snapshot.totp.as_mut().unwrap().last_used_step = Some(now_step);
        let mut alice = draft(snapshot);
        assert_eq!(
            f.check(&mut alice, &f.code(-1)),
            Ok(Outcome::RecordAndRefuse(error::CODE_ALREADY_USED))
        );
    }

    #[test]
    fn the_lockout_comes_at_exactly_max_attempts() {
        let f = Fixture::new();
        let mut snapshot = f.snapshot(Some(TotpState::Ready));
        for attempt in 1..=f.settings.max_attempts {
            let mut alice = draft(snapshot.clone());
            let outcome = f.check(&mut alice, &f.wrong_code()).unwrap();
            assert_eq!(outcome, Outcome::RecordAndRefuse(error::INVALID_CODE));
            let changes = alice.finish(outcome);
            let locked = attempt == f.settings.max_attempts;
            assert_eq!(
                changes.user.state == UserState::Locked,
                locked,
                "attempt {attempt}"
            );
            let expected: &[&str] = if locked {
                &[events::OTP_CHECK_FAILED, events::USER_LOCKED]
            } else {
                &[events::OTP_CHECK_FAILED]
            };
            assert_eq!(event_types(&changes), expected, "attempt {attempt}");
            if locked {
                assert_eq!(
                    changes.user.locked_until,
                    Some(NOW.plus(Duration::from_secs(300)))
                );
                assert_eq!(changes.user.failed_attempts, 0);
            }
            snapshot.user = changes.user;
        }
    }

    #[test]
    fn a_locked_user_gets_no_code_evaluated_and_nothing_appended() {
        let f = Fixture::new();
        let mut snapshot = f.snapshot(Some(TotpState::Ready));
        snapshot.user.state = UserState::Locked;
        snapshot.user.locked_until = Some(NOW.plus(Duration::from_secs(60)));
        let mut alice = draft(snapshot);
        assert_eq!(
            f.check(&mut alice, &f.code(0)),
            Err(error::USER_LOCKED.into())
        );
        assert!(alice.events().is_empty());
    }

    #[test]
    fn an_expired_lockout_ends_by_itself_with_a_fresh_count() {
        let f = Fixture::new();
        let mut snapshot = f.snapshot(Some(TotpState::Ready));
        snapshot.user.state = UserState::Locked;
        snapshot.user.failed_attempts = 2;
        snapshot.user.locked_until = Some(Timestamp(NOW.0 - 1));
        let mut alice = draft(snapshot);
        assert_eq!(alice.user.state, UserState::Active);
        assert_eq!(alice.user.failed_attempts, 0);
        assert_eq!(f.check(&mut alice, &f.code(0)), Ok(Outcome::Accept));
    }

    #[test]
    fn verify_needs_a_pending_factor_and_check_a_ready_one() {
        let f = Fixture::new();
        let verify = |snapshot: Snapshot, code: &TotpCode| {
            use_code(
                &mut draft(snapshot),
                code,
                CodeUse::Verify,
                &f.settings,
                &f.keys,
            )
        };
        assert_eq!(
            verify(f.snapshot(Some(TotpState::Pending)), &f.code(0)),
            Ok(Outcome::Accept)
        );
        assert_eq!(
            verify(f.snapshot(Some(TotpState::Ready)), &f.code(0)),
            Err(error::TOTP_ALREADY_VERIFIED.into())
        );
        assert_eq!(
            verify(f.snapshot(None), &f.code(0)),
            Err(error::TOTP_NOT_REGISTERED.into())
        );
        let mut pending = draft(f.snapshot(Some(TotpState::Pending)));
        assert_eq!(
            f.check(&mut pending, &f.code(0)),
            Err(error::TOTP_NOT_READY.into())
        );
    }

    #[test]
    fn register_replaces_a_pending_secret_but_not_a_ready_one() {
        let f = Fixture::new();
        let sealed = seal_secret(&f.keys, USER, &Secret::generate());
        let mut pending = draft(f.snapshot(Some(TotpState::Pending)));
        assert_eq!(register(&mut pending, sealed.clone()), Ok(Outcome::Accept));
        assert_eq!(pending.totp.as_ref().unwrap().secret, sealed);
        let mut ready = draft(f.snapshot(Some(TotpState::Ready)));
        assert_eq!(
            register(&mut ready, sealed),
            Err(error::TOTP_ALREADY_SET_UP.into())
        );
    }

    #[test]
    fn an_import_is_ready_at_once_and_its_codes_follow_its_parameters() {
        let f = Fixture::new();
        let parameters = Parameters {
            algorithm: Algorithm::Sha512,
            digits: 8,
            period: 60,
        };
        let sealed = seal_secret(&f.keys, USER, &f.secret);
        let mut alice = draft(f.snapshot(None));
        assert_eq!(
            import(&mut alice, sealed, parameters, false),
            Ok(Outcome::Accept)
        );
        assert_eq!(alice.totp.as_ref().unwrap().state, TotpState::Ready);
        let changes = alice.finish(Outcome::Accept);
        assert_eq!(
            event_types(&changes),
            [events::OTP_ADDED, events::OTP_VERIFIED]
        );
        let TotpChange::Put(imported) = &changes.totp else {
            panic!("the factor is written: {:?}", changes.totp)
        };
        assert_eq!(imported.parameters, parameters);

        let mut later = draft(Snapshot {
            user: changes.user.clone(),
            totp: Some(imported.clone()),
        });
        let step = totp::step_at(NOW.unix_seconds(), 60);
        let code = totp::code_for_step(&f.secret, step, 8, Algorithm::Sha512);
        let code = TotpCode::parse(&code, "CheckTOTPRequest").unwrap();
        assert_eq!(f.check(&mut later, &code), Ok(Outcome::Accept));
        assert_eq!(later.totp.as_ref().unwrap().last_used_step, Some(step));
        let mut with_issued_parameters = draft(Snapshot {
            user: changes.user.clone(),
            totp: Some(imported.clone()),
        });
        assert_eq!(
            f.check(&mut with_issued_parameters, &f.code(0)),
            Ok(Outcome::RecordAndRefuse(error::INVALID_CODE)),
            "a six-digit SHA-1 code of 30-second steps is not this credential's"
        );
    }

    #[test]
    fn a_pending_import_waits_for_its_first_code_and_replaces_only_a_pending_factor() {
        let f = Fixture::new();
        let sealed = seal_secret(&f.keys, USER, &f.secret);
        let mut pending = draft(f.snapshot(Some(TotpState::Pending)));
        assert_eq!(
            import(&mut pending, sealed.clone(), Parameters::ISSUED, true),
            Ok(Outcome::Accept)
        );
        assert_eq!(pending.totp.as_ref().unwrap().state, TotpState::Pending);
        assert_eq!(
            event_types(&pending.finish(Outcome::Accept)),
            [events::OTP_ADDED]
        );
        let mut ready = draft(f.snapshot(Some(TotpState::Ready)));
        assert_eq!(
            import(&mut ready, sealed, Parameters::ISSUED, false),
            Err(error::TOTP_ALREADY_SET_UP.into())
        );
    }

    #[test]
    fn a_locked_user_cannot_swap_its_own_factor_but_an_administrator_can() {
        let f = Fixture::new();
        let mut snapshot = f.snapshot(Some(TotpState::Ready));
        snapshot.user.state = UserState::Locked;
        let itself = || Draft::new(snapshot.clone(), NOW, USER.into());
        assert_eq!(remove(&mut itself()), Err(error::USER_LOCKED.into()));
        let sealed = seal_secret(&f.keys, USER, &f.secret);
        assert_eq!(
            register(&mut itself(), sealed.clone()),
            Err(error::USER_LOCKED.into())
        );
        assert_eq!(
            import(&mut itself(), sealed, Parameters::ISSUED, false),
            Err(error::USER_LOCKED.into())
        );
        assert_eq!(remove(&mut draft(snapshot.clone())), Ok(Outcome::Accept));
    }

    #[test]
    fn recovery_codes_are_added_up_to_the_maximum_and_each_is_used_once() {
        let f = Fixture::new();
        let codes: Vec<recovery::RecoveryCode> =
            (0..3).map(|_| recovery::RecoveryCode::generate()).collect();
        let hash = |code: &str| recovery::hash(USER, code);
        let hashes: Vec<CodeHash> = codes.iter().map(|c| hash(c.expose()).unwrap()).collect();
        let settings = Settings {
            max_recovery_codes: 4,
            ..f.settings.clone()
        };
        let mut alice = draft(f.snapshot(None));
        assert_eq!(
            add_recovery_codes(&mut alice, &hashes, &settings),
            Ok(Outcome::Accept)
        );
        assert_eq!(
            add_recovery_codes(&mut alice, &hashes[..2], &settings),
            Err(error::TOO_MANY_RECOVERY_CODES.into()),
            "3 unused + 2 > 4"
        );
        assert_eq!(alice.user.recovery_codes.len(), 3);

        let first = hash(codes[0].expose());
        assert_eq!(
            use_recovery_code(&mut alice, first, &settings),
            Ok(Outcome::Accept)
        );
        assert_eq!(alice.user.recovery_codes.len(), 2);
        assert_eq!(
            use_recovery_code(&mut alice, first, &settings),
            Ok(Outcome::RecordAndRefuse(error::INVALID_CODE)),
            "used up"
        );
        assert_eq!(
            use_recovery_code(&mut alice, None, &settings),
            Ok(Outcome::RecordAndRefuse(error::INVALID_CODE)),
            "not shaped like a code"
        );
        assert_eq!(alice.user.failed_attempts, 2);
        let changes = alice.finish(Outcome::Accept);
        assert_eq!(
            event_types(&changes),
            [
                events::RECOVERY_CODES_ADDED,
                events::RECOVERY_CODE_CHECK_SUCCEEDED,
                events::OTP_CHECK_FAILED,
                events::OTP_CHECK_FAILED,
            ],
            "a wrong recovery code appends the failure event of a wrong TOTP code"
        );

        let mut emptied = draft(Snapshot {
            user: changes.user,
            totp: None,
        });
        assert_eq!(remove_recovery_codes(&mut emptied), Ok(Outcome::Accept));
        assert_eq!(
            use_recovery_code(&mut emptied, hash(codes[1].expose()), &settings),
            Err(error::NO_RECOVERY_CODES.into())
        );
    }

    #[test]
    fn lock_and_unlock_refuse_what_is_already_so() {
        let f = Fixture::new();
        let mut alice = draft(f.snapshot(None));
        assert_eq!(unlock(&mut alice), Err(error::NOT_LOCKED.into()));
        assert_eq!(lock(&mut alice), Ok(Outcome::Accept));
        assert_eq!(lock(&mut alice), Err(error::ALREADY_LOCKED.into()));
        assert_eq!(unlock(&mut alice), Ok(Outcome::Accept));
    }

    #[test]
    fn reseal_moves_a_secret_to_the_active_key_and_refuses_when_there_is_nothing_to_do() {
        let f = Fixture::new();
        let mut alice = draft(f.snapshot(Some(TotpState::Ready)));
        assert_eq!(
            reseal(&mut alice, &f.keys),
            Err(Error::Rejected(error::NOTHING_TO_RESEAL)),
            "already under the active key"
        );
        let new_key = KeyRing::generate_entry("k2", &mut rand::thread_rng());
        let new_only = KeyRing::parse(&new_key).unwrap();
        assert_eq!(
            reseal(&mut alice, &new_only),
            Err(Error::Rejected(error::SECRET_KEY_UNAVAILABLE)),
            "the old key is gone"
        );
        // A ring whose first key is new and which still holds the old one moves the secret.
        let rotated = KeyRing::parse(&format!("{new_key},{}", f.key_spec)).unwrap();
        assert_eq!(reseal(&mut alice, &rotated), Ok(Outcome::Accept));
        let moved = alice.totp.clone().unwrap();
        assert_eq!(moved.secret.key_id, "k2");
        let mut later = draft(Snapshot {
            user: alice.user.clone(),
            totp: Some(moved),
        });
        let check = use_code(
            &mut later,
            &f.code(0),
            CodeUse::Check,
            &f.settings,
            &new_only,
        );
        assert_eq!(check, Ok(Outcome::Accept), "the new key alone opens it");
    }
}
