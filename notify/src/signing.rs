//! HMAC-SHA256 signatures over the exact bytes of a request body.
//!
//! The signature covers the raw body only, which is what third-party verifiers
//! (GitHub-style `payload-hmac-sha256` rules in adnanh/webhook, most chat and incident
//! tools) hash. Replay protection still holds because every body carries its send
//! timestamp and idempotency key *inside* the signed bytes; the `X-Driftwall-Timestamp`
//! and `Idempotency-Key` headers only mirror them. A receiver verifies the signature,
//! then refuses a body whose timestamp is older than its tolerance (five minutes is
//! usual) or whose idempotency key it has already processed.
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::MIN_SECRET_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying `sha256=<lowercase hex HMAC of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Driftwall-Signature-256";
/// The header mirroring the body's send time, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Driftwall-Timestamp";
/// The header mirroring the body's idempotency key (stable across retries).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A target's signing key. Its `Debug` form never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// Accepts a key of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "signing secret is {} bytes; at least {MIN_SECRET_BYTES} are required",
                bytes.len()
            ));
        }
        Ok(SigningSecret(bytes))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail; stay total anyway.
        HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable_hmac())
    }
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // new_from_slice only fails for MACs with fixed key sizes, which HMAC is not.
    unreachable!("HMAC-SHA256 accepts keys of any length")
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(<{} bytes>)", self.0.len())
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body`: `sha256=<hex>`.
pub fn signature_header(secret: &SigningSecret, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is not `sha256=<64 hex digits>`")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks a [`SIGNATURE_HEADER`] value against `body` in constant time.
pub fn verify_signature(
    secret: &SigningSecret,
    body: &[u8],
    header: &str,
) -> Result<(), SignatureError> {
    let hex_part = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let given = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = secret.mac();
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningSecret {
        SigningSecret::new(b"key-of-sixteen-bytes".to_vec()).unwrap()
    }

    #[test]
    fn signature_matches_openssl() {
        // Reference computed with: printf 'hello' | openssl dgst -sha256 -hmac key-of-sixteen-bytes
        let h = signature_header(&key(), b"hello");
        assert_eq!(
            h,
            "sha256=922a60fb79f097b46f1d0b55b22127d23ecf7966502e3d7dcc1beb10778e4314"
        );
    }

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() {
        let h = signature_header(&key(), b"{\"a\":1}");
        assert_eq!(verify_signature(&key(), b"{\"a\":1}", &h), Ok(()));
        assert_eq!(
            verify_signature(&key(), b"{\"a\":2}", &h),
            Err(SignatureError::Mismatch)
        );
        let other = SigningSecret::new(b"another-sixteen-bytes".to_vec()).unwrap();
        assert_eq!(
            verify_signature(&other, b"{\"a\":1}", &h),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&key(), b"x", "md5=00"),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(SigningSecret::new(b"short".to_vec()).is_err());
        assert_eq!(format!("{:?}", key()), "SigningSecret(<20 bytes>)");
    }
}
