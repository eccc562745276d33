//! How a receiver knows a delivery came from VoidVM and is fresh: each request carries
//! `X-VoidVM-Timestamp` (Unix seconds) and `X-VoidVM-Signature: sha256=<hex>`, the HMAC-SHA256,
//! keyed with the webhook's secret, of `"{timestamp}.{body}"`. A receiver recomputes it over the
//! raw body, compares in constant time, and refuses timestamps older than a few minutes (a
//! replayed request keeps its old timestamp, which the signature covers).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "X-VoidVM-Signature";
pub const TIMESTAMP_HEADER: &str = "X-VoidVM-Timestamp";
pub const EVENT_HEADER: &str = "X-VoidVM-Event";
pub const DELIVERY_HEADER: &str = "X-VoidVM-Delivery";
pub const POSITION_HEADER: &str = "X-VoidVM-Position";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-VoidVM-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Whether `header` is the signature of `body` at `timestamp` (constant-time comparison).
pub fn verify(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_secret_timestamp_and_body_only() {
        let sig = sign("s3cret-s3cret-s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(
            "s3cret-s3cret-s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify(
            "another-secret-here",
            1_700_000_000,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify(
            "s3cret-s3cret-s3cret",
            1_700_000_001,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify(
            "s3cret-s3cret-s3cret",
            1_700_000_000,
            b"{\"a\":2}",
            &sig
        ));
        assert!(!verify(
            "s3cret-s3cret-s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            "sha256=zz"
        ));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python's hmac.new(b"key", b'1700000000.{"a":1}', sha256).
        assert_eq!(
            sign("key", 1_700_000_000, b"{\"a\":1}"),
            "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
