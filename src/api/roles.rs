//! `/permissions` and `/roles`: the permission catalog, the built-in roles and the custom roles
//! admins add. A role change applies at once on every node (the auth cache drops its users when
//! the `roles` table changes) and is an event in the log.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::answers::errors::{AccountConflict, Forbidden, Invalid, RoleMissing, Unauthorized};
use super::answers::{Empty, Envelope};
use super::body;
use super::envelope::{self, NOTHING_TO_CHANGE};
use super::error::ApiError;
use super::retry::{envelope_answer, KeyHeader, Retry};
use super::user_input::check_rate;
use crate::accounts::role::{RoleChange, RoleCommand};
use crate::accounts::{AccountError, Role};
use crate::app::access::may_grant;
use crate::app::AppState;
use crate::auth::permission::{Grants, PermissionInfo, Scope};
use crate::auth::{AuthUser, Permission};
use crate::store::accounts::{self, AccountWriteError, RoleRow};
use crate::store::Via;

#[utoipa::path(
    get,
    path = "/api/v1/permissions",
    tag = "system",
    responses(
        (status = 200, description = "Every permission a role can grant.", body = Envelope<Vec<PermissionInfo>>),
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("role:read")))
)]
pub async fn permissions(user: AuthUser) -> Result<HttpResponse, ApiError> {
    user.require(Permission::RoleRead)?;
    let all: Vec<PermissionInfo> = Permission::ALL.into_iter().map(Permission::info).collect();
    Ok(envelope::ok(all, "Permissions."))
}

/// A role as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    /// `admin`, `user`, `viewer`, or a custom role's id.
    pub id: String,
    pub name: String,
    pub description: String,
    /// Permission ids, or `["*"]` for every permission.
    pub permissions: Vec<String>,
    /// Whose VMs the permissions reach: the user's `own`, or `all`.
    pub scope: Scope,
    /// Requests a minute for the role's users (`null`: the configured default).
    pub rate_limit: Option<u32>,
    pub built_in: bool,
}

impl From<RoleRow> for RoleView {
    fn from(row: RoleRow) -> Self {
        RoleView {
            scope: Scope::parse(&row.scope).unwrap_or(Scope::Own),
            rate_limit: row.rate_limit.and_then(|r| u32::try_from(r).ok()),
            id: row.id,
            name: row.name,
            description: row.description,
            permissions: row.permissions,
            built_in: row.built_in,
        }
    }
}

fn view(id: &str, role: Role) -> RoleView {
    RoleView {
        id: id.to_string(),
        name: role.name,
        description: role.description,
        permissions: role.permissions,
        scope: role.scope,
        rate_limit: role.rate_limit,
        built_in: role.built_in,
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/roles",
    operation_id = "list_roles",
    tag = "system",
    responses(
        (status = 200, description = "Every role, built-in first.", body = Envelope<Vec<RoleView>>),
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("role:read")))
)]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    user.require(Permission::RoleRead)?;
    let roles: Vec<RoleView> = accounts::roles(&state.pool)
        .await?
        .into_iter()
        .map(RoleView::from)
        .collect();
    Ok(envelope::ok(roles, "Roles."))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewRole {
    /// 2 to 32 lower-case letters, digits or `-`, starting with a letter.
    #[schema(pattern = "^[a-z][a-z0-9-]{1,31}$")]
    id: String,
    /// Up to 64 characters, not all blank.
    #[schema(max_length = 64, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: String,
    /// Up to 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    description: String,
    /// Permission ids from `GET /permissions`, or `["*"]`.
    #[schema(schema_with = permission_ids)]
    permissions: Vec<String>,
    /// `own` (default) or `all`.
    scope: Option<Scope>,
    #[schema(minimum = 1, maximum = 100_000_000)]
    rate_limit: Option<u32>,
}

