//! The transactional outbox: messages are written in the same transaction as the state change
//! that causes them, and a relay publishes them afterwards and deletes them. A crash between commit
//! and publish delays a message; it never loses it (and a crash between publish and delete sends it
//! twice, which every consumer tolerates).
//!
//! Relays are woken right after a commit, not by a `NOTIFY` inside the writing transaction:
//! PostgreSQL serializes the commits of transactions that issued `NOTIFY` (they share a global
//! lock while the commit is flushed), which measured capped submits at about 90 per second on the
//! benchmark machine. The writer wakes its own relay in-process and sends [`notify`] afterwards, in
//! a transaction of its own, for relays in other processes.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db::Tx;
use crate::queue::Envelope;

/// The `LISTEN`/`NOTIFY` channel that wakes the relay right after a commit.
pub const NOTIFY_CHANNEL: &str = "gengate_outbox";

/// Writes `envelope` to the outbox; it is published after the transaction commits.
pub async fn enqueue(tx: &mut Tx, envelope: &Envelope) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (message_id, routing_key, body) VALUES ($1, $2, $3)")
        .bind(envelope.message_id)
        .bind(envelope.kind.routing_key())
        .bind(serde_json::to_value(envelope).expect("an envelope always serializes"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Wakes the relays listening on [`NOTIFY_CHANNEL`] (call after the commit, outside it).
pub async fn notify(executor: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')").bind(NOTIFY_CHANNEL).execute(executor).await?;
    Ok(())
}

/// An unsent message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingMessage {
    /// The row.
    pub id: i64,
    /// The message's id.
    pub message_id: Uuid,
    /// Its routing key.
    pub routing_key: String,
    /// Its body.
    pub body: serde_json::Value,
}

/// Claims up to `limit` unsent messages, oldest first, locking them for this transaction; rows
/// another relay holds are skipped, so several relays share the work without sending twice.
pub async fn claim(tx: &mut Tx, limit: i64) -> Result<Vec<PendingMessage>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, message_id, routing_key, body FROM outbox
         WHERE sent_at IS NULL ORDER BY id LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Deletes messages the broker confirmed, in one statement: a published message has nothing left
/// to say (the broker has it, and the audit log has its cause). A delete writes less than marking
/// the row sent would: no new row version, no index entries.
pub async fn delete_sent(tx: &mut Tx, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(ids).execute(&mut **tx).await?;
    Ok(())
}

/// Records a failed publish attempt.
pub async fn mark_failed(tx: &mut Tx, ids: &[i64], error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(error)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deletes rows marked sent by an earlier version (which kept them an hour for inspection); there
/// are none once it ran after an upgrade.
pub async fn purge_sent(executor: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL")
        .execute(executor)
        .await?
        .rows_affected())
}

/// How many messages wait, and the age in seconds of the oldest.
pub async fn backlog(executor: impl PgExecutor<'_>) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
         FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(executor)
    .await
}
