//! Settlement against the simulator: how a provider's word (webhooks, polls, failure reports,
//! deadlines) becomes exactly one transition and exactly one settlement of credits, however often
//! and in whatever order it arrives — seen as a user (`/v1/generations`, `/v1/credits`) and as an
//! operator (`/admin/generations/{id}` with its ledger and audit log, `ledger::reconcile`) sees it.

use std::time::Duration;

mod broker_away;
mod deadlines;
mod debt;
mod duplicates;
mod endings;
mod failure_then_success;
mod forged_webhooks;
mod many_jobs;
mod more_endings;
mod success_then_failure;

/// How long a test waits for the stack to reach what it must (a status, a callback, a row).
const WAIT: Duration = Duration::from_secs(30);
