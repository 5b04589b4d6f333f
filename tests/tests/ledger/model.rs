//! A model-based property test: random sequences of grant / reserve / confirm / refund / restore /
//! postpaid charge / time travel run against PostgreSQL and against a plain in-memory model of the
//! ledger's rules; after every step the balance, the debt and every grant's remaining credits
//! must agree, and at the end reconcile must be clean.
//!
//! Time travel moves every grant's `effective_at`/`expires_at` into the past instead of moving the
//! clock. Expiries sit at an odd multiple of 500 s and travel happens in whole 1000 s, so a grant is
//! never within minutes of expiring while a case runs, and wall-clock drift cannot decide a step.

use gengate_shared::db;
use gengate_shared::ids::{GrantId, UserId};
use gengate_shared::ledger::{self, GrantSource, LedgerError, LedgerGeneration, NewGrant};
use gengate_tests::TestDatabase;
use gengate_tests::fixtures;
use proptest::prelude::*;
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone)]
enum Step {
    Grant { amount: i64, priority: i32, expires_in: Option<i64>, starts_in: Option<i64> },
    Reserve { cost: i64 },
    Confirm { job: usize, percent: i64 },
    Refund { job: usize },
    Restore { job: usize },
    PostpaidSuccess { cost: i64 },
    TimeTravel { seconds: i64 },
}

/// Net amount per source and that source's newest entry, newest source first.
fn newest_first<S: PartialEq + Copy>(entries: &[(S, i64, u64)]) -> Vec<(S, i64)> {
    let mut sources: Vec<(S, i64, u64)> = Vec::new();
    for (source, amount, seq) in entries {
        match sources.iter_mut().find(|(s, _, _)| s == source) {
            Some(entry) => {
                entry.1 += amount;
                entry.2 = entry.2.max(*seq);
            }
            None => sources.push((*source, *amount, *seq)),
        }
    }
    sources.sort_by_key(|(_, _, seq)| std::cmp::Reverse(*seq));
    sources.into_iter().map(|(source, net, _)| (source, net)).collect()
}

fn step() -> impl Strategy<Value = Step> {
    let thousand_and_half = (1i64..6).prop_map(|k| k * 1000 + 500);
    prop_oneof![
        3 => (1i64..200, 0i32..3, proptest::option::of(thousand_and_half.clone()), proptest::option::weighted(0.2, thousand_and_half))
            .prop_map(|(amount, priority, expires_in, starts_in)| Step::Grant { amount, priority, expires_in, starts_in }),
        4 => (0i64..150).prop_map(|cost| Step::Reserve { cost }),
        2 => (any::<prop::sample::Index>(), 0i64..=100).prop_map(|(i, percent)| Step::Confirm { job: i.index(1 << 16), percent }),
        2 => any::<prop::sample::Index>().prop_map(|i| Step::Refund { job: i.index(1 << 16) }),
        2 => any::<prop::sample::Index>().prop_map(|i| Step::Restore { job: i.index(1 << 16) }),
        1 => (1i64..120).prop_map(|cost| Step::PostpaidSuccess { cost }),
        1 => (1i64..4).prop_map(|k| Step::TimeTravel { seconds: k * 1000 }),
    ]
}

/// The ledger's rules, written as plainly as possible.
#[derive(Debug, Default)]
struct Model {
    /// Seconds travelled so far (the model's clock).
    now: i64,
    grants: Vec<ModelGrant>,
    jobs: Vec<ModelJob>,
    debt: i64,
    /// Live debt settlements: (grant, amount paid (>0) or returned (<0), sequence).
    settlements: Vec<(GrantId, i64, u64)>,
    /// Creation order of entries, for "latest drawn first".
    seq: u64,
}

#[derive(Debug)]
struct ModelGrant {
    id: GrantId,
    remaining: i64,
    priority: i32,
    expires_at: Option<i64>,
    effective_at: i64,
}

#[derive(Debug)]
struct ModelJob {
    generation: LedgerGeneration,
    cost: i64,
    /// Live charges: (grant or debt, amount drawn (>0) or returned (<0), sequence).
    live: Vec<(Option<GrantId>, i64, u64)>,
}

impl Model {
    fn usable(&self, g: &ModelGrant) -> bool {
        g.remaining > 0 && g.effective_at <= self.now && g.expires_at.is_none_or(|e| e > self.now)
    }

    fn balance(&self) -> i64 {
        self.grants.iter().filter(|g| self.usable(g)).map(|g| g.remaining).sum()
    }

