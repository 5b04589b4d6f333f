//! Kling's own credentials, for clients written for Kling's API (`/kling/v1/…`): an access key /
//! secret key pair issued with an API key, and the HS256 JWT a Kling client signs with them.
//!
//! The access key is random and stored (it finds the API key's row, like a key prefix). The
//! secret key is never stored: it is HMAC-SHA256 of the server key of `kling_key_version`
//! ([`CallbackKeys::derive`]), the API key's id and the access key, derived again to check each
//! JWT. A stolen database backup cannot sign a token; revoking the API key revokes the pair.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use sha2::Sha256;
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::generation::callback_token::CallbackKeys;
use crate::ids::{ApiKeyId, UserId};

/// What a secret key's derivation is for (domain separation from other derived keys).
const PURPOSE: &str = "kling secret key";
/// Length of an access key (Kling's are 32 alphanumeric characters too).
const ACCESS_KEY_LEN: usize = 32;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 5;
/// Longest JWT accepted, in bytes (a Kling token is about 200).
const MAX_TOKEN_LEN: usize = 4096;

/// A freshly issued pair: the only time the secret key is shown.
#[derive(Debug, Clone)]
pub struct KlingKeyPair {
    /// The access key (the JWT's `iss`).
    pub access_key: String,
    /// The secret key (signs the JWT). Not stored.
    pub secret_key: String,
}

/// The secret key of the pair `access_key` of API key `api_key` under server key `version`;
/// `None` when that server key is no longer configured.
pub fn secret_key(
    keys: &CallbackKeys,
    version: i16,
    api_key: ApiKeyId,
    access_key: &str,
) -> Option<String> {
    let mut subject = api_key.0.as_bytes().to_vec();
    subject.extend_from_slice(access_key.as_bytes());
    keys.derive(version, PURPOSE, &subject).map(hex::encode)
}

/// Gives API key `api_key` a Kling pair (under the current server key) and returns it.
pub async fn issue(
    executor: impl PgExecutor<'_>,
    keys: &CallbackKeys,
    api_key: ApiKeyId,
) -> Result<KlingKeyPair, sqlx::Error> {
    let access_key: String =
        rand::rng().sample_iter(Alphanumeric).take(ACCESS_KEY_LEN).map(char::from).collect();
    let version = keys.current_version();
    sqlx::query("UPDATE api_keys SET kling_access_key = $2, kling_key_version = $3 WHERE id = $1")
        .bind(api_key)
        .bind(&access_key)
        .bind(version)
        .execute(executor)
        .await?;
    let secret_key =
        secret_key(keys, version, api_key, &access_key).expect("the current key exists");
    Ok(KlingKeyPair { access_key, secret_key })
}

/// What the database holds of the API key an access key belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KlingKeyRow {
    /// The API key.
    pub id: ApiKeyId,
    /// Its owner.
    pub user_id: UserId,
    /// The server key the secret is derived from.
    pub kling_key_version: i16,
    /// When the API key was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

/// The API key whose Kling access key is `access_key`, if any.
pub async fn find(
    executor: impl PgExecutor<'_>,
    access_key: &str,
) -> Result<Option<KlingKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, kling_key_version, revoked_at FROM api_keys
         WHERE kling_access_key = $1",
    )
    .bind(access_key)
    .fetch_optional(executor)
    .await
}

/// Why a JWT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Not a JWT, not HS256, or without an `iss` and a numeric `exp`.
    Malformed,
    /// The signature does not match (or the key is unknown or revoked).
    Forged,
    /// `exp` has passed.
    Expired,
    /// `nbf` is still ahead.
    NotYetValid,
}

/// A JWT split, its claims read but not yet trusted.
#[derive(Debug, Clone)]
pub struct UnverifiedJwt<'a> {
    signing_input: &'a str,
    signature: Vec<u8>,
    /// The `iss` claim: the access key.
    pub issuer: String,
    exp: i64,
    nbf: Option<i64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    exp: f64,
    nbf: Option<f64>,
}

