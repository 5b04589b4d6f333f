//! Many jobs, random fates: a thousand jobs all end as the provider decided, settled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use gengate_sim::{Outcome, Rates, SimConfig};
use gengate_tests::harness::eventually;
use gengate_tests::requests::{kling, sora};
use gengate_tests::{TestApp, TestUser};
use serde_json::Value;
use tokio::sync::Semaphore;

const LOAD_JOBS: usize = 1000;
const LOAD_USERS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_jobs_with_random_fates_all_end_settled() {
    let started = Instant::now();
    let app = TestApp::builder()
        .workers(2)
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "100000")
        .env("GENGATE__PROVIDERS__KIE__RATE_LIMIT", "0")
        .env("GENGATE__DATABASE__MAX_CONNECTIONS", "16")
        .simulator(SimConfig {
            task_duration_ms: 150,
            // Longer than a poll interval: polls see some failures that later turn to success.
            recovery_delay_ms: 1500,
            callback_retry_interval_ms: 200,
            seed: 20_261_101,
            rates: Rates {
                fail: 0.1,
                dup_callback: 0.1,
                fail_then_success: 0.1,
                no_callback: 0.1,
                unknown_status: 0.1,
                ..Rates::default()
            },
            ..SimConfig::default()
        })
        .spawn()
        .await;
    let app = Arc::new(app);
    let mut users = Vec::new();
    for _ in 0..LOAD_USERS {
        users.push(app.create_user(1_000_000).await);
    }

    // Kling and kie jobs, from every user, 32 requests in flight.
    let gate = Arc::new(Semaphore::new(32));
    let submits = (0..LOAD_JOBS).map(|n| {
        let app = app.clone();
        let user = users[n % LOAD_USERS].clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let body =
                if n % 2 == 0 { kling(&format!("job {n}")) } else { sora(&format!("job {n}")) };
            let id = app.submit_ok(&user, &body).await;
            (user, id)
        })
    });
    let jobs: Vec<(TestUser, String)> =
        join_all(submits).await.into_iter().map(|r| r.expect("submit task")).collect();
    let submitted_in = started.elapsed();

    let ids: Vec<String> = jobs.iter().map(|(_, id)| id.clone()).collect();

    // What the provider decided for each job's task: the ending gengate must reach.
    let tasks = eventually("an upstream task for every job", Duration::from_secs(60), || async {
        let tasks = app.sim.tasks();
        (tasks.len() >= LOAD_JOBS).then_some(tasks)
    })
    .await;
    let expected: BTreeMap<String, &str> = tasks
        .iter()
        .map(|t| {
            let id = t.external_task_id.clone().unwrap_or_else(|| {
                let url = t.callback_url.clone().unwrap();
                url.split("generation_id=").nth(1).unwrap().split('&').next().unwrap().to_owned()
            });
            let ending = match t.fate.outcome {
                Outcome::Fail => "failed",
                Outcome::Succeed | Outcome::FailThenSucceed => "completed",
                Outcome::Never => "submitted",
            };
            (id, ending)
        })
        .collect();
    assert_eq!(expected.len(), LOAD_JOBS, "one upstream task per job");
    let mut fates: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        let fate = &task.fate;
        let name = format!(
            "{:?}{}{}{}",
            fate.outcome,
            if fate.callbacks { "" } else { "+no_callback" },
            if fate.dup_callback { "+dup" } else { "" },
            if fate.unknown_status { "+unknown" } else { "" },
        );
        *fates.entry(name).or_default() += 1;
    }

    // Wait until every job has reached the ending the provider decided.
    let deadline = Instant::now() + Duration::from_secs(120);
    let waited = loop {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id::text, status FROM generations WHERE id = ANY($1::uuid[])")
                .bind(&ids)
                .fetch_all(&app.pool)
                .await
                .unwrap();
        let off: Vec<_> =
            rows.iter().filter(|(id, status)| expected.get(id) != Some(&status.as_str())).collect();
        if off.is_empty() {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs did not reach the provider's ending, e.g. {:?}",
            off.len(),
            &off[..off.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Every job as its owner sees it.
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for (user, id) in &jobs {
        let generation: Value =
            app.user_get(user, &format!("/v1/generations/{id}")).await.json().await.unwrap();
        let status = generation["status"].as_str().unwrap().to_owned();
        let cost = generation["cost"].as_i64().unwrap();
        let expected = match status.as_str() {
            "completed" => cost,
            "failed" => 0,
            other => panic!("job {id} ended {other}"),
        };
        assert_eq!(generation["charged"], expected, "{generation}");
        *by_status.entry(status).or_default() += 1;
    }
    app.assert_reconciled().await;
    // One completion and one video per completed job, no video for a failed one.
    let odd: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT g.id::text, g.status,
                (SELECT count(*) FROM generation_events e WHERE e.generation_id = g.id AND e.to_status = 'completed'),
                (SELECT count(*) FROM generation_videos v WHERE v.generation_id = g.id)
         FROM generations g WHERE g.id = ANY($1::uuid[])",
    )
    .bind(&ids)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .filter(|(_, status, completions, videos)| {
        let once = i64::from(status == "completed");
        (*completions, *videos) != (once, once)
    })
    .collect();
    assert!(odd.is_empty(), "(id, status, completions, videos): {odd:?}");
    // Nothing was given up on.
    let dead = app.broker.drain(&app.broker.topology().dead_letter_queue()).await;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    eprintln!(
        "{LOAD_JOBS} jobs: submitted in {submitted_in:?}, all settled after {waited:?}; \
         {by_status:?}; fates {fates:?}"
    );
    // Each user's balance is the grant less what their jobs cost.
    for user in &users {
        let (balance, debt) = app.credits(user).await;
        let charged: i64 = sqlx::query_scalar(
            "SELECT COALESCE(-sum(amount), 0)::bigint FROM ledger_entries WHERE user_id = $1::uuid AND NOT is_voided AND generation_id IS NOT NULL",
        )
        .bind(&user.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!((balance, debt), (1_000_000 - charged, 0));
    }
}
