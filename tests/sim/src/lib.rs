//! The provider simulator: a real HTTP server on 127.0.0.1 that speaks Kling's and kie.ai's APIs
//! on one port, with fault injection, so that no test ever reaches a real provider.
//!
//! Each task's fate comes from `[[sim:…]]` markers in its prompt or, for unmarked prompts, from
//! configured rates rolled deterministically from a seed (see [`fate`]). Every request is
//! recorded and every task can be inspected, through [`SimHandle`] or the `/_sim/*` admin API.
//! See `docs/simulator.md`.
//!
//! ```no_run
//! use gengate_sim::{SimConfig, Simulator};
//!
//! let sim = Simulator::start(SimConfig::default()).expect("simulator starts");
//! let kling_base_url = sim.url(); // give this to the gateway as the provider's base URL
//! # let _ = kling_base_url;
//! ```

mod admin;
mod callbacks;
pub mod fate;
mod files;
pub mod jwt;
mod kie;
mod kling;
mod lifecycle;
mod state;

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use fate::{ChosenBy, Directives, Fate, Outcome, Rates};
pub use files::{EVIL_ORIGIN, TINY_MP4, TINY_PNG};
pub use kie::webhook_signature as kie_webhook_signature;
pub use state::{
    CallbackAttempt, DIRTY_FAILURE_MESSAGE, FAILURE_MESSAGE, Provider, RecordedRequest,
    StatusChange, TaskView,
};

use state::Sim;

/// Everything the simulator can be told. Every field has a test-friendly default; all but
/// `listen` and `public_url` can change at runtime ([`SimHandle::update_config`],
/// `POST /_sim/config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Where to listen. Default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// The origin of result URLs. Default: `http://{bound address}`.
    pub public_url: Option<String>,
    /// Kling access key: the JWT `iss` it accepts. Default `sim-kling-access-key`.
    pub kling_access_key: String,
    /// Kling secret key: the JWT HS256 key. Default `sim-kling-secret-key`.
    pub kling_secret_key: String,
    /// kie.ai API key (`Authorization: Bearer …`). Default `sim-kie-api-key`.
    pub kie_api_key: String,
    /// When set, kie callbacks carry `X-Webhook-Timestamp` and `X-Webhook-Signature`.
    /// Default none.
    pub kie_webhook_hmac_key: Option<String>,
    /// Wrap Kling callbacks in `{code, message, request_id, data}` instead of sending the bare
    /// task object. Default false.
    pub kling_callback_envelope: bool,
    /// A task's time from creation to its terminal status, unless `[[sim:delay=MS]]` says
    /// otherwise. Default 200 ms.
    pub task_duration_ms: u64,
    /// `fail-then-success`: time from the failure to the success. Default 100 ms.
    pub recovery_delay_ms: u64,
    /// How long a create response is held after the task was recorded, unless
    /// `[[sim:accept-delay=MS]]` says otherwise. Default 0.
    pub accept_delay_ms: u64,
    /// Delivery attempts per callback (the first included). Default 5.
    pub callback_attempts: u32,
    /// Pause between callback attempts. Default 1000 ms.
    pub callback_retry_interval_ms: u64,
    /// Timeout of one callback attempt. Default 5000 ms.
    pub callback_timeout_ms: u64,
    /// Seed of the rate rolls. Default 0.
    pub seed: u64,
    /// Fate probabilities for prompts without fate markers. Default all 0.
    pub rates: Rates,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            kling_access_key: "sim-kling-access-key".to_owned(),
            kling_secret_key: "sim-kling-secret-key".to_owned(),
            kie_api_key: "sim-kie-api-key".to_owned(),
            kie_webhook_hmac_key: None,
            kling_callback_envelope: false,
            task_duration_ms: 200,
            recovery_delay_ms: 100,
            accept_delay_ms: 0,
            callback_attempts: 5,
            callback_retry_interval_ms: 1000,
            callback_timeout_ms: 5000,
            seed: 0,
            rates: Rates::default(),
        }
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `config.listen` and serves on a dedicated thread with its own multi-threaded tokio
    /// runtime, so a test on any runtime flavour (a current-thread `#[tokio::test]` blocked in a
    /// synchronous call included) cannot stall it. The server stops when the handle is dropped.
    pub fn start(config: SimConfig) -> io::Result<SimHandle> {
        gengate_shared::install_crypto_provider();
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("provider-sim")
            .enable_all()
            .build()?;
        let sim = {
            let _context = runtime.enter(); // the callback client belongs to this runtime
            Sim::new(url.clone(), config)
        };
        let app = router(sim.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread =
            std::thread::Builder::new().name("provider-sim".to_owned()).spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => return tracing::error!(%error, "provider-sim cannot listen"),
                    };
                    let server = std::future::IntoFuture::into_future(axum::serve(listener, app));
                    tokio::select! {
                        result = server => if let Err(error) = result {
                            tracing::error!(%error, "provider-sim stopped");
                        },
                        _ = stopped => {}
                    }
                });
                // Lifecycles and deliveries in flight are simply dropped: the simulator is going away.
                runtime.shutdown_background();
            })?;
        tracing::info!(%url, "provider simulator listening");
        Ok(SimHandle { url, addr, sim, shutdown: Some(shutdown), thread: Some(thread) })
    }
}

fn router(sim: Sim) -> Router {
    Router::new()
        .merge(kling::routes())
        .merge(kie::routes())
        .merge(files::routes())
        .merge(admin::routes())
        .layer(axum::middleware::from_fn_with_state(sim.clone(), admin::record))
        .layer(DefaultBodyLimit::max(admin::MAX_BODY_BYTES))
        .with_state(sim)
}

/// A running simulator. Its accessors are synchronous and cheap (they copy out of the shared
/// state under a short lock), so they work from async and sync code alike. Dropping it stops the
/// server.
#[derive(Debug)]
pub struct SimHandle {
    url: String,
    addr: SocketAddr,
    sim: Sim,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`: the base URL of both providers, the admin API and result files.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every provider-facing request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.sim.with(|state| state.requests.clone())
    }

    /// Every task, in creation order.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.sim.with(|state| state.views())
    }

    /// One task, by task id or Kling `external_task_id`.
    pub fn task(&self, id: &str) -> Option<TaskView> {
        self.sim.with(|state| state.find_task(id).map(|task| state.view(task)))
    }

    /// The current config.
    pub fn config(&self) -> SimConfig {
        self.sim.config()
    }

    /// Changes the config; new values apply to tasks created (and callback attempts made) from
    /// now on. Changing `listen` or `public_url` has no effect.
    pub fn update_config(&self, change: impl FnOnce(&mut SimConfig)) {
        self.sim.with(|state| change(&mut state.config));
    }

    /// Forgets all requests, tasks and create attempts and stops their lifecycles.
    pub fn reset(&self) {
        self.sim.reset();
    }

    /// Ends a task now with `outcome` (`Succeed` or `Fail`), calling back as its provider would.
    /// Meant for `[[sim:never]]` tasks. `false`: no such task, or another outcome.
    pub fn finish(&self, id: &str, outcome: Outcome) -> bool {
        let Some(task_id) = self.sim.with(|state| state.find_task(id).map(|t| t.task_id.clone()))
        else {
            return false;
        };
        lifecycle::finish(&self.sim, &task_id, outcome)
    }

    /// A valid Kling JWT for the configured keys, as a well-behaved client makes it.
    pub fn kling_token(&self) -> String {
        let config = self.config();
        jwt::kling_token(&config.kling_access_key, &config.kling_secret_key, state::now_unix())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
