//! Validated request values and the records the domain reasons about. Raw strings become these
//! types at the edge ([`UserId::parse`], [`TotpCode::parse`]), so the domain never sees unchecked input.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::error::Error;
use super::recovery::CodeHash;
use super::totp::Parameters;

/// Longest accepted id, code, username or secret, in Unicode scalar values (as ZITADEL's validation).
pub const MAX_FIELD_CHARS: usize = 200;

/// Checks the 1..=200 character rule and words the failure as ZITADEL's validator does:
/// `invalid VerifyTOTPRegistrationRequest.Code: value length must be between 1 and 200 runes, inclusive`.
pub fn check_length(value: &str, request: &str, field: &str) -> Result<(), Error> {
    let chars = value.chars().count();
    if (1..=MAX_FIELD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "invalid {request}.{field}: value length must be between 1 and {MAX_FIELD_CHARS} runes, inclusive"
        )))
    }
}

/// Checks that a stored or looked-up string holds no control character (NUL, line breaks, tabs,
/// escapes): Postgres refuses NUL in text outright, and the others have no place in an id, a name
/// or an address. Worded as ZITADEL's validator words a broken rule.
pub fn check_no_control(value: &str, request: &str, field: &str) -> Result<(), Error> {
    if value.chars().any(char::is_control) {
        Err(Error::Validation(format!(
            "invalid {request}.{field}: value must not contain control characters"
        )))
    } else {
        Ok(())
    }
}

/// [`check_length`] and [`check_no_control`]: the rules of every stored or looked-up string
/// that must not be empty.
pub fn check_text(value: &str, request: &str, field: &str) -> Result<(), Error> {
    check_length(value, request, field)?;
    check_no_control(value, request, field)
}

/// A user id that passed validation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// Validates `raw` as the `user_id` field of the request named `request`.
    pub fn parse(raw: &str, request: &str) -> Result<Self, Error> {
        check_text(raw, request, "UserId")?;
        Ok(UserId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A submitted one-time code that passed validation (its digits are checked by the TOTP math,
/// so that a malformed code counts as a failed attempt like any wrong one). Debug hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(String);

impl TotpCode {
    pub fn parse(raw: &str, request: &str) -> Result<Self, Error> {
        check_length(raw, request, "Code")?;
        Ok(TotpCode(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode(<redacted>)")
    }
}

/// The permissions of SPEC.md §3, named as ZITADEL names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    UserCredentialWrite,
    UserWrite,
    UserRead,
    SessionWrite,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::UserCredentialWrite => "user.credential.write",
            Permission::UserWrite => "user.write",
            Permission::UserRead => "user.read",
            Permission::SessionWrite => "session.write",
        }
    }
}

/// Organisation key that grants a permission in every organisation.
pub const ANY_ORG: &str = "*";

/// The authenticated caller, as its token describes it.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The token's `sub`.
    pub subject: String,
    /// The caller's own organisation (`urn:zitadel:iam:user:resourceowner:id`), if the token says.
    pub resource_owner: Option<String>,
    /// Permission name → organisations it is held in (`*` = all).
    pub grants: HashMap<String, HashSet<String>>,
}

impl Caller {
    /// Whether the caller holds `permission` in `org` (directly or through `*`).
    pub fn holds(&self, permission: Permission, org: &str) -> bool {
        self.grants
            .get(permission.as_str())
            .is_some_and(|orgs| orgs.contains(org) || orgs.contains(ANY_ORG))
    }

    /// Whether the caller holds `permission` in any organisation at all.
    pub fn holds_anywhere(&self, permission: Permission) -> bool {
        self.grants
            .get(permission.as_str())
            .is_some_and(|orgs| !orgs.is_empty())
    }
}

/// `Gender` of the user service, by its proto number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gender(pub i32);

/// A human's profile, stored as given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub given_name: String,
    pub family_name: String,
    pub nick_name: Option<String>,
    pub display_name: Option<String>,
    pub preferred_language: Option<String>,
    pub gender: Option<Gender>,
}

/// The life-cycle state of a user record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserState {
    Active,
    Locked,
    Deleted,
}

impl UserState {
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Active => "active",
            UserState::Locked => "locked",
            UserState::Deleted => "deleted",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "active" => Some(UserState::Active),
            "locked" => Some(UserState::Locked),
            "deleted" => Some(UserState::Deleted),
            _ => None,
        }
    }
}

/// A user as stored (the projection of its events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    pub resource_owner: String,
    pub username: String,
    pub email: String,
    pub email_verified: bool,
    pub profile: Profile,
    pub state: UserState,
    /// How many events the user has; the last one's number.
    pub sequence: u64,
    pub created_at: Timestamp,
    pub change_date: Timestamp,
    /// Wrong codes since the last success or lock.
    pub failed_attempts: u32,
    /// End of an automatic lock; `None` while locked means until UnlockUser.
    pub locked_until: Option<Timestamp>,
    /// The hashes of the recovery codes not used yet.
    pub recovery_codes: Vec<CodeHash>,
    /// The row's version, bumped by the store on every write (optimistic concurrency).
    pub version: u64,
}

impl UserRecord {
    /// The details a change of this user answers with.
    pub fn details(&self) -> Details {
        Details {
            sequence: self.sequence,
            change_date: self.change_date,
            resource_owner: self.resource_owner.clone(),
        }
    }
}

impl UserRecord {
    /// Whether the user is locked at `now` (an automatic lock ends by itself).
    pub fn is_locked_at(&self, now: Timestamp) -> bool {
        self.state == UserState::Locked && self.locked_until.is_none_or(|until| until > now)
    }
}

/// Where a TOTP registration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotpState {
    /// Registered, waiting for the first code.
    Pending,
    /// Verified: used at login.
    Ready,
}

impl TotpState {
    pub fn as_str(self) -> &'static str {
        match self {
            TotpState::Pending => "pending",
            TotpState::Ready => "ready",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "pending" => Some(TotpState::Pending),
            "ready" => Some(TotpState::Ready),
            _ => None,
        }
    }
}

/// A TOTP secret sealed by [`crate::crypto::KeyRing`]: key id plus nonce-and-ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A user's TOTP credential as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TotpRecord {
    pub state: TotpState,
    pub secret: SealedSecret,
    /// Its algorithm, digits and period: this service's own for a registered factor, the other
    /// system's for an imported one.
    pub parameters: Parameters,
    /// The last time step accepted (at verification or check); older or equal steps are refused.
    pub last_used_step: Option<i64>,
    pub created_at: Timestamp,
}

/// Details of the write a command made (SPEC.md §3): the user's event count after it, the time of
/// the event and the user's organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Details {
    pub sequence: u64,
    pub change_date: Timestamp,
    pub resource_owner: String,
}
