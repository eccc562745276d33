//! Which VMs a user may see. A VM another user owns, or one that is deleted, is answered as if
//! it did not exist, so other users' VM ids cannot be probed.

use super::AppState;
use crate::auth::AuthUser;
use crate::store::vm_view::VmView;
use crate::store::StoreError;
use crate::vm::VmStatus;

/// The VM's row as the list holds it: from the node's cache while this node writes alone (see
/// `store::solo`), else from PostgreSQL (and kept in the cache if it may be).
pub async fn vm_row(state: &AppState, vm_id: &str) -> Result<Option<VmView>, StoreError> {
    let cache = state.solo.cache();
    if let Some(view) = cache.get(vm_id) {
        return Ok(Some(VmView::clone(&view)));
    }
    let ticket = cache.ticket(vm_id);
    let view = state.vm_reads.get(vm_id).await?;
    if let Some(view) = &view {
        cache.fill(ticket, view);
    }
    Ok(view)
}

/// The VM, if it exists, is not deleted, and the user may see it.
pub async fn visible(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
) -> Result<Option<VmView>, StoreError> {
    Ok(vm_row(state, vm_id)
        .await?
        .filter(|vm| user.may_access(&vm.owner_id) && vm.status != VmStatus::Deleted))
}

/// The VM, deleted or not, if the user may read its history.
pub async fn readable(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
) -> Result<Option<VmView>, StoreError> {
    Ok(vm_row(state, vm_id)
        .await?
        .filter(|vm| user.may_access(&vm.owner_id)))
}

/// The default quota a user's VMs are held to: none for a role that grants everything.
pub fn quota_defaults(state: &AppState, user: &AuthUser) -> Option<crate::accounts::Quota> {
    (!user.role.unlimited()).then(|| state.live.get().quota)
}

/// Whether `caller` may hand out (or manage a holder of) a role granting `grants` over `scope`:
/// only what the caller holds themselves, so no one can raise anyone, themselves included,
/// above their own role.
pub fn may_grant(
    caller: &AuthUser,
    grants: &crate::auth::permission::Grants,
    scope: crate::auth::permission::Scope,
) -> bool {
    use crate::auth::permission::{Grants, Scope};
    let within = match (&caller.role.grants, grants) {
        (Grants::Everything, _) => true,
        (Grants::Only(_), Grants::Everything) => false,
        (Grants::Only(mine), Grants::Only(theirs)) => theirs.is_subset(mine),
    };
    within && (scope == Scope::Own || caller.role.scope == Scope::All)
}
