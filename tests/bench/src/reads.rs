//! `reads`: the read endpoints of a user with a long history. One user is seeded directly in
//! PostgreSQL with [`GRANTS`] grants and [`LEDGER_ENTRIES`] ledger entries through the shared
//! ledger functions (grants, then completed generations whose credits were reserved), the ledger
//! is reconciled for that user, and then `GET /v1/credits` and `GET /v1/generations/{id}` are
//! measured in turn, each for half the window.
//!
//! Seeding writes exactly what the API and workers would have: each generation is inserted
//! `queued`, its credits are reserved with `ledger::reserve`, and it is then marked `completed` at
//! its full price (with a result video), which is what a confirm at the reserved price leaves.
//! Completed jobs are terminal, so nothing in the stack picks them up later.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use gengate_shared::db;
use gengate_shared::generation::MediaType;
use gengate_shared::ids::{GenerationId, UserId};
use gengate_shared::ledger::{self, GrantSource, LedgerError, LedgerGeneration, NewGrant};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::client::Api;
use super::load::{LoopReport, closed_loop};
use super::progress;
use super::setup::{self, BenchUser};

/// Grants of the seeded user.
pub const GRANTS: usize = 20;
/// Ledger entries of the seeded user: one per grant, one per reservation.
pub const LEDGER_ENTRIES: usize = 10_000;
/// Reserved generations: every entry that is not a grant's.
pub const GENERATIONS: usize = LEDGER_ENTRIES - GRANTS;
/// The price of each seeded generation.
const COST: i64 = 20;
/// The first grants are sized to be drawn to exactly zero, so that no reservation spans two
/// grants (one entry each) and the balance still lists the other half.
const DRAINED_GRANTS: usize = GRANTS / 2;
const _: () = assert!(GENERATIONS.is_multiple_of(DRAINED_GRANTS));
/// Credits of each of the other grants.
const UNTOUCHED_GRANT: i64 = 1_000_000;
/// Generations per seeding transaction.
const BATCH: usize = 50;
/// Seeding transactions in flight (and pool connections).
const SEED_TASKS: usize = 4;

/// What was seeded, as read back from the database.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    /// The seeded user.
    pub user_id: String,
    /// Their grants.
    pub grants: i64,
    /// Their ledger entries.
    pub ledger_entries: i64,
    /// Their generations.
    pub generations: i64,
    /// Their balance after seeding.
    pub balance: i64,
    /// How long seeding took, in seconds.
    pub seconds: f64,
    /// `ledger::reconcile` for the user found nothing off.
    pub reconcile_clean: bool,
    /// What reconcile checked: grants, generations, users.
    pub reconciled: [i64; 3],
}

/// The scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ReadsReport {
    /// The seeded user.
    pub seed: SeedReport,
    /// `GET /v1/credits`.
    pub credits: LoopReport,
    /// `GET /v1/generations/{id}`, over the seeded generations.
    pub generation: LoopReport,
}

impl ReadsReport {
    /// Unexpected answers plus transport errors of both endpoints.
    pub fn unexpected_total(&self) -> u64 {
        self.credits.unexpected_total() + self.generation.unexpected_total()
    }
}

/// The seeded user, ready to be read.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// What was seeded.
    pub seed: SeedReport,
    key: Arc<str>,
    paths: Arc<Vec<String>>,
}

/// Creates and seeds the user, and checks that its ledger reconciles.
pub async fn prepare(
    api: &Api,
    admin_token: &str,
    database_url: &str,
    run_id: &str,
) -> anyhow::Result<Seeded> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(SEED_TASKS).expect("a handful of seed tasks"))
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .context("connecting to the stack's PostgreSQL (GENGATE__DATABASE__URL)")?;
    let seeded = seed(&pool, api, admin_token, run_id).await;
    pool.close().await;
    let (user, generations, seed) = seeded?;
    anyhow::ensure!(
        seed.reconcile_clean,
        "the seeded ledger does not reconcile (user {}); see `gengatectl ledger reconcile`",
        seed.user_id
    );
    let paths = generations.iter().map(|id| format!("/v1/generations/{id}")).collect();
    Ok(Seeded { seed, key: user.key.into(), paths: Arc::new(paths) })
}

