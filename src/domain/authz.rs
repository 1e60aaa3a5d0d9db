//! Who may do what (SPEC.md §3, §6): the user itself for self-service calls, otherwise a holder of
//! the call's permission in the user's organisation or in every organisation (`*`).

use super::error::{Error, NO_PERMISSION};
use super::types::{Caller, Permission};

/// What a call demands of its caller.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub permission: Permission,
    /// Whether the user may call it on itself without the permission.
    pub self_service: bool,
}

impl Access {
    pub const fn self_or(permission: Permission) -> Self {
        Access {
            permission,
            self_service: true,
        }
    }

    pub const fn only(permission: Permission) -> Self {
        Access {
            permission,
            self_service: false,
        }
    }

    fn is_self(&self, caller: &Caller, user_id: &str) -> bool {
        self.self_service && caller.subject == user_id
    }

    /// The check before any lookup: a caller that is not the user and holds the permission
    /// nowhere is refused at once, so it cannot learn which users exist.
    pub fn precheck(&self, caller: &Caller, user_id: &str) -> Result<(), Error> {
        if self.is_self(caller, user_id) || caller.holds_anywhere(self.permission) {
            Ok(())
        } else {
            Err(NO_PERMISSION.into())
        }
    }

    /// The full check, once the user's organisation is known. A caller is the user itself only
    /// if its token, when it names the caller's organisation, names the user's: otherwise an
    /// administrator of one organisation could make a user whose id a token of another
    /// organisation carries, and act on it as "itself".
    pub fn check(&self, caller: &Caller, user_id: &str, user_org: &str) -> Result<(), Error> {
        let is_self = self.is_self(caller, user_id)
            && caller
                .resource_owner
                .as_deref()
                .is_none_or(|org| org == user_org);
        if is_self || caller.holds(self.permission, user_org) {
            Ok(())
        } else {
            Err(NO_PERMISSION.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

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

    const VERIFY: Access = Access::self_or(Permission::UserCredentialWrite);
    const DELETE: Access = Access::only(Permission::UserWrite);

    #[test]
    fn the_user_itself_may_use_self_service_calls() {
        let alice = caller("alice", &[]);
        assert!(VERIFY.precheck(&alice, "alice").is_ok());
        assert!(VERIFY.check(&alice, "alice", "org1").is_ok());
    }

    #[test]
    fn the_user_itself_may_not_delete_itself_without_the_permission() {
        let alice = caller("alice", &[]);
        assert!(DELETE.precheck(&alice, "alice").is_err());
    }

    #[test]
    fn a_grant_in_another_org_passes_the_precheck_but_not_the_check() {
        let admin = caller("admin", &[("user.credential.write", "org2")]);
        assert!(VERIFY.precheck(&admin, "alice").is_ok());
        assert!(VERIFY.check(&admin, "alice", "org1").is_err());
        assert!(VERIFY.check(&admin, "alice", "org2").is_ok());
    }

    #[test]
    fn the_user_itself_is_known_by_id_and_by_organisation_when_the_token_names_one() {
        let mut alice = caller("alice", &[]);
        alice.resource_owner = Some("org1".to_owned());
        assert!(VERIFY.check(&alice, "alice", "org1").is_ok());
        assert!(VERIFY.precheck(&alice, "alice").is_ok());
        assert!(
            VERIFY.check(&alice, "alice", "org2").is_err(),
            "the same id in another organisation is another user"
        );
    }

    #[test]
    fn the_star_org_grants_everywhere() {
        let admin = caller("admin", &[("user.credential.write", "*")]);
        assert!(VERIFY.check(&admin, "alice", "any-org").is_ok());
        assert!(DELETE.check(&admin, "alice", "any-org").is_err());
    }
}
