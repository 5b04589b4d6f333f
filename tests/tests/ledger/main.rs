//! The credits ledger against real PostgreSQL: scenarios, concurrency, and a model-based property
//! test. These call `gengate_shared::ledger` directly; the HTTP side is in the e2e tests.

mod concurrency;
mod model;
mod scenarios;
