//! Callback tokens: each generation's callback URL carries a 256-bit token that proves a webhook
//! comes from whoever we gave the URL to. The token is HMAC-SHA256(server key, generation id), so
//! nothing that could forge a callback is stored, queued or logged: the worker derives it when it
//! builds the callback URL, and the generation row keeps only a SHA-256 of it, which webhook
//! ingress compares in constant time. Keys carry a version, so they can be rotated while jobs
//! created under the old key are still running.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::WebhookSettings;
use crate::ids::GenerationId;
use crate::providers::ProviderKind;

/// The route of kie.ai's (and every provider's unified) webhook: the generation and the token
/// travel in the query.
pub const WEBHOOK_PATH: &str = "/api/generation/webhook";
/// The route of Kling's callback (its relay form carries the generation in the path), as axum
/// writes it.
pub const KLING_CALLBACK_ROUTE: &str = "/kling/callback/{generation_id}";

/// The callback URL a provider is given for generation `id`: under `public_base_url`, on the
/// route the API serves for `provider`, with the generation's `token`.
pub fn callback_url(
    public_base_url: &str,
    provider: ProviderKind,
    id: GenerationId,
    token: &str,
) -> String {
    let base = public_base_url.trim_end_matches('/');
    match provider {
        ProviderKind::Kling => {
            let path = KLING_CALLBACK_ROUTE.replace("{generation_id}", &id.to_string());
            format!("{base}{path}?token={token}")
        }
        ProviderKind::Kie => format!("{base}{WEBHOOK_PATH}?generation_id={id}&token={token}"),
    }
}

/// The server's callback-token keys by version.
#[derive(Clone)]
pub struct CallbackKeys {
    current: i16,
    keys: BTreeMap<i16, SecretString>,
}

impl std::fmt::Debug for CallbackKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<i16> = self.keys.keys().copied().collect();
        f.debug_struct("CallbackKeys")
            .field("current", &self.current)
            .field("versions", &versions)
            .finish()
    }
}

impl CallbackKeys {
    /// The keys from `[webhook]`; `None` when no secret is configured.
    pub fn from_settings(settings: &WebhookSettings) -> Result<Option<Self>, String> {
        let Some(current) = &settings.secret else { return Ok(None) };
        let mut keys = BTreeMap::new();
        for (version, key) in &settings.previous_secrets {
            let version: i16 = version.parse().map_err(|_| {
                format!("webhook.previous_secrets: {version:?} is not a version number")
            })?;
            keys.insert(version, key.clone());
        }
        keys.insert(settings.key_version, current.clone());
        Ok(Some(Self { current: settings.key_version, keys }))
    }

    /// The keys from `[webhook]`, which a process that issues or checks tokens cannot run without.
    pub fn required(settings: &WebhookSettings) -> Result<Self, String> {
        Self::from_settings(settings)?.ok_or_else(|| {
            "webhook.secret must be set (GENGATE__WEBHOOK__SECRET or webhook.secret_file)"
                .to_owned()
        })
    }

    /// The version new generations are stamped with.
    pub fn current_version(&self) -> i16 {
        self.current
    }

    /// The token of a generation created under key `version`; `None` for an unknown version.
    pub fn token(&self, version: i16, generation: GenerationId) -> Option<String> {
        let key = self.keys.get(&version)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"gengate callback token v1:");
        mac.update(generation.0.as_bytes());
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// A 256-bit key for `purpose` and `subject`, derived from the server key of `version`
    /// (domain-separated from callback tokens and from other purposes); `None` for an unknown
    /// version. Client webhook signing secrets are made this way, so none is stored.
    pub fn derive(&self, version: i16, purpose: &str, subject: &[u8]) -> Option<[u8; 32]> {
        let key = self.keys.get(&version)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"gengate derived key v1:");
        mac.update(purpose.as_bytes());
        mac.update(b":");
        mac.update(subject);
        Some(mac.finalize().into_bytes().into())
    }

    /// The token of a new generation, with the hash to store and the key version.
    pub fn issue(&self, generation: GenerationId) -> (String, [u8; 32], i16) {
        let token = self.token(self.current, generation).expect("the current key exists");
        let hash = token_hash(&token);
        (token, hash, self.current)
    }
}

impl CallbackKeys {
    /// Whether `presented` is the token of `generation` under any configured key version,
    /// compared in constant time: a check that needs no database, for callers that must not
    /// touch it (an address past its failed-authentication limit).
    pub fn is_token_of(&self, presented: &str, generation: GenerationId) -> bool {
        let presented = token_hash(presented);
        self.keys.keys().fold(false, |found, version| {
            let token = self.token(*version, generation).expect("a configured version");
            found | bool::from(token_hash(&token).as_slice().ct_eq(&presented))
        })
    }
}

/// What the generation row keeps of its token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a presented token matches the stored hash (constant time).
pub fn token_matches(presented: &str, stored_hash: &[u8]) -> bool {
    bool::from(token_hash(presented).as_slice().ct_eq(stored_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: &str, version: i16, previous: &[(&str, &str)]) -> CallbackKeys {
        let settings = WebhookSettings {
            secret: Some(current.to_owned().into()),
            secret_file: None,
            key_version: version,
            previous_secrets: previous
                .iter()
                .map(|(v, k)| (v.to_string(), k.to_string().into()))
                .collect(),
            allowed_result_hosts: vec![],
            allowed_result_origins: vec![],
            max_body_bytes: 1024,
            signature_tolerance_secs: 300,
        };
        CallbackKeys::from_settings(&settings).unwrap().unwrap()
    }

    #[test]
    fn tokens_are_per_generation_and_verify_against_their_hash_only() {
        let keys = keys("k1", 1, &[]);
        let (a, b) = (GenerationId::new(), GenerationId::new());
        let (token_a, hash_a, version) = keys.issue(a);
        assert_eq!(version, 1);
        assert_eq!(token_a.len(), 64, "256 bits, hex");
        assert_ne!(keys.token(1, b).unwrap(), token_a);
        assert!(token_matches(&token_a, &hash_a));
        assert!(!token_matches(&keys.token(1, b).unwrap(), &hash_a), "another generation's token");
        assert!(!token_matches("", &hash_a));
        assert!(keys.is_token_of(&token_a, a));
        assert!(!keys.is_token_of(&token_a, b));
        assert!(!keys.is_token_of("", a));
    }

    #[test]
    fn a_rotated_key_still_derives_the_old_generations_tokens() {
        let before = keys("old-key", 1, &[]);
        let g = GenerationId::new();
        let (token, _, _) = before.issue(g);
        let after = keys("new-key", 2, &[("1", "old-key")]);
        assert_eq!(after.current_version(), 2);
        assert_eq!(after.token(1, g).unwrap(), token);
        assert_ne!(after.issue(g).0, token);
        assert!(after.token(3, g).is_none());
        let debug = format!("{after:?}");
        assert!(
            !debug.contains("old-key") && !debug.contains("new-key"),
            "Debug shows versions, not keys"
        );
    }

    #[test]
    fn callback_urls_name_the_generation_and_the_token_on_each_providers_route() {
        let id = GenerationId::new();
        let kling = callback_url("https://gw.example/", ProviderKind::Kling, id, "t0k");
        assert_eq!(kling, format!("https://gw.example/kling/callback/{id}?token=t0k"));
        let kie = callback_url("https://gw.example", ProviderKind::Kie, id, "t0k");
        assert_eq!(
            kie,
            format!("https://gw.example/api/generation/webhook?generation_id={id}&token=t0k")
        );
    }
}
