//! Users, keys, credits and generations from the command line, through the same functions the
//! admin API uses.

use anyhow::Context;
use gengate_shared::accounts::{self, AccountError, NewUser};
use gengate_shared::config::Settings;
use gengate_shared::db;
use gengate_shared::generation::callback_token::CallbackKeys;
use gengate_shared::generation::operator::{self, OperatorOutcome};
use gengate_shared::generation::store;
use gengate_shared::ids::{ApiKeyId, GenerationId, UserId};
use gengate_shared::kling_compat;
use gengate_shared::ledger::{self, GrantSource, LedgerError, NewGrant, TimelineQuery};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::output::{self, Table, rfc3339};
use super::{Refused, connect_db};

/// `gengatectl users create`.
pub async fn create_user(settings: &Settings, new: NewUser, json: bool) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    let accounts = &settings.accounts;
    let user =
        db::transaction!(&pool, AccountError, |tx| accounts::create_user(tx, &new, accounts)
            .await?)
        .await
        .map_err(|err| match err {
            AccountError::EmailTaken(email) => {
                Refused(format!("a user with email {email} already exists")).into()
            }
            other => anyhow::Error::from(other),
        })?;
    if json {
        return output::json(&user);
    }
    println!("created user {}", user.id);
    if accounts.new_user_credits > 0 {
        println!("granted {} new_user credits", accounts.new_user_credits);
    }
    Ok(())
}

/// `gengatectl keys create USER`.
pub async fn create_key(
    settings: &Settings,
    user: UserId,
    name: Option<String>,
    kling: bool,
    json: bool,
) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    require_user(&pool, user).await?;
    if kling {
        let keys = CallbackKeys::required(&settings.webhook).map_err(anyhow::Error::msg)?;
        let mut tx = pool.begin().await?;
        let key = accounts::create_api_key(&mut *tx, user, name.as_deref()).await?;
        let pair = kling_compat::issue(&mut *tx, &keys, key.id).await?;
        tx.commit().await?;
        if json {
            let mut answer = serde_json::to_value(&key)?;
            answer["kling_access_key"] = json!(pair.access_key);
            answer["kling_secret_key"] = json!(pair.secret_key);
            return output::json(&answer);
        }
        println!(
            "API key for user {user} (shown once; only its hash is stored):\n{}\n\
             Kling access key: {}\nKling secret key (shown once; never stored): {}",
            key.key, pair.access_key, pair.secret_key
        );
        return Ok(());
    }
    let key = accounts::create_api_key(&pool, user, name.as_deref()).await?;
    if json {
        return output::json(&key);
    }
    println!("API key for user {user} (shown once; only its hash is stored):\n{}", key.key);
    Ok(())
}

