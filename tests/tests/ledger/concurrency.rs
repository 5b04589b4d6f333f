//! Many transactions on one user's ledger at once: no overdraft, no double refund, no deadlock
//! reaching a caller, and the books balance afterwards.

use std::sync::Arc;

use futures_util::future::join_all;
use gengate_shared::db;
use gengate_shared::ledger::{self, LedgerError};
use gengate_tests::TestDatabase;
use gengate_tests::fixtures::{self, balance};
use sqlx::postgres::PgPoolOptions;

async fn wide_pool(db: &TestDatabase) -> sqlx::PgPool {
    PgPoolOptions::new().max_connections(40).connect(db.url()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_parallel_reserves_against_credits_for_fifty_accept_exactly_fifty() {
    let db = TestDatabase::create().await;
    let pool = wide_pool(&db).await;
    let user = fixtures::user(&pool).await;
    // Several grants, so draws span packages while racing.
    for amount in [100, 150, 250] {
        fixtures::grant(&pool, user, amount, None).await;
    }
    let mut generations = Vec::new();
    for _ in 0..200 {
        generations.push(fixtures::generation(&pool, user, 10, "prepaid").await);
    }
    let results = join_all(generations.iter().map(|g| {
        let pool = pool.clone();
        let g = *g;
        tokio::spawn(async move {
            let outcome: Result<(), LedgerError> =
                db::transaction!(&pool, LedgerError, |tx| ledger::reserve(tx, &g, 10).await?).await;
            outcome
        })
    }))
    .await;

    let mut accepted = 0;
    for (generation, result) in generations.iter().zip(results) {
        match result.unwrap() {
            Ok(()) => accepted += 1,
            Err(LedgerError::InsufficientCredits { cost: 10, .. }) => {
                // A refused job would be failed by the API; nothing was charged for it.
                fixtures::set_status(&pool, generation.id, "failed", None).await;
            }
            Err(other) => panic!("a caller saw {other:?}"),
        }
    }
    assert_eq!(accepted, 50);
    assert_eq!(balance(&pool, user).await, 0);
    let report = ledger::reconcile(&pool, Some(user)).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.mismatches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_refunds_of_one_generation_return_the_credits_once() {
    let db = TestDatabase::create().await;
    let pool = wide_pool(&db).await;
    let user = fixtures::user(&pool).await;
    fixtures::grant(&pool, user, 60, None).await;
    fixtures::grant(&pool, user, 60, None).await;
    let generation = fixtures::reserved_generation(&pool, user, 100).await.unwrap();
    assert_eq!(balance(&pool, user).await, 20);

    let returned: Vec<i64> = join_all((0..50).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let reason = format!("refund-{i}");
            let returned: Result<i64, LedgerError> =
                db::transaction!(&pool, LedgerError, |tx| ledger::refund(tx, &generation, &reason)
                    .await?)
                .await;
            returned
        })
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap().expect("no refund fails"))
    .collect();

    assert_eq!(returned.iter().sum::<i64>(), 100, "exactly one refund returned the credits");
    assert_eq!(returned.iter().filter(|r| **r > 0).count(), 1);
    assert_eq!(balance(&pool, user).await, 120);
    fixtures::set_status(&pool, generation.id, "failed", None).await;
    assert!(ledger::reconcile(&pool, Some(user)).await.unwrap().is_clean());
}

/// What one racing operation does to one generation.
#[derive(Debug, Clone, Copy)]
enum Op {
    Refund,
    Restore,
    Confirm,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_refund_restore_and_confirm_keep_the_books_balanced() {
    let db = TestDatabase::create().await;
    let pool = wide_pool(&db).await;
    let users = [fixtures::user(&pool).await, fixtures::user(&pool).await];
    for user in users {
        fixtures::grant(&pool, user, 400, None).await;
        fixtures::grant(&pool, user, 300, Some(time::Duration::days(2))).await;
    }
    let mut generations = Vec::new();
    for i in 0..20 {
        generations.push(fixtures::reserved_generation(&pool, users[i % 2], 30).await.unwrap());
    }
    let generations = Arc::new(generations);

    // Every generation gets each operation several times, shuffled across tasks.
    let mut work = Vec::new();
    for (index, _) in generations.iter().enumerate() {
        for round in 0..4 {
            for op in [Op::Refund, Op::Restore, Op::Confirm] {
                work.push((index, op, round));
            }
        }
    }
    use rand::seq::SliceRandom;
    work.shuffle(&mut rand::rng());

    let results = join_all(work.into_iter().map(|(index, op, _)| {
        let pool = pool.clone();
        let generations = generations.clone();
        tokio::spawn(async move {
            let g = generations[index];
            let outcome: Result<(), LedgerError> =
                db::transaction!(&pool, LedgerError, |tx| match op {
                    Op::Refund => drop(ledger::refund(tx, &g, "race").await?),
                    Op::Restore => drop(ledger::restore(tx, &g, 30).await?),
                    Op::Confirm => drop(ledger::confirm(tx, &g, 25).await?),
                })
                .await;
            outcome
        })
    }))
    .await;
    for result in results {
        result.unwrap().unwrap_or_else(|e| panic!("a caller saw {e:?}"));
    }

    // Whatever order they landed in, each generation's net charge is one of the outcomes the
    // operations can produce, and the grants and debts add up.
    for g in generations.iter() {
        let net = ledger::net_charge(&pool, g.id).await.unwrap();
        assert!([0, 25, 30].contains(&net), "generation {} has net charge {net}", g.id);
        let (status, final_cost) =
            if net == 0 { ("failed", None) } else { ("completed", Some(net)) };
        fixtures::set_status(&pool, g.id, status, final_cost).await;
    }
    let report = ledger::reconcile(&pool, None).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.mismatches);
    let debt: i64 =
        sqlx::query_scalar("SELECT sum(debt)::bigint FROM users").fetch_one(&pool).await.unwrap();
    assert_eq!(debt, 0, "there were always enough credits, so nothing became debt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_postpaid_holds_and_duplicated_settlements_move_each_hold_once() {
    use gengate_shared::generation::failure::{Failure, FailureKind};
    use gengate_shared::generation::settle;
    use gengate_shared::generation::transitions::{Cause, Transition};
    use gengate_shared::providers::ResultFile;

    let db = TestDatabase::create().await;
    let pool = wide_pool(&db).await;
    let user = fixtures::user(&pool).await;
    // Two grants: charges later span them.
    fixtures::grant(&pool, user, 60, None).await;
    fixtures::grant(&pool, user, 40, None).await;
    let mut generations = Vec::new();
    for _ in 0..20 {
        generations.push(fixtures::generation(&pool, user, 20, "postpaid").await);
    }
    // Twenty postpaid submits at once against credits for five.
    let held = join_all(generations.iter().map(|g| {
        let (pool, g) = (pool.clone(), *g);
        tokio::spawn(async move {
            let outcome: Result<(), LedgerError> =
                db::transaction!(&pool, LedgerError, |tx| ledger::hold(tx, &g, 20).await?).await;
            outcome.is_ok()
        })
    }))
    .await;
    let mut accepted = Vec::new();
    for (generation, held) in generations.iter().zip(held) {
        if held.unwrap() {
            fixtures::set_status(&pool, generation.id, "submitted", None).await;
            accepted.push(*generation);
        } else {
            fixtures::set_status(&pool, generation.id, "failed", None).await;
        }
    }
    assert_eq!(accepted.len(), 5, "holds never promise more than the balance");
    assert_eq!(balance(&pool, user).await, 100, "a hold draws nothing");
    let report = ledger::reconcile(&pool, Some(user)).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.mismatches);

    // Each accepted job gets its success five times and, for some, a failure racing them: every
    // ending applies once, and a success after a failure still charges (once).
    let files = vec![ResultFile { url: "https://files.kie.ai/v.mp4".into(), duration_s: None }];
    let deliveries = accepted.iter().enumerate().flat_map(|(i, g)| {
        let racing_failure = i % 2 == 0;
        (0..6).filter(move |n| *n < 5 || racing_failure).map(move |n| (*g, n == 5))
    });
    let results = join_all(deliveries.map(|(g, is_failure)| {
        let (pool, files) = (pool.clone(), files.clone());
        tokio::spawn(async move {
            let cause = Cause::new(if is_failure { "webhook" } else { "poll" });
            let outcome: Result<(), LedgerError> = db::transaction!(&pool, LedgerError, |tx| {
                if is_failure {
                    let failure = Failure::new(FailureKind::GenerationFailed);
                    settle::fail(tx, g.id, Transition::FailTask, &cause, &failure).await?;
                } else {
                    settle::complete(tx, g.id, &cause, &files, None).await?;
                }
            })
            .await;
            outcome
        })
    }))
    .await;
    for result in results {
        result.unwrap().expect("no caller sees an error");
    }
    // Every job ended completed (the successes win over the failures) and charged once.
    let charged: Vec<(String, i64)> = sqlx::query_as(
        "SELECT g.status, COALESCE(-(SELECT sum(amount) FROM ledger_entries e
                                     WHERE e.generation_id = g.id AND NOT e.is_voided), 0)::bigint
         FROM generations g WHERE g.status NOT IN ('failed', 'queued') ORDER BY g.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(charged, vec![("completed".to_owned(), 20); 5]);
    let credits = ledger::balance(&pool, user).await.unwrap().unwrap();
    assert_eq!((credits.balance, credits.held, credits.debt), (0, 0, 0));
    let report = ledger::reconcile(&pool, Some(user)).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.mismatches);
}
