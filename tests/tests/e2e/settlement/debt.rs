//! A restore the balance cannot cover: it becomes debt until a grant pays it.

use gengate_tests::TestApp;
use gengate_tests::harness::audit::{events, ledger};
use gengate_tests::requests::{SORA_COST, kling, sora};
use serde_json::{Value, json};

use super::WAIT;

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
