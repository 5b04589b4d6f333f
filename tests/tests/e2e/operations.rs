//! Operating gengate with `gengatectl`: dead letters (list, show, replay, purge, stats) and the
//! user, credit and generation commands, as an operator runs them.

use std::time::Duration;

use futures_util::future::join_all;
use gengate_shared::queue::{Broker, DeadLetterNote, Envelope, Route, WorkQueue, payloads};
use gengate_tests::TestApp;
use gengate_tests::harness::eventually;
use lapin::types::FieldTable;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Puts a message in the dead-letter queue as a worker would have.
async fn dead_letter(broker: &Broker, envelope: &Envelope, error: &str) {
    let note = DeadLetterNote {
        error_kind: "database",
        error,
        original_queue: &broker.topology().queue(WorkQueue::Events),
    };
    broker.send(envelope, Route::DeadLetter(note)).await.unwrap();
}

fn failure_event(i: usize) -> Envelope {
    let report = payloads::Failure {
        cause: payloads::FailureCause::HandleFailure,
        code: "test".into(),
        reason: format!("dead letter {i}"),
    };
    Envelope::of(gengate_shared::ids::GenerationId::new(), &report)
}

async fn dlq_ids(app: &TestApp) -> Vec<String> {
    let listed = app.ctl_json(&["dlq", "list", "--json", "--limit", "100000"]).await;
    listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_that_failed_while_the_database_was_down_settle_exactly_once_when_replayed() {
    let mut app = TestApp::builder()
        .workers(1)
        // The sweeper would re-poll and settle on its own; here only the replay may.
        .env("GENGATE__WORKER__SWEEP_INTERVAL_MS", "3600000")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.submit_ok(&user, &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": format!("cat {i} [[sim:delay=4000]]")})).await);
    }
    for id in &ids {
        app.wait_for_status(&user, id, "submitted", WAIT).await;
    }

    // The database becomes unreachable for the workers: every event they take fails, and after
    // the delivery limit it is dead-lettered with the error.
    app.workers[0].process.kill().await;
    app.start_worker_with(&[
        ("GENGATE__DATABASE__URL", "postgres://postgres@127.0.0.1:1/gone"),
        ("GENGATE__DATABASE__ACQUIRE_TIMEOUT_MS", "200"),
    ])
    .await;
    let dead = eventually("the success events in the dead-letter queue", WAIT, || async {
        let listed =
            app.ctl_json(&["dlq", "list", "--json", "--kind", "event.provider_update"]).await;
        let dead: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["generation_id"].as_str())
            .collect();
        ids.iter().all(|id| dead.contains(&id.as_str())).then_some(listed.clone())
    })
    .await;
    let first = &dead["data"][0];
    assert_eq!(first["reason"], "database");
    assert!(first["error"].as_str().unwrap().contains("database"), "{first}");
    for id in &ids {
        let g: Value =
            app.user_get(&user, &format!("/v1/generations/{id}")).await.json().await.unwrap();
        assert_eq!(g["status"], "submitted", "nothing settled while the database was away");
    }

    // Stop the broken worker first (it keeps dead-lettering polls while it runs), then keep
    // copies of every dead letter, to replay them a second time later.
    app.workers[1].process.kill().await;
    let mut copies = Vec::new();
    for id in dlq_ids(&app).await {
        let shown = app.ctl_json(&["dlq", "show", &id]).await;
        copies.push(serde_json::from_value::<Envelope>(shown["body"].clone()).unwrap());
    }

    // The database is back: a healthy worker, then the replay.
    app.start_worker().await;
    let summary = app.ctl_json(&["dlq", "replay", "--all", "--json"]).await;
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["replayed"], summary["matched"]);
    assert_eq!(summary["replayed"], copies.len());
    for id in &ids {
        let done = app.wait_for_status(&user, id, "completed", WAIT).await;
        assert_eq!(done["charged"], 24);
    }
    assert_eq!(app.balance(&user).await, 1000 - 3 * 24);

    // The same messages again: nothing changes.
    let broker = app.broker.broker().await;
    for copy in &copies {
        dead_letter(&broker, copy, "again").await;
    }
    let again = app.ctl_json(&["dlq", "replay", "--all", "--json"]).await;
    assert_eq!(again["replayed"], copies.len());
    eventually("the replayed copies to be consumed", WAIT, || async {
        let events = app.broker.topology().queue(WorkQueue::Events);
        let channel = broker.channel().await.ok()?;
        let q = channel
            .queue_declare(
                events.into(),
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .ok()?;
        (q.message_count() == 0).then_some(())
    })
    .await;
    assert_eq!(app.balance(&user).await, 1000 - 3 * 24, "charged once");
    app.assert_reconciled().await;
}

