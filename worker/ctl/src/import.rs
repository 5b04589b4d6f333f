//! `gengatectl import`: bring a legacy credits ledger (seed 001's `credits` table) into gengate,
//! and roll an import run back. The work is `gengate_shared::ledger::import`'s.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use gengate_shared::config::Settings;
use gengate_shared::ledger::import::{self, ImportError, ImportOptions, ImportReport};
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Uuid;

use crate::output::Progress;
use crate::{Refused, connect_db};

/// Arguments of `gengatectl import legacy-credits`.
#[derive(Debug, Clone)]
pub struct LegacyCreditsArgs {
    /// The legacy PostgreSQL URL.
    pub source: String,
    /// A file of legacy user uuids, one a line.
    pub users: Option<std::path::PathBuf>,
    /// Report and roll everything back.
    pub dry_run: bool,
    /// Legacy rows per transaction.
    pub batch: usize,
    /// Print JSON.
    pub json: bool,
}

/// The URL with its password replaced by `***`.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

fn read_users(path: &Path) -> Result<Vec<String>, Refused> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Refused(format!("--users {}: {err}", path.display())))?;
    let users: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if users.is_empty() {
        return Err(Refused(format!("--users {}: no user uuids in the file", path.display())));
    }
    Ok(users)
}

fn lift(err: ImportError) -> anyhow::Error {
    match err {
        ImportError::Refused(message) => Refused(message).into(),
        other => anyhow::Error::new(other),
    }
}

/// `gengatectl import legacy-credits`: imports, checks every user's balance, prints the report.
/// Returns whether every row was imported and every balance matches.
pub async fn legacy_credits(settings: &Settings, args: LegacyCreditsArgs) -> anyhow::Result<bool> {
    if args.batch == 0 {
        return Err(Refused("--batch must be at least 1".into()).into());
    }
    let users = args.users.as_deref().map(read_users).transpose()?;
    let label = redact(&args.source);
    let options: sqlx::postgres::PgConnectOptions = args
        .source
        .parse()
        .map_err(|err| Refused(format!("--source is not a PostgreSQL URL: {err}")))?;
    let source = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("gengatectl-import"))
        .await
        .with_context(|| format!("connecting to the legacy database {label}"))?;
    let target = connect_db(settings).await?;
    let options =
        ImportOptions { users, batch: args.batch, dry_run: args.dry_run, source_label: label };
    let mut progress: Option<Progress> = None;
    let mut seen = 0;
    let report = import::import_legacy(&target, &source, &options, |done, total| {
        let bar = progress.get_or_insert_with(|| Progress::new(total, "importing", args.json));
        for _ in seen..done {
            bar.inc();
        }
        seen = done;
    })
    .await
    .map_err(lift)?;
    if let Some(bar) = &progress {
        bar.finish();
    }
    target.close().await;
    source.close().await;
    print_report(&report, args.json)?;
    Ok(report.is_clean())
}

fn print_report(report: &ImportReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    match report.run_id {
        Some(run) => println!("import run {run}"),
        None => println!("dry run: nothing was written"),
    }
    println!(
        "{} users and {} credits rows imported, {} already imported, {} zero-credit rows ignored",
        report.users_imported, report.rows_imported, report.already_imported, report.zero_rows
    );
    for (title, list) in [("not imported", &report.problems), ("warnings", &report.warnings)] {
        if !list.is_empty() {
            println!("{} {title}:", list.len());
            for p in list {
                println!(
                    "  {:<24} {:<38} {}",
                    p.trans_no.as_deref().unwrap_or("(user)"),
                    p.legacy_user,
                    p.what
                );
            }
        }
    }
    println!("balances checked for {} users", report.users_checked);
    if report.mismatches.is_empty() {
        println!("every balance matches the legacy balance");
    } else {
        println!("{} balance mismatches:", report.mismatches.len());
        println!("  {:<38} {:<36} {:>10} {:>10}", "legacy user", "user", "legacy", "gengate");
        for m in &report.mismatches {
            println!(
                "  {:<38} {:<36} {:>10} {:>10}",
                m.legacy_user, m.user_id, m.legacy, m.gengate
            );
        }
    }
    Ok(())
}

/// `gengatectl import rollback <run>`: removes exactly what the run wrote.
pub async fn rollback(settings: &Settings, run: Uuid, json: bool) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    let report = import::rollback(&pool, run).await.map_err(lift)?;
    pool.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "import run {} rolled back: {} users, {} grants, {} entries deleted, {} voided entries live again",
            report.run_id, report.users, report.grants, report.entries, report.unvoided
        );
    }
    Ok(())
}