/// Splits `token` and reads its header and claims. Only `alg: HS256` is accepted.
pub fn parse(token: &str) -> Result<UnverifiedJwt<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, claims) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed);
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| JwtError::Malformed)?;
    if header.alg != "HS256" {
        return Err(JwtError::Malformed);
    }
    let claims: Claims =
        serde_json::from_slice(&decode(claims)?).map_err(|_| JwtError::Malformed)?;
    let seconds = |t: f64| {
        #[allow(clippy::cast_possible_truncation, reason = "checked to be finite and in range")]
        (t.is_finite() && t.abs() < 1e15).then_some(t.floor() as i64).ok_or(JwtError::Malformed)
    };
    Ok(UnverifiedJwt {
        signing_input,
        signature: decode(signature)?,
        issuer: claims.iss,
        exp: seconds(claims.exp)?,
        nbf: claims.nbf.map(seconds).transpose()?,
    })
}

impl UnverifiedJwt<'_> {
    /// Checks the signature with `secret_key` (in constant time), then `exp` and `nbf` against
    /// `now_unix`, each with [`LEEWAY_SECS`].
    pub fn verify(&self, secret_key: &str, now_unix: i64) -> Result<(), JwtError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(self.signing_input.as_bytes());
        mac.verify_slice(&self.signature).map_err(|_| JwtError::Forged)?;
        if self.exp + LEEWAY_SECS <= now_unix {
            return Err(JwtError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > now_unix) {
            return Err(JwtError::NotYetValid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::WebhookSettings;
    use crate::providers::kling;

    #[test]
    fn a_token_signed_as_kling_clients_sign_is_accepted_and_others_are_not() {
        let now = 1_800_000_000;
        let token = kling::token("ak", "sk", now);
        let jwt = parse(&token).unwrap();
        assert_eq!(jwt.issuer, "ak");
        assert_eq!(jwt.verify("sk", now), Ok(()));
        assert_eq!(jwt.verify("sk2", now), Err(JwtError::Forged));
        assert_eq!(jwt.verify("sk", now + 1800 + LEEWAY_SECS), Err(JwtError::Expired));
        assert_eq!(jwt.verify("sk", now - 5 - LEEWAY_SECS - 1), Err(JwtError::NotYetValid));
        assert_eq!(jwt.verify("sk", now - 5 - LEEWAY_SECS), Ok(()));
        // A tampered claim breaks the signature.
        let (_, claims, signature) = {
            let mut parts = token.split('.');
            (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
        };
        let other = URL_SAFE_NO_PAD.encode(br#"{"iss":"ak","exp":9999999999}"#);
        let tampered = token.replace(claims, &other);
        assert_eq!(parse(&tampered).unwrap().verify("sk", now), Err(JwtError::Forged));
        // `alg: none` and garbage are malformed.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(parse(&format!("{none}.{claims}.{signature}")).err(), Some(JwtError::Malformed));
        assert_eq!(parse("a.b").err(), Some(JwtError::Malformed));
        assert_eq!(parse("").err(), Some(JwtError::Malformed));
    }

    #[test]
    fn secret_keys_are_derived_per_key_and_version() {
        let keys = |secret: &str| {
            let settings = WebhookSettings {
                secret: Some(secret.to_owned().into()),
                secret_file: None,
                key_version: 1,
                previous_secrets: BTreeMap::new(),
                allowed_result_hosts: vec![],
                allowed_result_origins: vec![],
                max_body_bytes: 1024,
                signature_tolerance_secs: 300,
            };
            CallbackKeys::from_settings(&settings).unwrap().unwrap()
        };
        let (a, b) = (keys("server-key-a"), keys("server-key-b"));
        let key = ApiKeyId::new();
        let secret = secret_key(&a, 1, key, "ak").unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(secret_key(&a, 1, key, "ak").unwrap(), secret, "derived again alike");
        assert_ne!(secret_key(&b, 1, key, "ak").unwrap(), secret, "another server key");
        assert_ne!(secret_key(&a, 1, ApiKeyId::new(), "ak").unwrap(), secret, "another API key");
        assert_ne!(secret_key(&a, 1, key, "ak2").unwrap(), secret, "another access key");
        assert_eq!(secret_key(&a, 2, key, "ak"), None, "an unknown version");
    }
}