/// `GET /v1/credits` of the seeded user for `window`.
pub async fn credits(
    api: &Api,
    seeded: &Seeded,
    concurrency: usize,
    window: Duration,
    stop: &CancellationToken,
) -> LoopReport {
    closed_loop("reads: credits", concurrency, window, None, 200, stop, {
        let (api, key) = (api.clone(), seeded.key.clone());
        move |_, _| {
            let (api, key) = (api.clone(), key.clone());
            async move { api.get(&key, "/v1/credits").await }
        }
    })
    .await
}

/// `GET /v1/generations/{id}` over the seeded generations for `window`.
pub async fn generation(
    api: &Api,
    seeded: &Seeded,
    concurrency: usize,
    window: Duration,
    stop: &CancellationToken,
) -> LoopReport {
    closed_loop("reads: generation", concurrency, window, None, 200, stop, {
        let (api, key, paths) = (api.clone(), seeded.key.clone(), seeded.paths.clone());
        move |client, n| {
            let (api, key, paths) = (api.clone(), key.clone(), paths.clone());
            // Spread the clients over the seeded generations.
            let n = usize::try_from(n).unwrap_or_default();
            let path = paths[(client + n * concurrency) % paths.len()].clone();
            async move { api.get(&key, &path).await }
        }
    })
    .await
}

/// Creates the user through the admin API (for its API key), then seeds its ledger.
async fn seed(
    pool: &PgPool,
    api: &Api,
    admin_token: &str,
    run_id: &str,
) -> anyhow::Result<(BenchUser, Vec<GenerationId>, SeedReport)> {
    let start = Instant::now();
    let user = setup::create_user(
        api,
        admin_token,
        &format!("bench-{run_id}-reads@bench.gengate.local"),
        &format!("gengate-bench {run_id} reads"),
        None,
    )
    .await?;
    let user_id: UserId =
        user.id.parse().with_context(|| format!("the created user's id {}", user.id))?;
    let generations = seed_ledger(pool, user_id, run_id).await?;
    let report = read_back(pool, user_id, start.elapsed()).await?;
    Ok((user, generations, report))
}

