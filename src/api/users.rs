//! `/users` (the system page's accounts): list, create, read, change and delete users. Every
//! change is a command on the user aggregate, committed with its row (`store::accounts`); a
//! password is hashed here and kept only in the row. Deleting a user who owns VMs needs
//! `?transferTo=`: their VMs are handed over first, one `VmOwnerChanged` command per VM through
//! its actor, then the user is deleted in a transaction that checks they own none.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::answers::errors::{AccountConflict, Forbidden, Invalid, Unauthorized, UserMissing};
use super::answers::{Empty, Envelope, Page, Pagination};
use super::body;
use super::envelope::{self, NOTHING_TO_CHANGE};
use super::error::ApiError;
use super::retry::{envelope_answer, KeyHeader, Retry};
use super::user_input::{
    check_email, check_password, check_rate, check_username, DeleteQuery, NewUser, UserUpdate,
};
use super::vms::page_and_limit;
use crate::accounts::user::{UserChange, UserCommand};
use crate::accounts::{AccountError, QuotaOverrides, UserStatus};
use crate::actors::ActorError;
use crate::app::access::may_grant;
use crate::app::AppState;
use crate::auth::permission::{Grants, Scope};
use crate::auth::{password, AuthUser, Permission, ID_ALPHABET};
use crate::store::accounts::{self, AccountWriteError};
use crate::store::conditions::StoredAnswer;
use crate::store::users::{self, UserRow};
use crate::store::Via;
use crate::vm::{Owner, VmCommand, VmError};

/// A user as the API shows them (never their password or its hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    /// A role id (`GET /roles`).
    pub role: String,
    pub status: UserStatus,
    /// Overrides of the configured quota; an absent figure takes the default (`GET /config`).
    pub quota: QuotaOverrides,
    /// Requests a minute, over the role's and the configured default.
    pub rate_limit: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> Self {
        UserView {
            status: UserStatus::parse(&row.status).unwrap_or(UserStatus::Disabled),
            quota: serde_json::from_value(row.quota).unwrap_or_default(),
            rate_limit: row.rate_limit.and_then(|r| u32::try_from(r).ok()),
            id: row.id,
            username: row.username,
            email: row.email,
            role: row.role,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 2147483647)]
    page: Option<u32>,
    /// Users per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only users with this role id.
    role: Option<String>,
    /// Only `active` or only `disabled` users.
    #[param(pattern = "^(active|disabled)$")]
    status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    operation_id = "list_users",
    tag = "system",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of users, oldest first.", body = Envelope<Page<UserView>>),
        Invalid,
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("user:read")))
)]
#[tracing::instrument(name = "list_users", skip_all, fields(user_id = %user.id))]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    query: crate::api::body::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::UserRead)?;
    let q = query.into_inner();
    let (page, limit) = page_and_limit(q.page, q.limit)?;
    if let Some(s) = &q.status {
        if UserStatus::parse(s).is_none() {
            return Err(ApiError::validation(
                "status",
                "status must be 'active' or 'disabled'.",
            ));
        }
    }
    let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
    let (rows, total) = users::list(
        &state.pool,
        q.role.as_deref(),
        q.status.as_deref(),
        offset,
        i64::from(limit),
    )
    .await?;
    let items: Vec<UserView> = rows.into_iter().map(UserView::from).collect();
    Ok(envelope::ok(
        Page {
            items,
            pagination: Pagination::new(page, limit, total),
        },
        "Users.",
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    operation_id = "create_user",
    tag = "system",
    request_body = NewUser,
    params(KeyHeader),
    responses(
        (status = 201, description = "Created; recorded as `UserCreated` (without the password).", body = Envelope<UserView>),
        Invalid,
        Unauthorized,
        Forbidden,
        AccountConflict
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("user:create")))
)]
#[tracing::instrument(name = "create_user", skip_all, fields(user_id = %user.id))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::UserCreate)?;
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let new: NewUser = body::typed(body.into_inner().0)?;
    check_username(&new.username)?;
    check_password("password", &new.password)?;
    if let Some(email) = &new.email {
        check_email(email)?;
    }
    check_rate("rateLimit", new.rate_limit)?;
    check_grantable(&state, &user, &new.role).await?;
    let id = format!("user-{}", nanoid::nanoid!(10, &ID_ALPHABET));
    let hash = password::hash(new.password).await?;
    let command = UserCommand::Create {
        username: new.username,
        email: new.email,
        role: new.role,
        quota: new.quota,
        rate_limit: new.rate_limit,
    };
    retry
        .transaction(&state, async |tx| {
            accounts::create_user(tx, &user.meta(Via::Rest), &id, command, &hash)
                .await
                .map_err(|e| account_error(&id, e))?;
            user_answer(tx, &id, StatusCode::CREATED, "User created.").await
        })
        .await
}

