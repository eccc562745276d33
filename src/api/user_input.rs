//! The input of `/users`: the bodies and query a user command takes, and the checks that turn
//! them into values the handlers can trust (each failure names its field).

use serde::Deserialize;

use super::error::ApiError;
use crate::accounts::{QuotaOverrides, UserStatus};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewUser {
    /// 3 to 32 letters, digits, `.`, `_` or `-`; unique.
    #[schema(pattern = "^[A-Za-z0-9._-]{3,32}$")]
    pub username: String,
    /// An address like `name@example.com`, at most 254 characters.
    #[schema(
        max_length = 254,
        pattern = "^[^@\\s\\u0000]+@[^\\s\\u0000]*\\.[^\\s\\u0000]*$"
    )]
    pub email: Option<String>,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
    /// A role id (`GET /roles`).
    #[schema(pattern = "^[a-z][a-z0-9-]{1,31}$")]
    pub role: String,
    #[serde(default)]
    pub quota: QuotaOverrides,
    /// Requests a minute for this user.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub rate_limit: Option<u32>,
}

pub fn check_username(name: &str) -> Result<(), ApiError> {
    let ok = (3..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "username",
            "username must be 3 to 32 letters, digits, '.', '_' or '-'.",
        ))
    }
}

pub fn check_password(field: &str, password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(8..=256).contains(&n) {
        return Err(ApiError::validation(
            field,
            format!("{field} must have 8 to 256 characters."),
        ));
    }
    Ok(())
}

pub fn check_email(email: &str) -> Result<(), ApiError> {
    let ok = email.chars().count() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "email",
            "email must be an address like name@example.com.",
        ))
    }
}

/// A requests-a-minute figure: from 1 to 100,000,000.
pub fn check_rate(field: &str, rate: Option<u32>) -> Result<(), ApiError> {
    match rate {
        Some(0) => Err(ApiError::validation(
            field,
            format!("{field} must be at least 1."),
        )),
        Some(r) if r > 100_000_000 => Err(ApiError::validation(
            field,
            format!("{field} must be at most 100000000."),
        )),
        _ => Ok(()),
    }
}

/// A change: only the fields present change (`null` clears `email` and `rateLimit`).
/// An empty object changes nothing: the answer is the resource as it is (`Nothing to change.`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserUpdate {
    /// An address like `name@example.com`, at most 254 characters; `null` clears it.
    #[serde(default, deserialize_with = "crate::accounts::present_or_null")]
    #[schema(value_type = Option<String>, max_length = 254, pattern = "^[^@\\s\\u0000]+@[^\\s\\u0000]*\\.[^\\s\\u0000]*$")]
    pub email: Option<Option<String>>,
    /// A new password (8 to 256 characters); ends every token the user had.
    #[schema(min_length = 8, max_length = 256)]
    pub password: Option<String>,
    /// A role id (`GET /roles`).
    #[schema(pattern = "^[a-z][a-z0-9-]{1,31}$")]
    pub role: Option<String>,
    /// `disabled` ends every token the user has, on REST and open WebSockets, at once.
    pub status: Option<UserStatus>,
    pub quota: Option<QuotaOverrides>,
    #[serde(default, deserialize_with = "crate::accounts::present_or_null")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100_000_000)]
    pub rate_limit: Option<Option<u32>>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The id or username of the user who takes over the deleted user's VMs.
    pub transfer_to: Option<String>,
}
