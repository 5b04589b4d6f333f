//! Group commit of submits (`api.submit_batch`): concurrent submits share one transaction, yet
//! each request gets exactly the answer it would get alone, a refused one never fails or delays
//! its neighbours, and a crash of the API mid-batch loses no accepted job and acknowledges no job
//! that does not exist. Group commit of the workers' transitions (`worker.group_commit`): a worker
//! that dies between a batch's commit and its acknowledgements applies nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{StreamExt, stream};
use gengate_tests::harness::eventually;
use gengate_tests::harness::metrics::metric_value;
use gengate_tests::{TestApp, TestUser};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// kling-v1-6-std, text2video, 5 s, 16:9.
const COST: i64 = 24;

fn job(prompt: &str) -> Value {
    json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": prompt})
}

/// `(batches, submits)` the API has written, from `gengate_submit_batch_size` on its metrics.
async fn batches_written(app: &TestApp) -> (u64, u64) {
    let text = app.api_metrics().await;
    (
        metric_value(&text, "gengate_submit_batch_size_count"),
        metric_value(&text, "gengate_submit_batch_size_sum"),
    )
}

/// Batches written at once (planned together, a statement per table) and one by one (a
/// savepoint per submit).
async fn batch_paths(app: &TestApp) -> (u64, u64) {
    let text = app.api_metrics().await;
    (
        metric_value(&text, r#"gengate_submit_batches_total{path="at_once"}"#),
        metric_value(&text, r#"gengate_submit_batches_total{path="one_by_one"}"#),
    )
}

/// One request of the mix and what it was answered.
#[derive(Debug)]
struct Answer {
    who: &'static str,
    status: u16,
    id: Option<String>,
    replayed: bool,
    code: Option<String>,
}

async fn send(
    app: &TestApp,
    who: &'static str,
    user: &TestUser,
    body: Value,
    key: Option<&str>,
) -> Answer {
    let mut request =
        app.http.post(format!("{}/v1/generations", app.api_url)).bearer_auth(&user.key).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body: Value = response.json().await.unwrap();
    Answer {
        who,
        status,
        id: (status == 202).then(|| body["id"].as_str().unwrap().to_owned()),
        replayed,
        code: body["code"].as_str().map(str::to_owned),
    }
}

#[tokio::test]
async fn a_mixed_batch_answers_each_submit_as_if_it_were_alone() {
    // One committer, so that everything arriving while a batch commits forms the next batch; no
    // workers, so that every accepted job stays in flight.
    let app = TestApp::builder()
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "1000")
        .env("GENGATE__API__SUBMIT_BATCH__TRANSACTIONS", "1")
        .env("GENGATE__API__SUBMIT_BATCH__MAX_SIZE", "64")
        .env("GENGATE__DATABASE__ACQUIRE_TIMEOUT_MS", "60000")
        .spawn()
        .await;
    let rich = app.create_user(COST * 1000).await;
    let poor = app.create_user(COST * 7).await;
    let broke = app.create_user(0).await;
    let limited = app.create_user_with(COST * 1000, json!({"max_in_flight": 3})).await;
    let keyed = app.create_user(COST * 1000).await;

    let mut requests = Vec::new();
    for i in 0..60 {
        requests.push(send(&app, "rich", &rich, job(&format!("rich {i}")), None));
    }
    for i in 0..20 {
        requests.push(send(&app, "poor", &poor, job(&format!("poor {i}")), None));
    }
    for i in 0..10 {
        requests.push(send(&app, "broke", &broke, job(&format!("broke {i}")), None));
    }
    for i in 0..10 {
        requests.push(send(&app, "limited", &limited, job(&format!("limited {i}")), None));
    }
    // One key, one request, sent ten times at once: one job.
    for _ in 0..10 {
        requests.push(send(&app, "same", &keyed, job("same request"), Some("same-key")));
    }
    // One key, five different requests at once: the first one written wins, the others conflict.
    for i in 0..5 {
        requests.push(send(&app, "conflict", &keyed, job(&format!("other {i}")), Some("one-key")));
    }
    // Refused before any batch: a model that does not exist.
    for _ in 0..5 {
        let body = json!({"model": "no-such-model", "mode": "text2video", "prompt": "x"});
        requests.push(send(&app, "invalid", &rich, body, None));
    }
    let answers = join_all(requests).await;

    let mut by_who: BTreeMap<&str, BTreeMap<u16, usize>> = BTreeMap::new();
    for answer in &answers {
        *by_who.entry(answer.who).or_default().entry(answer.status).or_default() += 1;
    }
    let expect = |who: &str, counts: &[(u16, usize)]| {
        assert_eq!(
            by_who[who],
            counts.iter().copied().collect::<BTreeMap<_, _>>(),
            "answers to {who}: {by_who:?}"
        );
    };
    expect("rich", &[(202, 60)]);
    expect("poor", &[(202, 7), (402, 13)]);
    expect("broke", &[(402, 10)]);
    expect("limited", &[(202, 3), (429, 7)]);
    expect("same", &[(202, 10)]);
    expect("conflict", &[(202, 1), (409, 4)]);
    expect("invalid", &[(422, 5)]);
    for answer in &answers {
        let expected_code = match answer.status {
            402 => Some("insufficient_credits"),
            409 => Some("idempotency_conflict"),
            429 => Some("too_many_in_flight"),
            _ => continue,
        };
        assert_eq!(answer.code.as_deref(), expected_code, "{answer:?}");
    }
    let same: Vec<&Answer> = answers.iter().filter(|a| a.who == "same").collect();
    let same_ids: BTreeSet<&str> = same.iter().map(|a| a.id.as_deref().unwrap()).collect();
    assert_eq!(same_ids.len(), 1, "one key, one job: {same:?}");
    assert_eq!(same.iter().filter(|a| !a.replayed).count(), 1, "one created, nine replays");

    // The submits were batched: some transaction held more than one.
    let (batches, submits) = batches_written(&app).await;
    eprintln!("{submits} submits in {batches} batches");
    assert!(submits > batches, "{submits} submits in {batches} batches: nothing was batched");

    // What was answered 202 exists, once, with its job message; nothing else was written.
    let created: BTreeSet<&str> = answers.iter().filter_map(|a| a.id.as_deref()).collect();
    assert_eq!(created.len(), 60 + 7 + 3 + 1 + 1);
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM generations").fetch_all(&app.pool).await.unwrap();
    assert_eq!(rows.iter().map(String::as_str).collect::<BTreeSet<_>>(), created);
    assert_eq!(rows.len(), created.len());
    let messages = app.job_messages().await;
    assert_eq!(messages.keys().map(String::as_str).collect::<BTreeSet<_>>(), created);
    assert!(messages.values().all(|n| *n == 1), "one job message per job: {messages:?}");

    assert_eq!(app.balance(&rich).await, COST * (1000 - 60));
    assert_eq!(app.balance(&poor).await, 0);
    assert_eq!(app.balance(&broke).await, 0);
    assert_eq!(app.balance(&limited).await, COST * (1000 - 3));
    assert_eq!(app.balance(&keyed).await, COST * (1000 - 2));
    app.assert_reconciled().await;
    let (at_once, _) = batch_paths(&app).await;
    assert!(at_once > 0, "no batch was written at once");

    // A second wave: the keys again (now stored, so those batches go one by one), among new
    // submits. Each key answers what it answered the first time.
    let same_id = same[0].id.clone().unwrap();
    let mut again = Vec::new();
    for _ in 0..5 {
        again.push(send(&app, "same", &keyed, job("same request"), Some("same-key")));
    }
    for i in 0..30 {
        again.push(send(&app, "rich", &rich, job(&format!("rich again {i}")), None));
    }
    let again = join_all(again).await;
    for answer in &again {
        assert_eq!(answer.status, 202, "{answer:?}");
        if answer.who == "same" {
            assert_eq!(answer.id.as_deref(), Some(same_id.as_str()), "{answer:?}");
            assert!(answer.replayed, "{answer:?}");
        } else {
            assert!(!answer.replayed, "{answer:?}");
        }
    }
    assert_eq!(app.balance(&rich).await, COST * (1000 - 90));
    assert_eq!(app.balance(&keyed).await, COST * (1000 - 2));
    let (_, one_by_one) = batch_paths(&app).await;
    assert!(one_by_one > 0, "no batch with a stored key went one by one");
    // Whichever path wrote it, each new job has one job message and one `submit` audit row.
    let new_ids: BTreeSet<&str> =
        again.iter().filter(|a| a.who == "rich").map(|a| a.id.as_deref().unwrap()).collect();
    let messages = app.job_messages().await;
    assert_eq!(messages.keys().map(String::as_str).collect::<BTreeSet<_>>(), new_ids);
    assert!(messages.values().all(|n| *n == 1), "one job message per job: {messages:?}");
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT generation_id FROM generation_events WHERE cause = 'submit'
                               GROUP BY generation_id HAVING count(*) > 1) d",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(doubled, 0, "a generation with more than one submit audit row");
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_lone_submit_is_not_held_back_for_a_batch() {
    // The longest window allowed: a submit that waited for it would take 100 ms at least, twenty
    // of them two seconds.
    let app =
        TestApp::builder().env("GENGATE__API__SUBMIT_BATCH__WINDOW_US", "100000").spawn().await;
    let user = app.create_user(COST * 100).await;
    let started = std::time::Instant::now();
    for i in 0..20 {
        app.submit_ok(&user, &job(&format!("alone {i}"))).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "20 submits one after another took {took:?}");
    let (batches, submits) = batches_written(&app).await;
    assert_eq!((batches, submits), (20, 20), "each lone submit went in a batch of its own");
}

#[tokio::test]
async fn an_api_killed_mid_batch_loses_no_accepted_job_and_acknowledges_none_that_does_not_exist() {
    let mut app = TestApp::builder()
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "100000")
        .spawn()
        .await;
    let users = [app.create_user(COST * 10_000).await, app.create_user(COST * 10_000).await];
    let (http, api_url) = (app.http.clone(), app.api_url.clone());

    // 16 clients submit without pause, each request with its own idempotency key; what each key
    // was answered is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Mutex<BTreeMap<usize, Result<String, String>>>> = Arc::default();
    let mut clients = tokio::task::JoinSet::new();
    let keys = [users[0].key.clone(), users[1].key.clone()];
    for _ in 0..16 {
        let (stop, next, answers, http, api_url, keys) = (
            stop.clone(),
            next.clone(),
            answers.clone(),
            http.clone(),
            api_url.clone(),
            keys.clone(),
        );
        clients.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let sent = http
                    .post(format!("{api_url}/v1/generations"))
                    .bearer_auth(&keys[i % 2])
                    .header("Idempotency-Key", format!("kill-{i}"))
                    .timeout(Duration::from_secs(10))
                    .json(&job(&format!("kill {i}")))
                    .send()
                    .await;
                let answer = match sent {
                    Ok(r) if r.status() == 202 => {
                        Ok(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned())
                    }
                    Ok(r) => Err(format!("{}", r.status())),
                    Err(err) => Err(format!("no answer: {err}")),
                };
                answers.lock().await.insert(i, answer);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        });
    }
    // Under way: kill the API while submits are in flight.
    gengate_tests::harness::eventually(
        "submits to be accepted",
        Duration::from_secs(30),
        || async {
            (answers.lock().await.values().filter(|a| a.is_ok()).count() >= 200).then_some(())
        },
    )
    .await;
    app.restart_api(false).await;
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    let answers = Arc::try_unwrap(answers).unwrap().into_inner();
    let unanswered: Vec<usize> =
        answers.iter().filter(|(_, a)| a.is_err()).map(|(i, _)| *i).collect();
    assert!(!unanswered.is_empty(), "the kill cut no submit short: {} answered", answers.len());

    // Every 202 names a job that exists, with its job message and its credits reserved.
    let accepted: BTreeMap<usize, String> =
        answers.iter().filter_map(|(i, a)| Some((*i, a.clone().ok()?))).collect();
    let charged: Vec<(String, i64)> = sqlx::query_as(
        "SELECT g.id::text,
                COALESCE((SELECT -sum(amount) FROM ledger_entries e WHERE e.generation_id = g.id), 0)::bigint
         FROM generations g",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let messages = app.job_messages().await;
    let exists: BTreeMap<String, (usize, i64)> = charged
        .into_iter()
        .map(|(id, charged)| (id.clone(), (messages.get(&id).copied().unwrap_or(0), charged)))
        .collect();
    // (A relay killed between a publish and its delete sends a message twice: at least once.)
    for (i, id) in &accepted {
        let (messages, charged) = exists.get(id).copied().unwrap_or_default();
        assert!(
            messages >= 1 && charged == COST,
            "submit {i} was told 202 for {id}: {messages} job messages, {charged} charged"
        );
    }

    // A client that got no answer retries with its key: each key ends with exactly one job. (The
    // 16 clients retry 16 at a time: the keys refused while the API was down can number more than
    // the API takes at once, `api.max_in_flight_requests`, and it would shed the rest.)
    let (app, users) = (&app, &users);
    let retried: Vec<String> = stream::iter(unanswered.iter().map(|i| async move {
        let response = app
            .http
            .post(format!("{}/v1/generations", app.api_url))
            .bearer_auth(&users[i % 2].key)
            .header("Idempotency-Key", format!("kill-{i}"))
            .json(&job(&format!("kill {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "retry of submit {i}");
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    let mut ids: BTreeSet<String> = accepted.values().cloned().collect();
    ids.extend(retried);
    assert_eq!(ids.len(), answers.len(), "one job per key");
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(usize::try_from(total).unwrap(), ids.len(), "no job beyond the keys' own");
    app.assert_reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_a_batch_commit_and_its_acks_applies_nothing_twice() {
    const JOBS: usize = 24;
    let mut app = TestApp::builder()
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "1000")
        .spawn()
        .await;
    let user = app.create_user(COST * 100).await;
    // Submitted while no worker runs: the first worker takes them all at once, so its writes
    // share batches.
    let ids: Vec<String> = join_all((0..JOBS).map(|i| {
        let (app, user) = (&app, &user);
        async move { app.submit_ok(user, &job(&format!("crash {i}"))).await }
    }))
    .await;
    app.job_messages_published().await;

    // Workers that die right after their nth batch commits, before any writer is answered (so
    // before any of their deliveries is acknowledged): the first after its second batch, then
    // later and later, until the jobs are done.
    let mut crashes = 0;
    for at in [2, 3, 4, 6, 8] {
        let crash = format!("worker.batch_committed@{at}");
        let index = app.start_worker_with(&[("GENGATE_CRASH_POINTS", &crash)]).await;
        let crashed =
            eventually("the worker to crash or the jobs to end", Duration::from_secs(60), || {
                let exited = app.workers[index].process.exited();
                let pool = app.pool.clone();
                async move {
                    if let Some(status) = exited {
                        return Some(Some(status));
                    }
                    let open: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM generations WHERE status <> 'completed'",
                    )
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    (open == 0).then_some(None)
                }
            })
            .await;
        let Some(status) = crashed else { break };
        assert!(!status.success(), "the worker aborted: {status}");
        let log = app.workers[index].process.log_tail(200);
        assert!(log.contains("crash point worker.batch_committed reached"), "{log}");
        crashes += 1;
        if crashes == 1 {
            // Its second batch committed (something is written), yet no delivery was
            // acknowledged: every job message is back on the queue.
            let attempted: i64 =
                sqlx::query_scalar("SELECT count(*) FROM generations WHERE submit_attempts > 0")
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            assert!(attempted > 0, "the crashed worker committed nothing");
            let depths = app.queue_depths().await.expect("queue depths");
            assert_eq!(depths["jobs"], u32::try_from(JOBS).unwrap(), "{depths:?}");
        }
    }
    assert!(crashes >= 2, "only {crashes} workers crashed");

    // A worker without a crash point finishes the work: every job completed, charged once.
    app.start_worker().await;
    for id in &ids {
        app.wait_for_status(&user, id, "completed", Duration::from_secs(60)).await;
        app.assert_charged_once(id, COST).await;
    }
    let applied_twice: Vec<(String, String)> = sqlx::query_as(
        "SELECT generation_id::text, to_status::text FROM generation_events
         WHERE to_status IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(applied_twice.is_empty(), "transitions applied twice: {applied_twice:?}");
    assert_eq!(app.balance(&user).await, COST * (100 - i64::try_from(JOBS).unwrap()));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_batch_whose_user_locks_cannot_be_taken_leaves_no_connection_broken() {
    let app = TestApp::spawn().await;
    let user = app.create_user(10_000).await;
    // Another transaction holds the user's row, so the batch waits for it …
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query("SELECT FROM users WHERE id = $1::uuid FOR UPDATE")
        .bind(&user.id)
        .execute(&mut *holder)
        .await
        .unwrap();
    // … and its lock statement is cut short while it waits (as a deadlock or a lock timeout would).
    let cut_short = async {
        let canceled: bool = eventually(
            "the batch waiting for the user's lock",
            Duration::from_secs(30),
            || async {
                sqlx::query_scalar(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND wait_event_type = 'Lock'",
                )
                .fetch_optional(&app.pool)
                .await
                .unwrap()
            },
        )
        .await;
        assert!(canceled);
        holder.rollback().await.unwrap();
    };
    let body = job("waits for its lock");
    let (waited, ()) = tokio::join!(app.submit(&user, &body), cut_short);
    // That submit failed as a whole (nothing written, the client may retry) …
    assert!(waited.status().is_server_error(), "{}", waited.status());
    // … and every connection the API has still works: as many requests as its pool has
    // connections, and more, are answered as usual.
    for i in 0..12 {
        app.submit_ok(&user, &job(&format!("after the canceled batch {i}"))).await;
        assert_eq!(app.user_get(&user, "/v1/credits").await.status(), 200);
    }
    app.assert_reconciled().await;
}
