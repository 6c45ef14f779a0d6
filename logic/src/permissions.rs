//! Permissions (docs/business-rules.md §1): built from `NewPermissions`, checked for process
//! rights.

use orchestrator_proto::{NewPermissions, Permission, Permissions};

use crate::call::Call;
use crate::error::{LogicError, Result};
use crate::organization;

/// docs/business-rules.md §1.2: a private list may only name registered organizations; the owner is
/// always appended (also when public), order and duplicates of the input kept.
pub fn new_permission(call: &mut Call<'_>, owner: &str, input: &NewPermissions) -> Result<Permission> {
    check_size(input)?;
    if !input.public && !organization::all_registered(call, &input.authorized_ids)? {
        return Err(LogicError::bad_request("invalid permission input values"));
    }
    let mut authorized_ids = input.authorized_ids.clone();
    if !authorized_ids.iter().any(|id| id == owner) {
        authorized_ids.push(owner.to_owned());
    }
    Ok(Permission { public: input.public, authorized_ids })
}

/// Most organizations a permission may name: far more than a channel has members, and few
/// enough that an asset's permissions stay well inside a state value.
pub const MAX_AUTHORIZED_IDS: usize = 1_000;

/// Refuses a list over [`MAX_AUTHORIZED_IDS`], before any state access.
pub fn check_size(input: &NewPermissions) -> Result<()> {
    let given = input.authorized_ids.len();
    if given > MAX_AUTHORIZED_IDS {
        return Err(LogicError::invalid(
            "permissions",
            format!("authorized_ids: at most {MAX_AUTHORIZED_IDS} organizations ({given} given)"),
        ));
    }
    Ok(())
}

/// The same permission for `process` and `download`.
pub fn new_permissions(call: &mut Call<'_>, owner: &str, input: &NewPermissions) -> Result<Permissions> {
    let permission = new_permission(call, owner, input)?;
    Ok(Permissions { process: Some(permission.clone()), download: Some(permission) })
}

pub fn can_process(permissions: &Permissions, requester: &str) -> bool {
    permissions.process.as_ref().is_some_and(|p| allows(p, requester))
}

pub fn allows(permission: &Permission, requester: &str) -> bool {
    permission.public || permission.authorized_ids.iter().any(|id| id == requester)
}

/// docs/business-rules.md §1.3 union. The reference's order is random (hash map); sorted here, for
/// determinism.
pub fn union(a: &Permission, b: &Permission) -> Permission {
    if a.public || b.public {
        return Permission { public: true, authorized_ids: Vec::new() };
    }
    let mut ids: Vec<String> = a.authorized_ids.iter().chain(&b.authorized_ids).cloned().collect();
    ids.sort_unstable();
    ids.dedup();
    Permission { public: false, authorized_ids: ids }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(public: bool, ids: &[&str]) -> Permission {
        Permission { public, authorized_ids: ids.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn union_rules() {
        assert_eq!(union(&perm(false, &["b", "a"]), &perm(false, &["a", "c"])), perm(false, &["a", "b", "c"]));
        assert_eq!(union(&perm(true, &["x"]), &perm(false, &["a"])), perm(true, &[]));
    }

    #[test]
    fn process_rights() {
        let p = Permissions { process: Some(perm(false, &["a"])), download: None };
        assert!(can_process(&p, "a"));
        assert!(!can_process(&p, "b"));
        let public = Permissions { process: Some(perm(true, &[])), download: None };
        assert!(can_process(&public, "anyone"));
    }
}