/// `gengatectl keys list`.
pub async fn list_keys(settings: &Settings, user: UserId, json: bool) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    require_user(&pool, user).await?;
    let keys = accounts::list_api_keys(&pool, user).await?;
    if json {
        return output::json(&keys);
    }
    if keys.is_empty() {
        println!("user {user} has no API keys");
        return Ok(());
    }
    let mut table = Table::new(&["id", "prefix", "name", "created", "last used", "revoked"]);
    let when = |t: Option<OffsetDateTime>| t.map_or_else(|| "-".to_owned(), rfc3339);
    for key in keys {
        table.row(vec![
            key.id.to_string(),
            key.prefix,
            key.name.unwrap_or_default(),
            rfc3339(key.created_at),
            when(key.last_used_at),
            when(key.revoked_at),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// `gengatectl keys revoke`: the key stops working in every API process within a second.
pub async fn revoke_key(settings: &Settings, key: ApiKeyId, json: bool) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    let revoked = db::transaction!(&pool, sqlx::Error, |tx| {
        accounts::revoke_api_key(tx, None, key).await?
    })
    .await?
    .ok_or_else(|| Refused(format!("no API key {key}")))?;
    if json {
        return output::json(&revoked);
    }
    println!(
        "revoked API key {} ({}) of user {} at {}",
        revoked.id,
        revoked.prefix,
        revoked.user_id,
        revoked.revoked_at.map(rfc3339).unwrap_or_default()
    );
    Ok(())
}

/// What `gengatectl credits grant` grants.
#[derive(Debug)]
pub struct GrantArgs {
    /// The user.
    pub user: UserId,
    /// Credits.
    pub amount: i64,
    /// `system_add` (default), `order_pay` or `new_user`.
    pub source: String,
    /// When the credits stop counting.
    pub expires_at: Option<OffsetDateTime>,
    /// The payment's order number (order_pay).
    pub order_no: Option<String>,
    /// Lower is drawn first.
    pub priority: i32,
}

/// `gengatectl credits grant USER AMOUNT`.
pub async fn grant(settings: &Settings, args: GrantArgs, json: bool) -> anyhow::Result<()> {
    let source: GrantSource = args.source.parse().map_err(|_| {
        Refused(format!("--source {} is not one of system_add, order_pay, new_user", args.source))
    })?;
    if args.amount <= 0 {
        return Err(Refused(format!(
            "the amount must be a positive number of credits, not {}",
            args.amount
        ))
        .into());
    }
    if (source == GrantSource::OrderPay) != args.order_no.is_some() {
        return Err(
            Refused("--order-no is required for (and only for) --source order_pay".into()).into()
        );
    }
    let pool = connect_db(settings).await?;
    require_user(&pool, args.user).await?;
    let new = NewGrant {
        user_id: args.user,
        source,
        amount: args.amount,
        expires_at: args.expires_at,
        priority: args.priority,
        effective_at: None,
        order_no: args.order_no,
    };
    let outcome = db::transaction!(&pool, LedgerError, |tx| ledger::grant(tx, &new).await?).await?;
    if json {
        return output::json(
            &json!({"grant_id": outcome.grant_id, "created": outcome.created, "debt_settled": outcome.debt_settled}),
        );
    }
    if outcome.created {
        println!(
            "granted {} credits to user {} (grant {})",
            args.amount, args.user, outcome.grant_id
        );
    } else {
        println!("order already granted: grant {} (nothing added)", outcome.grant_id);
    }
    if outcome.debt_settled > 0 {
        println!("{} credits of it paid outstanding debt", outcome.debt_settled);
    }
    Ok(())
}

/// `gengatectl credits show USER`: balance, grants, recent timeline.
pub async fn show_credits(
    settings: &Settings,
    user: UserId,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    let balance =
        ledger::balance(&pool, user).await?.ok_or_else(|| Refused(format!("no user {user}")))?;
    let timeline =
        ledger::timeline(&pool, user, TimelineQuery { limit, cursor: None, include_voided: true })
            .await?;
    if json {
        return output::json(&json!({"credits": balance, "timeline": timeline.data}));
    }
    println!("user {user}: balance {} credits, debt {}", balance.balance, balance.debt);
    let mut grants =
        Table::new(&["GRANT", "SOURCE", "AMOUNT", "REMAINING", "EXPIRES", "PRIORITY", "STATE"]);
    for g in &balance.grants {
        let state = if g.expired {
            "expired"
        } else if g.effective_at > OffsetDateTime::now_utc() {
            "not yet effective"
        } else {
            "usable"
        };
        let expires = g.expires_at.map_or_else(|| "never".to_owned(), rfc3339);
        grants.row(vec![
            g.id.to_string(),
            g.source.clone(),
            g.amount.to_string(),
            g.remaining.to_string(),
            expires,
            g.priority.to_string(),
            state.into(),
        ]);
    }
    if grants.is_empty() {
        println!("\nno grant holds credits");
    } else {
        println!("\n{}", grants.render());
    }
    let mut entries = Table::new(&["WHEN", "TYPE", "AMOUNT", "GENERATION", "VOIDED"]);
    for e in &timeline.data {
        let voided = match (&e.voided_at, &e.voided_reason) {
            (Some(_), Some(reason)) => format!("voided: {reason}"),
            (Some(_), None) => "voided".into(),
            _ => String::new(),
        };
        let generation = e.generation_id.map(|g| g.to_string()).unwrap_or_default();
        entries.row(vec![
            rfc3339(e.created_at),
            e.trans_type.clone(),
            e.amount.to_string(),
            generation,
            voided,
        ]);
    }
    println!("\nlatest {} entries (voided included):\n{}", timeline.data.len(), entries.render());
    Ok(())
}

/// `gengatectl generation show ID`: status, params, ledger entries (voided too), audit log.
pub async fn show_generation(
    settings: &Settings,
    id: GenerationId,
    json: bool,
) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    let detail =
        store::detail(&pool, id).await?.ok_or_else(|| Refused(format!("no generation {id}")))?;
    if json {
        return output::json(&detail);
    }
    let store::GenerationDetail { generation: view, ledger: entries, events } = detail;
    println!("generation {id}");
    println!(
        "  status    {}{}",
        view.status,
        view.failure.as_ref().map(|f| format!(" ({}: {})", f.code, f.message)).unwrap_or_default()
    );
    println!(
        "  model     {} / {} ({}), cost {}, charged {}",
        view.model, view.mode, view.billing, view.cost, view.charged
    );
    println!("  created   {}", rfc3339(view.created_at));
    if let Some(at) = view.completed_at {
        println!("  ended     {}", rfc3339(at));
    }
    println!("  params    {}", view.params);
    if let Some(result) = &view.result {
        for v in &result.videos {
            println!("  video     {} ({})", v.file.url, v.quality);
        }
        for i in &result.images {
            println!("  image     {}", i.url);
        }
    }
    let mut ledger_rows = Table::new(&["WHEN", "TYPE", "AMOUNT", "GRANT", "VOIDED"]);
    for e in &entries {
        let grant = e.grant_id.map_or_else(|| "(debt)".to_owned(), |g| g.to_string());
        let voided = e.voided_reason.clone().map(|r| format!("voided: {r}")).unwrap_or_default();
        ledger_rows.row(vec![
            rfc3339(e.created_at),
            e.trans_type.clone(),
            e.amount.to_string(),
            grant,
            voided,
        ]);
    }
    println!("\nledger:\n{}", ledger_rows.render());
    let mut log = Table::new(&["WHEN", "CAUSE", "FROM", "TO", "DETAIL"]);
    for e in &events {
        let to = e.to_status.map_or_else(|| "(recorded only)".to_owned(), |s| s.to_string());
        let detail = e.detail.as_ref().map(|d| d.to_string()).unwrap_or_default();
        log.row(vec![
            rfc3339(e.created_at),
            e.cause.clone(),
            e.from_status.map(|s| s.to_string()).unwrap_or_default(),
            to,
            detail,
        ]);
    }
    println!("\nevents:\n{}", log.render());
    Ok(())
}

/// `gengatectl generation fail|refund ID --reason`.
pub async fn intervene(
    settings: &Settings,
    id: GenerationId,
    reason: &str,
    refund: bool,
    json: bool,
) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        return Err(Refused("--reason must say why (it goes into the audit log)".into()).into());
    }
    let pool = connect_db(settings).await?;
    let outcome = db::transaction!(&pool, LedgerError, |tx| {
        if refund {
            operator::refund(tx, id, reason).await?
        } else {
            operator::fail(tx, id, reason).await?
        }
    })
    .await?;
    let action = if refund { "refund" } else { "fail" };
    if json {
        let body = match &outcome {
            OperatorOutcome::Done { refunded } => {
                json!({"generation_id": id, "action": action, "changed": true, "refunded": refunded})
            }
            OperatorOutcome::Unchanged { status } => {
                json!({"generation_id": id, "action": action, "changed": false, "status": status})
            }
            OperatorOutcome::NotFound => return Err(Refused(format!("no generation {id}")).into()),
        };
        return output::json(&body);
    }
    match outcome {
        OperatorOutcome::Done { refunded } => {
            println!("{action}: generation {id} done; {refunded} credits returned")
        }
        OperatorOutcome::Unchanged { status } => {
            println!("{action}: nothing to do, generation {id} is {status} (recorded in its log)")
        }
        OperatorOutcome::NotFound => return Err(Refused(format!("no generation {id}")).into()),
    }
    Ok(())
}

async fn require_user(pool: &PgPool, user: UserId) -> anyhow::Result<()> {
    accounts::find_user(pool, user)
        .await
        .context("reading the user")?
        .ok_or_else(|| Refused(format!("no user {user}")))?;
    Ok(())
}
