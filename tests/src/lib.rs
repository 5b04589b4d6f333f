//! gengate's test harness: fresh databases and broker namespaces per test, the real binaries
//! started on free ports, and the provider simulator (`gengate-sim`) standing in for providers.
//!
//! Tests read like scenarios: `let app = TestApp::spawn().await;` then requests and assertions on
//! what a user or an operator would see.

pub mod fixtures;
pub mod harness;
pub mod requests;

pub use harness::app::{ADMIN_TOKEN, INTERNAL_TOKEN, TestApp, TestAppBuilder, TestUser};
pub use harness::broker::TestBroker;
pub use harness::db::TestDatabase;
