//! `notify.generation`: one attempt of a delivery to the generation's client (see
//! `gengate_shared::client_webhooks` for the whole flow). The delivery is made by the first copy
//! of the message to arrive; every attempt, by whichever message, runs under a lease, so two
//! copies never send at once; a retry is left to the scheduler (`crate::notify::scheduler`), which
//! publishes it when its pause is over. A message that finds nothing to do (delivered already,
//! not due, being sent) is acknowledged and changes nothing.

use std::time::Duration;

use gengate_shared::client_webhooks::deliveries::{
    self, DeliveryStatus, Finished, OpenError, Verdict,
};
use gengate_shared::client_webhooks::endpoints;
use gengate_shared::client_webhooks::secrets::{self, Owner};
use gengate_shared::client_webhooks::signing::{SigningSecret, webhook_id};
use gengate_shared::db;
use gengate_shared::queue::{Envelope, payloads};

use super::{HandlerError, Outcome};
use crate::context::WorkerContext;

/// How much longer than an attempt's timeout its lease lasts (recording the outcome).
const LEASE_MARGIN: Duration = Duration::from_secs(5);

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let payloads::Notify { event, delivery } = envelope.payload()?;
    let opened =
        deliveries::open(&ctx.pool, &ctx.storage, delivery, envelope.generation_id, event).await;
    let delivery = match opened {
        Ok(Some(delivery)) => delivery,
        Ok(None) => {
            tracing::debug!(%event, "nowhere to deliver the event any more");
            return Ok(Outcome::Done);
        }
        Err(OpenError::Database(err)) => return Err(err.into()),
        // Links to stored files could not be signed: a passing storage problem, or settings.
        Err(err @ OpenError::Storage(_)) => {
            return Ok(Outcome::Retry { delay: Duration::from_secs(5), reason: err.to_string() });
        }
    };
    if delivery.status != DeliveryStatus::Pending {
        return Ok(Outcome::Done);
    }
    if let Some(endpoint) = delivery.endpoint_id {
        let endpoint = endpoints::get(&ctx.pool, endpoint).await?;
        if let Some(reason) = endpoint.and_then(|e| e.disabled_reason) {
            deliveries::abandon(&ctx.pool, delivery.id, &format!("endpoint disabled: {reason}"))
                .await?;
            metrics::counter!("gengate_webhook_deliveries_total", "outcome" => "endpoint_disabled")
                .increment(1);
            return Ok(Outcome::Done);
        }
    }
    let hooks = &ctx.settings.client_webhooks;
    let lease = ctx.webhooks.timeout() + LEASE_MARGIN;
    let Some(claim) = deliveries::claim(&ctx.pool, delivery.id, lease).await? else {
        return Ok(Outcome::Done);
    };
    let owner = match delivery.endpoint_id {
        Some(endpoint) => Owner::Endpoint(endpoint),
        None => Owner::User(delivery.user_id),
    };
    let secrets = signing_secrets(ctx, owner).await?;
    let id = webhook_id(delivery.id);
    let host = url::Url::parse(&delivery.url).ok().and_then(|u| u.host_str().map(str::to_owned));
    let outcome = ctx.webhooks.send(&delivery.url, &id, &delivery.body, &secrets).await;
    let schedule: Vec<Duration> =
        hooks.retry_schedule_ms.iter().copied().map(Duration::from_millis).collect();
    let disable_after = Duration::from_millis(hooks.disable_after_ms);
    let (finished, disabled) =
        deliveries::finish(&ctx.pool, claim, &outcome, &schedule, disable_after).await?;
    metrics::histogram!("gengate_webhook_attempt_seconds").record(outcome.latency.as_secs_f64());
    let label = match finished {
        Finished::Delivered => "delivered",
        Finished::Retrying(_) => "retrying",
        Finished::Failed => "failed",
        Finished::Superseded => "superseded",
    };
    metrics::counter!("gengate_webhook_deliveries_total", "outcome" => label).increment(1);
    // The URL's host only: a client's URL may carry a token of its own in its path or query.
    let (attempt, status_code) = (claim.attempt, outcome.status_code);
    match finished {
        Finished::Delivered => {
            tracing::info!(%event, webhook_id = id, host, attempt, status_code, "webhook delivered");
        }
        Finished::Retrying(pause) => tracing::warn!(
            %event, webhook_id = id, host, attempt, status_code, error = outcome.error,
            retry_in_s = pause.as_secs_f64(), "webhook not delivered; trying again later"
        ),
        Finished::Failed | Finished::Superseded => tracing::warn!(
            %event, webhook_id = id, host, attempt, status_code, error = outcome.error,
            "webhook not delivered; giving up"
        ),
    }
    if let Some(reason) = disabled {
        let why = if outcome.verdict == Verdict::Gone { "gone" } else { "failing" };
        metrics::counter!("gengate_webhook_endpoints_disabled_total", "reason" => why).increment(1);
        tracing::warn!(endpoint = ?delivery.endpoint_id, host, reason, "webhook endpoint disabled");
    }
    Ok(Outcome::Done)
}

/// The secrets that sign for `owner` now (made, for a user who never had one).
async fn signing_secrets(
    ctx: &WorkerContext,
    owner: Owner,
) -> Result<Vec<SigningSecret>, HandlerError> {
    let mut rows = secrets::signing(&ctx.pool, owner).await?;
    if rows.is_empty() {
        let keys = ctx.callback_keys.clone();
        let made =
            db::transaction!(&ctx.pool, sqlx::Error, |tx| secrets::current(tx, owner, &keys)
                .await?)
            .await?;
        rows.push(made);
    }
    let derived: Vec<SigningSecret> =
        rows.iter().filter_map(|row| row.secret(&ctx.callback_keys)).collect();
    if derived.is_empty() {
        return Err(HandlerError::configuration(format!(
            "no configured webhook.secret of key version {} derives this signing secret",
            rows[0].key_version
        )));
    }
    Ok(derived)
}
