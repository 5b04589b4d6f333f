//! Workers creating upstream tasks: what the providers receive, retries, permanent failures, the
//! crash window, many workers at once, shutdown.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use gengate_sim::{Provider, SimConfig};
use gengate_tests::TestApp;
use gengate_tests::harness::audit::events;
use gengate_tests::harness::eventually;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn kling(prompt: &str) -> Value {
    json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": prompt})
}

#[tokio::test]
async fn kie_jobs_reach_the_provider_with_model_input_callback_and_key() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let image = "https://img.example.com/cat.png";
    let sora = app
        .submit_ok(&user, &json!({"model": "sora-2", "mode": "image2video", "prompt": "a cat", "duration": 15, "aspect_ratio": "9:16", "image_urls": [image]}))
        .await;
    let wan = app
        .submit_ok(&user, &json!({"model": "wan-2-6", "mode": "text2video", "prompt": "a dog", "duration": 10, "quality": "1080p"}))
        .await;
    for id in [&sora, &wan] {
        app.wait_for_status(&user, id, "completed", WAIT).await;
    }

    let creates: Vec<_> =
        app.sim.requests().into_iter().filter(|r| r.path == "/api/v1/jobs/createTask").collect();
    assert_eq!(creates.len(), 2);
    for request in &creates {
        assert_eq!(
            request.headers.get("authorization").map(String::as_str),
            Some("Bearer sim-kie-api-key")
        );
    }
    let body_of = |id: &str| {
        creates
            .iter()
            .map(|r| r.body.clone().unwrap())
            .find(|b| b["callBackUrl"].as_str().unwrap().contains(id))
            .unwrap_or_else(|| panic!("no create for {id}"))
    };
    let sora_body = body_of(&sora);
    assert_eq!(sora_body["model"], "sora-2-image-to-video");
    assert_eq!(sora_body["input"]["aspect_ratio"], "portrait");
    assert_eq!(sora_body["input"]["n_frames"], "15");
    assert_eq!(sora_body["input"]["image_urls"], json!([image]));
    assert_eq!(sora_body["input"]["prompt"], "a cat");
    let callback = sora_body["callBackUrl"].as_str().unwrap();
    assert!(
        callback.starts_with(&format!(
            "{}/api/generation/webhook?generation_id={sora}&token=",
            app.api_url
        )),
        "{callback}"
    );
    let token = callback.rsplit("token=").next().unwrap();
    assert_eq!(token.len(), 64, "a 256-bit token");
    let wan_body = body_of(&wan);
    assert_eq!(wan_body["model"], "wan/2-6-text-to-video");
    assert_eq!(wan_body["input"]["duration"], "10");
    assert_eq!(wan_body["input"]["resolution"], "1080p");

    // The token is nowhere in gengate's database or logs; only its hash is.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM generations WHERE params::text LIKE '%' || $1 || '%'",
    )
    .bind(token)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);
    let logs: String = app.workers.iter().map(|w| w.process.log_tail(100_000)).collect();
    assert!(!logs.contains(token), "the callback token leaked into a worker log");
    assert!(
        !logs.contains("sim-kie-api-key") && !logs.contains("sim-kling-secret-key"),
        "a provider key leaked"
    );
}

#[tokio::test]
async fn a_rate_limited_create_is_retried_and_creates_one_task() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a cat [[sim:create-retry=2]]")).await;
    let submitted = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(submitted["charged"], 24);
    assert_eq!(app.sim_tasks_of(&id).len(), 1);
    let attempts = app.sim.tasks()[0].create_attempts;
    assert_eq!(attempts, 3, "two 1303 answers, then the create");
}

#[tokio::test]
async fn server_errors_past_the_quick_retries_wait_in_the_delay_tiers_then_succeed() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    // 3 quick tries per delivery: the first delivery fails all 3, the retry through a tier succeeds.
    let id = app.submit_ok(&user, &kling("a cat [[sim:create-5xx=4]]")).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(app.sim_tasks_of(&id).len(), 1);
    let admin = app.admin_generation(&id).await;
    let accepted = events(&admin).into_iter().find(|e| e["cause"] == "provider_accepted").unwrap();
    assert_eq!(accepted["detail"]["attempt"], 1, "accepted on the second delivery");
}

