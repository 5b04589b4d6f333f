//! Rows for tests that exercise `shared` directly against a test database.

use gengate_shared::db;
use gengate_shared::generation::MediaType;
use gengate_shared::ids::{GenerationId, GrantId, UserId};
use gengate_shared::ledger::{self, GrantSource, LedgerError, LedgerGeneration, NewGrant};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

/// A new user without credits.
pub async fn user(pool: &PgPool) -> UserId {
    let id = UserId::new();
    sqlx::query("INSERT INTO users (id) VALUES ($1)")
        .bind(id)
        .execute(pool)
        .await
        .expect("insert user");
    id
}

/// Grants `amount` credits (`system_add`, priority 0) expiring after `expires_in`, if given.
pub async fn grant(
    pool: &PgPool,
    user: UserId,
    amount: i64,
    expires_in: Option<Duration>,
) -> GrantId {
    let new = NewGrant {
        user_id: user,
        source: GrantSource::SystemAdd,
        amount,
        expires_at: expires_in.map(|d| OffsetDateTime::now_utc() + d),
        priority: 0,
        effective_at: None,
        order_no: None,
    };
    let outcome: Result<_, LedgerError> =
        db::transaction!(pool, LedgerError, |tx| ledger::grant(tx, &new).await?).await;
    outcome.expect("grant").grant_id
}

/// A video generation row of `cost` credits in `queued` status (no credits moved yet).
pub async fn generation(pool: &PgPool, user: UserId, cost: i64, billing: &str) -> LedgerGeneration {
    let mut conn = pool.acquire().await.expect("connection");
    insert_generation(&mut conn, user, cost, billing).await
}

async fn insert_generation(
    conn: &mut sqlx::PgConnection,
    user: UserId,
    cost: i64,
    billing: &str,
) -> LedgerGeneration {
    let id = GenerationId::new();
    sqlx::query(
        "INSERT INTO generations (id, user_id, type, model, mode, provider, provider_model, billing,
                                  params, cost, price_version, webhook_token_hash, deadline_at)
         VALUES ($1, $2, 'video', 'test-model', 'text2video', 'kling', 'kling-v1-6', $3,
                 '{}'::jsonb, $4, 'test', $5, now() + interval '30 minutes')",
    )
    .bind(id)
    .bind(user)
    .bind(billing)
    .bind(cost)
    .bind(vec![0u8; 32])
    .execute(conn)
    .await
    .expect("insert generation");
    LedgerGeneration { id, user_id: user, media: MediaType::Video }
}

/// A prepaid generation with its credits reserved, inserted and reserved in one transaction as a
/// submit does (so a refused reservation leaves no generation behind).
pub async fn reserved_generation(
    pool: &PgPool,
    user: UserId,
    cost: i64,
) -> Result<LedgerGeneration, LedgerError> {
    db::transaction!(pool, LedgerError, |tx| {
        let generation = insert_generation(tx, user, cost, "prepaid").await;
        ledger::reserve(tx, &generation, cost).await?;
        generation
    })
    .await
}

/// The user's usable balance.
pub async fn balance(pool: &PgPool, user: UserId) -> i64 {
    ledger::balance(pool, user).await.expect("balance").expect("user exists").balance
}

/// A grant's remaining credits.
pub async fn remaining(pool: &PgPool, grant: GrantId) -> i64 {
    sqlx::query_scalar("SELECT remaining FROM credit_grants WHERE id = $1")
        .bind(grant)
        .fetch_one(pool)
        .await
        .expect("grant exists")
}

/// Sets a generation's status (and final cost), as the state machine would have.
pub async fn set_status(
    pool: &PgPool,
    generation: GenerationId,
    status: &str,
    final_cost: Option<i64>,
) {
    sqlx::query("UPDATE generations SET status = $2, final_cost = $3, remote_task_id = COALESCE(remote_task_id, id::text) WHERE id = $1")
        .bind(generation)
        .bind(status)
        .bind(final_cost)
        .execute(pool)
        .await
        .expect("set status");
}
