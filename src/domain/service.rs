//! One function per RPC. Each validates nothing itself (the types did), checks access, and hands
//! the store a decision on the user's state, which the store writes only if that state is still
//! current (see [`super::store::Store::update`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;

use crate::crypto::{CryptoError, KeyRing};

use super::authz::Access;
use super::clock::{Clock, Timestamp};
use super::error::{self, Error, Rejection};
use super::outage::OutageLog;
use super::store::{Changes, Committed, ConnectionStats, NewEvent, Snapshot, Store, TotpChange};
use super::totp::{self, CodeMatch, Secret};
use super::types::{
    Caller, Details, Permission, Profile, TotpRecord, TotpState, UserId, UserRecord, UserState,
};

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
}

const ALREADY_LOCKED: Rejection = Rejection {
    code: error::Code::FailedPrecondition,
    id: "COMMAND-3NN8v",
    message: "User is already locked",
};
const TOO_SLOW: Rejection = Rejection {
    code: error::Code::DeadlineExceeded,
    id: "COMMAND-t1me0",
    message: "The request took too long",
};
/// Internal to `rekey`: the secret is gone or already under the active key (never sent).
const NOTHING_TO_RESEAL: Rejection = Rejection {
    code: error::Code::FailedPrecondition,
    id: "REKEY-n0th1",
    message: "Nothing to re-seal",
};
const NOT_LOCKED: Rejection = Rejection {
    code: error::Code::FailedPrecondition,
    id: "COMMAND-4M0ds",
    message: "User is not locked",
};

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            otp_issuer: "totp-service".to_owned(),
            max_attempts: 5,
            lockout_duration: Some(Duration::from_secs(300)),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What RegisterTOTP hands back: the details, and the secret for the user's app.
#[derive(Clone, Debug)]
pub struct Registration {
    pub details: Details,
    pub uri: String,
    pub secret: Secret,
}

/// A new human user, validated by the transport.
#[derive(Clone, Debug)]
pub struct NewHuman {
    pub user_id: Option<UserId>,
    pub username: Option<String>,
    /// The organisation named in the request, if any.
    pub org_id: Option<String>,
    pub profile: Profile,
    pub email: String,
    pub email_verified: bool,
    /// An existing secret to import as a ready TOTP.
    pub totp_secret: Option<Secret>,
}

/// A user as GetUserByID shows it.
#[derive(Clone, Debug)]
pub struct UserView {
    pub user: UserRecord,
    /// Whether the user is locked right now.
    pub locked: bool,
    pub details: Details,
}

/// A user's authentication methods, as ListAuthenticationMethodTypes shows them.
#[derive(Clone, Debug)]
pub struct AuthMethods {
    pub totp_ready: bool,
    pub processed_sequence: u64,
    pub timestamp: Timestamp,
}

/// The application service: one method per RPC.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<KeyRing>,
    settings: Arc<Settings>,
    outages: Arc<OutageLog>,
}

/// A user's state being changed by a command; collects the events.
struct Draft {
    user: UserRecord,
    totp: Option<TotpRecord>,
    totp_change: TotpChange,
    events: Vec<NewEvent>,
    at: Timestamp,
    creator: String,
}

impl Draft {
    fn new(snapshot: Snapshot, at: Timestamp, creator: String) -> Self {
        let mut user = snapshot.user;
        // An automatic lock that has run out ends by itself, with a fresh count of attempts.
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

    fn append(&mut self, event_type: &'static str, payload: serde_json::Value) {
        self.events.push(NewEvent {
            event_type,
            payload,
        });
    }

    /// A locked user may not change its own second factor: a stolen session of a locked
    /// account must not swap the factor that locked it. (An administrator still may.)
    fn refuse_locked_self_service(&self) -> Result<(), Error> {
        if self.creator == self.user.user_id && self.user.is_locked_at(self.at) {
            Err(error::USER_LOCKED.into())
        } else {
            Ok(())
        }
    }

    fn put_totp(&mut self, record: TotpRecord) {
        self.totp = Some(record.clone());
        self.totp_change = TotpChange::Put(record);
    }

    fn finish(self) -> Changes {
        self.finish_then(None)
    }

    /// Commits the events, then answers with `error` (a recorded failure).
    fn finish_failing(self, error: Rejection) -> Changes {
        self.finish_then(Some(error.into()))
    }

    fn finish_then(mut self, then_fail: Option<Error>) -> Changes {
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
            then_fail,
        }
    }
}