/// The audit detail of the transition that failed a generation: what the provider said.
async fn failure_detail(app: &TestApp, id: &str) -> Value {
    let admin = app.admin_generation(id).await;
    events(&admin)
        .into_iter()
        .find(|e| e["to_status"] == "failed")
        .map(|e| e["detail"].clone())
        .unwrap_or_else(|| panic!("no failure in {admin}"))
}

#[tokio::test]
async fn a_job_the_provider_keeps_refusing_fails_and_is_refunded_after_its_attempts() {
    let app =
        TestApp::builder().workers(1).env("GENGATE__WORKER__SUBMIT_ATTEMPTS", "2").spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a cat [[sim:create-retry=100]]")).await;
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    // The client gets a stable code and gengate's words; the operator, the provider's.
    assert_eq!(failed["failure"]["code"], "provider_unavailable");
    let detail = failure_detail(&app, &id).await;
    assert_eq!(detail["provider_code"], "1303", "{detail}");
    assert!(detail["message"].as_str().unwrap().contains("gave up after 2 attempts"), "{detail}");
    assert_eq!(failed["charged"], 0);
    assert_eq!(app.balance(&user).await, 1000);
    assert_eq!(app.sim_tasks_of(&id).len(), 0);
}

#[tokio::test]
async fn a_permanent_provider_error_fails_the_job_with_the_providers_code_and_refunds_it() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let kling_id = app.submit_ok(&user, &kling("a cat [[sim:reject]]")).await;
    let kie_id = app
        .submit_ok(
            &user,
            &json!({"model": "sora-2", "mode": "text2video", "prompt": "a cat [[sim:reject]]"}),
        )
        .await;
    let kling_failed = app.wait_for_status(&user, &kling_id, "failed", WAIT).await;
    let kie_failed = app.wait_for_status(&user, &kie_id, "failed", WAIT).await;
    for failed in [&kling_failed, &kie_failed] {
        assert_eq!(failed["failure"]["code"], "request_rejected");
        assert_eq!(failed["failure"]["message"], "the provider refused this request");
    }
    assert_eq!(failure_detail(&app, &kling_id).await["provider_code"], "1201");
    assert_eq!(failure_detail(&app, &kie_id).await["provider_code"], "422");
    assert!(!failure_detail(&app, &kling_id).await["message"].as_str().unwrap().is_empty());
    assert_eq!(app.balance(&user).await, 1000);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_worker_killed_after_the_provider_accepted_leaves_exactly_one_upstream_task() {
    // The simulator records the task, then holds its answer for 5 s: the window in which the
    // worker dies before it can record the task.
    let mut app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a cat [[sim:accept-delay=5000]]")).await;
    eventually("the provider to accept the task", WAIT, || async {
        (app.sim_tasks_of(&id).len() == 1).then_some(())
    })
    .await;
    app.workers[0].process.kill().await;

    // The job message returns to the queue; a new worker finds the task instead of creating one.
    app.start_worker().await;
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(app.sim_tasks_of(&id).len(), 1, "exactly one upstream task");
    assert_eq!(done["charged"], 24);
    let admin = app.admin_generation(&id).await;
    let accepted = events(&admin).into_iter().find(|e| e["cause"] == "provider_accepted").unwrap();
    assert_eq!(accepted["detail"]["how"], "adopted", "the new worker adopted the task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_create_each_of_five_hundred_jobs_upstream_exactly_once() {
    let config = SimConfig { task_duration_ms: 50, ..SimConfig::default() };
    let app = TestApp::builder()
        .workers(2)
        .simulator(config)
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "100000")
        .env("GENGATE__PROVIDERS__KIE__RATE_LIMIT", "0")
        .spawn()
        .await;
    let users = [app.create_user(100_000).await, app.create_user(100_000).await];
    let app = &app;
    let users = &users;
    let submits = (0..500).map(|i| {
        let user = &users[i % 2];
        let body = if i % 3 == 0 {
            json!({"model": "sora-2", "mode": "text2video", "prompt": format!("job {i}")})
        } else {
            kling(&format!("job {i}"))
        };
        async move { app.submit_ok(user, &body).await }
    });
    // 32 clients at a time, as a busy integration would send them.
    let ids: Vec<String> = futures_util::stream::iter(submits).buffered(32).collect().await;

    eventually("all 500 jobs to complete", Duration::from_secs(120), || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM generations WHERE status = 'completed'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        (done == 500).then_some(())
    })
    .await;
    let mut per_generation: HashMap<String, usize> = HashMap::new();
    for task in app.sim.tasks() {
        let id = match task.provider {
            Provider::Kling => task.external_task_id.clone().unwrap(),
            Provider::Kie => {
                let url = task.callback_url.clone().unwrap();
                url.split("generation_id=").nth(1).unwrap().split('&').next().unwrap().to_owned()
            }
        };
        *per_generation.entry(id).or_default() += 1;
    }
    assert_eq!(per_generation.len(), 500);
    for id in &ids {
        assert_eq!(per_generation.get(id), Some(&1), "generation {id}");
    }
    // Both workers did their share.
    for index in 0..app.workers.len() {
        let metrics = app.worker_metrics(index).await;
        assert!(metrics.contains("gengate_jobs_submitted_total"), "a worker submitted nothing");
    }
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_job_canceled_before_any_worker_took_it_never_reaches_the_provider() {
    let mut app = TestApp::spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a cat")).await;
    let canceled = app.user_post(&user, &format!("/v1/generations/{id}/cancel"), &json!({})).await;
    assert_eq!(canceled.status(), 200);
    let later = app.submit_ok(&user, &kling("a dog")).await;

    app.start_worker().await;
    app.wait_ready().await;
    app.wait_for_status(&user, &later, "completed", WAIT).await;
    assert_eq!(app.sim_tasks_of(&id).len(), 0, "the canceled job was skipped");
    let g: Value =
        app.user_get(&user, &format!("/v1/generations/{id}")).await.json().await.unwrap();
    assert_eq!(g["status"], "canceled");
}