/// Permission ids of the catalog, or `*` (all of them, whatever else is listed).
fn permission_ids() -> utoipa::openapi::Array {
    permission_ids_builder().build()
}

/// [`permission_ids`] where `null` means "as they are" (an update).
fn permission_ids_or_null() -> utoipa::openapi::Array {
    super::openapi::or_null(permission_ids_builder().description(Some(
        "Permission ids from `GET /permissions`; `*` anywhere grants every permission. `null` or \
         absent leaves them as they are.",
    )))
}

fn permission_ids_builder() -> utoipa::openapi::schema::ArrayBuilder {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    let ids = std::iter::once("*").chain(Permission::ALL.into_iter().map(Permission::id));
    ArrayBuilder::new()
        .description(Some(
            "Permission ids from `GET /permissions`; `*` anywhere grants every permission.",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(ids)),
        )
}

fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = (2..=32).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "id",
            "id must be 2 to 32 lower-case letters, digits or '-', starting with a letter.",
        ))
    }
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("{field} may have at most {max} characters."),
        ));
    }
    Ok(())
}

/// The ids, checked against the catalog and written as the catalog orders them.
fn check_permissions(ids: &[String]) -> Result<Vec<String>, ApiError> {
    Grants::parse(ids)
        .map(|g| g.ids())
        .map_err(|e| ApiError::validation("permissions", format!("{e}.")))
}

/// 403 unless the caller holds every permission (and the scope) the role would grant.
fn check_within(user: &AuthUser, permissions: &[String], scope: Scope) -> Result<(), ApiError> {
    let grants = Grants::parse(permissions).unwrap_or(Grants::Everything);
    if may_grant(user, &grants, scope) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "The role would grant more than your role '{}' does; a role can only be given what you hold.",
            user.role.id
        )))
    }
}

fn role_error(id: &str, e: AccountWriteError) -> ApiError {
    match e {
        AccountWriteError::Refused(AccountError::NotFound) => {
            ApiError::RoleNotFound(id.to_string())
        }
        other => ApiError::from_account(other),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/roles",
    operation_id = "create_role",
    tag = "system",
    request_body = NewRole,
    params(KeyHeader),
    responses(
        (status = 201, description = "Added; recorded as `RoleCreated`.", body = Envelope<RoleView>),
        Invalid,
        Unauthorized,
        Forbidden,
        AccountConflict
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("role:create")))
)]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::RoleCreate)?;
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let new: NewRole = body::typed(body.into_inner().0)?;
    check_id(&new.id)?;
    if new.name.trim().is_empty() {
        return Err(ApiError::validation("name", "name must not be empty."));
    }
    check_text("name", &new.name, 64)?;
    check_text("description", &new.description, 500)?;
    check_rate("rateLimit", new.rate_limit)?;
    let permissions = check_permissions(&new.permissions)?;
    let scope = new.scope.unwrap_or(Scope::Own);
    check_within(&user, &permissions, scope)?;
    let command = RoleCommand::Create {
        name: new.name,
        description: new.description,
        permissions,
        scope,
        rate_limit: new.rate_limit,
    };
    retry
        .transaction(&state, async |tx| {
            let role = accounts::write_role(tx, &user.meta(Via::Rest), &new.id, command)
                .await
                .map_err(|e| role_error(&new.id, e))?
                .ok_or_else(|| ApiError::RoleNotFound(new.id.clone()))?;
            Ok(envelope_answer(
                StatusCode::CREATED,
                view(&new.id, role),
                "Role added.",
            )?)
        })
        .await
}

/// An empty object changes nothing: the answer is the resource as it is (`Nothing to change.`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleUpdate {
    #[schema(max_length = 64, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: Option<String>,
    #[schema(max_length = 500)]
    description: Option<String>,
    #[schema(schema_with = permission_ids_or_null)]
    permissions: Option<Vec<String>>,
    scope: Option<Scope>,
    /// `null` returns the role to the configured default.
    #[serde(default, deserialize_with = "crate::accounts::present_or_null")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100_000_000)]
    rate_limit: Option<Option<u32>>,
}

