//! The chaos suite: 2,000 jobs with mixed fates from users whose credits run out part-way, while
//! workers are SIGKILLed every few seconds, the API is SIGKILLed once, and RabbitMQ and PostgreSQL
//! are restarted once each. Afterwards no job may be lost and no credit may have moved twice, and
//! every job's client was told how it ended (a signed webhook to the URL its request named).
//!
//! It restarts shared services, so it runs alone (`serial_`). A failure prints the seed; run it
//! again with `GENGATE_CHAOS_SEED=<seed>` to replay the same fates and the same sequence of kills
//! (timing decides the rest). `GENGATE_CHAOS_JOBS` changes the number of jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gengate_shared::ledger;
use gengate_sim::{Rates, SimConfig};
use gengate_tests::harness::metrics::metric_total;
use gengate_tests::harness::outages::post_until_answered;
use gengate_tests::harness::receiver::Receiver;
use gengate_tests::harness::{restart_postgres, restart_rabbitmq, service_restarts_skipped};
use gengate_tests::{TestApp, TestUser};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const USERS: usize = 5;
/// Each job costs 24 credits; a user's credits cover about 60% of their jobs at once (refunds
/// make room for more as jobs fail).
const CREDITS_PER_USER: i64 = 24 * 240;

/// How long the work left after the chaos may stand still before the suite gives up on it.
const STALLED: Duration = Duration::from_secs(120);

