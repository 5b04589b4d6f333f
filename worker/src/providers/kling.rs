//! Kling's HTTP client. The wire format is `gengate_shared::providers::kling`; this adds the
//! keys, the cached JWT and the transport.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use gengate_shared::config::KlingSettings;
use gengate_shared::generation::Mode;
use gengate_shared::ids::GenerationId;
use gengate_shared::providers::{
    ProviderError, ProviderKind, TaskRef, TaskRequest, TaskUpdate, kling,
};
use secrecy::{ExposeSecret, SecretString};

use super::transport::{Answer, Transport};
use super::{ProviderClient, ProviderFuture};

/// A token is replaced when it has less than this left, so that none expires in flight.
const TOKEN_RENEW_BEFORE_EXPIRY_SECS: i64 = 300;

/// Talks to Kling's API with a JWT made from the access and secret keys.
#[derive(Debug)]
pub struct KlingClient {
    transport: Transport,
    base_url: String,
    keys: Option<Keys>,
    token: Mutex<Option<Token>>,
}

/// Debug output of both is redacted by `SecretString`.
#[derive(Debug)]
struct Keys {
    access: SecretString,
    secret: SecretString,
}

#[derive(Debug, Clone)]
struct Token {
    value: SecretString,
    expires_at: i64,
}

impl KlingClient {
    /// A client for `settings.base_url`. Without both keys it still builds, and every call fails
    /// with `not_configured`.
    pub fn new(settings: &KlingSettings) -> reqwest::Result<Self> {
        let keys = match (&settings.access_key, &settings.secret_key) {
            (Some(access), Some(secret))
                if !access.expose_secret().is_empty() && !secret.expose_secret().is_empty() =>
            {
                Some(Keys { access: access.clone(), secret: secret.clone() })
            }
            _ => None,
        };
        Ok(Self {
            transport: Transport::new(&settings.limits)?,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            keys,
            token: Mutex::new(None),
        })
    }

    /// Creates the task. Kling refuses a second task with the same `external_task_id` (1201):
    /// when a create is refused so, the task an earlier attempt made (whose answer was lost) is
    /// looked up by the generation id and its id returned, so retrying a create is harmless.
    pub async fn create(&self, request: &TaskRequest) -> Result<String, ProviderError> {
        let path = kling::create_path(request.mode)?;
        let body = kling::create_body(request)?;
        let answer = self.send(self.transport.http.post(self.url(&path)).json(&body)).await?;
        match kling::parse_create_response(answer.status, &answer.body) {
            Err(ProviderError::Permanent { code, message, account_problem }) if code == "1201" => {
                match self.find(request.mode, request.generation_id).await {
                    Ok(Some(existing)) => {
                        tracing::info!(
                            remote_task_id = %existing.remote_task_id,
                            "Kling already has this generation's task; using it"
                        );
                        Ok(existing.remote_task_id)
                    }
                    // The task may exist: failing the job now could refund work that is
                    // running. Try the whole create again later.
                    Err(retry @ ProviderError::Retryable { .. }) => Err(retry),
                    _ => Err(ProviderError::Permanent { code, message, account_problem }),
                }
            }
            other => other.map_err(|error| answer.with_retry_after(error)),
        }
    }

    /// Queries a task by its Kling id.
    pub async fn query(&self, task: &TaskRef) -> Result<TaskUpdate, ProviderError> {
        let path = kling::query_path(task)?;
        let answer = self.send(self.transport.http.get(self.url(&path))).await?;
        kling::parse_query_response(answer.status, &answer.body)
            .map_err(|error| answer.with_retry_after(error))
    }

