//! `/vms`: list, create, read, change and delete VMs, and the lifecycle verbs. Every mutating
//! call goes to the VM's actor, which records events; the answer carries the job id at once.
//! One file per kind of call; the handlers are re-exported here for the routes and the OpenAPI
//! document.

mod change;
mod console;
mod create;
mod disk_snapshots;
mod history;
mod iso;
mod lifecycle;
mod read;

pub use change::*;
pub use console::*;
pub use create::*;
pub use disk_snapshots::*;
pub use history::*;
pub use iso::*;
pub use lifecycle::*;
pub use read::*;

use super::error::ApiError;
use crate::app::{access, AppState};
use crate::auth::AuthUser;
use crate::store::vm_view::VmView;

/// The highest page a list serves: the `maximum` its `page` parameter declares (a 32-bit signed
/// integer, which every client's integer type holds).
pub const PAGE_MAX: u32 = 2_147_483_647;

/// A list's `page` and `limit`, checked against what its parameters declare.
pub fn page_and_limit(page: Option<u32>, limit: Option<u32>) -> Result<(u32, u32), ApiError> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(20);
    if page == 0 {
        return Err(ApiError::validation("page", "page starts at 1."));
    }
    if page > PAGE_MAX {
        return Err(ApiError::validation(
            "page",
            format!("page must be at most {PAGE_MAX}."),
        ));
    }
    if limit == 0 || limit > 100 {
        return Err(ApiError::validation(
            "limit",
            "limit must be between 1 and 100.",
        ));
    }
    Ok((page, limit))
}

/// The view of a VM as a command left it, for the answer built in its transaction.
fn view_of(done: &crate::store::conditions::AnswerInput<'_>) -> VmView {
    VmView::new(
        done.vm,
        i64::try_from(done.version).unwrap_or(i64::MAX),
        done.stamps.created_at,
        done.stamps.updated_at,
    )
}

/// The VM, if it exists, is not deleted, and the user may see it. Anything else is a 404, so
/// other users' VM ids cannot be probed.
async fn visible(state: &AppState, user: &AuthUser, vm_id: &str) -> Result<VmView, ApiError> {
    access::visible(state, user, vm_id)
        .await?
        .ok_or_else(|| ApiError::VmNotFound(vm_id.to_string()))
}

/// The VM, deleted or not, if the user may read its history.
async fn readable(state: &AppState, user: &AuthUser, vm_id: &str) -> Result<VmView, ApiError> {
    access::readable(state, user, vm_id)
        .await?
        .ok_or_else(|| ApiError::VmNotFound(vm_id.to_string()))
}
