//! gengate on a three-node RabbitMQ cluster (`deploy/dev cluster`): a few hundred jobs with mixed
//! fates while the node the workers are connected to is stopped (`rabbitmqctl stop_app`), and, once
//! it is back, the node they moved to is killed (SIGKILL). Every job must end as its fate says, none lost, no credit moved twice, no task
//! created twice upstream, the ledger reconciled; the quorum queues have three replicas.
//!
//! The cluster is this test's own (nodes gengate-c1..3@localhost, ports 5701-5703), beside the
//! machine's broker, which no other test sees touched; it runs with the `serial_` tests all the
//! same, to keep the machine's two cores for it. `GENGATE_CLUSTER_JOBS` changes the number of jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gengate_shared::ledger;
use gengate_shared::queue::WorkQueue;
use gengate_sim::SimConfig;
use gengate_tests::harness::cluster::{NODES, RabbitCluster};
use gengate_tests::harness::eventually;
use gengate_tests::harness::outages::post_until_answered;
use gengate_tests::{TestApp, TestUser};
use serde_json::json;
use tokio::sync::Mutex;

/// How long a submit or a cancel may go unanswered while a node is lost.
const MINUTE: Duration = Duration::from_secs(60);

const USERS: usize = 3;
const WORKERS: usize = 2;
/// Each job costs 24 credits; every user can pay for all of theirs at once.
const CREDITS_PER_USER: i64 = 24 * 400;
/// How long the work left may stand still before the test gives up on it.
const STALLED: Duration = Duration::from_secs(90);

/// The accepted jobs by number: `(user, fate, generation id)`.
type Accepted = BTreeMap<usize, (usize, Fate, String)>;

/// What the simulator makes of a job (a `[[sim:…]]` marker in its prompt), and how it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Succeeds,
    Fails,
    NoCallback,
    DuplicateCallbacks,
    FailsThenSucceeds,
    Rejected,
    CreateErrorsFirst,
    Canceled,
}

impl Fate {
    const ALL: [Fate; 8] = [
        Fate::Succeeds,
        Fate::Fails,
        Fate::NoCallback,
        Fate::DuplicateCallbacks,
        Fate::FailsThenSucceeds,
        Fate::Rejected,
        Fate::CreateErrorsFirst,
        Fate::Canceled,
    ];

    fn marker(self) -> &'static str {
        match self {
            Fate::Succeeds => "[[sim:ok]]",
            Fate::Fails => "[[sim:fail]]",
            Fate::NoCallback => "[[sim:no-callback]]",
            Fate::DuplicateCallbacks => "[[sim:dup-callback]]",
            Fate::FailsThenSucceeds => "[[sim:fail-then-success]]",
            Fate::Rejected => "[[sim:reject]]",
            Fate::CreateErrorsFirst => "[[sim:create-5xx=2]]",
            // Runs until the client cancels it.
            Fate::Canceled => "[[sim:never]]",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Fate::Fails | Fate::Rejected => "failed",
            Fate::Canceled => "canceled",
            _ => "completed",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serial_cluster_jobs_survive_losing_the_workers_rabbitmq_node_twice() {
    let jobs: usize =
        std::env::var("GENGATE_CLUSTER_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(320);
    let started = Instant::now();
    let cluster = RabbitCluster::start().await;
    eprintln!("cluster: {NODES} nodes up in {:?}", started.elapsed());

    let sim = SimConfig {
        task_duration_ms: 300,
        callback_attempts: 8,
        callback_retry_interval_ms: 500,
        ..SimConfig::default()
    };
    let app = TestApp::builder()
        .workers(WORKERS)
        .amqp_nodes(&cluster.urls(), Some(3))
        .simulator(sim)
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "100000")
        .env("GENGATE__WORKER__RECONCILE_WINDOW_MS", "5000")
        .spawn()
        .await;

    // Every quorum queue has a replica on each node.
    let topology = app.broker.topology();
    let mut quorum_queues: Vec<String> =
        WorkQueue::ALL.iter().map(|q| topology.queue(*q)).collect();
    quorum_queues.extend(topology.delay_tiers().iter().map(|t| topology.delay_queue(*t)));
    let replicas = |members: &BTreeMap<String, (usize, usize)>| -> Vec<(String, (usize, usize))> {
        quorum_queues
            .iter()
            .map(|q| (q.clone(), members.get(q).copied().unwrap_or((0, 0))))
            .collect()
    };
    let whole = |replicas: &[(String, (usize, usize))]| replicas.iter().all(|(_, r)| *r == (3, 3));
    let before = replicas(&cluster.quorum_members(1).await);
    assert!(whole(&before), "quorum queues' (members, online): {before:?}");

    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(app.create_user(CREDITS_PER_USER).await);
    }
    let (api_url, http) = (app.api_url.clone(), app.http.clone());

    // Six clients submit (and cancel what is to be canceled), about ten jobs a second, in three
    // thirds: the second third is released as the first node goes away, the last as the second
    // does, so that jobs come in and are being worked on while a node is gone.
    let next = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(tokio::sync::watch::channel(jobs / 3).0);
    let accepted: Arc<Mutex<Accepted>> = Arc::default();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (next, accepted, users, http, api_url) =
            (next.clone(), accepted.clone(), users.clone(), http.clone(), api_url.clone());
        let mut released = released.subscribe();
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return;
                }
                released.wait_for(|n| i < *n).await.expect("the test is running");
                let (user, fate) = (i % USERS, Fate::ALL[i % Fate::ALL.len()]);
                let id = submit(&http, &api_url, &users[user], i, fate).await;
                if fate == Fate::Canceled {
                    cancel(&http, &api_url, &users[user], &id).await;
                }
                accepted.lock().await.insert(i, (user, fate, id));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    // The first node to go: the one the workers are connected to, a third into the submits.
    wait_for_submits(&accepted, jobs / 3).await;
    let first = workers_node(&cluster, None).await;
    released.send_replace(jobs * 2 / 3);
    lose_node(&app, &cluster, first, Loss::Stop).await;