    /// Queries the task a generation created, by its `external_task_id`.
    pub async fn find(
        &self,
        mode: Mode,
        generation_id: GenerationId,
    ) -> Result<Option<TaskUpdate>, ProviderError> {
        let path = kling::query_path_by_generation(mode, generation_id)?;
        let answer = self.send(self.transport.http.get(self.url(&path))).await?;
        match kling::parse_query_response(answer.status, &answer.body) {
            Ok(update) => Ok(Some(update)),
            Err(ProviderError::NotFound) => Ok(None),
            Err(error) => Err(answer.with_retry_after(error)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends with the current token; an authentication refusal drops the cached token so the
    /// next call signs a fresh one (after a key rotation or a clock jump).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
        let token = self.token()?;
        let answer = self.transport.exchange(request.bearer_auth(token.expose_secret())).await?;
        if answer.status == 401 {
            *self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        }
        Ok(answer)
    }

    fn token(&self) -> Result<SecretString, ProviderError> {
        self.token_at(now_unix())
    }

    /// The cached token, or a new one when it has less than five minutes left at `now`.
    fn token_at(&self, now: i64) -> Result<SecretString, ProviderError> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            super::not_configured(
                ProviderKind::Kling,
                "GENGATE__PROVIDERS__KLING__ACCESS_KEY and GENGATE__PROVIDERS__KLING__SECRET_KEY",
            )
        })?;
        let mut cached = self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(token) = cached.as_ref()
            && token.expires_at - now >= TOKEN_RENEW_BEFORE_EXPIRY_SECS
        {
            return Ok(token.value.clone());
        }
        let value = SecretString::from(kling::token(
            keys.access.expose_secret(),
            keys.secret.expose_secret(),
            now,
        ));
        *cached =
            Some(Token { value: value.clone(), expires_at: now + kling::TOKEN_LIFETIME_SECS });
        Ok(value)
    }
}

impl ProviderClient for KlingClient {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kling
    }

    fn create_task<'a>(&'a self, request: &'a TaskRequest) -> ProviderFuture<'a, String> {
        Box::pin(self.create(request))
    }

    fn query_task<'a>(&'a self, task: &'a TaskRef) -> ProviderFuture<'a, TaskUpdate> {
        Box::pin(self.query(task))
    }

    fn find_by_generation<'a>(
        &'a self,
        mode: Mode,
        _provider_model: &'a str,
        generation_id: GenerationId,
    ) -> ProviderFuture<'a, Option<TaskUpdate>> {
        Box::pin(self.find(mode, generation_id))
    }
}

fn now_unix() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use gengate_shared::config::ProviderLimits;

    use super::*;

    fn client(keys: Option<(&str, &str)>) -> KlingClient {
        KlingClient::new(&KlingSettings {
            base_url: "http://127.0.0.1:9/".to_owned(),
            access_key: keys.map(|(access, _)| access.to_owned().into()),
            access_key_file: None,
            secret_key: keys.map(|(_, secret)| secret.to_owned().into()),
            secret_key_file: None,
            limits: ProviderLimits {
                max_concurrency: 1,
                rate_limit: 0,
                rate_window_ms: 1000,
                timeout_ms: 1000,
                max_response_bytes: 1024,
            },
        })
        .unwrap()
    }

    #[test]
    fn the_token_is_reused_until_five_minutes_are_left() {
        let client = client(Some(("ak-visible", "sk-hidden")));
        let now = 1_750_000_000;
        let first = client.token_at(now).unwrap();
        let later = client.token_at(now + 1800 - 300).unwrap();
        assert_eq!(first.expose_secret(), later.expose_secret());
        let renewed = client.token_at(now + 1800 - 299).unwrap();
        assert_ne!(first.expose_secret(), renewed.expose_secret());
        assert_eq!(renewed.expose_secret(), kling::token("ak-visible", "sk-hidden", now + 1501));
    }

    #[test]
    fn keys_and_tokens_stay_out_of_debug_output() {
        let client = client(Some(("ak-visible", "sk-hidden")));
        let token = client.token_at(1_750_000_000).unwrap();
        let debug = format!("{client:?}");
        for secret in ["ak-visible", "sk-hidden", token.expose_secret()] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }

    #[test]
    fn without_keys_every_call_is_an_account_problem() {
        for keys in [None, Some(("", "sk")), Some(("ak", ""))] {
            let error = client(keys).token_at(1_750_000_000).unwrap_err();
            assert!(matches!(
                error,
                ProviderError::Permanent { code, account_problem: true, .. } if code == "not_configured"
            ));
        }
    }
}
