//! Polling a generation's upstream task: when the next poll is due, which poll may run, and the
//! progress it reports. Polls never change a status themselves (their answers go through the
//! same transitions as webhooks); these columns only say when to ask again.
//!
//! Polls are scheduled in the database, not in the broker: `next_poll_at` says when a job's next
//! poll is due, and each worker's poll scheduler publishes the polls that are due ([`take_due`]),
//! so a job that ends before its first poll is due (its webhook came first) never costs a poll
//! message.
//!
//! The chain starts and stops with the transitions that accept and complete a job, in their own
//! update of the row (`transitions::PollChange`).
//!
//! One poll chain per job: each `poll.task` message carries its number, and a poll [`claim`]s its
//! number (`polls = n → n + 1`) before it asks the provider, so a duplicate (a poll published
//! again after its lease ran out, a redelivery) finds its number taken and ends.

use std::time::Duration;

use sqlx::PgExecutor;
use time::OffsetDateTime;

use super::GenerationStatus;
use super::job::Job;
use crate::ids::GenerationId;

/// Whether `job` is still polled at `now`: a submitted job until it ends; a failed one for the
/// late-success `window` after it failed (a success that comes late still completes it); nothing
/// else.
pub fn continues(job: &Job, now: OffsetDateTime, window: Duration) -> bool {
    match job.status {
        GenerationStatus::Submitted => true,
        GenerationStatus::Failed => job.completed_at.is_some_and(|failed| now < failed + window),
        _ => false,
    }
}

/// Records the task of a job that moved on while its task was being created (canceled, or failed
/// by an early failure report): the task id is kept all the same, and a failed job is polled
/// after `first`, so a success that comes later restores it. Returns the job's status.
pub async fn keep_task_of_moved_job(
    executor: impl PgExecutor<'_>,
    id: GenerationId,
    remote_task_id: &str,
    first: Duration,
) -> Result<Option<GenerationStatus>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE generations SET remote_task_id = COALESCE(remote_task_id, $2),
                next_poll_at = CASE WHEN status = $4 THEN now() + make_interval(secs => $3) ELSE next_poll_at END
         WHERE id = $1 RETURNING status",
    )
    .bind(id)
    .bind(remote_task_id)
    .bind(first.as_secs_f64())
    .bind(GenerationStatus::Failed)
    .fetch_optional(executor)
    .await
}

/// Claims poll number `number`: `false` if another poll took it (a duplicate), and this one ends.
pub async fn claim(
    executor: impl PgExecutor<'_>,
    id: GenerationId,
    number: i32,
) -> Result<bool, sqlx::Error> {
    let claimed =
        sqlx::query("UPDATE generations SET polls = polls + 1 WHERE id = $1 AND polls = $2")
            .bind(id)
            .bind(number)
            .execute(executor)
            .await?
            .rows_affected();
    Ok(claimed == 1)
}

/// The next poll is due after `pause`.
pub async fn schedule_next(
    executor: impl PgExecutor<'_>,
    id: GenerationId,
    pause: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE generations SET next_poll_at = now() + make_interval(secs => $2) WHERE id = $1",
    )
    .bind(id)
    .bind(pause.as_secs_f64())
    .execute(executor)
    .await?;
    Ok(())
}

/// No more polls (the job ended, or its late-success window closed).
pub async fn stop(executor: impl PgExecutor<'_>, id: GenerationId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE generations SET next_poll_at = NULL WHERE id = $1")
        .bind(id)
        .execute(executor)
        .await?;
    Ok(())
}

/// No more polls for a job the client canceled (a job that is not canceled is left alone).
pub async fn stop_canceled(
    executor: impl PgExecutor<'_>,
    id: GenerationId,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE generations SET next_poll_at = NULL WHERE id = $1 AND status = $2")
        .bind(id)
        .bind(GenerationStatus::Canceled)
        .execute(executor)
        .await?;
    Ok(())
}

/// Records the progress (percent, capped at 100) a provider reported for the task of a submitted
/// job: only if the job's recorded task is `remote_task_id` (a report about another task changes
/// nothing), and without a write when it is unchanged. Progress moves no money and ends nothing:
/// webhook ingress records it itself, without a message to the workers, and so does a poll.
pub async fn record_progress(
    executor: impl PgExecutor<'_>,
    id: GenerationId,
    remote_task_id: &str,
    progress: u8,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE generations SET progress = $2
         WHERE id = $1 AND status = $3 AND remote_task_id = $4 AND progress IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(i16::from(progress.min(100)))
    .bind(GenerationStatus::Submitted)
    .bind(remote_task_id)
    .execute(executor)
    .await?;
    Ok(())
}

/// Polls that are due, at most `limit`, soonest first: each is leased for `lease` (its
/// `next_poll_at` moved that far ahead), so that no other scheduler publishes it meanwhile, and,
/// if its message is lost, it is due again once the lease runs out. Rows another scheduler is
/// taking are skipped. Returns each job with the number of the poll to publish.
pub async fn take_due(
    executor: impl PgExecutor<'_>,
    lease: Duration,
    limit: i64,
) -> Result<Vec<(GenerationId, i32)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE generations SET next_poll_at = now() + make_interval(secs => $1)
         WHERE id IN (SELECT id FROM generations
                      WHERE next_poll_at <= now()
                      ORDER BY next_poll_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, polls",
    )
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Submitted jobs that nothing polls any more: no poll scheduled, unchanged for `lost_after`, and
/// not re-armed in the last `lost_after`; at most `limit`, oldest first. A submitted job is polled
/// until it ends, so this is a broken poll chain (a poll stopped for a success whose event never
/// settled the job, after a crash or an outage between the two). Each is marked due now, for the
/// poll scheduler to publish ([`take_due`]); returns their ids.
pub async fn take_unpolled(
    executor: impl PgExecutor<'_>,
    lost_after: Duration,
    limit: i64,
) -> Result<Vec<GenerationId>, sqlx::Error> {
    // The status is spelled in the statement (not bound) so that the planner can use the partial
    // indexes on jobs in flight.
    let submitted = GenerationStatus::Submitted.as_str();
    let sql = format!(
        "UPDATE generations SET next_poll_at = now(), swept_at = now()
         WHERE id IN (SELECT id FROM generations
                      WHERE status = '{submitted}' AND next_poll_at IS NULL
                        AND updated_at < now() - make_interval(secs => $1)
                        AND (swept_at IS NULL OR swept_at < now() - make_interval(secs => $1))
                      ORDER BY updated_at LIMIT $2)
         RETURNING id"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(lost_after.as_secs_f64())
        .bind(limit)
        .fetch_all(executor)
        .await
}