/// The TOTP calls that take a code.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CodeUse {
    Verify,
    Check,
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: KeyRing,
        settings: Settings,
    ) -> Self {
        Service {
            store,
            clock,
            keys: Arc::new(keys),
            settings: Arc::new(settings),
            outages: Arc::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Closes the database connections (at shutdown).
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Database connections in use and idle (for `/metrics`).
    pub fn connection_stats(&self) -> ConnectionStats {
        self.store.connection_stats()
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ready(&self) -> Result<(), Error> {
        self.bounded(|store| async move { store.ping().await })
            .await
    }

    /// Waits for storage work at most the request timeout.
    ///
    /// Giving up does not cut the work short: the store finishes what it started (see
    /// [`Store`]), so, as gRPC's DEADLINE_EXCEEDED says, the command may or may not have taken
    /// effect, and either way it is whole.
    async fn bounded<T, Work>(&self, work: impl FnOnce(Arc<dyn Store>) -> Work) -> Result<T, Error>
    where
        Work: Future<Output = Result<T, Error>>,
    {
        let outcome = tokio::time::timeout(self.settings.request_timeout, work(self.store.clone()))
            .await
            .unwrap_or_else(|_| Err(TOO_SLOW.into()));
        self.outages.note(&outcome);
        outcome
    }

    /// Runs `decide` on an existing user's state, after the access checks, and writes the outcome.
    async fn change_user(
        &self,
        caller: &Caller,
        user_id: &UserId,
        access: Access,
        decide: impl Fn(&mut Draft, &Service) -> Result<Option<Rejection>, Error>
        + Send
        + Sync
        + 'static,
    ) -> Result<Committed, Error> {
        access.precheck(caller, user_id.as_str())?;
        let at = self.clock.now();
        let caller = caller.clone();
        let service = self.clone();
        let decision = Box::new(move |snapshot: Option<Snapshot>| {
            let snapshot = existing(snapshot)?;
            access.check(
                &caller,
                &snapshot.user.user_id,
                &snapshot.user.resource_owner,
            )?;
            let mut draft = Draft::new(snapshot, at, caller.subject.clone());
            match decide(&mut draft, &service)? {
                None => Ok(draft.finish()),
                Some(refusal) => Ok(draft.finish_failing(refusal)),
            }
        });
        let user_id = user_id.as_str().to_owned();
        self.bounded(move |store| async move { store.update(&user_id, decision).await })
            .await
    }

    /// RegisterTOTP: a new pending secret (replacing a pending one), unless one is verified.
    pub async fn register_totp(
        &self,
        caller: &Caller,
        user_id: &UserId,
    ) -> Result<Registration, Error> {
        let secret = Secret::generate(&mut rand::thread_rng());
        let sealed = self
            .keys
            .seal(user_id.as_str(), &secret, &mut rand::thread_rng());
        let committed = self
            .change_user(
                caller,
                user_id,
                Access::self_or(Permission::UserCredentialWrite),
                move |draft, _| {
                    draft.refuse_locked_self_service()?;
                    if draft
                        .totp
                        .as_ref()
                        .is_some_and(|t| t.state == TotpState::Ready)
                    {
                        return Err(error::TOTP_ALREADY_SET_UP.into());
                    }
                    draft.put_totp(TotpRecord {
                        state: TotpState::Pending,
                        secret: sealed.clone(),
                        digits: totp::DIGITS,
                        period: totp::PERIOD,
                        last_used_step: None,
                        created_at: draft.at,
                    });
                    draft.append(events::OTP_ADDED, json!({}));
                    Ok(None)
                },
            )
            .await?;
        let account = if committed.user.username.is_empty() {
            &committed.user.email
        } else {
            &committed.user.username
        };
        Ok(Registration {
            uri: totp::otpauth_uri(&self.settings.otp_issuer, account, &secret),
            secret,
            details: committed.details,
        })
    }

    /// VerifyTOTPRegistration: the first code makes a pending TOTP ready.
    pub async fn verify_totp_registration(
        &self,
        caller: &Caller,
        user_id: &UserId,
        code: &super::types::TotpCode,
    ) -> Result<Details, Error> {
        self.use_code(caller, user_id, code, CodeUse::Verify).await
    }

    /// CheckTOTP: a login-time check of a ready TOTP.
    pub async fn check_totp(
        &self,
        caller: &Caller,
        user_id: &UserId,
        code: &super::types::TotpCode,
    ) -> Result<Details, Error> {
        self.use_code(caller, user_id, code, CodeUse::Check).await
    }

    async fn use_code(
        &self,
        caller: &Caller,
        user_id: &UserId,
        code: &super::types::TotpCode,
        purpose: CodeUse,
    ) -> Result<Details, Error> {
        let access = match purpose {
            CodeUse::Verify => Access::self_or(Permission::UserCredentialWrite),
            CodeUse::Check => Access::self_or(Permission::SessionWrite),
        };
        let code = code.clone();
        let committed = self
            .change_user(caller, user_id, access, move |draft, service| {
                let Some(record) = draft.totp.clone() else {
                    return Err(error::TOTP_NOT_REGISTERED.into());
                };
                match (purpose, record.state) {
                    (CodeUse::Verify, TotpState::Ready) => {
                        return Err(error::TOTP_ALREADY_VERIFIED.into());
                    }
                    (CodeUse::Check, TotpState::Pending) => {
                        return Err(error::TOTP_NOT_READY.into());
                    }
                    _ => {}
                }
                if draft.user.is_locked_at(draft.at) {
                    return Err(error::USER_LOCKED.into());
                }
                let secret = service.open_secret(&draft.user.user_id, &record)?;
                let matched = totp::match_code(
                    &secret,
                    code.expose(),
                    draft.at.unix_seconds(),
                    record.digits,
                    record.period,
                    record.last_used_step,
                );
                let step = match matched {
                    CodeMatch::Fresh(step) => step,
                    CodeMatch::NoMatch => {
                        return Ok(Some(service.record_failure(
                            draft,
                            "invalid code",
                            error::INVALID_CODE,
                        )));
                    }
                    CodeMatch::AlreadyUsed => {
                        return Ok(Some(service.record_failure(
                            draft,
                            "code already used",
                            error::CODE_ALREADY_USED,
                        )));
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
                Ok(None)
            })
            .await?;
        Ok(committed.details)
    }

    fn open_secret(&self, user_id: &str, record: &TotpRecord) -> Result<Secret, Error> {
        self.keys
            .open(user_id, &record.secret)
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

    /// Counts a rejected code: appends `check.failed`, and locks the user at `max_attempts`.
    fn record_failure(&self, draft: &mut Draft, reason: &str, refusal: Rejection) -> Rejection {
        draft.append(events::OTP_CHECK_FAILED, json!({ "reason": reason }));
        draft.user.failed_attempts += 1;
        let limit = self.settings.max_attempts;
        if limit > 0 && draft.user.failed_attempts >= limit {
            draft.user.state = UserState::Locked;
            draft.user.failed_attempts = 0;
            draft.user.locked_until = self.settings.lockout_duration.map(|d| draft.at.plus(d));
            draft.append(
                events::USER_LOCKED,
                json!({ "reason": "too many failed attempts", "lockedUntilMicros": draft.user.locked_until.map(|t| t.0) }),
            );
        }
        refusal
    }

    /// RemoveTOTP: removes a pending or ready TOTP.
    pub async fn remove_totp(&self, caller: &Caller, user_id: &UserId) -> Result<Details, Error> {
        let committed = self
            .change_user(
                caller,
                user_id,
                Access::self_or(Permission::UserWrite),
                |draft, _| {
                    draft.refuse_locked_self_service()?;
                    if draft.totp.is_none() {
                        return Err(error::TOTP_NOT_FOUND_ON_REMOVE.into());
                    }
                    draft.totp = None;
                    draft.totp_change = TotpChange::Delete;
                    draft.append(events::OTP_REMOVED, json!({}));
                    Ok(None)
                },
            )
            .await?;
        Ok(committed.details)
    }

    /// DeleteUser: marks the user removed and drops its TOTP secret.
    pub async fn delete_user(&self, caller: &Caller, user_id: &UserId) -> Result<Details, Error> {
        let committed = self
            .change_user(
                caller,
                user_id,
                Access::only(Permission::UserWrite),
                |draft, _| {
                    draft.user.state = UserState::Deleted;
                    draft.user.locked_until = None;
                    if draft.totp.take().is_some() {
                        draft.totp_change = TotpChange::Delete;
                    }
                    draft.append(events::USER_REMOVED, json!({}));
                    Ok(None)
                },
            )
            .await?;
        Ok(committed.details)
    }

    /// LockUser: locks until UnlockUser.
    pub async fn lock_user(&self, caller: &Caller, user_id: &UserId) -> Result<Details, Error> {
        let committed = self
            .change_user(
                caller,
                user_id,
                Access::only(Permission::UserWrite),
                |draft, _| {
                    if draft.user.state == UserState::Locked {
                        return Err(ALREADY_LOCKED.into());
                    }
                    draft.user.state = UserState::Locked;
                    draft.user.locked_until = None;
                    draft.append(
                        events::USER_LOCKED,
                        json!({ "reason": "locked by an administrator" }),
                    );
                    Ok(None)
                },
            )
            .await?;
        Ok(committed.details)
    }

    /// UnlockUser: ends a lock and clears the count of failed attempts.
    pub async fn unlock_user(&self, caller: &Caller, user_id: &UserId) -> Result<Details, Error> {
        let committed = self
            .change_user(
                caller,
                user_id,
                Access::only(Permission::UserWrite),
                |draft, _| {
                    if draft.user.state != UserState::Locked {
                        return Err(NOT_LOCKED.into());
                    }
                    draft.user.state = UserState::Active;
                    draft.user.locked_until = None;
                    draft.user.failed_attempts = 0;
                    draft.append(events::USER_UNLOCKED, json!({}));
                    Ok(None)
                },
            )
            .await?;
        Ok(committed.details)
    }

    /// AddHumanUser: creates an active user, optionally with an imported, ready TOTP.
    pub async fn add_human_user(
        &self,
        caller: &Caller,
        new: NewHuman,
    ) -> Result<(String, Details), Error> {
        let org = new
            .org_id
            .clone()
            .or_else(|| caller.resource_owner.clone())
            .ok_or(Error::Rejected(error::ORG_MISSING))?;
        super::types::check_text(&org, "Organization", "OrgId")?;
        // Nobody is "the user itself" of a user not yet made: the permission is needed.
        Access::only(Permission::UserWrite).check(caller, "", &org)?;

        let user_id = match new.user_id {
            Some(id) => id.as_str().to_owned(),
            None => generate_user_id(),
        };
        let at = self.clock.now();
        let username = new.username.unwrap_or_else(|| new.email.clone());
        let user = UserRecord {
            user_id: user_id.clone(),
            resource_owner: org.clone(),
            username: username.clone(),
            email: new.email,
            email_verified: new.email_verified,
            profile: new.profile,
            state: UserState::Active,
            sequence: 0,
            created_at: at,
            change_date: at,
            failed_attempts: 0,
            locked_until: None,
            version: 0,
        };
        let mut draft = Draft {
            user,
            totp: None,
            totp_change: TotpChange::Keep,
            events: Vec::new(),
            at,
            creator: caller.subject.clone(),
        };
        draft.append(
            events::USER_ADDED,
            json!({ "username": username, "resourceOwner": org }),
        );
        if let Some(secret) = new.totp_secret {
            let sealed = self.keys.seal(&user_id, &secret, &mut rand::thread_rng());
            draft.put_totp(TotpRecord {
                state: TotpState::Ready,
                secret: sealed,
                digits: totp::DIGITS,
                period: totp::PERIOD,
                last_used_step: None,
                created_at: at,
            });
            draft.append(events::OTP_ADDED, json!({ "imported": true }));
            draft.append(events::OTP_VERIFIED, json!({ "imported": true }));
        }
        let changes = draft.finish();
        let committed = self
            .bounded(move |store| async move { store.insert_user(changes).await })
            .await?;
        Ok((user_id, committed.details))
    }

    /// Reads an existing user after the access checks.
    async fn read_user(
        &self,
        caller: &Caller,
        user_id: &UserId,
        access: Access,
    ) -> Result<Snapshot, Error> {
        access.precheck(caller, user_id.as_str())?;
        let id = user_id.as_str().to_owned();
        let snapshot = existing(
            self.bounded(move |store| async move { store.load(&id).await })
                .await?,
        )?;
        access.check(
            caller,
            &snapshot.user.user_id,
            &snapshot.user.resource_owner,
        )?;
        Ok(snapshot)
    }

    /// GetUserByID.
    pub async fn get_user(&self, caller: &Caller, user_id: &UserId) -> Result<UserView, Error> {
        let snapshot = self
            .read_user(caller, user_id, Access::self_or(Permission::UserRead))
            .await?;
        let user = snapshot.user;
        Ok(UserView {
            locked: user.is_locked_at(self.clock.now()),
            details: user.details(),
            user,
        })
    }

    /// ListAuthenticationMethodTypes.
    pub async fn list_authentication_methods(
        &self,
        caller: &Caller,
        user_id: &UserId,
    ) -> Result<AuthMethods, Error> {
        let snapshot = self
            .read_user(caller, user_id, Access::self_or(Permission::UserRead))
            .await?;
        Ok(AuthMethods {
            totp_ready: snapshot.totp.is_some_and(|t| t.state == TotpState::Ready),
            processed_sequence: snapshot.user.sequence,
            timestamp: snapshot.user.change_date,
        })
    }
}

/// What `rekey` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// Secrets now sealed under the active key.
    pub resealed: u64,
    /// Secrets that could not be opened (their key is not configured, or they are damaged).
    pub failed: u64,
}

impl Service {
    /// Re-seals every TOTP secret not yet under the active key, one transaction per user, so it
    /// may run beside the service, be interrupted, and be run again (it only touches rows with
    /// another key id). A secret that does not open is counted, logged and left as it is.
    pub async fn rekey(&self) -> Result<RekeyReport, Error> {
        const BATCH: u32 = 200;
        let active = self.keys.active_key_id().to_owned();
        let mut report = RekeyReport::default();
        let mut after = String::new();
        loop {
            let batch = self
                .store
                .totp_sealed_with_other_key(&active, &after, BATCH)
                .await?;
            let Some(last) = batch.last() else {
                return Ok(report);
            };
            after = last.clone();
            for user_id in batch {
                match self.reseal(&user_id).await {
                    Ok(()) => report.resealed += 1,
                    // Changed since it was listed (removed, or sealed anew): nothing to do.
                    Err(Error::Rejected(NOTHING_TO_RESEAL)) => {}
                    Err(err) => {
                        tracing::warn!(user_id, error = %err, "could not re-seal a TOTP secret");
                        report.failed += 1;
                    }
                }
            }
        }
    }

    /// Re-seals one user's secret under the active key, or refuses with [`NOTHING_TO_RESEAL`].
    async fn reseal(&self, user_id: &str) -> Result<(), Error> {
        let service = self.clone();
        let at = self.clock.now();
        let decision = Box::new(move |snapshot: Option<Snapshot>| {
            let snapshot = snapshot.ok_or(Error::Rejected(NOTHING_TO_RESEAL))?;
            let mut draft = Draft::new(snapshot, at, "rekey".to_owned());
            let record = draft
                .totp
                .clone()
                .filter(|record| record.secret.key_id != service.keys.active_key_id())
                .ok_or(Error::Rejected(NOTHING_TO_RESEAL))?;
            let secret = service.open_secret(&draft.user.user_id, &record)?;
            let sealed = service
                .keys
                .seal(&draft.user.user_id, &secret, &mut rand::thread_rng());
            draft.put_totp(TotpRecord {
                secret: sealed,
                ..record
            });
            Ok(draft.finish())
        });
        let user_id = user_id.to_owned();
        self.bounded(move |store| async move { store.update(&user_id, decision).await })
            .await
            .map(|_| ())
    }
}

/// The snapshot of a user that exists and is not deleted, else `USER_NOT_FOUND`.
fn existing(snapshot: Option<Snapshot>) -> Result<Snapshot, Error> {
    snapshot
        .filter(|s| s.user.state != UserState::Deleted)
        .ok_or(Error::Rejected(error::USER_NOT_FOUND))
}

/// A numeric id in ZITADEL's style (18 digits).
fn generate_user_id() -> String {
    rand::thread_rng()
        .gen_range(100_000_000_000_000_000u64..1_000_000_000_000_000_000u64)
        .to_string()
}
