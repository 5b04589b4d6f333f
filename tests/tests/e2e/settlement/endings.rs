//! The plain endings: a job completes by webhook or by polling and is charged once, or fails
//! by webhook and gets its credits back.

use gengate_sim::FAILURE_MESSAGE;
use gengate_tests::TestApp;
use gengate_tests::harness::audit::{events, ledger, transitions};
use gengate_tests::requests::{KLING_COST, SORA_COST, kling, sora};

use super::WAIT;

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
