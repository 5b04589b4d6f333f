//! `gengatectl import legacy-credits` and `gengatectl import rollback` against a legacy credits
//! database (`tests/fixtures/legacy_credits.sql`, a second database on the same server): imported,
//! re-imported, rolled back, imported again, with every awkward case of the fixture.

use gengate_tests::{TestApp, TestDatabase};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool};

/// The legacy database of one test (`tests/fixtures/legacy_credits.sql`), dropped when it ends.
async fn legacy_db() -> TestDatabase {
    TestDatabase::create_loaded(include_str!("../../fixtures/legacy_credits.sql")).await
}

/// Rows of every table an import writes, to prove what a command changed (or did not).
async fn footprint(pool: &PgPool) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in [
        "users",
        "credit_grants",
        "ledger_entries",
        "legacy_import_runs",
        "legacy_import_users",
        "legacy_import_credits",
        "legacy_import_entries",
    ] {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await
            .unwrap();
        counts.push(n);
    }
    let voided: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE is_voided")
        .fetch_one(pool)
        .await
        .unwrap();
    counts.push(voided);
    counts
}

fn json_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn whats(report: &Value, list: &str) -> Vec<(String, String)> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["trans_no"].as_str().unwrap_or("").to_owned(),
                p["what"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn balance_of(pool: &PgPool, email: &str) -> i64 {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(pool)
        .await
        .unwrap();
    let balance = gengate_shared::ledger::balance(pool, gengate_shared::ids::UserId(id))
        .await
        .unwrap()
        .unwrap();
    balance.balance
}

async fn reconcile_is_clean(app: &TestApp) {
    let out = app.ctl(&["ledger", "reconcile"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn legacy_credits_are_imported_reimported_rolled_back_and_imported_again() {
    let app = TestApp::spawn().await;
    let legacy = legacy_db().await;
    let users_file = std::env::temp_dir().join(format!("{}.users", legacy.name()));
    std::fs::write(&users_file, "# the clean users\nu-alice\nu-bob\n\nu-erin\n").unwrap();
    let users_arg = users_file.to_str().unwrap();
    let src = legacy.url();
    let before = footprint(&app.pool).await;

    // A dry run of everything reports the problems and writes nothing.
    let dry = app.ctl(&["import", "legacy-credits", "--source", src, "--dry-run", "--json"]).await;
    assert_eq!(dry.status.code(), Some(1), "{}", String::from_utf8_lossy(&dry.stderr));
    let report = json_of(&dry);
    assert_eq!(report["run_id"], Value::Null);
    assert_eq!(report["users_imported"], 5);
    assert_eq!(footprint(&app.pool).await, before, "a dry run writes nothing");

    // The clean users, two rows a batch: everything matches, exit 0.
    let first = app
        .ctl(&[
            "import",
            "legacy-credits",
            "--source",
            src,
            "--users",
            users_arg,
            "--batch",
            "2",
            "--json",
        ])
        .await;
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stdout));
    let report = json_of(&first);
    let run1 = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(report["users_imported"], 3);
    assert_eq!(report["rows_imported"], 12, "{report}");
    assert_eq!(report["zero_rows"], 1);
    assert_eq!(report["users_checked"], 3);
    assert_eq!(report["mismatches"], serde_json::json!([]));
    assert_eq!(report["problems"], serde_json::json!([]));
    let warnings = whats(&report, "warnings");
    assert!(
        warnings.iter().any(|(t, w)| t == "T07" && w.contains("ORD-A1 is not a legacy generation")),
        "{warnings:?}"
    );
    assert_eq!(balance_of(&app.pool, "alice@legacy.test").await, 440);
    assert_eq!(balance_of(&app.pool, "bob@legacy.test").await, 95);
    assert_eq!(balance_of(&app.pool, "erin@legacy.test").await, 0);

    // The charge spanning two packages: two legacy rows, linked to their legacy generation, each
    // drawn from the package of its expiry; the refunded charge is voided, not offset.
    let spanning: Vec<(String, Option<String>, i64, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT c.trans_no, c.legacy_generation_uuid, e.amount, e.generation_id
         FROM legacy_import_credits c
         JOIN legacy_import_entries le ON le.trans_no = c.trans_no AND le.role = 'charge'
         JOIN ledger_entries e ON e.id = le.entry_id
         WHERE c.legacy_order_no = 'g-a1' ORDER BY c.trans_no",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        spanning,
        vec![
            ("T03".into(), Some("g-a1".into()), -100, None),
            ("T04".into(), Some("g-a1".into()), -50, None)
        ]
    );
    let refunded: (bool, Option<String>) = sqlx::query_as(
        "SELECT e.is_voided, e.voided_reason FROM legacy_import_entries le
         JOIN ledger_entries e ON e.id = le.entry_id WHERE le.trans_no = 'T05'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refunded, (true, Some("legacy refund T06".into())));
    // Bob's one legacy charge with no expiry drew 5 + 5 from his two packages without expiry.
    let bob_split: Vec<i64> = sqlx::query_scalar(
        "SELECT e.amount FROM legacy_import_entries le JOIN ledger_entries e ON e.id = le.entry_id
         WHERE le.trans_no = 'T14' ORDER BY e.amount",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(bob_split, vec![-5, -5]);
    let order: Option<String> =
        sqlx::query_scalar("SELECT order_no FROM credit_grants WHERE order_no = 'ORD-A1'")
            .fetch_optional(&app.pool)
            .await
            .unwrap();
    assert_eq!(order.as_deref(), Some("ORD-A1"));
    reconcile_is_clean(&app).await;

    // Everyone: the first run's rows are skipped; the double refund, the refund without a charge
    // and the row of an unknown user are reported; carol's and dave's balances differ: exit 1.
    let second =
        app.ctl(&["import", "legacy-credits", "--source", src, "--batch", "3", "--json"]).await;
    assert_eq!(second.status.code(), Some(1), "{}", String::from_utf8_lossy(&second.stderr));
    let report = json_of(&second);
    let run2 = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(report["users_imported"], 2);
    assert_eq!(report["already_imported"], 3 + 12, "users and rows of the first run");
    assert_eq!(report["rows_imported"], 4, "T20 T21 T22 T30: {report}");
    let problems = whats(&report, "problems");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems.iter().any(|(t, w)| t == "T23" && w.contains("double refund")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|(t, w)| t == "T31" && w.contains("without a matching charge")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|(t, w)| t == "T99" && w.contains("user was not imported")));
    let mismatches: Vec<(String, i64, i64)> = report["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let user = m["legacy_user"].as_str().unwrap().to_owned();
            (user, m["legacy"].as_i64().unwrap(), m["gengate"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(mismatches, vec![("u-carol".into(), 120, 100), ("u-dave".into(), 65, 50)]);
    reconcile_is_clean(&app).await;

    // Again: nothing new is imported, the same problems are reported.
    let imported = footprint(&app.pool).await;
    let third = app.ctl(&["import", "legacy-credits", "--source", src, "--json"]).await;
    assert_eq!(third.status.code(), Some(1));
    let report = json_of(&third);
    let run3 = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (report["users_imported"].as_i64(), report["rows_imported"].as_i64()),
        (Some(0), Some(0))
    );
    let mut after_third = footprint(&app.pool).await;
    after_third[3] -= 1; // the run's own row
    assert_eq!(after_third, imported, "a re-run imports nothing twice");

    // Human-readable output names the run and the mismatches.
    let text = app.ctl(&["import", "legacy-credits", "--source", src, "--users", users_arg]).await;
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("import run ") && stdout.contains("every balance matches"), "{stdout}");

    // Rollback refuses (and changes nothing) while gengate data depends on the run.
    let alice: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'alice@legacy.test'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, prefix, key_hash) VALUES ($1, $2, 'legacytest', $3)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(alice)
    .bind(vec![0u8; 32])
    .execute(&app.pool)
    .await
    .unwrap();
    let held = footprint(&app.pool).await;
    let refused = app.ctl(&["import", "rollback", &run1]).await;
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("API keys"), "{stderr}");
    assert_eq!(footprint(&app.pool).await, held);
    sqlx::query("DELETE FROM api_keys WHERE prefix = 'legacytest'")
        .execute(&app.pool)
        .await
        .unwrap();

    // Each run removes exactly what it wrote; a run twice or a run that never was is refused.
    let rolled = app.ctl_json(&["import", "rollback", &run2, "--json"]).await;
    assert_eq!((rolled["users"].as_i64(), rolled["grants"].as_i64()), (Some(2), Some(2)));
    assert_eq!((rolled["entries"].as_i64(), rolled["unvoided"].as_i64()), (Some(3), Some(1)));
    reconcile_is_clean(&app).await;
    let again = app.ctl(&["import", "rollback", &run2]).await;
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already rolled back"));
    let unknown = app.ctl(&["import", "rollback", &uuid::Uuid::now_v7().to_string()]).await;
    assert_eq!(unknown.status.code(), Some(2));
    app.ctl_json(&["import", "rollback", &run3, "--json"]).await;
    let rolled = app.ctl_json(&["import", "rollback", &run1, "--json"]).await;
    assert_eq!(rolled["users"], 3);
    assert_eq!(rolled["unvoided"], 1);
    // The text run of the clean users (which imported nothing new) is the last one standing.
    let last_run: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM legacy_import_runs WHERE status <> 'rolled_back'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let rolled = app.ctl_json(&["import", "rollback", &last_run.to_string(), "--json"]).await;
    assert_eq!(rolled["entries"], 0);
    let mut after = footprint(&app.pool).await;
    after[3] -= 4; // the four runs' own rows stay, marked rolled back
    assert_eq!(after, before, "rollbacks leave the database as it was");
    reconcile_is_clean(&app).await;

    // Imported again from scratch: the same result.
    let fresh = app
        .ctl_json(&["import", "legacy-credits", "--source", src, "--users", users_arg, "--json"])
        .await;
    assert_eq!(
        (fresh["users_imported"].as_i64(), fresh["rows_imported"].as_i64()),
        (Some(3), Some(12))
    );
    assert_eq!(balance_of(&app.pool, "alice@legacy.test").await, 440);
    reconcile_is_clean(&app).await;
    std::fs::remove_file(&users_file).ok();
}

#[tokio::test]
async fn bad_import_arguments_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let legacy = legacy_db().await;
    let before = footprint(&app.pool).await;

    let users_file = std::env::temp_dir().join(format!("{}.unknown", legacy.name()));
    std::fs::write(&users_file, "u-alice\nu-nobody\n").unwrap();
    let unknown = app
        .ctl(&[
            "import",
            "legacy-credits",
            "--source",
            legacy.url(),
            "--users",
            users_file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no such legacy users: u-nobody"));
    std::fs::remove_file(&users_file).ok();

    let missing = app
        .ctl(&[
            "import",
            "legacy-credits",
            "--source",
            legacy.url(),
            "--users",
            "/nonexistent/users",
        ])
        .await;
    assert_eq!(missing.status.code(), Some(2));

    // gengate's own database is no legacy ledger.
    let not_legacy = app.ctl(&["import", "legacy-credits", "--source", app.db.url()]).await;
    assert_eq!(
        not_legacy.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&not_legacy.stderr)
    );
    assert!(String::from_utf8_lossy(&not_legacy.stderr).contains("not a legacy credits database"));

    let zero =
        app.ctl(&["import", "legacy-credits", "--source", legacy.url(), "--batch", "0"]).await;
    assert_eq!(zero.status.code(), Some(2));

    let unreachable = app
        .ctl(&["import", "legacy-credits", "--source", "postgres://legacy:secret@127.0.0.1:1/gone"])
        .await;
    assert_eq!(unreachable.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.contains("legacy database") && !stderr.contains("secret"), "{stderr}");

    assert_eq!(footprint(&app.pool).await, before, "refused imports write nothing");
}

#[tokio::test]
async fn an_interrupted_import_keeps_its_committed_batches_and_resumes() {
    let app = TestApp::spawn().await;
    let legacy = legacy_db().await;
    let users_file = std::env::temp_dir().join(format!("{}.users", legacy.name()));
    std::fs::write(&users_file, "u-alice\nu-bob\nu-erin\n").unwrap();
    let users_arg = users_file.to_str().unwrap();
    let before = footprint(&app.pool).await;

    // gengate's database fails on the batch holding legacy row T05 (the fifth batch of two).
    sqlx::raw_sql(
        "CREATE FUNCTION fail_t05() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'injected failure at %', NEW.trans_no; END $$;
         CREATE TRIGGER fail_t05 BEFORE INSERT ON legacy_import_credits
             FOR EACH ROW WHEN (NEW.trans_no = 'T05') EXECUTE FUNCTION fail_t05();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let args = ["import", "legacy-credits", "--source", legacy.url(), "--users", users_arg];
    let failed = app.ctl(&[&args[..], &["--batch", "2", "--json"]].concat()).await;
    assert_eq!(failed.status.code(), Some(3), "{}", String::from_utf8_lossy(&failed.stdout));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("injected failure at T05"));
    let (run1, status): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, status FROM legacy_import_runs")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    // The four batches before it stay committed (T10 T11 T12 T01 T13 T02 T03 T04); its own batch
    // (T05 T06) left nothing behind.
    let committed: Vec<String> =
        sqlx::query_scalar("SELECT trans_no FROM legacy_import_credits ORDER BY trans_no")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(committed, ["T01", "T02", "T03", "T04", "T10", "T11", "T12", "T13"]);
    app.assert_reconciled().await;

    sqlx::raw_sql("DROP TRIGGER fail_t05 ON legacy_import_credits; DROP FUNCTION fail_t05();")
        .execute(&app.pool)
        .await
        .unwrap();
    let resumed = app.ctl_json(&[&args[..], &["--json"]].concat()).await;
    assert_eq!(resumed["already_imported"], 3 + 8);
    assert_eq!(resumed["rows_imported"], 4, "T05 T06 T07 T14: {resumed}");
    assert_eq!(resumed["mismatches"], serde_json::json!([]));
    assert_eq!(balance_of(&app.pool, "alice@legacy.test").await, 440);
    assert_eq!(balance_of(&app.pool, "bob@legacy.test").await, 95);
    let run2 = resumed["run_id"].as_str().unwrap().to_owned();
    reconcile_is_clean(&app).await;

    // The resumed run drew on the failed run's grants: that one cannot go first.
    let held = footprint(&app.pool).await;
    let refused = app.ctl(&["import", "rollback", &run1.to_string()]).await;
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("draw on its grants"), "{stderr}");
    assert_eq!(footprint(&app.pool).await, held);

    app.ctl_json(&["import", "rollback", &run2, "--json"]).await;
    reconcile_is_clean(&app).await;
    app.ctl_json(&["import", "rollback", &run1.to_string(), "--json"]).await;
    let mut after = footprint(&app.pool).await;
    after[3] -= 2; // the runs' own rows stay, marked rolled back
    assert_eq!(after, before);
    reconcile_is_clean(&app).await;
    std::fs::remove_file(&users_file).ok();
}