#[tokio::test]
async fn listing_dead_letters_leaves_them_in_place_and_in_order() {
    let app = TestApp::spawn().await;
    let broker = app.broker.broker().await;
    let envelopes: Vec<Envelope> = (0..5).map(failure_event).collect();
    for envelope in &envelopes {
        dead_letter(&broker, envelope, "boom").await;
    }
    let expected: Vec<String> = envelopes.iter().map(|e| e.message_id.to_string()).collect();
    let first = dlq_ids(&app).await;
    let second = dlq_ids(&app).await;
    assert_eq!(first, expected, "listed in the order they died");
    assert_eq!(second, expected, "listing changed nothing");

    let table = app.ctl(&["dlq", "list"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("5 of 5 dead letters shown"), "{text}");
    assert!(text.contains("event.failure") && text.contains("boom"), "{text}");

    let filtered = app
        .ctl_json(&[
            "dlq",
            "list",
            "--json",
            "--generation",
            &envelopes[2].generation_id.to_string(),
        ])
        .await;
    assert_eq!(filtered["shown"], 1);
    assert_eq!(filtered["data"][0]["message_id"], expected[2].as_str());

    let shown = app.ctl_json(&["dlq", "show", &expected[0]]).await;
    assert_eq!(shown["body"]["kind"], "event.failure");
    assert_eq!(shown["headers"]["x-gengate-error"], "boom");
    let stats = app.ctl_json(&["dlq", "stats", "--json"]).await;
    assert_eq!(stats["total"], 5);
    assert_eq!(stats["by_kind"]["event.failure"], 5);
    assert_eq!(stats["by_reason"]["database"], 5);
}

#[tokio::test]
async fn purge_refuses_without_filters_or_confirmation() {
    let app = TestApp::spawn().await;
    let broker = app.broker.broker().await;
    let envelopes: Vec<Envelope> = (0..4).map(failure_event).collect();
    for envelope in &envelopes {
        dead_letter(&broker, envelope, "boom").await;
    }
    let unfiltered = app.ctl(&["dlq", "purge", "--yes"]).await;
    assert_eq!(unfiltered.status.code(), Some(2), "purge without --all or filters is refused");
    let unconfirmed = app.ctl(&["dlq", "purge", "--all"]).await;
    assert_eq!(
        unconfirmed.status.code(),
        Some(2),
        "purge without --yes (and no terminal) is refused"
    );
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("not confirmed"));
    assert_eq!(dlq_ids(&app).await.len(), 4, "nothing was deleted");

    let one = app
        .ctl_json(&[
            "dlq",
            "purge",
            "--message",
            &envelopes[1].message_id.to_string(),
            "--yes",
            "--json",
        ])
        .await;
    assert_eq!(one["purged"], 1);
    assert_eq!(dlq_ids(&app).await.len(), 3);
    let all = app.ctl_json(&["dlq", "purge", "--all", "--yes", "--json"]).await;
    assert_eq!(all["purged"], 3);
    assert!(dlq_ids(&app).await.is_empty());
    let replay_nothing = app.ctl(&["dlq", "replay"]).await;
    assert_eq!(replay_nothing.status.code(), Some(2), "replay needs --all, --message or filters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_dead_letters_are_replayed_with_progress_and_an_exact_summary() {
    let app = TestApp::spawn().await;
    let broker = app.broker.broker().await;
    let envelopes: Vec<Envelope> = (0..10_000).map(failure_event).collect();
    for chunk in envelopes.chunks(500) {
        join_all(chunk.iter().map(|e| dead_letter(&broker, e, "boom"))).await;
    }

    let dry = app.ctl_json(&["dlq", "replay", "--all", "--dry-run", "--json"]).await;
    assert_eq!(dry["matched"], 10_000);
    assert_eq!(dry["replayed"], 0);

    let output = app.ctl(&["dlq", "replay", "--all"]).await;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains(
            "replayed 10000 of 10000 matching dead letters (10000 in the queue); 0 not confirmed"
        ),
        "{stdout}"
    );
    // Progress reaches the operator: a bar on a terminal, lines here.
    assert!(
        stderr.contains("replaying 1000/10000") && stderr.contains("replaying 10000/10000"),
        "{stderr}"
    );

    // No worker runs: every replayed message waits in the events queue, none in the DLQ.
    let channel = broker.channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let events = channel
        .queue_declare(
            broker.topology().queue(WorkQueue::Events).into(),
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(events.message_count(), 10_000);
    let dlq = channel
        .queue_declare(broker.topology().dead_letter_queue().into(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(dlq.message_count(), 0);
}

#[tokio::test]
async fn user_credit_and_generation_commands_work_and_speak_json() {
    let mut app = TestApp::spawn().await;
    let created = app
        .ctl_json(&["users", "create", "--email", "ops@example.com", "--name", "Ops", "--json"])
        .await;
    let user = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["email"], "ops@example.com");
    let duplicate = app.ctl(&["users", "create", "--email", "ops@example.com"]).await;
    assert_eq!(duplicate.status.code(), Some(2));

    let key = app.ctl_json(&["keys", "create", &user, "--name", "cli", "--json"]).await;
    let key = key["key"].as_str().unwrap().to_owned();
    let granted = app
        .ctl_json(&[
            "credits",
            "grant",
            &user,
            "500",
            "--source",
            "order_pay",
            "--order-no",
            "ORD-9",
            "--expires",
            "30d",
            "--json",
        ])
        .await;
    assert_eq!(granted["created"], true);
    let again = app
        .ctl_json(&[
            "credits",
            "grant",
            &user,
            "500",
            "--source",
            "order_pay",
            "--order-no",
            "ORD-9",
            "--json",
        ])
        .await;
    assert_eq!(again["created"], false);
    assert_eq!(again["grant_id"], granted["grant_id"]);
    let bad = app.ctl(&["credits", "grant", &user, "-5"]).await;
    assert_ne!(bad.status.code(), Some(0));
    let shown = app.ctl_json(&["credits", "show", &user, "--json"]).await;
    assert_eq!(shown["credits"]["balance"], 500);
    assert_eq!(shown["timeline"][0]["trans_type"], "order_pay");

    // The key works against the API, and a job gets failed and refunded by hand.
    let test_user = gengate_tests::TestUser { id: user.clone(), key };
    let id = app
        .submit_ok(
            &test_user,
            &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "stuck"}),
        )
        .await;
    let failed =
        app.ctl_json(&["generation", "fail", &id, "--reason", "stuck upstream", "--json"]).await;
    assert_eq!(failed["changed"], true);
    assert_eq!(failed["refunded"], 24);
    let twice = app.ctl_json(&["generation", "fail", &id, "--reason", "again", "--json"]).await;
    assert_eq!(twice["changed"], false, "idempotent");
    let refund = app
        .ctl_json(&["generation", "refund", &id, "--reason", "already refunded", "--json"])
        .await;
    assert_eq!(refund["changed"], false);
    let generation = app.ctl_json(&["generation", "show", &id, "--json"]).await;
    assert_eq!(generation["status"], "failed");
    assert_eq!(generation["failure"]["code"], "operator");
    let causes: Vec<&str> = generation["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["submit", "operator", "operator", "operator"]);
    assert!(generation["ledger"].as_array().unwrap().iter().all(|e| !e["voided_at"].is_null()));

    // A completed job can be refunded as goodwill: it stays completed, settled at 0.
    app.start_worker().await;
    app.wait_ready().await;
    let done = app
        .submit_ok(
            &test_user,
            &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "fine"}),
        )
        .await;
    app.wait_for_status(&test_user, &done, "completed", WAIT).await;
    let goodwill =
        app.ctl_json(&["generation", "refund", &done, "--reason", "broken video", "--json"]).await;
    assert_eq!(goodwill["refunded"], 24);
    let after: Value =
        app.user_get(&test_user, &format!("/v1/generations/{done}")).await.json().await.unwrap();
    assert_eq!(after["status"], "completed");
    assert_eq!(after["charged"], 0);
    let shown = app.ctl_json(&["credits", "show", &user, "--json"]).await;
    assert_eq!(shown["credits"]["balance"], 500);
    let report = app.ctl(&["ledger", "reconcile"]).await;
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stdout));
}

#[tokio::test]
async fn gengatectl_says_clearly_when_rabbitmq_is_unreachable() {
    let app = TestApp::spawn().await;
    let output =
        tokio::process::Command::new(gengate_tests::harness::process::binary("gengatectl"))
            .args(["dlq", "list"])
            .env_clear()
            .envs(app.env())
            .env("GENGATE__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
            .env("GENGATE__AMQP__CONNECT_TIMEOUT_MS", "1000")
            .output()
            .await
            .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to amqp://guest:***@127.0.0.1:1/%2f"), "{stderr}");
}
