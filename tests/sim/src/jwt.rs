//! HS256 JSON Web Tokens as Kling uses them: `iss` = access key, `exp`/`nbf` in Unix seconds,
//! signed with the secret key. Verification is written out here (HMAC-SHA256 over
//! `header.payload`, base64url without padding) so the simulator checks exactly what Kling checks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a Kling token was refused, with Kling's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// No `Authorization: Bearer …` header (1001).
    Missing,
    /// Not a well-formed HS256 JWT, or no `exp` (1002).
    Malformed,
    /// The signature does not match the secret key (1000).
    BadSignature,
    /// `iss` is not the configured access key (1000).
    UnknownIssuer,
    /// `nbf` is in the future (1003).
    NotYetValid,
    /// `exp` has passed (1004).
    Expired,
}

impl JwtError {
    /// Kling's error code for this refusal.
    pub fn code(self) -> u32 {
        match self {
            Self::BadSignature | Self::UnknownIssuer => 1000,
            Self::Missing => 1001,
            Self::Malformed => 1002,
            Self::NotYetValid => 1003,
            Self::Expired => 1004,
        }
    }

    /// A message in the spirit of Kling's.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "Authorization is empty",
            Self::Malformed => "Authorization is invalid",
            Self::BadSignature => "Authentication failed: signature mismatch",
            Self::UnknownIssuer => "Authentication failed: unknown access key",
            Self::NotYetValid => "Authorization is not yet valid",
            Self::Expired => "Authorization has expired",
        }
    }
}

/// Signs `claims` with HS256.
pub fn encode_hs256(claims: &Value, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(mac(secret, &signing_input).finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// A token as a well-behaved Kling client makes it: valid from `now - 5` to `now + 1800`.
pub fn kling_token(access_key: &str, secret_key: &str, now_unix: i64) -> String {
    encode_hs256(
        &json!({"iss": access_key, "exp": now_unix + 1800, "nbf": now_unix - 5}),
        secret_key,
    )
}

/// Checks an `Authorization` header value against the configured keys at `now_unix`, and returns
/// the token's claims.
pub fn verify_bearer(
    authorization: Option<&str>,
    access_key: &str,
    secret_key: &str,
    now_unix: i64,
) -> Result<Value, JwtError> {
    let token = authorization
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(JwtError::Missing)?;
    let claims = verify_hs256(token, secret_key)?;
    if claims.get("iss").and_then(Value::as_str) != Some(access_key) {
        return Err(JwtError::UnknownIssuer);
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(JwtError::Malformed)?;
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_i64().ok_or(JwtError::Malformed)?;
        if nbf > now_unix {
            return Err(JwtError::NotYetValid);
        }
    }
    if exp <= now_unix {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

/// Checks the structure, the algorithm and the signature; returns the claims.
fn verify_hs256(token: &str, secret: &str) -> Result<Value, JwtError> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    if payload.contains('.') {
        return Err(JwtError::Malformed);
    }
    // Only HS256: accepting `none` or another algorithm is the classic JWT hole.
    if decode_json(header)?.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Malformed);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| JwtError::Malformed)?;
    // `verify_slice` compares in constant time.
    mac(secret, signing_input).verify_slice(&signature).map_err(|_| JwtError::BadSignature)?;
    let claims = decode_json(payload)?;
    if claims.is_object() { Ok(claims) } else { Err(JwtError::Malformed) }
}

/// The claims of a token without checking anything, for recording what a client sent.
pub fn peek_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    decode_json(payload).ok()
}

fn decode_json(part: &str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

fn mac(secret: &str, signing_input: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(signing_input.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn check(token: &str) -> Result<Value, JwtError> {
        verify_bearer(Some(&format!("Bearer {token}")), "ak", "sk", NOW)
    }

    #[test]
    fn a_well_made_token_passes() {
        let claims = check(&kling_token("ak", "sk", NOW)).unwrap();
        assert_eq!(claims["iss"], "ak");
    }

    #[test]
    fn each_defect_has_its_code() {
        assert_eq!(check(&kling_token("ak", "other", NOW)), Err(JwtError::BadSignature));
        assert_eq!(check(&kling_token("nobody", "sk", NOW)), Err(JwtError::UnknownIssuer));
        assert_eq!(check(&kling_token("ak", "sk", NOW - 1800)), Err(JwtError::Expired));
        assert_eq!(check(&kling_token("ak", "sk", NOW + 60)), Err(JwtError::NotYetValid));
        assert_eq!(check("not.a-token"), Err(JwtError::Malformed));
        assert_eq!(verify_bearer(None, "ak", "sk", NOW), Err(JwtError::Missing));
        let no_exp = encode_hs256(&json!({"iss": "ak"}), "sk");
        assert_eq!(check(&no_exp), Err(JwtError::Malformed));
    }

    #[test]
    fn the_none_algorithm_is_refused() {
        let token = kling_token("ak", "sk", NOW);
        let (_, rest) = token.split_once('.').unwrap();
        let none = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
        assert_eq!(check(&none), Err(JwtError::Malformed));
    }
}
