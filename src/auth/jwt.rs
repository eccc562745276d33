//! Tokens: HS256 JWTs carrying `sub` (user id), `name`, `role`, `exp`, `iat`, `jti` (so one
//! token can be revoked at logout) and `gen` (so a password change ends every older token).

use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub role: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// The user's token generation when it was issued; a password change starts a new one.
    #[serde(rename = "gen", default)]
    pub generation: i64,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("The token has expired.")]
    Expired,
    #[error("The token is not valid.")]
    Invalid,
}

impl TokenKeys {
    pub fn new(secret: &str, ttl_secs: u64) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2),
        }
    }

    /// A fresh token for a user, and when it expires.
    pub fn issue(
        &self,
        user_id: &str,
        name: &str,
        role: &str,
        generation: i64,
    ) -> anyhow::Result<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let exp = now.timestamp() + self.ttl_secs;
        let claims = Claims {
            sub: user_id.to_string(),
            name: name.to_string(),
            role: role.to_string(),
            exp,
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            generation,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        let expires = DateTime::from_timestamp(exp, 0).unwrap_or(now);
        Ok((token, expires))
    }

    /// The claims of a token this server could have issued: signed with its key, unexpired, and
    /// (should the key ever leak) no `nbf` or `iat` in the future and no lifetime longer than the
    /// configured one, so a forged token cannot outlive what the server would grant.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let issued_in_the_future = claims.iat > Utc::now().timestamp() + CLOCK_SKEW_SECS;
        let lives_too_long = claims.exp.saturating_sub(claims.iat) > self.ttl_secs;
        if issued_in_the_future || lives_too_long {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// How far another node's clock may run ahead of this one's for a token it issued (`iat`).
const CLOCK_SKEW_SECS: i64 = 60;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies() {
        let keys = TokenKeys::new("0123456789abcdef0123456789abcdef", 60);
        let (token, _) = keys.issue("u1", "alice", "user", 0).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.role, "user");
    }

    #[test]
    fn a_token_signed_with_another_key_is_invalid() {
        let keys = TokenKeys::new("0123456789abcdef0123456789abcdef", 60);
        let other = TokenKeys::new("ffffffffffffffffffffffffffffffff", 60);
        let (token, _) = other.issue("u1", "alice", "user", 0).unwrap();
        assert!(matches!(keys.verify(&token), Err(TokenError::Invalid)));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = TokenKeys::new("0123456789abcdef0123456789abcdef", 0);
        let (token, _) = keys.issue("u1", "alice", "user", 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(matches!(keys.verify(&token), Err(TokenError::Expired)));
    }

    /// A token signed with the server's key but with claims of the caller's choosing.
    fn forged(keys: &TokenKeys, iat: i64, exp: i64, nbf: Option<i64>) -> String {
        let mut claims = serde_json::json!({"sub": "u1", "name": "alice", "role": "user",
            "iat": iat, "exp": exp, "jti": "j", "gen": 0});
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf.into();
        }
        encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap()
    }

    #[test]
    fn a_token_living_longer_than_the_configured_lifetime_is_refused() {
        let keys = TokenKeys::new("0123456789abcdef0123456789abcdef", 3600);
        let now = Utc::now().timestamp();
        assert!(keys.verify(&forged(&keys, now, now + 3600, None)).is_ok());
        let century = forged(&keys, now, now + 100 * 365 * 86_400, None);
        assert!(matches!(keys.verify(&century), Err(TokenError::Invalid)));
    }

    #[test]
    fn a_token_issued_or_valid_only_in_the_future_is_refused() {
        let keys = TokenKeys::new("0123456789abcdef0123456789abcdef", 3600);
        let now = Utc::now().timestamp();
        let later = forged(&keys, now + 600, now + 1200, None);
        assert!(matches!(keys.verify(&later), Err(TokenError::Invalid)));
        let not_yet = forged(&keys, now, now + 1200, Some(now + 600));
        assert!(matches!(keys.verify(&not_yet), Err(TokenError::Invalid)));
        // Another node's clock a few seconds ahead is not the future.
        assert!(keys
            .verify(&forged(&keys, now + 5, now + 3605, None))
            .is_ok());
    }

    #[test]
    fn a_token_without_iat_is_refused() {
        let keys = TokenKeys::new("0123456789abcdef0123456789abcdef", 3600);
        let claims = serde_json::json!({"sub": "u1", "name": "a", "role": "user",
            "exp": Utc::now().timestamp() + 60, "jti": "j"});
        let token = encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(matches!(keys.verify(&token), Err(TokenError::Invalid)));
    }
}