    // Then, once it is back, the one they moved to.
    wait_for_submits(&accepted, jobs * 2 / 3).await;
    let second = workers_node(&cluster, Some(first)).await;
    released.send_replace(jobs);
    assert_ne!(second, first, "the workers left node {first} when it stopped");
    lose_node(&app, &cluster, second, Loss::Kill).await;

    while let Some(client) = clients.join_next().await {
        client.expect("a client panicked");
    }
    eprintln!("cluster: {jobs} jobs submitted by {:?}", started.elapsed());
    app.wait_ready().await;

    let accepted = Arc::try_unwrap(accepted).expect("clients are done").into_inner();
    assert_eq!(accepted.len(), jobs, "every submit was accepted");
    let expected: BTreeMap<String, Fate> =
        accepted.values().map(|(_, fate, id)| (id.clone(), *fate)).collect();
    wait_until_settled(&app, &expected).await;
    eprintln!("cluster: every job settled by {:?}", started.elapsed());

    // Every job exists once, ended as its fate says, and is charged what its status says.
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT g.id::text, g.status, COALESCE(g.final_cost, g.cost),
                COALESCE((SELECT -sum(amount) FROM ledger_entries e
                          WHERE e.generation_id = g.id AND NOT e.is_voided), 0)::bigint
         FROM generations g ORDER BY g.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), jobs, "every accepted job exists once (idempotent submits)");
    let mut wrong = Vec::new();
    for (id, status, price, net) in &rows {
        let Some(fate) = expected.get(id) else {
            wrong.push(format!("{id}: not a job the clients submitted"));
            continue;
        };
        if status != fate.expected() {
            wrong.push(format!("{id} ({fate:?}): {status}, expected {}", fate.expected()));
        }
        let charge = if status == "completed" { *price } else { 0 };
        if *net != charge {
            wrong.push(format!("{id} ({fate:?}): {status}, charged {net}, expected {charge}"));
        }
    }
    assert!(wrong.is_empty(), "jobs that ended wrong: {wrong:?}");

    // No transition happened twice (a redelivered message applied again), and each job's
    // status is the last one its audit log moved it to.
    let twice: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT generation_id::text, to_status, count(*) FROM generation_events
         WHERE to_status IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(twice.is_empty(), "transitions applied twice: {twice:?}");
    let split: Vec<String> = sqlx::query_scalar(
        "SELECT g.id::text FROM generations g
         WHERE g.status <> (SELECT e.to_status FROM generation_events e
                            WHERE e.generation_id = g.id AND e.to_status IS NOT NULL
                            ORDER BY e.id DESC LIMIT 1)",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(split.is_empty(), "status and audit log disagree: {split:?}");

    // No task was created twice upstream (a job message handled again after a node went away).
    let tasks = app.sim.tasks();
    let mut created: BTreeMap<&str, usize> = BTreeMap::new();
    for id in expected.keys() {
        let n = tasks
            .iter()
            .filter(|t| {
                t.external_task_id.as_deref() == Some(id.as_str())
                    || t.callback_url.as_deref().is_some_and(|url| url.contains(id.as_str()))
            })
            .count();
        if n > 1 {
            created.insert(id, n);
        }
    }
    assert!(created.is_empty(), "tasks created more than once upstream: {created:?}");

    // Per user: balance = grants − net charges + debt; and the books reconcile.
    for user in &users {
        let net: i64 = sqlx::query_scalar(
            "SELECT COALESCE(-sum(e.amount), 0)::bigint FROM ledger_entries e
             WHERE e.user_id = $1::uuid AND e.generation_id IS NOT NULL AND NOT e.is_voided",
        )
        .bind(&user.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let (balance, debt) = app.credits(user).await;
        assert_eq!(balance, CREDITS_PER_USER - net + debt, "user {}", user.id);
    }
    let report = ledger::reconcile(&app.pool, None).await.unwrap();
    assert!(report.is_clean(), "reconcile: {:?}", report.mismatches);

    // Both nodes came back as replicas of every quorum queue.
    let mut after = Vec::new();
    let back = Instant::now();
    while back.elapsed() < STALLED {
        after = replicas(&cluster.quorum_members(1).await);
        if whole(&after) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(whole(&after), "quorum queues' (members, online) after the nodes came back: {after:?}");
    eprintln!("cluster: quorum queues whole again by {:?}", started.elapsed());
    let dead = app.ctl_json(&["dlq", "stats", "--json"]).await;
    let statuses: BTreeMap<&str, usize> = rows.iter().fold(BTreeMap::new(), |mut m, row| {
        *m.entry(row.1.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "cluster: passed in {:?}: {statuses:?}; dead letters {}",
        started.elapsed(),
        dead["total"]
    );
    drop(app);
    drop(cluster);
}

/// Submits job `i` until it is accepted, retrying transport errors and 5xx with the same
/// idempotency key; returns its id.
async fn submit(
    http: &reqwest::Client,
    api_url: &str,
    user: &TestUser,
    i: usize,
    fate: Fate,
) -> String {
    let body = json!({"model": "kling-v1-6-std", "mode": "text2video",
                      "prompt": format!("cluster job {i} {}", fate.marker())});
    let url = format!("{api_url}/v1/generations");
    let key = format!("cluster-{i}");
    match post_until_answered(http, &url, &user.key, Some(&key), &body, 202, MINUTE).await {
        Ok(generation) => generation["id"].as_str().expect("id").to_owned(),
        Err((status, why)) => panic!("job {i} refused: {status} {why}"),
    }
}

/// Cancels job `id`, retrying until the API answers 200.
async fn cancel(http: &reqwest::Client, api_url: &str, user: &TestUser, id: &str) {
    let url = format!("{api_url}/v1/generations/{id}/cancel");
    if let Err((status, why)) =
        post_until_answered(http, &url, &user.key, None, &json!({}), 200, MINUTE).await
    {
        panic!("cancel {id} refused: {status} {why}");
    }
}

async fn wait_for_submits(accepted: &Mutex<BTreeMap<usize, (usize, Fate, String)>>, count: usize) {
    eventually(&format!("{count} jobs accepted"), Duration::from_secs(120), || async {
        (accepted.lock().await.len() >= count).then_some(())
    })
    .await;
}

/// The node holding most of the workers' connections, and of those the API's if it is one of
/// them (asked of a node other than `down`, which may have just come back).
async fn workers_node(cluster: &RabbitCluster, down: Option<usize>) -> usize {
    let via = (1..=NODES).find(|n| Some(*n) != down).expect("another node");
    let workers =
        eventually("the workers connected to the cluster", Duration::from_secs(30), || async {
            let counts = cluster.connections_per_node(via, "gengate-worker").await;
            (counts.iter().sum::<usize>() == WORKERS).then_some(counts)
        })
        .await;
    let api = cluster.connections_per_node(via, "gengate-api").await;
    let node = (1..=NODES).max_by_key(|n| (workers[n - 1], api[n - 1])).expect("a node");
    eprintln!(
        "cluster: connections per node: workers {workers:?}, API {api:?}; losing node {node}"
    );
    node
}

/// How a node goes away.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// `rabbitmqctl stop_app`: the broker closes its connections.
    Stop,
    /// SIGKILL of its VM: its connections are reset.
    Kill,
}

/// Stops or kills `node`, checks that the workers move to the other nodes and jobs keep ending
/// meanwhile, then starts it again.
async fn lose_node(app: &TestApp, cluster: &RabbitCluster, node: usize, how: Loss) {
    let ended_before = ended(app).await;
    let stopped_at = Instant::now();
    match how {
        Loss::Stop => cluster.stop_node(node).await,
        Loss::Kill => cluster.kill_node(node).await,
    }
    let via = (1..=NODES).find(|n| *n != node).expect("another node");
    eventually("the workers to reconnect to the nodes left", Duration::from_secs(30), || async {
        let counts = cluster.connections_per_node(via, "gengate-worker").await;
        (counts[node - 1] == 0 && counts.iter().sum::<usize>() == WORKERS).then_some(())
    })
    .await;
    let reconnected = stopped_at.elapsed();
    eventually("jobs to keep ending while a node is down", Duration::from_secs(60), || async {
        (ended(app).await >= ended_before + 15).then_some(())
    })
    .await;
    eprintln!(
        "cluster: node {node} down ({how:?}); workers reconnected in {reconnected:?}, {} jobs ended in {:?}",
        ended(app).await - ended_before,
        stopped_at.elapsed()
    );
    cluster.start_node(node).await;
}

/// Jobs that have ended (completed, failed or canceled).
async fn ended(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM generations WHERE status IN ('completed', 'failed', 'canceled')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Waits until every job has its expected status and nothing is left to do: nothing unsent in the
/// outbox or waiting for a poll, no result file waiting for its copy, every queue empty. Fails when
/// nothing has moved for [`STALLED`].
async fn wait_until_settled(app: &TestApp, expected: &BTreeMap<String, Fate>) {
    let mut last_seen = None;
    let mut moved_at = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let statuses: Vec<(String, String)> =
            sqlx::query_as("SELECT id::text, status FROM generations")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        let pending: Vec<&(String, String)> = statuses
            .iter()
            .filter(|(id, status)| expected.get(id).is_none_or(|f| f.expected() != status))
            .collect();
        let (unsent, polling, copying): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox),
                    (SELECT count(*) FROM generations WHERE next_poll_at IS NOT NULL),
                    (SELECT count(*) FROM generation_videos WHERE archive_status = 'pending')
                  + (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let queued = app.queue_depths().await;
        if pending.is_empty()
            && statuses.len() == expected.len()
            && unsent == 0
            && polling == 0
            && copying == 0
            && queued.as_ref().is_some_and(|q| q.values().all(|n| *n == 0))
        {
            return;
        }
        let seen = (pending.len(), unsent, polling, copying, queued.clone());
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let fates: BTreeMap<String, usize> =
                pending.iter().fold(BTreeMap::new(), |mut m, (id, status)| {
                    let fate = expected.get(id).map_or("unknown".to_owned(), |f| format!("{f:?}"));
                    *m.entry(format!("{fate} {status}")).or_default() += 1;
                    m
                });
            eprintln!(
                "cluster: waiting: {:?} {fates:?}, {unsent} unsent, {polling} polling, {copying} files or webhooks pending, queues {queued:?}",
                &pending[..pending.len().min(3)]
            );
        }
        if last_seen.as_ref() != Some(&seen) {
            last_seen = Some(seen);
            moved_at = Instant::now();
        }
        assert!(
            moved_at.elapsed() < STALLED,
            "no progress for {STALLED:?}: {} jobs not (yet) in their expected state {:?}, {unsent} unsent, {polling} polling, {copying} files or webhooks pending, queues {queued:?}",
            pending.len(),
            &pending[..pending.len().min(20)]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