/// The grants, then the reserved generations, in parallel batches.
async fn seed_ledger(
    pool: &PgPool,
    user: UserId,
    run_id: &str,
) -> anyhow::Result<Vec<GenerationId>> {
    let bar = progress::count_bar("seeding ledger", LEDGER_ENTRIES as u64);
    for i in 0..GRANTS {
        let new = seed_grant(user, run_id, i);
        db::transaction!(pool, LedgerError, |tx| ledger::grant(tx, &new).await?)
            .await
            .with_context(|| format!("seeding grant {i}"))?;
        bar.inc(1);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..SEED_TASKS)
        .map(|_| {
            let (pool, next, bar) = (pool.clone(), next.clone(), bar.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let from = next.fetch_add(BATCH, Ordering::Relaxed);
                    if from >= GENERATIONS {
                        return Ok::<_, LedgerError>(ids);
                    }
                    let count = BATCH.min(GENERATIONS - from);
                    let batch = db::transaction!(&pool, LedgerError, |tx| {
                        reserved_batch(tx, user, count).await?
                    })
                    .await?;
                    ids.extend(batch);
                    bar.inc(count as u64);
                }
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(GENERATIONS);
    for task in tasks {
        ids.extend(task.await.context("a seeding task panicked")?.context("seeding generations")?);
    }
    bar.finish_and_clear();
    Ok(ids)
}

/// Grant `i` of the seeded user: the first [`DRAINED_GRANTS`] hold exactly what the reservations
/// draw (priority 0, drawn first); the others are larger, priority 1, some paid orders, some
/// expiring in a year.
fn seed_grant(user: UserId, run_id: &str, i: usize) -> NewGrant {
    let drained = i < DRAINED_GRANTS;
    let order = !drained && i.is_multiple_of(2);
    NewGrant {
        user_id: user,
        source: if order { GrantSource::OrderPay } else { GrantSource::SystemAdd },
        amount: if drained {
            COST * i64::try_from(GENERATIONS / DRAINED_GRANTS).expect("a small count")
        } else {
            UNTOUCHED_GRANT
        },
        expires_at: (!drained && i.is_multiple_of(3))
            .then(|| OffsetDateTime::now_utc() + time::Duration::days(365)),
        priority: if drained { 0 } else { 1 },
        effective_at: None,
        order_no: order.then(|| format!("bench-{run_id}-{i}")),
    }
}

/// `count` generations inserted as a submit would, their credits reserved, then completed at
/// their full price with a result video.
async fn reserved_batch(
    tx: &mut db::Tx,
    user: UserId,
    count: usize,
) -> Result<Vec<GenerationId>, LedgerError> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = GenerationId::new();
        sqlx::query(
            "INSERT INTO generations (id, user_id, type, model, mode, provider, provider_model,
                                      billing, params, cost, price_version, webhook_token_hash,
                                      deadline_at)
             VALUES ($1, $2, 'video', 'kling-v1-6-std', 'text2video', 'kling', 'kling-v1-6',
                     'prepaid', $3, $4, 'gengate-bench', $5, now() + interval '30 minutes')",
        )
        .bind(id)
        .bind(user)
        .bind(json!({"prompt": "gengate-bench: a lighthouse at dusk", "client_prompt":
                     "gengate-bench: a lighthouse at dusk", "duration": 5, "aspect_ratio": "1:1",
                     "metadata": {}}))
        .bind(COST)
        .bind(vec![0u8; 32])
        .execute(&mut **tx)
        .await?;
        let generation = LedgerGeneration { id, user_id: user, media: MediaType::Video };
        ledger::reserve(tx, &generation, COST).await?;
        ids.push(id);
    }
    sqlx::query(
        "UPDATE generations
         SET status = 'completed', final_cost = cost, remote_task_id = id::text, progress = 100,
             submitted_at = now(), completed_at = now(), updated_at = now()
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    let video_ids: Vec<uuid::Uuid> = ids.iter().map(|_| uuid::Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO generation_videos (id, generation_id, quality, url, duration_s)
         SELECT v.id, v.generation_id, 'default',
                'https://files.bench.gengate.local/' || v.generation_id || '.mp4', 5
         FROM UNNEST($1::uuid[], $2::uuid[]) AS v(id, generation_id)",
    )
    .bind(&video_ids)
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    Ok(ids)
}

/// Counts what the user holds now and reconciles their ledger.
async fn read_back(pool: &PgPool, user: UserId, took: Duration) -> anyhow::Result<SeedReport> {
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql).bind(user).fetch_one(pool).await
    };
    let grants = count("SELECT count(*) FROM credit_grants WHERE user_id = $1").await?;
    let ledger_entries = count("SELECT count(*) FROM ledger_entries WHERE user_id = $1").await?;
    let generations = count("SELECT count(*) FROM generations WHERE user_id = $1").await?;
    let balance = ledger::balance(pool, user).await?.map_or(0, |b| b.balance);
    let report =
        ledger::reconcile(pool, Some(user)).await.context("reconciling the seeded user")?;
    for mismatch in report.mismatches.iter().take(5) {
        eprintln!("reconcile: {mismatch:?}");
    }
    Ok(SeedReport {
        user_id: user.to_string(),
        grants,
        ledger_entries,
        generations,
        balance,
        seconds: took.as_secs_f64(),
        reconcile_clean: report.is_clean(),
        reconciled: [report.grants, report.generations, report.users],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drained_grants_hold_exactly_what_the_reservations_draw() {
        let user = UserId::new();
        let grants: Vec<NewGrant> = (0..GRANTS).map(|i| seed_grant(user, "r", i)).collect();
        let drained: i64 = grants.iter().filter(|g| g.priority == 0).map(|g| g.amount).sum();
        assert_eq!(drained, COST * i64::try_from(GENERATIONS).unwrap());
        assert_eq!(GRANTS + GENERATIONS, LEDGER_ENTRIES);
        // Drawn first: priority 0, no expiry (an expiring grant of the same priority would go
        // before them).
        assert!(grants[..DRAINED_GRANTS].iter().all(|g| g.expires_at.is_none()));
        assert!(grants[DRAINED_GRANTS..].iter().all(|g| g.priority == 1));
        // Paid orders have their order number, the others none.
        assert!(grants.iter().all(|g| (g.source == GrantSource::OrderPay) == g.order_no.is_some()));
    }
}