    /// Usable grants in consumption order (priority, soonest expiry, none last, oldest).
    fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> =
            (0..self.grants.len()).filter(|i| self.usable(&self.grants[*i])).collect();
        idx.sort_by_key(|i| {
            let g = &self.grants[*i];
            (g.priority, g.expires_at.is_none(), g.expires_at.unwrap_or(0), *i)
        });
        idx
    }

    /// Draws up to `amount`; returns (grant, taken) pairs.
    fn draw(&mut self, amount: i64) -> Vec<(GrantId, i64)> {
        let mut left = amount;
        let mut taken = Vec::new();
        for i in self.order() {
            if left == 0 {
                break;
            }
            let take = left.min(self.grants[i].remaining);
            self.grants[i].remaining -= take;
            left -= take;
            taken.push((self.grants[i].id, take));
        }
        taken
    }

    fn settle_debt(&mut self) {
        if self.debt > 0 {
            for (grant, paid) in self.draw(self.debt) {
                self.debt -= paid;
                self.seq += 1;
                self.settlements.push((grant, paid, self.seq));
            }
        }
    }

    /// Less debt; what grants already paid goes back to them, the latest payer first.
    fn forgive(&mut self, amount: i64) {
        let from_debt = self.debt.min(amount);
        self.debt -= from_debt;
        let mut left = amount - from_debt;
        for (grant, paid) in newest_first(&self.settlements) {
            let give = left.min(paid);
            if give > 0 {
                self.grant_mut(grant).remaining += give;
                self.seq += 1;
                self.settlements.push((grant, -give, self.seq));
                left -= give;
            }
        }
        assert_eq!(left, 0, "only owed or paid debt is forgiven");
    }

    fn grant_mut(&mut self, id: GrantId) -> &mut ModelGrant {
        self.grants.iter_mut().find(|g| g.id == id).expect("known grant")
    }

    fn charge_up_to(&mut self, job: usize, cost: i64) {
        let net: i64 = self.jobs[job].live.iter().map(|(_, a, _)| a).sum();
        let missing = cost - net;
        if missing <= 0 {
            return;
        }
        let taken = self.draw(missing);
        let drawn: i64 = taken.iter().map(|(_, t)| t).sum();
        for (grant, amount) in taken {
            self.seq += 1;
            self.jobs[job].live.push((Some(grant), amount, self.seq));
        }
        if drawn < missing {
            self.seq += 1;
            self.jobs[job].live.push((None, missing - drawn, self.seq));
            self.debt += missing - drawn;
        }
    }

    fn refund(&mut self, job: usize) {
        let live = std::mem::take(&mut self.jobs[job].live);
        let mut forgiven = 0;
        for (source, amount, _) in live {
            match source {
                Some(grant) => self.grant_mut(grant).remaining += amount,
                None => forgiven += amount,
            }
        }
        if forgiven != 0 {
            self.forgive(forgiven);
        }
    }

    fn confirm(&mut self, job: usize, final_cost: i64) {
        let net: i64 = self.jobs[job].live.iter().map(|(_, a, _)| a).sum();
        let mut excess = net - final_cost;
        if excess <= 0 {
            return;
        }
        let mut forgiven = 0;
        for (source, drawn) in newest_first(&self.jobs[job].live) {
            let give = excess.min(drawn);
            if give <= 0 {
                continue;
            }
            if let Some(grant) = source {
                self.grant_mut(grant).remaining += give;
            } else {
                forgiven += give;
            }
            self.seq += 1;
            self.jobs[job].live.push((source, -give, self.seq));
            excess -= give;
        }
        if forgiven > 0 {
            self.forgive(forgiven);
        }
        assert_eq!(excess, 0, "never more back than was charged");
    }
}