/// The answer of a user command: the user as the command's transaction leaves them.
async fn user_answer(
    tx: &mut sqlx::PgConnection,
    id: &str,
    status: StatusCode,
    message: &str,
) -> Result<StoredAnswer, ApiError> {
    let row = users::by_id(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::UserNotFound(id.to_string()))?;
    Ok(envelope_answer(status, UserView::from(row), message)?)
}

/// 403 unless the caller holds every permission (and the scope) of role `role`.
async fn check_grantable(state: &AppState, user: &AuthUser, role: &str) -> Result<(), ApiError> {
    let Some(row) = crate::store::accounts::role(&state.pool, role).await? else {
        return Err(ApiError::validation(
            "role",
            format!("Role '{role}' does not exist."),
        ));
    };
    let grants = Grants::parse(&row.permissions).unwrap_or(Grants::Everything);
    let scope = Scope::parse(&row.scope).unwrap_or(Scope::All);
    if may_grant(user, &grants, scope) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "Role '{role}' grants more than your role '{}' does; only a role within yours can be given or managed.",
            user.role.id
        )))
    }
}

/// An account error about user `id`.
fn account_error(id: &str, e: AccountWriteError) -> ApiError {
    match e {
        AccountWriteError::Refused(crate::accounts::AccountError::NotFound) => {
            ApiError::UserNotFound(id.to_string())
        }
        other => ApiError::from_account(other),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    operation_id = "get_user",
    tag = "system",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user.", body = Envelope<UserView>),
        Unauthorized,
        Forbidden,
        UserMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("user:read")))
)]
#[tracing::instrument(name = "get_user", skip_all, fields(user_id = %user.id))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::UserRead)?;
    let row = users::by_id(&state.pool, &path)
        .await?
        .ok_or_else(|| ApiError::UserNotFound(path.to_string()))?;
    Ok(envelope::ok(UserView::from(row), "The user."))
}

