//! `gengatectl` against a running stack, as an operator uses it.

use gengate_shared::ids::UserId;
use gengate_tests::{TestApp, fixtures};
use serde_json::Value;

#[tokio::test]
async fn ledger_reconcile_reports_a_clean_ledger_and_names_every_mismatch() {
    let app = TestApp::spawn().await;
    let user = app.create_user(100).await;
    let user_id: UserId = user.id.parse().unwrap();
    fixtures::reserved_generation(&app.pool, user_id, 40).await.unwrap();

    let clean = app.ctl(&["ledger", "reconcile"]).await;
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{stdout}{}", String::from_utf8_lossy(&clean.stderr));
    assert!(stdout.contains("checked 1 grants, 1 generations, 1 users"), "{stdout}");
    assert!(stdout.contains("no mismatches"), "{stdout}");

    // Someone edits a grant by hand: reconcile finds it and fails.
    sqlx::query("UPDATE credit_grants SET remaining = remaining + 7 WHERE user_id = $1")
        .bind(user_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let dirty = app.ctl(&["ledger", "reconcile", "--user", &user.id]).await;
    let stdout = String::from_utf8_lossy(&dirty.stdout);
    assert_eq!(dirty.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 mismatches"), "{stdout}");
    assert!(stdout.contains("grant"), "{stdout}");

    let json = app.ctl(&["ledger", "reconcile", "--json"]).await;
    assert_eq!(json.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(report["mismatches"][0]["kind"], "grant");
    assert_eq!(report["mismatches"][0]["expected"], 60);
    assert_eq!(report["mismatches"][0]["actual"], 67);
}

#[tokio::test]
async fn gengatectl_says_clearly_when_the_database_is_unreachable() {
    let app = TestApp::spawn().await;
    let output =
        tokio::process::Command::new(gengate_tests::harness::process::binary("gengatectl"))
            .args(["ledger", "reconcile"])
            .env_clear()
            .envs(app.env())
            .env("GENGATE__DATABASE__URL", "postgres://postgres@127.0.0.1:1/nowhere")
            .env("GENGATE__DATABASE__ACQUIRE_TIMEOUT_MS", "500")
            .output()
            .await
            .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to postgres://postgres@127.0.0.1:1/nowhere"), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "the cause is named: {stderr}");
}
