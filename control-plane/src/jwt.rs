//! HS256 JSON Web Tokens (RFC 7519), the node tokens of the control plane.
//!
//! Only what PyJWT does for the real server: the header must name `HS256`, the signature is an
//! HMAC-SHA256 over `header.payload`, segments are base64url without padding, and `exp` is
//! checked. The claims are returned as JSON so the caller decides what they must contain.

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE_NO_PAD, URL_SAFE_NO_PAD_INDIFFERENT};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. The server answers every case with the same 401, so this only
/// serves tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url segments of JSON objects.
    Malformed,
    /// The header names an algorithm other than HS256 (including `none`).
    Algorithm,
    /// The HMAC does not match: forged, tampered with, or signed with another secret.
    Signature,
    /// `exp` is not a number.
    BadExpiry,
    /// `exp` is in the past.
    Expired,
}

/// Signs `claims` with `secret`: `base64url(header).base64url(claims).base64url(hmac)`.
pub fn encode(secret: &[u8], claims: &Value) -> String {
    // PyJWT writes the header with sorted keys and no spaces; so do we.
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(
        mac(secret, signing_input.as_bytes())
            .finalize()
            .into_bytes(),
    );
    format!("{signing_input}.{signature}")
}

/// Checks the header and the signature and returns the claims, without looking at them.
pub fn verify_signature(secret: &[u8], token: &str) -> Result<Value, Invalid> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    let header = decode_object(header)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(Invalid::Algorithm);
    }
    // PyJWT tolerates padding on input, so accept it too.
    let signature = URL_SAFE_NO_PAD_INDIFFERENT
        .decode(signature)
        .map_err(|_| Invalid::Malformed)?;
    let signing_input = &token[..header_and_payload_len(token)];
    // `verify_slice` compares in constant time, so response timing leaks nothing about the
    // expected signature.
    mac(secret, signing_input.as_bytes())
        .verify_slice(&signature)
        .map_err(|_| Invalid::Signature)?;
    decode_object(payload)
}

/// Verifies the signature, then `exp` (a NumericDate, seconds since the epoch): a token whose
/// `exp` is at or before `now` is expired, as in PyJWT. A token without `exp` never expires.
pub fn verify(secret: &[u8], token: &str, now: f64) -> Result<Value, Invalid> {
    let claims = verify_signature(secret, token)?;
    match claims.get("exp") {
        None => {}
        Some(exp) => {
            let exp = exp.as_f64().ok_or(Invalid::BadExpiry)?;
            if exp <= now {
                return Err(Invalid::Expired);
            }
        }
    }
    Ok(claims)
}

fn mac(secret: &[u8], data: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_object(segment: &str) -> Result<Value, Invalid> {
    let bytes = URL_SAFE_NO_PAD_INDIFFERENT
        .decode(segment)
        .map_err(|_| Invalid::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(Invalid::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example token of jwt.io and RFC-style tutorials, signed with `your-256-bit-secret`.
    const JWT_IO: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
        SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn verifies_jwt_io_test_vector() {
        let claims = verify_signature(b"your-256-bit-secret", JWT_IO).unwrap();
        assert_eq!(
            claims,
            json!({"sub": "1234567890", "name": "John Doe", "iat": 1516239022})
        );
        assert_eq!(
            verify_signature(b"another-secret", JWT_IO),
            Err(Invalid::Signature)
        );
    }

    #[test]
    fn encoding_reproduces_jwt_io_test_vector() {
        // Same header and claims (in the same order) must give the same bytes.
        let claims = json!({"sub": "1234567890", "name": "John Doe", "iat": 1516239022});
        assert_eq!(encode(b"your-256-bit-secret", &claims), JWT_IO);
    }

    #[test]
    fn round_trip_and_expiry() {
        let token = encode(b"k", &json!({"node_id": "n", "exp": 100.5}));
        assert!(verify(b"k", &token, 100.0).is_ok());
        assert_eq!(verify(b"k", &token, 100.5), Err(Invalid::Expired));
        let token = encode(b"k", &json!({"exp": "soon"}));
        assert_eq!(verify(b"k", &token, 0.0), Err(Invalid::BadExpiry));
    }

    #[test]
    fn refuses_tampering_and_alg_none() {
        let token = encode(b"k", &json!({"node_id": "a"}));
        let (rest, sig) = token.rsplit_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(r#"{"node_id":"b"}"#);
        let head = rest.split('.').next().unwrap();
        let forged = format!("{head}.{forged_payload}.{sig}");
        assert_eq!(verify(b"k", &forged, 0.0), Err(Invalid::Signature));

        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{forged_payload}.");
        assert_eq!(verify(b"k", &unsigned, 0.0), Err(Invalid::Algorithm));

        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30"] {
            assert_eq!(verify(b"k", junk, 0.0), Err(Invalid::Malformed), "{junk}");
        }
    }
}