#[tokio::test]
async fn concurrent_imports_of_one_ledger_import_each_row_once() {
    let app = TestApp::spawn().await;
    let legacy = legacy_db().await;
    let users_file = std::env::temp_dir().join(format!("{}.users", legacy.name()));
    std::fs::write(&users_file, "u-alice\nu-bob\nu-erin\n").unwrap();
    let args = [
        "import",
        "legacy-credits",
        "--source",
        legacy.url(),
        "--users",
        users_file.to_str().unwrap(),
        "--batch",
        "2",
        "--json",
    ];
    // Three operators start the same import at once.
    let outputs = futures_util::future::join_all((0..3).map(|_| app.ctl(&args))).await;
    for out in &outputs {
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let imported: i64 = outputs.iter().map(|o| json_of(o)["rows_imported"].as_i64().unwrap()).sum();
    assert_eq!(imported, 12, "every legacy row imported by exactly one of the runs");
    let mapped: i64 = sqlx::query_scalar("SELECT count(*) FROM legacy_import_credits")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(mapped, 12);
    assert_eq!(balance_of(&app.pool, "alice@legacy.test").await, 440);
    assert_eq!(balance_of(&app.pool, "bob@legacy.test").await, 95);
    assert_eq!(balance_of(&app.pool, "erin@legacy.test").await, 0);
    reconcile_is_clean(&app).await;
    std::fs::remove_file(users_file).ok();
}