#[tokio::test]
async fn sigterm_lets_a_worker_finish_the_job_in_hand() {
    let mut app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a cat [[sim:accept-delay=1500]]")).await;
    eventually("the provider to accept the task", WAIT, || async {
        (app.sim_tasks_of(&id).len() == 1).then_some(())
    })
    .await;

    let status = app.workers[0].process.terminate().await;
    assert!(status.success(), "the worker exited with {status}");
    // It recorded the task before exiting: no other worker was needed.
    let g: Value =
        app.user_get(&user, &format!("/v1/generations/{id}")).await.json().await.unwrap();
    assert!(["submitted", "completed"].contains(&g["status"].as_str().unwrap()), "{g}");
    assert_eq!(app.sim_tasks_of(&id).len(), 1);
}

#[tokio::test]
async fn an_unparsable_message_goes_to_the_dead_letter_queue_at_once() {
    let app = TestApp::builder().workers(1).spawn().await;
    let broker = app.broker.broker().await;
    broker
        .publish(
            gengate_shared::queue::Parcel {
                routing_key: "job.submit".into(),
                body: b"{not json".to_vec(),
                message_id: Some("poison-1".into()),
                headers: Default::default(),
            },
            gengate_shared::queue::Route::Now,
        )
        .await
        .unwrap();
    let dlq = broker.topology().dead_letter_queue();
    let dead = eventually("the poison message in the DLQ", WAIT, || async {
        let conn = lapin::Connection::connect(
            &gengate_tests::harness::broker::amqp_url(),
            Default::default(),
        )
        .await
        .ok()?;
        let channel = conn.create_channel().await.ok()?;
        let got = channel
            .basic_get(dlq.clone().into(), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .ok()?;
        got.map(|m| m.delivery)
    })
    .await;
    assert_eq!(dead.data, b"{not json");
    let headers = dead.properties.headers().clone().unwrap();
    let text = |key: &str| match headers.inner().get(key) {
        Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {key}: {other:?}"),
    };
    assert_eq!(text("x-gengate-error-kind"), "unparsable");
    assert!(!text("x-gengate-error").is_empty());
    assert_eq!(
        text("x-gengate-original-queue"),
        app.broker.topology().queue(gengate_shared::queue::WorkQueue::Jobs)
    );
    assert_eq!(dead.routing_key.as_str(), "job.submit");
}
