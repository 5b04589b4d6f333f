//! `gengatectl archive …`: copying result files again, and deleting old ones.
//!
//! - `retry <generation>` / `retry --failed` makes failed files pending again and queues their
//!   copy (through the outbox, in the same transaction, so nothing is lost between the two).
//! - `purge --older-than 90d` deletes the stored objects (files and posters) of generations that
//!   ended before then, after a dry run or a confirmation; their records stay, marked `purged`.

use anyhow::Context;
use gengate_shared::config::Settings;
use gengate_shared::db;
use gengate_shared::generation::archive;
use gengate_shared::ids::GenerationId;
use gengate_shared::outbox;
use gengate_shared::storage::Storage;
use serde_json::json;
use time::OffsetDateTime;

use super::output::{self, Progress, confirm};
use super::{Refused, connect_db};

/// `gengatectl archive retry`.
pub async fn retry(
    settings: &Settings,
    generation: Option<GenerationId>,
    json: bool,
) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    let queued = db::transaction!(&pool, sqlx::Error, |tx| {
        archive::requeue_failed(tx, generation).await?
    })
    .await?;
    if queued.is_empty() {
        return Err(Refused(match generation {
            Some(id) => format!("generation {id} has no failed result files"),
            None => "no result file has failed".to_owned(),
        })
        .into());
    }
    // Wake the relays; they sweep every second anyway.
    let _ = outbox::notify(&pool).await;
    if json {
        return output::json(&json!({"queued": queued}));
    }
    println!("queued the copy of {} generation(s)' failed files:", queued.len());
    for id in queued {
        println!("  {id}");
    }
    Ok(())
}

/// `gengatectl archive purge`.
pub async fn purge(
    settings: &Settings,
    older_than: std::time::Duration,
    dry_run: bool,
    yes: bool,
    json: bool,
) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    let cutoff = OffsetDateTime::now_utc() - older_than;
    let objects = archive::stored_before(&pool, cutoff).await?;
    let bytes: i64 = objects.iter().filter_map(|o| o.size_bytes).sum();
    let generations: std::collections::BTreeSet<_> =
        objects.iter().map(|o| o.generation_id).collect();
    let cutoff_text = output::rfc3339(cutoff);
    let summary = json!({"files": objects.len(), "generations": generations.len(), "bytes": bytes,
                         "ended_before": cutoff_text, "dry_run": dry_run});
    if objects.is_empty() {
        if json {
            return output::json(&summary);
        }
        println!(
            "nothing to purge: no archived file of a generation that ended before {cutoff_text}"
        );
        return Ok(());
    }
    if dry_run {
        if json {
            return output::json(&summary);
        }
        println!(
            "would delete {} files ({} bytes, posters besides) of {} generations that ended before {cutoff_text}",
            objects.len(),
            bytes,
            generations.len()
        );
        return Ok(());
    }
    let question = format!(
        "delete {} stored files ({bytes} bytes) of {} generations that ended before {cutoff_text}?",
        objects.len(),
        generations.len()
    );
    if !yes && !confirm(&question)? {
        return Err(Refused("not confirmed; nothing deleted (pass --yes in scripts)".into()).into());
    }
    let storage = Storage::from_settings(settings).context("opening the object store")?;
    let progress = Progress::new(objects.len() as u64, "purging", json);
    let mut purged = 0;
    for object in &objects {
        storage.delete(&object.object_key).await?;
        if let Some(poster) = &object.poster_key {
            storage.delete(poster).await?;
        }
        archive::mark_purged(&pool, object).await?;
        purged += 1;
        progress.inc();
    }
    progress.finish();
    if json {
        return output::json(&json!({"purged": purged, "bytes": bytes}));
    }
    println!("deleted {purged} stored files ({bytes} bytes); their generations keep their records");
    Ok(())
}
