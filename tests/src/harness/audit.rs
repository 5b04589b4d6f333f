//! Reading what an operator sees of a generation (`GET /admin/generations/{id}`: its audit log,
//! its ledger entries, its transitions) and asserting how it was settled.

use serde_json::Value;

use super::app::TestApp;

/// The audit log of an operator's view of a generation, oldest first.
pub fn events(generation: &Value) -> Vec<Value> {
    generation["events"].as_array().expect("events").clone()
}

/// The ledger entries of an operator's view of a generation, voided ones included.
pub fn ledger(generation: &Value) -> Vec<Value> {
    generation["ledger"].as_array().expect("ledger").clone()
}

/// Applied transitions `(from, to, cause)`, oldest first.
pub fn transitions(generation: &Value) -> Vec<(String, String, String)> {
    events(generation)
        .iter()
        .filter(|e| e["to_status"].is_string())
        .map(|e| {
            (
                e["from_status"].as_str().unwrap_or("").to_owned(),
                e["to_status"].as_str().unwrap_or("").to_owned(),
                e["cause"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// How many applied transitions went to `status`.
pub fn count_to(generation: &Value, status: &str) -> usize {
    transitions(generation).iter().filter(|(_, to, _)| to == status).count()
}

/// Asserts a refund restored: the reservation voided by the refund, and the restore charged again
/// as new live entries.
pub fn assert_restored(generation: &Value, cost: i64) {
    let entries = ledger(generation);
    let voided: i64 = entries
        .iter()
        .filter(|e| e["voided_at"].is_string())
        .map(|e| e["amount"].as_i64().unwrap())
        .sum();
    let live: Vec<&Value> = entries.iter().filter(|e| e["voided_at"].is_null()).collect();
    assert_eq!(voided, -cost, "the reservation is voided: {entries:?}");
    assert_eq!(live.iter().map(|e| e["amount"].as_i64().unwrap()).sum::<i64>(), -cost);
    assert!(live.iter().all(|e| e["trans_type"] == "video_generation"), "{entries:?}");
}

impl TestApp {
    /// How many video rows a generation has (`generation_videos`).
    pub async fn video_rows(&self, id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM generation_videos WHERE generation_id = $1::uuid")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .expect("count videos")
    }

    /// Asserts a completed, charged-once generation: `cost` charged, one completion, one video;
    /// returns the operator's view of it.
    pub async fn assert_charged_once(&self, id: &str, cost: i64) -> Value {
        let generation = self.admin_generation(id).await;
        assert_eq!(generation["status"], "completed", "{generation}");
        assert_eq!(generation["charged"], cost, "{generation}");
        assert_eq!(count_to(&generation, "completed"), 1, "{:?}", transitions(&generation));
        assert_eq!(self.video_rows(id).await, 1);
        let live: i64 = ledger(&generation)
            .iter()
            .filter(|e| e["voided_at"].is_null())
            .map(|e| e["amount"].as_i64().unwrap())
            .sum();
        assert_eq!(live, -cost, "{:?}", ledger(&generation));
        generation
    }
}
