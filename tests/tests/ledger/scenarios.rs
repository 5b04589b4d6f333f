//! What users of the ledger rely on, one scenario at a time.

use gengate_shared::db;
use gengate_shared::ledger::{self, GrantSource, LedgerError, NewGrant};
use gengate_tests::TestDatabase;
use gengate_tests::fixtures::{self, balance, remaining};
use time::{Duration, OffsetDateTime};

#[tokio::test]
async fn a_cost_spanning_three_grants_draws_soonest_expiry_first_and_its_refund_returns_each_share()
{
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    let user = fixtures::user(&pool).await;
    let never = fixtures::grant(&pool, user, 100, None).await;
    let late = fixtures::grant(&pool, user, 50, Some(Duration::days(30))).await;
    let soon = fixtures::grant(&pool, user, 30, Some(Duration::days(1))).await;

    let generation = fixtures::reserved_generation(&pool, user, 120).await.unwrap();
    assert_eq!(remaining(&pool, soon).await, 0, "soonest expiry drawn first");
    assert_eq!(remaining(&pool, late).await, 0, "then the later expiry");
    assert_eq!(remaining(&pool, never).await, 60, "grants that never expire last");
    assert_eq!(balance(&pool, user).await, 60);
    let entries: Vec<(String, i64)> = sqlx::query_as(
        "SELECT trans_type, amount FROM ledger_entries WHERE generation_id = $1 ORDER BY id",
    )
    .bind(generation.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        entries,
        vec![
            ("video_generation".into(), -30),
            ("video_generation".into(), -50),
            ("video_generation".into(), -40)
        ],
        "one entry per grant touched"
    );

    let returned = db::transaction!(&pool, LedgerError, |tx| ledger::refund(
        tx,
        &generation,
        "provider_failed"
    )
    .await?)
    .await
    .unwrap();
    assert_eq!(returned, 120);
    assert_eq!(remaining(&pool, soon).await, 30);
    assert_eq!(remaining(&pool, late).await, 50);
    assert_eq!(remaining(&pool, never).await, 100);
    assert_eq!(balance(&pool, user).await, 180);
    let voided: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_entries WHERE generation_id = $1 AND is_voided
           AND voided_at IS NOT NULL AND voided_reason = 'provider_failed'",
    )
    .bind(generation.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(voided, 3, "a refund voids the charges instead of adding rows");

    fixtures::set_status(&pool, generation.id, "failed", None).await;
    assert!(ledger::reconcile(&pool, Some(user)).await.unwrap().is_clean());
}

#[tokio::test]
async fn priority_comes_before_expiry_and_age_breaks_ties() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    let user = fixtures::user(&pool).await;
    let grant = |priority: i32, expires: Option<Duration>| NewGrant {
        user_id: user,
        source: GrantSource::SystemAdd,
        amount: 10,
        expires_at: expires.map(|d| OffsetDateTime::now_utc() + d),
        priority,
        effective_at: None,
        order_no: None,
    };
    let mut ids = Vec::new();
    for new in [grant(1, Some(Duration::days(1))), grant(0, None), grant(0, None)] {
        ids.push(
            db::transaction!(&pool, LedgerError, |tx| ledger::grant(tx, &new).await?)
                .await
                .unwrap()
                .grant_id,
        );
    }
    fixtures::reserved_generation(&pool, user, 15).await.unwrap();
    assert_eq!(remaining(&pool, ids[1]).await, 0, "priority 0, older");
    assert_eq!(remaining(&pool, ids[2]).await, 5, "priority 0, newer");
    assert_eq!(remaining(&pool, ids[0]).await, 10, "priority 1 last despite expiring soonest");
}

#[tokio::test]
async fn a_refund_after_the_grant_expired_returns_the_credits_as_expired() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    let user = fixtures::user(&pool).await;
    let expiring = fixtures::grant(&pool, user, 40, Some(Duration::hours(1))).await;
    let generation = fixtures::reserved_generation(&pool, user, 40).await.unwrap();
    assert_eq!(balance(&pool, user).await, 0);

    // The grant expires while the job runs.
    sqlx::query("UPDATE credit_grants SET expires_at = now() - interval '1 second', effective_at = now() - interval '2 hours' WHERE id = $1")
        .bind(expiring)
        .execute(&pool)
        .await
        .unwrap();
    db::transaction!(&pool, LedgerError, |tx| ledger::refund(tx, &generation, "deadline").await?)
        .await
        .unwrap();

    let credits = ledger::balance(&pool, user).await.unwrap().unwrap();
    assert_eq!(credits.balance, 0, "expired credits do not come back into the balance");
    let shown = credits.grants.iter().find(|g| g.id == expiring).expect("the grant is listed");
    assert_eq!(shown.remaining, 40, "the refund is recorded on the grant");
    assert!(shown.expired);
    fixtures::set_status(&pool, generation.id, "failed", None).await;
    assert!(ledger::reconcile(&pool, Some(user)).await.unwrap().is_clean());
}

#[tokio::test]
async fn insufficient_credits_write_nothing_and_say_balance_and_cost() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    let user = fixtures::user(&pool).await;
    fixtures::grant(&pool, user, 25, None).await;
    let err = fixtures::reserved_generation(&pool, user, 30).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientCredits { balance: 25, held: 0, cost: 30 }),
        "{err:?}"
    );
    let charges: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE user_id = $1 AND amount < 0")
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(charges, 0);
    assert_eq!(balance(&pool, user).await, 25);
}

