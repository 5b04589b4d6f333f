//! One attempt of a delivery: POST the body with the Standard Webhooks headers and judge the
//! answer. Any 2xx delivers; 410 Gone means "stop sending" (the endpoint is disabled); anything
//! else, a timeout or a connection error is tried again on the schedule. A redirect is an answer
//! like any other (never followed: it could point anywhere, a private address included). The
//! host's addresses are screened by the client's own resolver, so the connection only ever goes
//! to an address that passed ([`address::screen`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gengate_shared::client_webhooks::address::{self, Refused};
use gengate_shared::client_webhooks::deliveries::{AttemptOutcome, Verdict};
use gengate_shared::client_webhooks::signing::{self, SigningSecret};
use gengate_shared::config::ClientWebhookSettings;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use time::OffsetDateTime;

/// Sends deliveries. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
    max_response_bytes: usize,
}

impl Sender {
    /// A sender with `[client_webhooks]`'s rules.
    pub fn new(settings: &ClientWebhookSettings) -> reqwest::Result<Self> {
        gengate_shared::install_crypto_provider();
        let timeout = Duration::from_millis(settings.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to whatever address it resolves.
            .no_proxy()
            .dns_resolver(Arc::new(ScreeningResolver {
                allow_private: settings.allow_private_addresses,
            }))
            .user_agent(concat!("gengate-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            allow_private: settings.allow_private_addresses,
            timeout,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// How long an attempt may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Makes one attempt: `body` to `url` as delivery `id`, signed by every secret in `secrets`.
    pub async fn send(
        &self,
        url: &str,
        id: &str,
        body: &str,
        secrets: &[SigningSecret],
    ) -> AttemptOutcome {
        let started = Instant::now();
        let outcome = |status_code, error: Option<String>, verdict| AttemptOutcome {
            status_code,
            latency: started.elapsed(),
            error,
            verdict,
        };
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(err) => return outcome(None, Some(format!("not a URL: {err}")), Verdict::Refused),
        };
        // An address written in the URL is not resolved, so the resolver never sees it.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && let Err(refused) =
                address::screen(&ip.to_string(), vec![SocketAddr::new(ip, 0)], self.allow_private)
        {
            return outcome(None, Some(refused.to_string()), Verdict::Refused);
        }
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let signature = signing::signature_header(secrets, id, timestamp, body.as_bytes());
        let request = self
            .http
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::ID_HEADER, id)
            .header(signing::TIMESTAMP_HEADER, timestamp.to_string())
            .header(signing::SIGNATURE_HEADER, signature)
            .body(body.to_owned());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                if let Some(refused) = find_refusal(&err) {
                    return outcome(None, Some(refused.to_string()), Verdict::Refused);
                }
                let why = if err.is_timeout() {
                    format!("no answer within {} ms", self.timeout.as_millis())
                } else if err.is_connect() {
                    format!("could not connect: {}", root_cause(&err))
                } else {
                    format!("request failed: {}", root_cause(&err))
                };
                return outcome(None, Some(why), Verdict::TryAgain);
            }
        };
        let status = response.status();
        // The body is read (so the connection can be reused) up to the cap, and discarded.
        let mut read = 0usize;
        while read < self.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        let code = Some(status.as_u16());
        if status.is_success() {
            outcome(code, None, Verdict::Delivered)
        } else if status == reqwest::StatusCode::GONE {
            outcome(code, Some("answered 410 Gone".into()), Verdict::Gone)
        } else if status.is_redirection() {
            let why = format!("answered {status}; redirects are not followed");
            outcome(code, Some(why), Verdict::TryAgain)
        } else {
            outcome(code, Some(format!("answered {status}")), Verdict::TryAgain)
        }
    }
}

/// Resolves a host and screens its addresses: a host with a private address is refused before
/// any connection is made.
#[derive(Debug)]
struct ScreeningResolver {
    allow_private: bool,
}

impl Resolve for ScreeningResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = address::screen(&host, found, allow_private)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The refusal of the resolver, if that is why a request failed.
fn find_refusal(err: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = source {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = error.source();
    }
    None
}

/// The innermost error's message (reqwest's outer ones say only "error sending request").
fn root_cause(err: &reqwest::Error) -> String {
    let mut last: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}