#[utoipa::path(
    put,
    path = "/api/v1/users/{id}",
    operation_id = "update_user",
    tag = "system",
    params(("id" = String, Path, description = "The user's id."), KeyHeader),
    request_body = UserUpdate,
    responses(
        (status = 200, description = "Changed; recorded as `UserChanged` and, for a password, `UserPasswordChanged` (without it). A request that changes nothing answers the user as they are, with message `Nothing to change.`, and records nothing.", body = Envelope<UserView>),
        Invalid,
        Unauthorized,
        Forbidden,
        UserMissing,
        AccountConflict
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("user:update")))
)]
#[tracing::instrument(name = "update_user", skip_all, fields(user_id = %user.id))]
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::UserUpdate)?;
    let id = path.into_inner();
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let update: UserUpdate = body::typed(body.into_inner().0)?;
    if let Some(Some(email)) = &update.email {
        check_email(email)?;
    }
    if let Some(password) = &update.password {
        check_password("password", password)?;
    }
    check_rate("rateLimit", update.rate_limit.flatten())?;
    if id == user.id && (update.status == Some(UserStatus::Disabled) || update.role.is_some()) {
        return Err(ApiError::Conflict {
            code: "CANNOT_CHANGE_SELF",
            message:
                "You cannot disable yourself or change your own role; ask another administrator."
                    .into(),
        });
    }
    // A user whose role is limited would step past what an administrator set for them by
    // raising their own quota or request rate. (A role that grants everything is held to no
    // quota, and its holders may set their own rate, as they may set anyone's.)
    let own_limits = update.quota.is_some() || update.rate_limit.is_some();
    if id == user.id && own_limits && !user.role.unlimited() {
        return Err(ApiError::Conflict {
            code: "CANNOT_CHANGE_SELF",
            message: "You cannot change your own quota or request rate; ask an administrator."
                .into(),
        });
    }
    let target = users::by_id(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::UserNotFound(id.clone()))?;
    check_grantable(&state, &user, &target.role).await?;
    if let Some(role) = &update.role {
        check_grantable(&state, &user, role).await?;
    }
    let change = UserChange {
        email: update.email,
        role: update.role,
        status: update.status,
        quota: update.quota,
        rate_limit: update.rate_limit,
    };
    let mut commands = Vec::new();
    if !change.is_empty() {
        commands.push(UserCommand::Change(change));
    }
    let hash = match update.password {
        Some(password) => {
            commands.push(UserCommand::SetPassword { by_admin: true });
            Some(password::hash(password).await?)
        }
        None => None,
    };
    // A request that changes nothing (an empty body, or the user as they are) answers the user
    // as they are: a client that puts back what it read, or retries, gets a 200.
    let response = retry
        .transaction(&state, async |tx| {
            let changed =
                accounts::change_user(tx, &user.meta(Via::Rest), &id, &commands, hash.as_deref())
                    .await;
            match changed {
                Ok(_) => user_answer(tx, &id, StatusCode::OK, "User changed.").await,
                Err(AccountWriteError::Refused(AccountError::NothingToChange)) => {
                    user_answer(tx, &id, StatusCode::OK, NOTHING_TO_CHANGE).await
                }
                Err(e) => Err(account_error(&id, e)),
            }
        })
        .await?;
    state.auth.forget_user(&id);
    Ok(response)
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    operation_id = "delete_user",
    tag = "system",
    params(("id" = String, Path, description = "The user's id."), DeleteQuery, KeyHeader),
    responses(
        (status = 200, description = "Deleted; recorded as `UserDeleted` (and each VM handed over as `VmOwnerChanged`). The user's tokens stop working.", body = Envelope<Empty>),
        Invalid,
        Unauthorized,
        Forbidden,
        UserMissing,
        AccountConflict
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("user:delete")))
)]
#[tracing::instrument(name = "delete_user", skip_all, fields(user_id = %user.id))]
pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<String>,
    query: crate::api::body::Query<DeleteQuery>,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::UserDelete)?;
    let id = path.into_inner();
    let retry = Retry::read(&req, &user, &[])?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    if id == user.id {
        return Err(ApiError::Conflict {
            code: "CANNOT_CHANGE_SELF",
            message: "You cannot delete yourself; ask another administrator.".into(),
        });
    }
    let doomed = users::by_id(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::UserNotFound(id.clone()))?;
    check_grantable(&state, &user, &doomed.role).await?;
    let heir = match &query.transfer_to {
        None => None,
        Some(name) => {
            let found = match users::by_id(&state.pool, name).await? {
                Some(row) => Some(row),
                None => users::by_username(&state.pool, name).await?,
            };
            match found {
                Some(row) if row.id != id => Some(row),
                Some(_) => {
                    return Err(ApiError::validation(
                        "transferTo",
                        "transferTo must name another user than the one deleted.",
                    ))
                }
                None => {
                    return Err(ApiError::validation(
                        "transferTo",
                        format!("No user '{name}' to hand the VMs to."),
                    ))
                }
            }
        }
    };
    if let Some(heir) = &heir {
        let owner = Owner {
            id: heir.id.clone(),
            name: heir.username.clone(),
        };
        for vm_id in crate::store::vm_view::owned_by(&state.pool, &doomed.id).await? {
            let command = VmCommand::ChangeOwner {
                owner: owner.clone(),
            };
            match state
                .registry
                .execute(&vm_id, command, user.meta(Via::Rest))
                .await
            {
                // Already the heir's (a retry of a delete that stopped half-way).
                Ok(_) | Err(ActorError::Refused(VmError::NothingToChange)) => {}
                Err(e) => return Err(ApiError::from_actor(&vm_id, e)),
            }
        }
    }
    let heir = heir.map(|h| h.id);
    let response = retry
        .transaction(&state, async |tx| {
            accounts::delete_user(tx, &user.meta(Via::Rest), &id, heir)
                .await
                .map_err(|e| account_error(&id, e))?;
            Ok(envelope_answer(StatusCode::OK, Empty {}, "User deleted.")?)
        })
        .await?;
    state.auth.forget_user(&id);
    Ok(response)
}