async fn run_case(pool: &PgPool, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let user: UserId = fixtures::user(pool).await;
    let mut model = Model::default();
    let at = |offset: i64, travelled: i64| {
        OffsetDateTime::now_utc() + Duration::seconds(offset - travelled)
    };

    for (n, step) in steps.into_iter().enumerate() {
        match step {
            Step::Grant { amount, priority, expires_in, starts_in } => {
                let starts = starts_in.unwrap_or(0);
                let expires = expires_in.map(|e| e + starts);
                let new = NewGrant {
                    user_id: user,
                    source: GrantSource::SystemAdd,
                    amount,
                    expires_at: expires.map(|e| at(model.now + e, model.now)),
                    priority,
                    effective_at: starts_in.map(|s| at(model.now + s, model.now)),
                    order_no: None,
                };
                let outcome = db::transaction!(pool, LedgerError, |tx| ledger::grant(tx, &new)
                    .await?)
                .await
                .unwrap();
                model.grants.push(ModelGrant {
                    id: outcome.grant_id,
                    remaining: amount,
                    priority,
                    expires_at: expires.map(|e| model.now + e),
                    effective_at: model.now + starts,
                });
                model.settle_debt();
            }
            Step::Reserve { cost } => {
                let result = fixtures::reserved_generation(pool, user, cost).await;
                // The model decides first what must happen, on a copy of the debt question.
                let debt_before = model.debt;
                let paid = if debt_before > 0 {
                    let order = model.order();
                    let usable: i64 = order.iter().map(|i| model.grants[*i].remaining).sum();
                    usable.min(debt_before)
                } else {
                    0
                };
                let expected_ok = paid == debt_before && model.balance() - paid >= cost;
                match result {
                    Ok(generation) => {
                        prop_assert!(
                            expected_ok,
                            "step {n}: reserve {cost} succeeded, model says it must fail"
                        );
                        model.settle_debt();
                        let job = model.jobs.len();
                        model.jobs.push(ModelJob { generation, cost, live: Vec::new() });
                        model.charge_up_to(job, cost);
                    }
                    Err(
                        LedgerError::InsufficientCredits { .. }
                        | LedgerError::OutstandingDebt { .. },
                    ) => {
                        prop_assert!(
                            !expected_ok,
                            "step {n}: reserve {cost} failed, model says it must succeed"
                        );
                    }
                    Err(other) => return Err(TestCaseError::fail(format!("step {n}: {other:?}"))),
                }
            }
            Step::Confirm { job, percent } if !model.jobs.is_empty() => {
                let job = job % model.jobs.len();
                let g = model.jobs[job].generation;
                let final_cost = model.jobs[job].cost * percent / 100;
                db::transaction!(pool, LedgerError, |tx| ledger::confirm(tx, &g, final_cost)
                    .await?)
                .await
                .unwrap();
                model.confirm(job, final_cost);
            }
            Step::Refund { job } if !model.jobs.is_empty() => {
                let job = job % model.jobs.len();
                let g = model.jobs[job].generation;
                db::transaction!(pool, LedgerError, |tx| ledger::refund(tx, &g, "model").await?)
                    .await
                    .unwrap();
                model.refund(job);
            }
            Step::Restore { job } if !model.jobs.is_empty() => {
                let job = job % model.jobs.len();
                let (g, cost) = (model.jobs[job].generation, model.jobs[job].cost);
                db::transaction!(pool, LedgerError, |tx| ledger::restore(tx, &g, cost).await?)
                    .await
                    .unwrap();
                model.charge_up_to(job, cost);
            }
            Step::PostpaidSuccess { cost } => {
                let g = fixtures::generation(pool, user, cost, "postpaid").await;
                db::transaction!(pool, LedgerError, |tx| ledger::charge(tx, &g, cost).await?)
                    .await
                    .unwrap();
                let job = model.jobs.len();
                model.jobs.push(ModelJob { generation: g, cost, live: Vec::new() });
                model.charge_up_to(job, cost);
            }
            Step::TimeTravel { seconds } => {
                sqlx::query(
                    "UPDATE credit_grants SET effective_at = effective_at - make_interval(secs => $2),
                                              expires_at = expires_at - make_interval(secs => $2)
                     WHERE user_id = $1",
                )
                .bind(user)
                .bind(seconds as f64)
                .execute(pool)
                .await
                .unwrap();
                model.now += seconds;
            }
            _ => continue,
        }

        let actual = ledger::balance(pool, user).await.unwrap().unwrap();
        prop_assert_eq!(actual.balance, model.balance(), "balance after step {}", n);
        prop_assert_eq!(actual.debt, model.debt, "debt after step {}", n);
        for g in &model.grants {
            prop_assert_eq!(
                fixtures::remaining(pool, g.id).await,
                g.remaining,
                "grant remaining after step {}",
                n
            );
        }
        for job in &model.jobs {
            let net: i64 = job.live.iter().map(|(_, a, _)| a).sum();
            prop_assert_eq!(ledger::net_charge(pool, job.generation.id).await.unwrap(), net);
        }
    }

    // Give each generation the status its net charge corresponds to, then the books must balance.
    for job in &model.jobs {
        let net: i64 = job.live.iter().map(|(_, a, _)| a).sum();
        let (status, final_cost) =
            if net == 0 { ("failed", None) } else { ("completed", Some(net)) };
        fixtures::set_status(pool, job.generation.id, status, final_cost).await;
    }
    let report = ledger::reconcile(pool, Some(user)).await.unwrap();
    prop_assert!(report.is_clean(), "{:?}", report.mismatches);
    Ok(())
}

#[test]
fn the_ledger_behaves_like_its_model() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let pool = runtime.block_on(db.pool());
    let config = ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(step(), 1..40), |steps| {
        runtime.block_on(run_case(&pool, steps))
    });
    runtime.block_on(pool.close());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
