//! One function per RPC, orchestrating: it checks access, asks the store to apply a rule of
//! [`super::rules`] to the user's state (the store writes the outcome only if that state is still
//! current, see [`super::store::Store::update`]), and maps the result. It validates nothing itself
//! (the types did) and decides nothing itself (the rules do).

use std::future::Future;
use std::sync::Arc;

use rand::Rng;
use serde_json::json;

use crate::crypto::KeyRing;

use super::authz::Access;
use super::clock::{Clock, Timestamp};
use super::error::{self, Error};
use super::outage::OutageLog;
use super::recovery::{self, CodeHash, RecoveryCode};
use super::rules::{self, CodeUse, Draft};
use super::store::{Committed, ConnectionStats, Outcome, Snapshot, Store};
use super::totp::{self, Imported, Parameters, Secret};
use super::types::{
    Caller, Details, Permission, Profile, TotpCode, TotpRecord, TotpState, UserId, UserRecord,
    UserState,
};

pub use super::rules::events;

pub use super::rules::Settings;

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

/// A user's authentication methods, as ListAuthenticationMethodTypes and
/// ListAuthenticationFactors show them.
#[derive(Clone, Debug)]
pub struct AuthMethods {
    /// The state of the user's TOTP, if it has one.
    pub totp: Option<TotpState>,
    /// How many recovery codes the user has not used yet.
    pub recovery_codes: usize,
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
    /// Recovery code hashes computed at once: each takes Argon2's memory and a core for its
    /// milliseconds, so a flood of them waits here instead of growing memory or starving the rest.
    hashing: Arc<tokio::sync::Semaphore>,
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
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
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
            .unwrap_or_else(|_| Err(error::TOO_SLOW.into()));
        self.outages.note(&outcome);
        outcome
    }

    /// Applies `rule` to an existing user's state, after the access checks, and writes the
    /// outcome (see [`Store::update`]).
    async fn change_user(
        &self,
        caller: &Caller,
        user_id: &UserId,
        access: Access,
        rule: impl Fn(&mut Draft) -> Result<Outcome, Error> + Send + Sync + 'static,
    ) -> Result<Committed, Error> {
        access.precheck(caller, user_id.as_str())?;
        let at = self.clock.now();
        let caller = caller.clone();
        let decision = Box::new(move |snapshot: Option<Snapshot>| {
            let snapshot = existing(snapshot)?;
            access.check(
                &caller,
                &snapshot.user.user_id,
                &snapshot.user.resource_owner,
            )?;
            let mut draft = Draft::new(snapshot, at, caller.subject.clone());
            let outcome = rule(&mut draft)?;
            Ok(draft.finish(outcome))
        });
        let user_id = user_id.as_str().to_owned();
        let committed = self
            .bounded(move |store| async move { store.update(&user_id, decision).await })
            .await?;
        match committed.outcome {
            Outcome::Accept => Ok(committed),
            Outcome::RecordAndRefuse(refusal) => Err(refusal.into()),
        }
    }

    /// RegisterTOTP: a new pending secret (replacing a pending one), unless one is verified.
    pub async fn register_totp(
        &self,
        caller: &Caller,
        user_id: &UserId,
    ) -> Result<Registration, Error> {
        let secret = Secret::generate();
        let sealed = rules::seal_secret(&self.keys, user_id.as_str(), &secret);
        let committed = self
            .change_user(
                caller,
                user_id,
                Access::self_or(Permission::UserCredentialWrite),
                move |draft| rules::register(draft, sealed.clone()),
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

    /// ImportTOTP: a credential from another system, with its parameters (see [`rules::import`]).
    pub async fn import_totp(
        &self,
        caller: &Caller,
        user_id: &UserId,
        imported: Imported,
        pending: bool,
    ) -> Result<Details, Error> {
        let sealed = rules::seal_secret(&self.keys, user_id.as_str(), &imported.secret);
        let parameters = imported.parameters;
        let committed = self
            .change_user(
                caller,
                user_id,
                Access::self_or(Permission::UserCredentialWrite),
                move |draft| rules::import(draft, sealed.clone(), parameters, pending),
            )
            .await?;
        Ok(committed.details)
    }

    /// VerifyTOTPRegistration: the first code makes a pending TOTP ready.
    pub async fn verify_totp_registration(
        &self,
        caller: &Caller,
        user_id: &UserId,
        code: &TotpCode,
    ) -> Result<Details, Error> {
        self.use_code(caller, user_id, code, CodeUse::Verify).await
    }

    /// CheckTOTP: a login-time check of a ready TOTP.
    pub async fn check_totp(
        &self,
        caller: &Caller,
        user_id: &UserId,
        code: &TotpCode,
    ) -> Result<Details, Error> {
        self.use_code(caller, user_id, code, CodeUse::Check).await
    }

    async fn use_code(
        &self,
        caller: &Caller,
        user_id: &UserId,
        code: &TotpCode,
        purpose: CodeUse,
    ) -> Result<Details, Error> {
        let access = match purpose {
            CodeUse::Verify => Access::self_or(Permission::UserCredentialWrite),
            CodeUse::Check => Access::self_or(Permission::SessionWrite),
        };
        let (code, settings, keys) = (code.clone(), self.settings.clone(), self.keys.clone());
        let committed = self
            .change_user(caller, user_id, access, move |draft| {
                rules::use_code(draft, &code, purpose, &settings, &keys)
            })
            .await?;
        Ok(committed.details)
    }

    /// RemoveTOTP: removes a pending or ready TOTP.
    pub async fn remove_totp(&self, caller: &Caller, user_id: &UserId) -> Result<Details, Error> {
        let access = Access::self_or(Permission::UserWrite);
        let committed = self
            .change_user(caller, user_id, access, rules::remove)
            .await?;
        Ok(committed.details)
    }

    /// DeleteUser: marks the user removed and drops its TOTP secret.
    pub async fn delete_user(&self, caller: &Caller, user_id: &UserId) -> Result<Details, Error> {
        let access = Access::only(Permission::UserWrite);
        let committed = self
            .change_user(caller, user_id, access, rules::delete)
            .await?;
        Ok(committed.details)
    }

    /// LockUser: locks until UnlockUser.
    pub async fn lock_user(&self, caller: &Caller, user_id: &UserId) -> Result<Details, Error> {
        let access = Access::only(Permission::UserWrite);
        let committed = self
            .change_user(caller, user_id, access, rules::lock)
            .await?;
        Ok(committed.details)
    }

    /// UnlockUser: ends a lock and clears the count of failed attempts.
    pub async fn unlock_user(&self, caller: &Caller, user_id: &UserId) -> Result<Details, Error> {
        let access = Access::only(Permission::UserWrite);
        let committed = self
            .change_user(caller, user_id, access, rules::unlock)
            .await?;
        Ok(committed.details)
    }

    /// GenerateRecoveryCodes: `count` new codes, added to the ones not used yet (see
    /// [`rules::add_recovery_codes`]); their only clear copy is in the answer.
    pub async fn generate_recovery_codes(
        &self,
        caller: &Caller,
        user_id: &UserId,
        count: u32,
    ) -> Result<(Details, Vec<RecoveryCode>), Error> {
        let max = self.settings.max_recovery_codes;
        if !(1..=max).contains(&count) {
            return Err(Error::Validation(format!(
                "invalid GenerateRecoveryCodesRequest.Count: value must be inside range [1, {max}]"
            )));
        }
        let access = Access::self_or(Permission::UserCredentialWrite);
        access.precheck(caller, user_id.as_str())?;
        let codes: Vec<RecoveryCode> = (0..count).map(|_| RecoveryCode::generate()).collect();
        let hashes = self
            .hash_off_the_workers(user_id, codes.iter().map(|c| c.expose().to_owned()))
            .await?
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Internal("a generated recovery code has no hash".into()))?;
        let settings = self.settings.clone();
        let committed = self
            .change_user(caller, user_id, access, move |draft| {
                rules::add_recovery_codes(draft, &hashes, &settings)
            })
            .await?;
        Ok((committed.details, codes))
    }

    /// CheckRecoveryCode: uses up one recovery code (see [`rules::use_recovery_code`]); answers
    /// how many are left.
    pub async fn check_recovery_code(
        &self,
        caller: &Caller,
        user_id: &UserId,
        code: &TotpCode,
    ) -> Result<(Details, usize), Error> {
        let access = Access::self_or(Permission::SessionWrite);
        access.precheck(caller, user_id.as_str())?;
        let candidate = self
            .hash_off_the_workers(user_id, [code.expose().to_owned()])
            .await?
            .pop()
            .flatten();
        let settings = self.settings.clone();
        let committed = self
            .change_user(caller, user_id, access, move |draft| {
                rules::use_recovery_code(draft, candidate, &settings)
            })
            .await?;
        Ok((committed.details, committed.user.recovery_codes.len()))
    }

    /// RemoveRecoveryCodes: drops every code not used yet.
    pub async fn remove_recovery_codes(
        &self,
        caller: &Caller,
        user_id: &UserId,
    ) -> Result<Details, Error> {
        let access = Access::self_or(Permission::UserWrite);
        let committed = self
            .change_user(caller, user_id, access, rules::remove_recovery_codes)
            .await?;
        Ok(committed.details)
    }

    /// The recovery code hashes of `codes` for `user_id`, computed on the blocking pool, at most
    /// as many at once as there are cores; a request that waits its turn longer than the request
    /// timeout is refused with code 4, as one that waits too long for the database.
    async fn hash_off_the_workers(
        &self,
        user_id: &UserId,
        codes: impl IntoIterator<Item = String>,
    ) -> Result<Vec<Option<CodeHash>>, Error> {
        let (user_id, codes): (String, Vec<String>) =
            (user_id.as_str().to_owned(), codes.into_iter().collect());
        let hashing = async {
            let _permit = self
                .hashing
                .acquire()
                .await
                .map_err(|_| Error::Internal("the hashing semaphore is closed".into()))?;
            tokio::task::spawn_blocking(move || {
                codes
                    .iter()
                    .map(|code| recovery::hash(&user_id, code))
                    .collect()
            })
            .await
            .map_err(|e| Error::Internal(format!("hashing recovery codes: {e}")))
        };
        tokio::time::timeout(self.settings.request_timeout, hashing)
            .await
            .unwrap_or_else(|_| Err(error::TOO_SLOW.into()))
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
            recovery_codes: Vec::new(),
            version: 0,
        };
        let mut draft = Draft::of_new_user(user, at, caller.subject.clone());
        draft.append(
            events::USER_ADDED,
            json!({ "username": username, "resourceOwner": org }),
        );
        if let Some(secret) = new.totp_secret {
            let sealed = rules::seal_secret(&self.keys, &user_id, &secret);
            draft.put_totp(TotpRecord {
                state: TotpState::Ready,
                secret: sealed,
                parameters: Parameters::ISSUED,
                last_used_step: None,
                created_at: at,
            });
            draft.append(events::OTP_ADDED, json!({ "imported": true }));
            draft.append(events::OTP_VERIFIED, json!({ "imported": true }));
        }
        let changes = draft.finish(Outcome::Accept);
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

    /// ListAuthenticationMethodTypes and ListAuthenticationFactors.
    pub async fn list_authentication_methods(
        &self,
        caller: &Caller,
        user_id: &UserId,
    ) -> Result<AuthMethods, Error> {
        let snapshot = self
            .read_user(caller, user_id, Access::self_or(Permission::UserRead))
            .await?;
        Ok(AuthMethods {
            totp: snapshot.totp.map(|t| t.state),
            recovery_codes: snapshot.user.recovery_codes.len(),
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
                    Err(Error::Rejected(error::NOTHING_TO_RESEAL)) => {}
                    Err(err) => {
                        tracing::warn!(user_id, error = %err, "could not re-seal a TOTP secret");
                        report.failed += 1;
                    }
                }
            }
        }
    }

    /// Re-seals one user's secret under the active key, or refuses with
    /// [`error::NOTHING_TO_RESEAL`].
    async fn reseal(&self, user_id: &str) -> Result<(), Error> {
        let (at, keys) = (self.clock.now(), self.keys.clone());
        let decision = Box::new(move |snapshot: Option<Snapshot>| {
            let snapshot = snapshot.ok_or(Error::Rejected(error::NOTHING_TO_RESEAL))?;
            let mut draft = Draft::new(snapshot, at, "rekey".to_owned());
            let outcome = rules::reseal(&mut draft, &keys)?;
            Ok(draft.finish(outcome))
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

#[cfg(test)]
mod tests {
    //! The service's orchestration (access, the order of checks, what a refusal writes) over an
    //! in-memory store: no database, no server.

    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::domain::clock::ManualClock;
    use crate::domain::memory::MemoryStore;
    use crate::domain::totp::Algorithm;

    const NOW: Timestamp = Timestamp(1_800_000_015_000_000);

    struct Fixture {
        service: Service,
        store: Arc<MemoryStore>,
        clock: Arc<ManualClock>,
    }

    fn fixture() -> Fixture {
        let store = Arc::new(MemoryStore::default());
        let clock = Arc::new(ManualClock::new(NOW));
        let keys = KeyRing::parse(&KeyRing::generate_entry("k1", &mut rand::thread_rng())).unwrap();
        let settings = Settings {
            max_attempts: 3,
            ..Settings::default()
        };
        let service = Service::new(store.clone(), clock.clone(), keys, settings);
        Fixture {
            service,
            store,
            clock,
        }
    }

    fn caller(subject: &str, grants: &[(&str, &str)]) -> Caller {
        let mut map: HashMap<String, HashSet<String>> = HashMap::new();
        for (permission, org) in grants {
            map.entry((*permission).to_owned())
                .or_default()
                .insert((*org).to_owned());
        }
        Caller {
            subject: subject.to_owned(),
            resource_owner: None,
            grants: map,
        }
    }

    fn admin() -> Caller {
        caller(
            "admin",
            &[
                ("user.write", "*"),
                ("user.read", "*"),
                ("user.credential.write", "*"),
                ("session.write", "*"),
            ],
        )
    }

    fn id(raw: &str) -> UserId {
        UserId::parse(raw, "Test").unwrap()
    }

    fn code(secret: &Secret, at: Timestamp) -> TotpCode {
        let step = totp::step_at(at.unix_seconds(), totp::PERIOD);
        let code = totp::code_for_step(secret, step, totp::DIGITS, Algorithm::Sha1);
        TotpCode::parse(&code, "Test").unwrap()
    }

    async fn alice_with_ready_factor(f: &Fixture) -> Secret {
        let new = NewHuman {
            user_id: Some(id("alice")),
            username: None,
            org_id: Some("acme".into()),
            profile: Profile::default(),
            email: "alice@example.com".into(),
            email_verified: false,
            totp_secret: None,
        };
        f.service.add_human_user(&admin(), new).await.unwrap();
        let secret = f
            .service
            .register_totp(&admin(), &id("alice"))
            .await
            .unwrap()
            .secret;
        f.service
            .verify_totp_registration(&admin(), &id("alice"), &code(&secret, NOW))
            .await
            .unwrap();
        secret
    }

    #[tokio::test]
    async fn a_wrong_code_is_recorded_then_refused_and_the_lock_comes_at_max_attempts() {
        let f = fixture();
        let secret = alice_with_ready_factor(&f).await;
        let wrong = TotpCode::parse("000000", "Test").unwrap();
        let right = code(&secret, NOW);
        assert_ne!(wrong, right);
        for _ in 0..3 {
            let refused = f.service.check_totp(&admin(), &id("alice"), &wrong).await;
            assert_eq!(refused, Err(error::INVALID_CODE.into()));
        }
        // Locked: even the right code is not evaluated, and nothing more is appended.
        let locked = f.service.check_totp(&admin(), &id("alice"), &right).await;
        assert_eq!(locked, Err(error::USER_LOCKED.into()));
        assert_eq!(
            f.store.event_types("alice"),
            [
                events::USER_ADDED,
                events::OTP_ADDED,
                events::OTP_VERIFIED,
                events::OTP_CHECK_FAILED,
                events::OTP_CHECK_FAILED,
                events::OTP_CHECK_FAILED,
                events::USER_LOCKED,
            ]
        );
        // The automatic lock runs out; then the next step's code is accepted.
        f.clock.advance(Duration::from_secs(301));
        let later = code(&secret, f.clock.now());
        f.service
            .check_totp(&admin(), &id("alice"), &later)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn access_is_checked_before_anything_is_decided() {
        let f = fixture();
        alice_with_ready_factor(&f).await;
        let stranger = caller("bob", &[("session.write", "other-org")]);
        let code = TotpCode::parse("123456", "Test").unwrap();
        assert_eq!(
            f.service.check_totp(&stranger, &id("alice"), &code).await,
            Err(error::NO_PERMISSION.into())
        );
        let nobody = caller("carol", &[]);
        assert_eq!(
            f.service.check_totp(&nobody, &id("nobody"), &code).await,
            Err(error::NO_PERMISSION.into()),
            "no permission anywhere: refused before the user is looked up"
        );
        assert_eq!(
            f.service.check_totp(&admin(), &id("nobody"), &code).await,
            Err(error::USER_NOT_FOUND.into())
        );
        assert_eq!(
            f.store.event_types("alice").len(),
            3,
            "refusals append nothing"
        );
    }
}