/// What became of one submit.
#[derive(Debug, Clone)]
enum Submitted {
    Accepted(String),
    Refused(u16),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serial_chaos_no_job_is_lost_and_no_credit_moves_twice() {
    let seed: u64 = std::env::var("GENGATE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let jobs: usize =
        std::env::var("GENGATE_CHAOS_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    eprintln!("chaos seed: {seed} ({jobs} jobs); reproduce with GENGATE_CHAOS_SEED={seed}");
    let started = Instant::now();

    let sim = SimConfig {
        seed,
        task_duration_ms: 300,
        callback_attempts: 8,
        callback_retry_interval_ms: 500,
        rates: Rates {
            fail: 0.20,
            dup_callback: 0.10,
            fail_then_success: 0.10,
            no_callback: 0.05,
            create_5xx: 0.05,
            ..Rates::default()
        },
        ..SimConfig::default()
    };
    let app = TestApp::builder()
        .workers(3)
        .simulator(sim)
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "100000")
        .env("GENGATE__WORKER__RECONCILE_WINDOW_MS", "5000")
        .env("GENGATE__WORKER__SHUTDOWN_GRACE_MS", "2000")
        .env("GENGATE__MODELS__KLING-V1-6-STD__DEADLINE_SECONDS", "60")
        .env("GENGATE__DATABASE__ACQUIRE_TIMEOUT_MS", "2000")
        .spawn()
        .await;
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(app.create_user(CREDITS_PER_USER).await);
    }
    // Every job's client is told how it ended; the receiver answers 204 to everything.
    let receiver = Receiver::start().await;
    let hooks = receiver.url("/chaos");
    let app = Arc::new(Mutex::new(app));
    let (api_url, http) = {
        let app = app.lock().await;
        (app.api_url.clone(), app.http.clone())
    };

    // Submit everything with 16 clients; every submit has an idempotency key and is retried
    // until it gets a definite answer, whatever is being killed at the time.
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<BTreeMap<usize, (usize, Submitted)>>> = Arc::default();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (next, results, users, http, api_url, hooks) = (
            next.clone(),
            results.clone(),
            users.clone(),
            http.clone(),
            api_url.clone(),
            hooks.clone(),
        );
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return;
                }
                let user = i % USERS;
                let outcome = submit_until_answered(&http, &api_url, &users[user], i, &hooks).await;
                results.lock().await.insert(i, (user, outcome));
            }
        });
    }

    // Meanwhile: the chaos.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut restarted_api = false;
    let mut restarted_rabbitmq = false;
    let mut restarted_postgres = false;
    let mut kills = 0;
    while next.load(Ordering::Relaxed) < jobs {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..4000))).await;
        let progress = next.load(Ordering::Relaxed) * 100 / jobs;
        let mut app = app.lock().await;
        let live: Vec<usize> =
            (0..app.workers.len()).filter(|i| app.workers[*i].process.is_running()).collect();
        let victim = live[rng.random_range(0..live.len())];
        app.workers[victim].process.kill().await;
        app.start_worker().await;
        kills += 1;
        if progress >= 25 && !restarted_api {
            eprintln!("chaos: SIGKILL the API at {progress}%");
            app.restart_api(false).await;
            restarted_api = true;
        } else if progress >= 45 && !restarted_rabbitmq {
            eprintln!("chaos: restarting RabbitMQ at {progress}%");
            drop(app);
            restarted_rabbitmq = restart_rabbitmq(Duration::from_secs(2)).await;
        } else if progress >= 65 && !restarted_postgres {
            eprintln!("chaos: restarting PostgreSQL at {progress}%");
            drop(app);
            restarted_postgres = restart_postgres().await;
        }
    }
    // Submitting went faster than the chaos: what did not happen yet happens now, while jobs are
    // still being processed.
    {
        let mut app = app.lock().await;
        if !restarted_api {
            eprintln!("chaos: SIGKILL the API after the submits");
            app.restart_api(false).await;
            restarted_api = true;
        }
    }
    if !restarted_rabbitmq {
        eprintln!("chaos: restarting RabbitMQ after the submits");
        restarted_rabbitmq = restart_rabbitmq(Duration::from_secs(2)).await;
    }
    if !restarted_postgres {
        eprintln!("chaos: restarting PostgreSQL after the submits");
        restarted_postgres = restart_postgres().await;
    }
    while clients.join_next().await.is_some() {}
    eprintln!(
        "chaos: {jobs} submits answered in {:?}; {kills} worker kills, API {restarted_api}, RabbitMQ {restarted_rabbitmq}, PostgreSQL {restarted_postgres}",
        started.elapsed()
    );
    assert!(kills > 0 && restarted_api, "the workers and the API were killed (seed {seed})");
    let restarts_expected = !service_restarts_skipped();
    assert_eq!(
        (restarted_rabbitmq, restarted_postgres),
        (restarts_expected, restarts_expected),
        "RabbitMQ and PostgreSQL were restarted (seed {seed})"
    );
    let app = Arc::try_unwrap(app).expect("no other owner").into_inner();
    // Everything reconnects on its own; nothing is restarted for it.
    app.wait_ready().await;

    let results = Arc::try_unwrap(results).expect("clients are done").into_inner();
    let accepted: Vec<(usize, String)> = results
        .values()
        .filter_map(|(user, outcome)| match outcome {
            Submitted::Accepted(id) => Some((*user, id.clone())),
            Submitted::Refused(_) => None,
        })
        .collect();
    let refused: Vec<u16> = results
        .values()
        .filter_map(|(_, o)| match o {
            Submitted::Refused(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert!(
        refused.iter().all(|s| *s == 402),
        "only 402 may refuse a job; got {refused:?} (seed {seed})"
    );
    assert!(
        accepted.len() > jobs / 2 && !refused.is_empty(),
        "credits should run out part-way: {} accepted (seed {seed})",
        accepted.len()
    );

    // Quiescence: every accepted job ends, and the queues and the outbox drain.
    wait_for_quiescence(&app, seed).await;

    // Every accepted job is terminal, and charged exactly what its status says.
    let rows = charges(&app).await;
    assert_eq!(
        rows.len(),
        accepted.len(),
        "every accepted job exists once, and no refused one (seed {seed})"
    );
    let mut wrong = Vec::new();
    for (id, status, price, net) in &rows {
        let expected = match status.as_str() {
            "completed" => *price,
            "failed" | "canceled" => 0,
            _ => -1,
        };
        if *net != expected {
            wrong.push(format!("{id}: {status}, charged {net}, expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "net charges do not match statuses (seed {seed}): {wrong:?}");

    // Each job's status is the last one its audit log moved it to.
    let split: Vec<String> = sqlx::query_scalar(
        "SELECT g.id::text FROM generations g
         WHERE g.status <> (SELECT e.to_status FROM generation_events e
                            WHERE e.generation_id = g.id AND e.to_status IS NOT NULL ORDER BY e.id DESC LIMIT 1)",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(split.is_empty(), "status and audit log disagree (seed {seed}): {split:?}");

    // Per user: balance = grants − net charges + debt.
    for user in &users {
        let credits: Value = app.user_get(user, "/v1/credits").await.json().await.unwrap();
        let net: i64 = sqlx::query_scalar(
            "SELECT COALESCE(-sum(e.amount), 0)::bigint FROM ledger_entries e
             WHERE e.user_id = $1::uuid AND e.generation_id IS NOT NULL AND NOT e.is_voided",
        )
        .bind(&user.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let balance = credits["balance"].as_i64().unwrap();
        let debt = credits["debt"].as_i64().unwrap();
        assert_eq!(balance, CREDITS_PER_USER - net + debt, "user {} (seed {seed})", user.id);
    }
    let report = ledger::reconcile(&app.pool, None).await.unwrap();
    assert!(report.is_clean(), "reconcile (seed {seed}): {:?}", report.mismatches);

    // Every completed job's files were copied into storage, through worker kills mid-copy and
    // broker restarts: each ended archived (or failed, with a reason), none is left pending.
    let files: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT v.archive_status, count(*), count(*) FILTER (WHERE v.archive_detail IS NULL)
         FROM generation_videos v JOIN generations g ON g.id = v.generation_id
         WHERE g.status = 'completed' GROUP BY v.archive_status ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let completed = rows.iter().filter(|(_, s, _, _)| s == "completed").count();
    let completed = i64::try_from(completed).unwrap();
    assert_eq!(
        files.iter().map(|(_, n, _)| n).sum::<i64>(),
        completed,
        "one video per completed job"
    );
    for (status, count, without_reason) in &files {
        match status.as_str() {
            "archived" => {}
            "failed" => assert_eq!(*without_reason, 0, "failed files say why (seed {seed})"),
            other => panic!("{count} files left {other} (seed {seed})"),
        }
    }
    eprintln!("chaos: result files {files:?}");

    // Every job that ended was delivered to its client (at least once), signed with its user's
    // secret, as the event of the status it ended in; every delivery ended delivered.
    check_deliveries(&app, &users, &receiver, &rows, seed).await;

    // Anything dead-lettered must be settled already: replaying it changes nothing.
    let dead = app.ctl_json(&["dlq", "stats", "--json"]).await;
    if dead["total"].as_u64().unwrap_or(0) > 0 {
        eprintln!("chaos: {} dead letters: {dead}", dead["total"]);
        let handled_before = messages_handled(&app).await;
        let replay = app.ctl_json(&["dlq", "replay", "--all", "--json"]).await;
        assert_eq!(replay["replayed"], dead["total"], "every dead letter was replayed: {replay}");
        // The replayed messages are handled (not merely taken off the queues: a message being
        // handled is not counted in its queue) before the books are read again.
        let replayed = replay["replayed"].as_u64().unwrap();
        gengate_tests::harness::eventually(
            "the workers to handle the replayed messages",
            Duration::from_secs(120),
            || async { (messages_handled(&app).await >= handled_before + replayed).then_some(()) },
        )
        .await;
        wait_for_quiescence(&app, seed).await;
        let still_dead = app.ctl_json(&["dlq", "stats", "--json"]).await;
        assert_eq!(
            still_dead["total"], 0,
            "a replayed message was dead-lettered again (seed {seed}): {still_dead}"
        );
        assert!(
            charges(&app).await == rows,
            "replaying the dead letters moved a job or a credit (seed {seed})"
        );
        let again = ledger::reconcile(&app.pool, None).await.unwrap();
        assert!(
            again.is_clean(),
            "replaying the dead letters changed the books (seed {seed}): {:?}",
            again.mismatches
        );
    }
    let statuses: BTreeMap<String, usize> =
        rows.iter().fold(BTreeMap::new(), |mut m, (_, s, _, _)| {
            *m.entry(s.clone()).or_default() += 1;
            m
        });
    eprintln!(
        "chaos: passed in {:?}: {statuses:?}, {} refused (402)",
        started.elapsed(),
        refused.len()
    );
}

/// Submits job `i` until the answer is definite (202 or a 4xx), retrying transport errors and 5xx
/// with the same idempotency key.
async fn submit_until_answered(
    http: &reqwest::Client,
    api_url: &str,
    user: &TestUser,
    i: usize,
    webhook_url: &str,
) -> Submitted {
    let body = json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": format!("chaos job {i}"),
                      "webhook_url": webhook_url,
                      "webhook_events": ["generation.completed", "generation.failed", "generation.canceled"]});
    let url = format!("{api_url}/v1/generations");
    let key = format!("chaos-{i}");
    let give_up = Duration::from_secs(120);
    match post_until_answered(http, &url, &user.key, Some(&key), &body, 202, give_up).await {
        Ok(generation) => Submitted::Accepted(generation["id"].as_str().unwrap().to_owned()),
        Err((status, _)) => Submitted::Refused(status),
    }
}

/// Messages the running workers have handled (`gengate_messages_handled_total`, every queue and
/// outcome), as their metrics say.
async fn messages_handled(app: &TestApp) -> u64 {
    let mut total = 0;
    for (index, worker) in app.workers.iter().enumerate() {
        if worker.process.is_running() {
            let text = app.worker_metrics(index).await;
            total += metric_total(&text, "gengate_messages_handled_total");
        }
    }
    total
}

/// Waits until every accepted job has ended and nothing is left to do: no job queued or
/// submitted, nothing unsent in the outbox or waiting for a poll, no file waiting for its copy,
/// and every work and delay queue empty (so messages were handled, not merely delivered).
///
/// The work left may take long on a busy machine (copying and probing every result file): it
/// fails when nothing has moved for [`STALLED`], not after a fixed time.
async fn wait_for_quiescence(app: &TestApp, seed: u64) {
    let mut last_seen = None;
    let mut moved_at = Instant::now();
    loop {
        let open: Vec<String> = sqlx::query_scalar(
            "SELECT id::text FROM generations WHERE status IN ('queued', 'submitted') ORDER BY id",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let polling: i64 =
            sqlx::query_scalar("SELECT count(*) FROM generations WHERE next_poll_at IS NOT NULL")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let queued = app.queue_depths().await;
        // Result files still waiting for their copy into storage, and webhooks still to send.
        let copying: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM generation_videos WHERE archive_status = 'pending')
                  + (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if open.is_empty()
            && unsent == 0
            && polling == 0
            && copying == 0
            && queued.as_ref().is_some_and(|q| q.values().all(|n| *n == 0))
        {
            break;
        }
        let seen = (open.len(), unsent, polling, copying, queued.clone());
        if last_seen.as_ref() != Some(&seen) {
            last_seen = Some(seen);
            moved_at = Instant::now();
        }
        assert!(
            moved_at.elapsed() < STALLED,
            "no progress for {STALLED:?} (seed {seed}): {} unfinished {:?}, {unsent} unsent, {polling} polling, {copying} files not archived or webhooks not delivered, queues {queued:?}",
            open.len(),
            &open[..open.len().min(20)]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks that every generation that ended told its client: the receiver got, for each, a
/// delivery of the event of its final status, about it, verified with its user's secret by the
/// Standard Webhooks library; and that every delivery row ended `delivered`.
async fn check_deliveries(
    app: &TestApp,
    users: &[TestUser],
    receiver: &Receiver,
    rows: &[(String, String, i64, i64)],
    seed: u64,
) {
    let mut verifiers = Vec::new();
    for user in users {
        let secret: Value = app.user_get(user, "/v1/webhooks/secret").await.json().await.unwrap();
        verifiers.push(standardwebhooks::Webhook::new(secret["secret"].as_str().unwrap()).unwrap());
    }
    let mut told: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let received = receiver.received();
    for delivery in &received {
        assert!(
            verifiers.iter().any(|v| v.verify(&delivery.body, &delivery.headers).is_ok()),
            "a delivery whose signature does not verify (seed {seed})"
        );
        let payload = delivery.json();
        let key = (
            payload["data"]["id"].as_str().unwrap().to_owned(),
            payload["type"].as_str().unwrap().to_owned(),
        );
        *told.entry(key).or_default() += 1;
        *ids.entry(delivery.id().to_owned()).or_default() += 1;
    }
    let untold: Vec<&String> = rows
        .iter()
        .filter(|(id, status, _, _)| {
            !told.contains_key(&(id.clone(), format!("generation.{status}")))
        })
        .map(|(id, _, _, _)| id)
        .collect();
    assert!(untold.is_empty(), "jobs whose end was not delivered (seed {seed}): {untold:?}");
    let not_delivered: Vec<(String, String)> = sqlx::query_as(
        "SELECT id::text, status FROM webhook_deliveries WHERE status <> 'delivered'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(not_delivered.is_empty(), "deliveries not delivered (seed {seed}): {not_delivered:?}");
    let again = ids.values().filter(|n| **n > 1).count();
    eprintln!(
        "chaos: {} deliveries received for {} jobs; {again} webhook ids received more than once (at least once, same id)",
        received.len(),
        rows.len()
    );
}

/// `(id, status, price, net charge)` of every generation.
async fn charges(app: &TestApp) -> Vec<(String, String, i64, i64)> {
    sqlx::query_as(
        "SELECT g.id::text, g.status, COALESCE(g.final_cost, g.cost),
                COALESCE((SELECT -sum(amount) FROM ledger_entries e WHERE e.generation_id = g.id AND NOT e.is_voided), 0)::bigint
         FROM generations g ORDER BY g.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}
