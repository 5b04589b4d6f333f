//! Settlement against the simulator: how a provider's word (webhooks, polls, failure reports,
//! deadlines) becomes exactly one transition and exactly one settlement of credits, however often
//! and in whatever order it arrives — seen as a user (`/v1/generations`, `/v1/credits`) and as an
//! operator (`/admin/generations/{id}` with its ledger and audit log, `ledger::reconcile`) sees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use gengate_shared::config::Settings;
use gengate_shared::queue::{Broker, WorkQueue};
use gengate_sim::{FAILURE_MESSAGE, Outcome, Rates, SimConfig};
use gengate_tests::harness::audit::{assert_restored, count_to, events, ledger, transitions};
use gengate_tests::harness::eventually;
use gengate_tests::harness::upstream::{kie_failure, kie_success, kie_success_with_url, token_of};
use gengate_tests::requests::{KLING_COST, SORA_COST, kling, sora};
use gengate_tests::{TestApp, TestUser};
use gengate_worker::context::WorkerContext;
use gengate_worker::sweeper::sweep;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// 1. The plain endings.

#[tokio::test]
async fn a_kie_job_completes_by_webhook_and_is_charged_once() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a lighthouse at dusk")).await;

    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["cost"], SORA_COST);
    assert_eq!(done["charged"], SORA_COST);
    assert!(done["failure"].is_null());
    let task = app.sim_task(&id).await;
    assert_eq!(
        app.source_urls(&id).await,
        [format!("{}/files/{}.mp4", app.sim.url(), task.task_id)]
    );

    let generation = app.admin_generation(&id).await;
    let expected = [
        ("", "queued", "submit"),
        ("queued", "submitted", "provider_accepted"),
        ("submitted", "completed", "webhook"),
    ]
    .map(|(from, to, cause)| (from.to_owned(), to.to_owned(), cause.to_owned()));
    assert_eq!(transitions(&generation), expected, "{generation}");
    assert!(task.callbacks.iter().any(|c| c.status == "success" && c.delivered()));
    app.assert_charged_once(&id, SORA_COST).await;
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_kling_job_completes_by_webhook_and_is_charged_once() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a fox in the snow")).await;

    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], KLING_COST);
    let task = app.sim_task(&id).await;
    assert!(task.callbacks.iter().any(|c| c.status == "succeed" && c.delivered()));
    let generation = app.assert_charged_once(&id, KLING_COST).await;
    let (_, _, cause) = transitions(&generation).pop().unwrap();
    assert_eq!(cause, "webhook");
    assert_eq!(app.credits(&user).await, (1000 - KLING_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_job_without_callbacks_completes_by_polling() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("quiet [[sim:no-callback]]")).await;

    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    let task = app.sim_task(&id).await;
    assert_eq!(task.callbacks_queued, 0);
    assert!(task.callbacks.is_empty());
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    let (from, _, cause) = transitions(&generation).pop().unwrap();
    assert_eq!((from.as_str(), cause.as_str()), ("submitted", "poll"));
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_failure_by_webhook_fails_the_job_and_gives_the_credits_back() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let kie = app.submit_ok(&user, &sora("doomed [[sim:fail]]")).await;
    let kling_id = app.submit_ok(&user, &kling("doomed [[sim:fail]]")).await;

    // The client is told a stable code in gengate's words; the provider's own stay in the log.
    let failed = app.wait_for_status(&user, &kie, "failed", WAIT).await;
    assert_eq!(failed["charged"], 0);
    assert_eq!(failed["failure"]["code"], "generation_failed");
    assert_eq!(failed["failure"]["message"], "the provider could not generate this request");
    assert!(failed["result"].is_null());
    let failed = app.wait_for_status(&user, &kling_id, "failed", WAIT).await;
    assert_eq!(failed["charged"], 0);
    assert_eq!(failed["failure"]["code"], "generation_failed");
    for (id, provider_code) in [(&kie, "501"), (&kling_id, "failed")] {
        let generation = app.admin_generation(id).await;
        let failure = events(&generation).into_iter().find(|e| e["to_status"] == "failed").unwrap();
        assert_eq!(failure["detail"]["provider_code"], provider_code, "{failure}");
        assert_eq!(failure["detail"]["message"], FAILURE_MESSAGE, "{failure}");
        assert_eq!(failure["detail"]["confirmed_by"], "query", "{failure}");
    }

    for id in [&kie, &kling_id] {
        let generation = app.admin_generation(id).await;
        let (from, to, cause) = transitions(&generation).pop().unwrap();
        assert_eq!(
            (from.as_str(), to.as_str(), cause.as_str()),
            ("submitted", "failed", "webhook")
        );
        // The reservation is voided, not deleted: the operator sees what happened.
        let entries = ledger(&generation);
        assert!(!entries.is_empty());
        assert!(entries.iter().all(|e| e["voided_at"].is_string()), "{entries:?}");
        assert!(
            entries.iter().all(|e| e["voided_reason"].as_str().unwrap().starts_with("webhook"))
        );
        assert_eq!(app.video_rows(id).await, 0);
    }
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Duplicates.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_success_delivered_five_times_at_once_settles_once() {
    let app = TestApp::builder().webhook_only().workers(2).spawn().await;
    let user = app.create_user(1000).await;
    // The provider never calls back by itself: the test delivers its success, five times at once.
    let id = app.submit_ok(&user, &sora("echo [[sim:no-callback]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let task = app.sim_task(&id).await;
    app.task_in_state(&task.task_id, "success").await;
    let body = kie_success(&app.kie_record(&task.task_id).await).to_string();
    let url = task.callback_url.clone().unwrap();

    let answers = join_all((0..5).map(|_| app.post_raw(&url, body.clone()))).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");

    app.wait_for_status(&user, &id, "completed", WAIT).await;
    // Every copy reaches the audit log; only one of them moves the generation.
    let generation = eventually("five webhook rows in the audit log", WAIT, || async {
        let generation = app.admin_generation(&id).await;
        let rows = events(&generation).iter().filter(|e| e["cause"] == "webhook").count();
        (rows >= 5).then_some(generation)
    })
    .await;
    let webhook_rows = events(&generation).iter().filter(|e| e["cause"] == "webhook").count();
    assert_eq!(webhook_rows, 5, "{:?}", events(&generation));
    app.assert_charged_once(&id, SORA_COST).await;
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicated_kling_callback_and_replays_of_it_settle_once() {
    let app = TestApp::builder().webhook_only().workers(2).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("twice [[sim:dup-callback]]")).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let task = app.sim_task(&id).await;
    let task = eventually("three delivered success callbacks", WAIT, || async {
        let task = app.sim.task(&task.task_id)?;
        let delivered = task.callbacks.iter().filter(|c| c.status == "succeed" && c.delivered());
        (delivered.count() == 3).then_some(task)
    })
    .await;

    // And a provider retrying the same success five more times, concurrently.
    let body = app.kling_object(&task).await;
    assert_eq!(body["task_status"], "succeed");
    let url = task.callback_url.clone().unwrap();
    let answers = join_all((0..5).map(|_| app.post_json(&url, &body))).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");

    let before = events(&app.admin_generation(&id).await).len();
    eventually("the replays in the audit log", WAIT, || async {
        let generation = app.admin_generation(&id).await;
        let succeed_rows = events(&generation)
            .iter()
            .filter(|e| e["cause"] == "webhook" && e["to_status"].is_null())
            .count();
        (succeed_rows >= 2 + 5 && events(&generation).len() >= before).then_some(())
    })
    .await;
    app.assert_charged_once(&id, KLING_COST).await;
    assert_eq!(app.credits(&user).await, (1000 - KLING_COST, 0));
    app.assert_reconciled().await;
}

// ---------------------------------------------------------------------------------------------
// 3. A failure, then a success.

#[tokio::test]
async fn a_failure_then_a_success_completes_and_charges_once() {
    let app = TestApp::builder()
        .workers(1)
        // Far enough apart that the failure is surely applied before the success comes.
        .simulator(SimConfig { recovery_delay_ms: 1500, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("second wind [[sim:fail-then-success]]")).await;

    app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(app.credits(&user).await, (1000, 0));
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    assert!(done["failure"].is_null(), "a completed job carries no failure: {done}");

    let generation = app.assert_charged_once(&id, SORA_COST).await;
    let moves: Vec<_> = transitions(&generation).into_iter().map(|(f, t, _)| (f, t)).collect();
    assert_eq!(
        moves[2..],
        [("submitted".into(), "failed".into()), ("failed".into(), "completed".into())],
        "{moves:?}"
    );
    assert_restored(&generation, SORA_COST);
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_reported_failure_then_a_success_completes_and_charges_once() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("slow [[sim:delay=4000]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;

    assert_eq!(app.report_failure(&id, "the poller gave up").await, 202);
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["charged"], 0);
    assert_eq!(failed["failure"]["code"], "polling_failed");
    assert_eq!(failed["failure"]["message"], "the job was reported failed");
    assert_eq!(app.credits(&user).await, (1000, 0));
    // Reporting it again changes nothing.
    assert_eq!(app.report_failure(&id, "the poller gave up").await, 202);

    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    assert_eq!(count_to(&generation, "failed"), 1);
    let (from, to, cause) = transitions(&generation)[2].clone();
    assert_eq!(
        (from.as_str(), to.as_str(), cause.as_str()),
        ("submitted", "failed", "handle_failure")
    );
    assert_restored(&generation, SORA_COST);
    assert!(
        ledger(&generation)
            .iter()
            .filter(|e| e["voided_at"].is_string())
            .all(|e| e["voided_reason"] == "handle_failure: polling_failed"),
        "{:?}",
        ledger(&generation)
    );
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;

    // Unknown generations, malformed reports and missing credentials are refused.
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(app.report_failure(&unknown, "x").await, 404);
    assert_eq!(app.report_failure("not-an-id", "x").await, 422);
    assert_eq!(app.report_failure(&id, " ").await, 422);
    assert_eq!(app.report_failure(&id, &"x".repeat(1001)).await, 422);
    let anonymous = app
        .http
        .post(format!("{}/api/generation/handle-failure", app.api_url))
        .json(&json!({"generation_id": id, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicated_failure_then_duplicated_success_refunds_once_and_restores_once() {
    let app = TestApp::builder()
        .workers(2)
        .simulator(SimConfig { recovery_delay_ms: 1500, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let kie =
        app.submit_ok(&user, &sora("echoes [[sim:fail-then-success]] [[sim:dup-callback]]")).await;
    let kling_id =
        app.submit_ok(&user, &kling("echoes [[sim:fail-then-success]] [[sim:dup-callback]]")).await;

    for (id, cost) in [(&kie, SORA_COST), (&kling_id, KLING_COST)] {
        app.wait_for_status(&user, id, "completed", WAIT).await;
        let generation = app.assert_charged_once(id, cost).await;
        assert_eq!(count_to(&generation, "failed"), 1, "{:?}", transitions(&generation));
        assert_restored(&generation, cost);
    }
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST - KLING_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn callbacks_that_arrive_before_the_submission_is_recorded_settle_right() {
    // The provider starts each task, then holds its create answer: every callback reaches
    // gengate while the generation is still queued.
    let app = TestApp::builder()
        .workers(1)
        .simulator(SimConfig { accept_delay_ms: 1500, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let ok = app.submit_ok(&user, &kling("eager")).await;
    let failed = app.submit_ok(&user, &sora("eager [[sim:fail]]")).await;
    let back = app.submit_ok(&user, &kling("eager [[sim:fail-then-success]]")).await;

    app.wait_for_status(&user, &ok, "completed", WAIT).await;
    app.assert_charged_once(&ok, KLING_COST).await;
    let generation = app.wait_for_status(&user, &failed, "failed", WAIT).await;
    assert_eq!(generation["charged"], 0);
    app.wait_for_status(&user, &back, "completed", WAIT).await;
    app.assert_charged_once(&back, KLING_COST).await;
    for id in [&ok, &failed, &back] {
        // Exactly one upstream task each, and the operator can see which.
        let tasks = app.sim.tasks();
        let task = app.sim_task(id).await;
        assert_eq!(tasks.iter().filter(|t| t.task_id == task.task_id).count(), 1);
        let remote: Option<String> =
            sqlx::query_scalar("SELECT remote_task_id FROM generations WHERE id = $1::uuid")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(remote.as_deref(), Some(task.task_id.as_str()), "generation {id}");
    }
    assert_eq!(app.credits(&user).await, (1000 - 2 * KLING_COST, 0));
    app.assert_reconciled().await;
}

// ---------------------------------------------------------------------------------------------
// 4. A restore the balance cannot cover.

#[tokio::test]
async fn a_restore_after_the_credits_were_spent_becomes_debt_until_a_grant_pays_it() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(SORA_COST).await;
    let first = app.submit_ok(&user, &sora("late bloomer [[sim:delay=5000]]")).await;
    app.wait_for_status(&user, &first, "submitted", WAIT).await;
    assert_eq!(app.report_failure(&first, "given up").await, 202);
    app.wait_for_status(&user, &first, "failed", WAIT).await;
    assert_eq!(app.credits(&user).await, (SORA_COST, 0));

    // The refunded credits go to another job before the first one's success arrives.
    let second = app.submit_ok(&user, &sora("spends it all [[sim:never]]")).await;
    assert_eq!(app.credits(&user).await, (0, 0));
    let first_job = app.wait_for_status(&user, &first, "completed", WAIT).await;
    assert_eq!(first_job["charged"], SORA_COST, "the charge stands, as debt");
    assert_eq!(app.credits(&user).await, (0, SORA_COST));

    let generation = app.admin_generation(&first).await;
    let entries = ledger(&generation);
    let debt_entries: Vec<&Value> =
        entries.iter().filter(|e| e["voided_at"].is_null() && e["grant_id"].is_null()).collect();
    assert_eq!(debt_entries.len(), 1, "{:?}", ledger(&generation));
    assert_eq!(debt_entries[0]["amount"], -SORA_COST);
    assert!(
        events(&generation)
            .iter()
            .any(|e| e["cause"] == "debt" && e["detail"]["debt_added"] == SORA_COST),
        "{:?}",
        events(&generation)
    );
    app.assert_reconciled().await;

    // While the debt is open, nothing new is accepted.
    let refused = app.submit(&user, &kling("one more")).await;
    assert_eq!(refused.status(), 402);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "outstanding_debt", "{problem}");
    assert_eq!(problem["debt"], SORA_COST, "{problem}");

    // The next grant pays the debt first.
    let granted = app
        .admin_post(
            &format!("/admin/users/{}/grants", user.id),
            json!({"source": "system_add", "amount": 100}),
        )
        .await;
    assert_eq!(granted.status(), 201);
    let granted: Value = granted.json().await.unwrap();
    assert_eq!(granted["debt_settled"], SORA_COST, "{granted}");
    assert_eq!(app.credits(&user).await, (100 - SORA_COST, 0));
    app.submit_ok(&user, &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "ok"}))
        .await;
    assert_eq!(app.admin_generation(&second).await["charged"], SORA_COST);
    app.assert_reconciled().await;
}

// ---------------------------------------------------------------------------------------------
// 5. A success, then a failure.

#[tokio::test]
async fn a_failure_after_completion_changes_nothing() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("done deal")).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let task = app.sim_task(&id).await;
    let before = app.admin_generation(&id).await;
    let seen = events(&before).len();

    let url = task.callback_url.clone().unwrap();
    assert_eq!(app.post_json(&url, &kie_failure(&task.task_id)).await, 200);
    let after = app.events_beyond(&id, seen).await;
    let recorded = &events(&after)[seen];
    assert_eq!(recorded["cause"], "webhook");
    assert!(recorded["to_status"].is_null(), "recorded, not applied: {recorded}");
    assert_eq!(recorded["from_status"], "completed");

    assert_eq!(app.report_failure(&id, "too late").await, 202);
    let after = app.events_beyond(&id, seen + 1).await;
    assert_eq!(events(&after)[seen + 1]["cause"], "handle_failure");
    assert!(events(&after)[seen + 1]["to_status"].is_null());

    assert_eq!(after["status"], "completed");
    assert!(after["failure"].is_null());
    assert_eq!(after["updated_at"], before["updated_at"]);
    assert_eq!(after["ledger"], before["ledger"]);
    app.assert_charged_once(&id, SORA_COST).await;
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Forged and malformed webhooks.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_or_malformed_webhooks_are_refused_and_change_nothing() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("target [[sim:never]]")).await;
    let other = app.submit_ok(&user, &sora("bystander [[sim:never]]")).await;
    let kling_id = app.submit_ok(&user, &kling("kling target [[sim:never]]")).await;
    for id in [&id, &other, &kling_id] {
        app.wait_for_status(&user, id, "submitted", WAIT).await;
    }
    let task = app.sim_task(&id).await;
    let kling_task = app.sim_task(&kling_id).await;
    let url = task.callback_url.clone().unwrap();
    let token = token_of(&url);
    let other_token = token_of(&app.sim_task(&other).await.callback_url.unwrap());
    let kling_url = kling_task.callback_url.clone().unwrap();
    let base = format!("{}/api/generation/webhook", app.api_url);

    let before = app.admin_generation(&id).await;
    let kling_before = app.admin_generation(&kling_id).await;
    let balance_before = app.credits(&user).await;

    let good_body = kie_success_with_url(&task.task_id, "https://files.kie.ai/v/1.mp4");
    let unknown = uuid::Uuid::now_v7();
    let unauthorized = [
        (format!("{base}?generation_id={id}&token=wrong"), "wrong token"),
        (format!("{base}?generation_id={id}"), "no token"),
        (format!("{base}?generation_id={id}&token="), "empty token"),
        (format!("{base}?token={token}"), "no generation"),
        (format!("{base}?generation_id=not-a-uuid&token={token}"), "malformed generation"),
        (format!("{base}?generation_id={unknown}&token={token}"), "unknown generation"),
        (format!("{base}?generation_id={id}&token={other_token}"), "another generation's token"),
        (format!("{base}?generation_id={id}&token={}", token.to_uppercase()), "token case"),
        (format!("{}/kling/callback/{kling_id}?token={token}", app.api_url), "kie token on kling"),
        (format!("{}/kling/callback/{kling_id}", app.api_url), "kling without token"),
    ];
    for (forged, what) in &unauthorized {
        let status = app.post_json(forged, &good_body).await;
        assert_eq!(status, 401, "{what}: {forged}");
    }

    let bad_urls = [
        ("http://files.kie.ai/v/1.mp4", "plain http"),
        ("https://files.kie.ai@evil.com/v/1.mp4", "userinfo trick"),
        ("https://user:pw@files.kie.ai/v/1.mp4", "credentials"),
        ("https://127.0.0.1/v/1.mp4", "IPv4 literal"),
        ("https://[::1]/v/1.mp4", "IPv6 literal"),
        ("https://2130706433/v/1.mp4", "integer IPv4"),
        ("https://kie.ai.evil.com/v/1.mp4", "look-alike suffix"),
        ("https://evilkie.ai/v/1.mp4", "look-alike prefix"),
        ("https://files.kie.ai:8443/v/1.mp4", "other port"),
        ("https://tempfile.aiquickdraw.com.evil.com/x.mp4", "look-alike of the file host"),
        ("https://evil.example.com/v/1.mp4", "foreign host"),
        ("http://127.0.0.1:1/files/x.mp4", "loopback, not the allowed origin"),
        ("not a url", "not a URL"),
        ("javascript:alert(1)", "script URL"),
    ];
    for (bad, what) in bad_urls {
        let body = kie_success_with_url(&task.task_id, bad);
        assert_eq!(app.post_json(&url, &body).await, 400, "{what}: {bad}");
    }
    // Several results: one bad one spoils the lot.
    let mixed = kie_success(&json!({
        "taskId": task.task_id, "state": "success",
        "resultJson": json!({"resultUrls": ["https://files.kie.ai/ok.mp4", "https://evilkie.ai/x.mp4"]}).to_string(),
    }));
    assert_eq!(app.post_json(&url, &mixed).await, 400, "one bad URL among good ones");
    // The Kling ingress applies the same allowlist.
    let mut kling_body = app.kling_object(&kling_task).await;
    kling_body["task_status"] = json!("succeed");
    kling_body["task_result"] =
        json!({"videos": [{"id": "v", "url": "https://kie.ai.evil.com/v.mp4", "duration": "5"}]});
    assert_eq!(app.post_json(&kling_url, &kling_body).await, 400, "Kling look-alike host");

    let unparsable: [(&str, &str); 7] = [
        ("not json", "not JSON"),
        ("", "empty"),
        ("{}", "empty object"),
        ("[]", "an array"),
        (r#"{"code": 200}"#, "no data"),
        (r#"{"code": 200, "data": {"state": "success"}}"#, "no task id"),
        (r#"{"code": 200, "data": "oops"}"#, "data not an object"),
    ];
    for (body, what) in unparsable {
        assert_eq!(app.post_raw(&url, body).await, 400, "{what}");
    }
    for (body, what) in
        [("not json", "Kling not JSON"), (r#"{"task_status": "succeed"}"#, "no task id")]
    {
        assert_eq!(app.post_raw(&kling_url, body).await, 400, "{what}");
    }
    // Bodies over `webhook.max_body_bytes` (64 KiB by default) are not read.
    let mut huge = kie_success_with_url(&task.task_id, "https://files.kie.ai/v/1.mp4");
    huge["data"]["padding"] = json!("x".repeat(70 * 1024));
    assert_eq!(app.post_json(&url, &huge).await, 413, "oversized body");
    let enveloped_error = json!({"code": 1201, "message": "bad", "data": {"task_id": kling_task.task_id, "task_status": "succeed"}});
    assert_eq!(app.post_json(&kling_url, &enveloped_error).await, 400, "Kling error envelope");

    // A well-formed, allowlisted success with the right token is accepted as a hint; the provider
    // says the task still runs, so it is recorded and nothing moves. Once it is in the audit log,
    // everything sent before it has been answered and nothing else was queued.
    assert_eq!(app.post_json(&url, &good_body).await, 200);
    let after = app.events_beyond(&id, events(&before).len()).await;
    let new_events = &events(&after)[events(&before).len()..];
    assert_eq!(new_events.len(), 1, "{new_events:?}");
    assert_eq!(new_events[0]["cause"], "webhook");
    assert!(new_events[0]["to_status"].is_null());
    // (The task is queued or running by now, as the provider's own answer says.)
    let ignored = new_events[0]["detail"]["ignored"].as_str().unwrap();
    assert!(ignored.starts_with("the webhook said success, the provider says "), "{ignored}");
    // With the right token, a failure that names another task is recorded and ignored too.
    let elsewhere = kie_failure(&app.sim_task(&other).await.task_id);
    assert_eq!(app.post_json(&url, &elsewhere).await, 200);
    let after = app.events_beyond(&id, events(&before).len() + 1).await;
    let last = events(&after).last().unwrap().clone();
    assert_eq!(last["detail"]["ignored"], "the update names another task", "{last}");
    assert!(last["to_status"].is_null());

    for (before, id) in [(&before, &id), (&kling_before, &kling_id)] {
        let mut after = app.admin_generation(id).await;
        let mut before = before.clone();
        for view in [&mut before, &mut after] {
            view.as_object_mut().unwrap().remove("events");
            view.as_object_mut().unwrap().remove("progress");
        }
        assert_eq!(after, before, "generation {id} changed");
        assert_eq!(after["status"], "submitted");
    }
    assert_eq!(events(&app.admin_generation(&kling_id).await).len(), events(&kling_before).len());
    assert_eq!(app.admin_generation(&other).await["status"], "submitted");
    assert_eq!(app.credits(&user).await, balance_before);
    assert_eq!(app.video_rows(&id).await, 0);
    app.assert_reconciled().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Deadlines.

#[tokio::test]
async fn a_job_past_its_deadline_fails_and_a_late_success_restores_it() {
    let app = TestApp::builder()
        .workers(1)
        .env("GENGATE__MODELS__SORA-2__DEADLINE_SECONDS", "3")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let stuck = app.submit_ok(&user, &sora("forever [[sim:never]]")).await;
    let late = app.submit_ok(&user, &sora("late [[sim:delay=7000]]")).await;

    // The environment override reached the model: a 3-second deadline.
    let deadline: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM deadline_at - created_at)::float8 FROM generations WHERE id = $1::uuid",
    )
    .bind(&stuck)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!((deadline - 3.0).abs() < 0.5, "deadline {deadline} s after submit");

    for id in [&stuck, &late] {
        let failed = app.wait_for_status(&user, id, "failed", WAIT).await;
        assert_eq!(failed["failure"]["code"], "deadline_exceeded", "{failed}");
        assert_eq!(failed["charged"], 0);
    }
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;

    // The slow one finishes upstream after all: the late success restores the charge.
    let done = app.wait_for_status(&user, &late, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    let generation = app.assert_charged_once(&late, SORA_COST).await;
    let moves = transitions(&generation);
    assert_eq!(moves[2], ("submitted".into(), "failed".into(), "deadline".into()), "{moves:?}");
    assert_eq!(moves[3].0, "failed");
    assert_eq!(moves[3].1, "completed");
    assert_restored(&generation, SORA_COST);

    // The stuck one: a success callback with its right token is only a hint. The provider still
    // reports it running, so nothing moves.
    let task = app.sim_task(&stuck).await;
    let seen = events(&app.admin_generation(&stuck).await).len();
    let claim = kie_success_with_url(&task.task_id, &format!("{}/files/x.mp4", app.sim.url()));
    assert_eq!(app.post_json(task.callback_url.as_deref().unwrap(), &claim).await, 200);
    let generation = app.events_beyond(&stuck, seen).await;
    assert_eq!(generation["status"], "failed");
    assert_eq!(generation["charged"], 0);
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_never_finishing_job_restores_when_the_provider_finally_reports_success() {
    let app = TestApp::builder()
        .workers(1)
        .env("GENGATE__MODELS__SORA-2__DEADLINE_SECONDS", "3")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("forever [[sim:never]]")).await;
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["failure"]["code"], "deadline_exceeded");
    assert_eq!(app.credits(&user).await, (1000, 0));

    // Long after the deadline, the provider finishes the task after all (and calls back).
    let task = app.sim_task(&id).await;
    let file = format!("{}/files/{}.mp4", app.sim.url(), task.task_id);
    assert!(app.sim.finish(&task.task_id, Outcome::Succeed));
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(app.source_urls(&id).await, [file]);
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    assert_restored(&generation, SORA_COST);
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

// ---------------------------------------------------------------------------------------------
// 8. The broker away at ingress.

#[tokio::test]
async fn a_webhook_that_cannot_be_queued_gets_503_and_the_providers_retry_lands() {
    let mut app = TestApp::builder()
        .webhook_only()
        .workers(1)
        .simulator(SimConfig {
            callback_attempts: 60,
            callback_retry_interval_ms: 250,
            ..SimConfig::default()
        })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("patient [[sim:delay=3000]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let real_amqp = app.env()["GENGATE__AMQP__URL"].clone();

    // The API loses RabbitMQ before the provider calls back.
    app.set_env("GENGATE__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f");
    app.restart_api(true).await;
    let task = app.sim_task(&id).await;
    eventually("a callback answered 503", WAIT, || async {
        let task = app.sim.task(&task.task_id)?;
        task.callbacks.iter().any(|c| c.http_status == Some(503)).then_some(())
    })
    .await;
    let generation = app.admin_generation(&id).await;
    assert_eq!(generation["status"], "submitted");
    assert_eq!(generation["charged"], SORA_COST, "still reserved, nothing settled");

    app.set_env("GENGATE__AMQP__URL", &real_amqp);
    app.restart_api(true).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let task = app.sim.task(&task.task_id).unwrap();
    let refused = task.callbacks.iter().filter(|c| c.http_status == Some(503)).count();
    let delivered = task.callbacks.iter().filter(|c| c.delivered()).count();
    assert!(refused >= 1, "{:?}", task.callbacks);
    assert_eq!(delivered, 1, "{:?}", task.callbacks);
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    let (_, _, cause) = transitions(&generation).pop().unwrap();
    assert_eq!(cause, "webhook");
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Many jobs, random fates.

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

// ---------------------------------------------------------------------------------------------
// More endings: found only by polling, after a cancel, postpaid, and a lost poll.

#[tokio::test]
async fn a_polled_failure_that_later_turns_into_a_success_restores() {
    // No callbacks at all: polling must see the failure, and later the success.
    let app = TestApp::builder()
        .workers(1)
        .simulator(SimConfig { recovery_delay_ms: 4000, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app
        .submit_ok(&user, &sora("quiet comeback [[sim:fail-then-success]] [[sim:no-callback]]"))
        .await;

    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["failure"]["code"], "generation_failed");
    assert_eq!(app.credits(&user).await, (1000, 0));
    let task = app.sim_task(&id).await;
    app.task_in_state(&task.task_id, "success").await;

    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    let moves = transitions(&generation);
    assert_eq!(moves[2], ("submitted".into(), "failed".into(), "poll".into()), "{moves:?}");
    assert_eq!(moves[3], ("failed".into(), "completed".into(), "poll".into()), "{moves:?}");
    assert_restored(&generation, SORA_COST);
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_success_whose_result_is_off_the_allowlist_fails_and_refunds() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let kie = app.submit_ok(&user, &sora("elsewhere [[sim:evil-url]]")).await;
    let kling_id = app.submit_ok(&user, &kling("elsewhere [[sim:evil-url]]")).await;

    for id in [&kie, &kling_id] {
        let failed = app.wait_for_status(&user, id, "failed", WAIT).await;
        assert_eq!(failed["failure"]["code"], "result_rejected", "{failed}");
        assert_eq!(failed["charged"], 0);
        assert!(failed["result"].is_null());
        assert_eq!(app.video_rows(id).await, 0);
        // The provider's callbacks carrying it were refused at the door.
        let task = app.sim_task(id).await;
        assert!(
            task.callbacks
                .iter()
                .all(|c| c.http_status != Some(200) || !c.status.contains("succe")),
            "{:?}",
            task.callbacks
        );
    }
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_success_after_a_cancel_is_recorded_and_not_charged() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("never mind [[sim:delay=2000]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let canceled = app.user_post(&user, &format!("/v1/generations/{id}/cancel"), &json!({})).await;
    assert_eq!(canceled.status(), 200);
    assert_eq!(app.credits(&user).await, (1000, 0));

    let task = app.sim_task(&id).await;
    let task = eventually("the success callback delivered", WAIT, || async {
        let task = app.sim.task(&task.task_id)?;
        task.callbacks.iter().any(|c| c.status == "success" && c.delivered()).then_some(task)
    })
    .await;
    let generation = eventually("the success in the audit log", WAIT, || async {
        let generation = app.admin_generation(&id).await;
        let recorded =
            events(&generation).iter().any(|e| e["cause"] == "webhook" && e["to_status"].is_null());
        recorded.then_some(generation)
    })
    .await;
    assert_eq!(generation["status"], "canceled");
    assert_eq!(generation["charged"], 0);
    assert!(generation["result"].is_null());
    assert_eq!(app.video_rows(&id).await, 0);
    // A repeat of it, and a failure report, change nothing either.
    let url = task.callback_url.clone().unwrap();
    let body = kie_success(&app.kie_record(&task.task_id).await);
    assert_eq!(app.post_json(&url, &body).await, 200);
    assert_eq!(app.report_failure(&id, "late").await, 202);
    let seen = events(&generation).len();
    let generation = app.events_beyond(&id, seen + 1).await;
    assert_eq!(generation["status"], "canceled");
    assert_eq!(generation["charged"], 0);
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_postpaid_job_is_charged_once_on_success_and_never_on_failure() {
    let app = TestApp::builder()
        .workers(1)
        .simulator(SimConfig { recovery_delay_ms: 1500, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let gateway = |prompt: &str| json!({"model": "kling-v1-6-gateway", "mode": "text2video", "prompt": prompt});
    let ok = app.submit_ok(&user, &gateway("plain [[sim:dup-callback]]")).await;
    let failed = app.submit_ok(&user, &gateway("doomed [[sim:fail]]")).await;
    let back = app.submit_ok(&user, &gateway("comeback [[sim:fail-then-success]]")).await;

    let done = app.wait_for_status(&user, &ok, "completed", WAIT).await;
    let cost = done["cost"].as_i64().unwrap();
    assert_eq!(done["billing"], "postpaid");
    assert_eq!(done["charged"], cost);
    let failed = app.wait_for_status(&user, &failed, "failed", WAIT).await;
    assert_eq!(failed["charged"], 0);
    app.wait_for_status(&user, &back, "failed", WAIT).await;
    let back_done = app.wait_for_status(&user, &back, "completed", WAIT).await;
    assert_eq!(back_done["charged"], cost);
    for id in [&ok, &back] {
        app.assert_charged_once(id, cost).await;
    }
    assert_eq!(app.credits(&user).await, (1000 - 2 * cost, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_job_whose_poll_was_lost_is_found_by_the_sweeper() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("forgotten [[sim:no-callback]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    // Its next poll is a minute away; make it look lost (long overdue), as after a broker loss.
    sqlx::query(
        "UPDATE generations SET next_poll_at = now() - interval '10 minutes' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    app.assert_charged_once(&id, SORA_COST).await;
    app.assert_reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_past_its_deadline_is_failed_once_however_often_the_sweeper_runs() {
    // No workers yet: nothing consumes, as when every worker is down or far behind.
    let mut app = TestApp::spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("lost in the queue")).await;
    // The job message is lost (taken off the queue once the relay published it) and the deadline
    // has passed: only the sweeper can settle this job.
    eventually("the job message published", WAIT, || async {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (unsent == 0).then_some(())
    })
    .await;
    let topology = app.broker.topology().clone();
    assert_eq!(app.broker.drain(&topology.queue(WorkQueue::Jobs)).await.len(), 1);
    sqlx::query(
        "UPDATE generations SET deadline_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();

    // Sweeps, two at once and then more, with nobody consuming what they send.
    let settings = Settings::load_from(None, Some(app.env().clone())).expect("settings");
    let broker = Broker::new(&settings.amqp, "gengate-test-sweeper");
    broker.connect().await.expect("connect to RabbitMQ");
    let ctx = WorkerContext::new(settings, app.pool.clone(), broker.clone()).expect("context");
    let (first, second) = tokio::join!(sweep(&ctx), sweep(&ctx));
    let mut sent = first.unwrap().failures + second.unwrap().failures;
    for _ in 0..3 {
        sent += sweep(&ctx).await.unwrap().failures;
    }
    assert_eq!(sent, 1, "one failure sent for the one stuck job");
    let channel = broker.channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let events = channel
        .queue_declare(topology.queue(WorkQueue::Events).into(), passive, Default::default())
        .await
        .unwrap();
    assert_eq!(events.message_count(), 1, "gengate.events holds one failure, not one per sweep");

    // A worker comes back: the job fails and its credits come back, once.
    app.start_worker().await;
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["failure"]["code"], "deadline_exceeded", "{failed}");
    assert_eq!(failed["charged"], 0);
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;
}