#[tokio::test]
async fn confirm_at_a_lower_price_returns_the_difference_to_the_latest_drawn_grants_once() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    let user = fixtures::user(&pool).await;
    let first = fixtures::grant(&pool, user, 30, Some(Duration::days(1))).await;
    let second = fixtures::grant(&pool, user, 100, None).await;
    let generation = fixtures::reserved_generation(&pool, user, 60).await.unwrap();
    assert_eq!((remaining(&pool, first).await, remaining(&pool, second).await), (0, 70));

    for _ in 0..3 {
        db::transaction!(&pool, LedgerError, |tx| ledger::confirm(tx, &generation, 20).await?)
            .await
            .unwrap();
    }
    // 40 back: 30 to the latest-drawn grant (second), then 10 to the first.
    assert_eq!(remaining(&pool, second).await, 100);
    assert_eq!(remaining(&pool, first).await, 10);
    assert_eq!(ledger::net_charge(&pool, generation.id).await.unwrap(), 20);
    let refund_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_entries WHERE generation_id = $1 AND trans_type = 'video_generation_refund'",
    )
    .bind(generation.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(refund_rows, 2, "one partial-return row per grant, written once");
    fixtures::set_status(&pool, generation.id, "completed", Some(20)).await;
    assert!(ledger::reconcile(&pool, Some(user)).await.unwrap().is_clean());
}

#[tokio::test]
async fn a_restore_without_credits_becomes_visible_debt_that_the_next_grant_pays_first() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    let user = fixtures::user(&pool).await;
    fixtures::grant(&pool, user, 100, None).await;
    let late = fixtures::reserved_generation(&pool, user, 80).await.unwrap();
    db::transaction!(&pool, LedgerError, |tx| ledger::refund(tx, &late, "deadline").await?)
        .await
        .unwrap();
    // The credits are spent elsewhere before the late success arrives.
    let other = fixtures::reserved_generation(&pool, user, 70).await.unwrap();
    assert_eq!(balance(&pool, user).await, 30);

    let outcome = db::transaction!(&pool, LedgerError, |tx| ledger::restore(tx, &late, 80).await?)
        .await
        .unwrap();
    assert_eq!((outcome.from_grants, outcome.debt_added), (30, 50));
    let credits = ledger::balance(&pool, user).await.unwrap().unwrap();
    assert_eq!((credits.balance, credits.debt), (0, 50));
    let again = db::transaction!(&pool, LedgerError, |tx| ledger::restore(tx, &late, 80).await?)
        .await
        .unwrap();
    assert_eq!((again.from_grants, again.debt_added), (0, 0), "a repeated restore changes nothing");

    // While in debt, nothing new can be reserved...
    let grant_small = fixtures::grant(&pool, user, 20, None).await;
    assert_eq!(remaining(&pool, grant_small).await, 0, "a new grant pays debt first");
    let err = fixtures::reserved_generation(&pool, user, 1).await.unwrap_err();
    assert!(matches!(err, LedgerError::OutstandingDebt { debt: 30 }), "{err:?}");
    // ...until a grant covers it.
    fixtures::grant(&pool, user, 100, None).await;
    let credits = ledger::balance(&pool, user).await.unwrap().unwrap();
    assert_eq!((credits.balance, credits.debt), (70, 0));
    fixtures::reserved_generation(&pool, user, 10).await.unwrap();

    fixtures::set_status(&pool, late.id, "completed", Some(80)).await;
    fixtures::set_status(&pool, other.id, "completed", Some(70)).await;
    let report = ledger::reconcile(&pool, Some(user)).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.mismatches);
}

#[tokio::test]
async fn an_order_number_grants_once_and_never_to_two_users() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    let alice = fixtures::user(&pool).await;
    let bob = fixtures::user(&pool).await;
    let order = |user| NewGrant {
        user_id: user,
        source: GrantSource::OrderPay,
        amount: 500,
        expires_at: None,
        priority: 0,
        effective_at: None,
        order_no: Some("ORD-1001".into()),
    };
    let first = db::transaction!(&pool, LedgerError, |tx| ledger::grant(tx, &order(alice)).await?)
        .await
        .unwrap();
    let second = db::transaction!(&pool, LedgerError, |tx| ledger::grant(tx, &order(alice))
        .await?)
    .await
    .unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.grant_id, second.grant_id);
    assert_eq!(balance(&pool, alice).await, 500);
    let stolen =
        db::transaction!(&pool, LedgerError, |tx| ledger::grant(tx, &order(bob)).await?).await;
    assert!(matches!(stolen, Err(LedgerError::OrderNoConflict { .. })), "{stolen:?}");
    assert_eq!(balance(&pool, bob).await, 0);
}

#[tokio::test]
async fn a_grant_that_is_not_yet_effective_is_not_drawn() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    let user = fixtures::user(&pool).await;
    let future = NewGrant {
        user_id: user,
        source: GrantSource::SystemAdd,
        amount: 100,
        expires_at: None,
        priority: 0,
        effective_at: Some(OffsetDateTime::now_utc() + Duration::days(1)),
        order_no: None,
    };
    db::transaction!(&pool, LedgerError, |tx| ledger::grant(tx, &future).await?).await.unwrap();
    assert_eq!(balance(&pool, user).await, 0);
    let err = fixtures::reserved_generation(&pool, user, 10).await.unwrap_err();
    assert!(matches!(err, LedgerError::InsufficientCredits { balance: 0, held: 0, cost: 10 }));
}
