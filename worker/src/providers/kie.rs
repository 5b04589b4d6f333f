//! kie.ai's HTTP client. The wire format is `gengate_shared::providers::kie`; this adds the API
//! key and the transport.

use gengate_shared::config::KieSettings;
use gengate_shared::generation::Mode;
use gengate_shared::ids::GenerationId;
use gengate_shared::providers::{
    ProviderError, ProviderKind, TaskRef, TaskRequest, TaskUpdate, kie,
};
use secrecy::{ExposeSecret, SecretString};

use super::transport::{Answer, Transport};
use super::{ProviderClient, ProviderFuture};

/// Talks to kie.ai's jobs API with a bearer API key.
#[derive(Debug)]
pub struct KieClient {
    transport: Transport,
    base_url: String,
    /// Debug output is redacted by `SecretString`.
    api_key: Option<SecretString>,
}

impl KieClient {
    /// A client for `settings.base_url`. Without a key it still builds, and every call fails
    /// with `not_configured`.
    pub fn new(settings: &KieSettings) -> reqwest::Result<Self> {
        Ok(Self {
            transport: Transport::new(&settings.limits)?,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone().filter(|key| !key.expose_secret().is_empty()),
        })
    }

    /// Creates the task. kie has no idempotency key: if the answer is lost, retrying may start a
    /// second task.
    pub async fn create(&self, request: &TaskRequest) -> Result<String, ProviderError> {
        let body = kie::create_body(request)?;
        let url = format!("{}{}", self.base_url, kie::CREATE_TASK_PATH);
        let answer = self.send(self.transport.http.post(url).json(&body)).await?;
        kie::parse_create_response(answer.status, &answer.body)
            .map_err(|error| answer.with_retry_after(error))
    }

    /// Reads a task's record.
    pub async fn query(&self, task: &TaskRef) -> Result<TaskUpdate, ProviderError> {
        let url = format!("{}{}", self.base_url, kie::RECORD_INFO_PATH);
        let request =
            self.transport.http.get(url).query(&[(kie::TASK_ID_PARAM, &task.remote_task_id)]);
        let answer = self.send(request).await?;
        kie::parse_record_info_response(answer.status, &answer.body)
            .map_err(|error| answer.with_retry_after(error))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
        let key = self.api_key.as_ref().ok_or_else(|| {
            super::not_configured(ProviderKind::Kie, "GENGATE__PROVIDERS__KIE__API_KEY")
        })?;
        self.transport.exchange(request.bearer_auth(key.expose_secret())).await
    }
}

impl ProviderClient for KieClient {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kie
    }

    fn create_task<'a>(&'a self, request: &'a TaskRequest) -> ProviderFuture<'a, String> {
        Box::pin(self.create(request))
    }

    fn query_task<'a>(&'a self, task: &'a TaskRef) -> ProviderFuture<'a, TaskUpdate> {
        Box::pin(self.query(task))
    }

    /// kie.ai cannot look a task up by anything of ours: always `Ok(None)`. The caller must
    /// record the task id as soon as the create answers.
    fn find_by_generation<'a>(
        &'a self,
        _mode: Mode,
        _provider_model: &'a str,
        _generation_id: GenerationId,
    ) -> ProviderFuture<'a, Option<TaskUpdate>> {
        Box::pin(async {
            // Keys are still checked, so a misconfigured provider shows up here too.
            match &self.api_key {
                Some(_) => Ok(None),
                None => Err(super::not_configured(
                    ProviderKind::Kie,
                    "GENGATE__PROVIDERS__KIE__API_KEY",
                )),
            }
        })
    }
}
