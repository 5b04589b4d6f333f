//! End-to-end scenarios against the real binaries, real PostgreSQL and real RabbitMQ.
//! One test binary (one link) with a module per area.

mod archive;
mod batching;
mod chaos;
mod client_webhooks;
mod containers;
mod credits;
mod ctl;
mod ctl_webhooks;
mod diagnostics;
mod health;
mod import_legacy;
mod jobs;
mod k8s;
mod kling_compat;
mod lifecycle;
mod observability;
mod openapi;
mod operations;
mod providers;
mod security;
mod serial;
mod serial_cluster;
mod settlement;
mod simulator;
mod submit;
mod tls;
