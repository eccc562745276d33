//! `/auth`: login, the current user, logout and password change.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::DateTime;
use serde::Deserialize;

use super::answers::errors::{Invalid, LoginRefused, Unauthorized};
use super::answers::{Empty, Envelope, LoginEnvelope, Me, Session, UserInfo};
use super::body;
use super::envelope;
use super::error::ApiError;
use crate::accounts::user::UserCommand;
use crate::accounts::UserStatus;
use crate::app::AppState;
use crate::auth::login_guard;
use crate::auth::{password, AuthUser};
use crate::metrics::RateLimitKind;
use crate::store::{accounts, users, StoreError, Via};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "Logged in.", body = LoginEnvelope),
        Invalid,
        LoginRefused
    )
)]
#[tracing::instrument(name = "login", skip_all)]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    let login: Login = body::typed(body.into_inner().0)?;
    let addr = req.peer_addr().map(|a| a.ip().to_string());
    let keys = login_guard::keys(&login.username, addr.as_deref());
    let period = not_locked_out(&state, &keys)?;
    let refused = || {
        state.login_guard.failed(&keys, period, Instant::now());
        ApiError::Unauthorized("The username or password is wrong.".into())
    };
    let user = users::by_username(&state.pool, &login.username).await?;
    let Some(user) = user else {
        // Spend the same time as a real check, so names cannot be probed by timing.
        let _ = password::hash(login.password).await;
        return Err(refused());
    };
    if !password::verify(login.password, user.password_hash.clone()).await? {
        return Err(refused());
    }
    if user.status != UserStatus::Active.as_str() {
        return Err(ApiError::Unauthorized("The user is disabled.".into()));
    }
    state.login_guard.succeeded(&login.username);
    let (token, expires) =
        state
            .tokens
            .issue(&user.id, &user.username, &user.role, user.token_generation)?;
    Ok(HttpResponse::Ok().json(LoginEnvelope {
        success: true,
        data: Session {
            token: token.clone(),
            expires_at: expires,
            user: UserInfo {
                id: user.id,
                username: user.username,
                role: user.role,
            },
        },
        message: "Logged in.".into(),
        timestamp: envelope::timestamp(),
        token,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    responses(
        (status = 200, description = "The current user, with their permissions, quota and usage.", body = Envelope<Me>),
        Unauthorized
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "me", skip_all, fields(user_id = %user.id))]
pub async fn me(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let usage = users::usage(&state.pool, &user.id).await?;
    let defaults = crate::app::access::quota_defaults(&state, &user);
    let quota = crate::store::quota::of_user(&state.pool, &user.id, defaults).await?;
    let live = state.live.get();
    Ok(envelope::ok(
        Me {
            permissions: user.role.grants.ids(),
            scope: user.role.scope,
            quota,
            usage,
            rate_limit: user
                .rate_limit
                .or(user.role.rate_limit)
                .unwrap_or(live.requests_per_minute),
            role: user.role.id.clone(),
            id: user.id,
            username: user.name,
        },
        "The current user.",
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    responses(
        (status = 200, description = "The token no longer works, here or on open WebSocket connections.", body = Envelope<Empty>),
        Unauthorized
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "logout", skip_all, fields(user_id = %user.id))]
pub async fn logout(
    state: web::Data<AppState>,
    user: AuthUser,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    let expires = DateTime::from_timestamp(user.expires_at, 0).unwrap_or_else(chrono::Utc::now);
    users::revoke_token(&state.pool, &user.jti, expires).await?;
    state.auth.note_revoked(&user.jti, user.expires_at);
    Ok(envelope::ok(Empty {}, "Logged out."))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PasswordChange {
    current_password: String,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    new_password: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password",
    tag = "auth",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed. Every token issued before, this one included, stops working (also on open WebSocket connections); log in again.", body = Envelope<Empty>),
        Invalid,
        Unauthorized
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "change_password", skip_all, fields(user_id = %user.id))]
pub async fn change_password(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    let change: PasswordChange = body::typed(body.into_inner().0)?;
    if !(8..=256).contains(&change.new_password.chars().count()) {
        return Err(ApiError::validation(
            "newPassword",
            "The new password must have 8 to 256 characters.",
        ));
    }
    // Wrong current passwords count as failed logins of the user: a stolen token must not be a
    // way to guess the password without the login's lockout.
    let keys = login_guard::keys(&user.name, None);
    let period = not_locked_out(&state, &keys)?;
    let row = users::by_id(&state.pool, &user.id)
        .await?
        .ok_or_else(|| ApiError::UserNotFound(user.name.clone()))?;
    if !password::verify(change.current_password, row.password_hash).await? {
        state.login_guard.failed(&keys, period, Instant::now());
        return Err(ApiError::validation(
            "currentPassword",
            "The current password is wrong.",
        ));
    }
    state.login_guard.succeeded(&user.name);
    let hash = password::hash(change.new_password).await?;
    // No Idempotency-Key: the change revokes the token a retry would carry.
    let mut tx = crate::store::begin(&state.pool).await?;
    accounts::change_user(
        &mut tx,
        &user.meta(Via::Rest),
        &user.id,
        &[UserCommand::SetPassword { by_admin: false }],
        Some(&hash),
    )
    .await
    .map_err(ApiError::from_account)?;
    tx.commit().await.map_err(StoreError::from)?;
    state.auth.forget_user(&user.id);
    Ok(envelope::ok(Empty {}, "Password changed."))
}

/// Refuses while any of `keys` has too many failed password checks within the lockout period;
/// otherwise answers the period, for counting a failure.
fn not_locked_out(state: &AppState, keys: &[String]) -> Result<Duration, ApiError> {
    let live = state.live.get();
    let period = Duration::from_secs(live.login_lockout_seconds);
    match state
        .login_guard
        .check(keys, live.login_failures, period, Instant::now())
    {
        Ok(()) => Ok(period),
        Err(wait) => {
            state.metrics.rate_limited(RateLimitKind::Login);
            Err(ApiError::LoginLocked {
                failures: live.login_failures,
                retry_after: wait.as_secs().max(1),
            })
        }
    }
}
