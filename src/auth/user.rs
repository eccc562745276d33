//! The authenticated caller, extracted from `Authorization: Bearer <jwt>`.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::cache::{Refusal, TokenRef};
use super::jwt::TokenError;
use super::permission::{Permission, RoleGrant, Scope};
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::store::{CommandMeta, Via};

#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub name: String,
    /// The role as it is now (a role changed after the token was issued applies at once).
    pub role: RoleGrant,
    /// The user's own request rate (a minute), over the role's.
    pub rate_limit: Option<u32>,
    pub jti: String,
    pub expires_at: i64,
    /// The token generation the token was issued in (see `auth::cache`).
    pub token_generation: i64,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

impl AuthUser {
    /// Whether the role reaches every user's VMs, jobs and events (else only the user's own).
    pub fn sees_all(&self) -> bool {
        self.role.scope == Scope::All
    }

    /// May this user see and act on something owned by `owner_id`?
    pub fn may_access(&self, owner_id: &str) -> bool {
        self.sees_all() || self.id == owner_id
    }

    /// Whose VMs this user may act on, for the VM's actor to check ([`crate::store::conditions::Viewer`]).
    pub fn viewer(&self) -> crate::store::conditions::Viewer {
        crate::store::conditions::Viewer {
            owner: self.owner_filter(),
        }
    }

    /// The owner to restrict a listing to: none for a role that sees all.
    pub fn owner_filter(&self) -> Option<String> {
        (!self.sees_all()).then(|| self.id.clone())
    }

    /// Whether the role grants `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        self.role.grants.allows(permission)
    }

    /// 403 `FORBIDDEN` naming `permission` unless the role grants it.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.may(permission) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied {
                permission,
                role: self.role.id.clone(),
            })
        }
    }

    /// The metadata a command from this user is recorded with.
    pub fn meta(&self, via: Via) -> CommandMeta {
        CommandMeta {
            actor_id: self.id.clone(),
            actor_name: self.name.clone(),
            via,
            request_id: self.request_id.clone(),
            client_addr: self.client_addr.clone(),
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let mut fields = req
        .headers()
        .get_all(actix_web::http::header::AUTHORIZATION);
    let field = fields.next()?;
    // Two credentials: which one counts would depend on who reads them (a proxy may check the
    // other); neither does.
    if fields.next().is_some() {
        return None;
    }
    let (scheme, token) = field.to_str().ok()?.trim().split_once(' ')?;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        // The rate limiter authenticated this request already.
        if let Some(user) = req.extensions().get::<AuthUser>().cloned() {
            return Box::pin(async move { Ok(user) });
        }
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req).map(str::to_string);
        let request_id = crate::api::request_id::of(req);
        let client_addr = req.peer_addr().map(|a| a.ip().to_string());
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                ApiError::Unexpected(anyhow::anyhow!("the application state is missing"))
            })?;
            let token = token.ok_or_else(|| {
                ApiError::Unauthorized(
                    "The Authorization header must carry a bearer token.".to_string(),
                )
            })?;
            authenticate(&state, &token, request_id, client_addr).await
        })
    }
}

/// Checks a token: its signature and expiry here, then (through the node's cache, without a
/// database round trip in the common case) that it was not revoked, that its user still exists,
/// and that the password did not change since it was issued.
pub async fn authenticate(
    state: &AppState,
    token: &str,
    request_id: Option<String>,
    client_addr: Option<String>,
) -> Result<AuthUser, ApiError> {
    let claims = state.tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => ApiError::Unauthorized("The token has expired.".into()),
        TokenError::Invalid => ApiError::Unauthorized("The token is not valid.".into()),
    })?;
    let user = state
        .auth
        .check(
            &state.pool,
            TokenRef {
                jti: &claims.jti,
                user_id: &claims.sub,
                generation: claims.generation,
            },
        )
        .await
        .map_err(refused)?;
    Ok(AuthUser {
        id: user.id,
        name: user.username,
        role: user.role,
        rate_limit: user.rate_limit,
        jti: claims.jti,
        expires_at: claims.exp,
        token_generation: claims.generation,
        request_id,
        client_addr,
    })
}

/// The answer to a token the cache refuses.
pub fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Store(e) => e.into(),
        Refusal::PasswordChanged => ApiError::Unauthorized(
            "The token has been revoked: the password was changed after it was issued.".into(),
        ),
        other @ (Refusal::Revoked | Refusal::UserGone | Refusal::Disabled) => {
            ApiError::Unauthorized(other.to_string())
        }
    }
}