#[utoipa::path(
    put,
    path = "/api/v1/roles/{id}",
    operation_id = "update_role",
    tag = "system",
    params(("id" = String, Path, description = "The role's id."), KeyHeader),
    request_body = RoleUpdate,
    responses(
        (status = 200, description = "Changed; recorded as `RoleChanged`, in force at once for its users. Built-in roles change only their description and rate limit. A request that changes nothing answers the role as it is, with message `Nothing to change.`, and records nothing.", body = Envelope<RoleView>),
        Invalid,
        Unauthorized,
        Forbidden,
        RoleMissing,
        AccountConflict
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("role:update")))
)]
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::RoleUpdate)?;
    let id = path.into_inner();
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let update: RoleUpdate = body::typed(body.into_inner().0)?;
    if let Some(name) = &update.name {
        if name.trim().is_empty() {
            return Err(ApiError::validation("name", "name must not be empty."));
        }
        check_text("name", name, 64)?;
    }
    if let Some(description) = &update.description {
        check_text("description", description, 500)?;
    }
    check_rate("rateLimit", update.rate_limit.flatten())?;
    // The role as it is, and as it would be, must both be within the caller's.
    let current = accounts::role(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::RoleNotFound(id.clone()))?;
    let current_scope = Scope::parse(&current.scope).unwrap_or(Scope::All);
    check_within(&user, &current.permissions, current_scope)?;
    check_within(
        &user,
        update
            .permissions
            .as_deref()
            .unwrap_or(&current.permissions),
        update.scope.unwrap_or(current_scope),
    )?;
    let change = RoleChange {
        name: update.name,
        description: update.description,
        permissions: update
            .permissions
            .as_deref()
            .map(check_permissions)
            .transpose()?,
        scope: update.scope,
        rate_limit: update.rate_limit,
    };
    // A request that changes nothing (an empty body, or the role as it is) answers the role as
    // it is: a client that puts back what it read, or retries, gets a 200.
    retry
        .transaction(&state, async |tx| {
            let written =
                accounts::write_role(tx, &user.meta(Via::Rest), &id, RoleCommand::Change(change))
                    .await;
            let (role, message) = match written {
                Ok(role) => (role, "Role changed."),
                Err(AccountWriteError::Refused(AccountError::NothingToChange)) => (
                    accounts::role(&mut *tx, &id).await?.map(|r| r.state()),
                    NOTHING_TO_CHANGE,
                ),
                Err(e) => return Err(role_error(&id, e)),
            };
            let role = role.ok_or_else(|| ApiError::RoleNotFound(id.clone()))?;
            Ok(envelope_answer(StatusCode::OK, view(&id, role), message)?)
        })
        .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/roles/{id}",
    operation_id = "delete_role",
    tag = "system",
    params(("id" = String, Path, description = "The role's id."), KeyHeader),
    responses(
        (status = 200, description = "Deleted; recorded as `RoleDeleted`. Built-in roles and roles users have stay.", body = Envelope<Empty>),
        Unauthorized,
        Forbidden,
        RoleMissing,
        AccountConflict
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("role:delete")))
)]
pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<String>,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::RoleDelete)?;
    let id = path.into_inner();
    let retry = Retry::read(&req, &user, &[])?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    if let Some(current) = accounts::role(&state.pool, &id).await? {
        let scope = Scope::parse(&current.scope).unwrap_or(Scope::All);
        check_within(&user, &current.permissions, scope)?;
    }
    retry
        .transaction(&state, async |tx| {
            accounts::write_role(tx, &user.meta(Via::Rest), &id, RoleCommand::Delete)
                .await
                .map_err(|e| role_error(&id, e))?;
            Ok(envelope_answer(StatusCode::OK, Empty {}, "Role deleted.")?)
        })
        .await
}
