//! The whole stack of one test: a fresh database, a private broker namespace, the real API and
//! worker binaries on free ports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::broker::{TestBroker, amqp_url};
use super::db::TestDatabase;
use super::eventually;
use super::process::{Process, binary, free_address, log_dir};
use super::s3::S3Server;
use gengate_sim::{SimConfig, SimHandle, Simulator};

/// Admin token the test stack is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// Internal (server-to-server) token the test stack is configured with.
pub const INTERNAL_TOKEN: &str = "test-internal-token-0123456789abcdef";

/// How to start a [`TestApp`].
#[derive(Debug, Default)]
pub struct TestAppBuilder {
    workers: usize,
    env: BTreeMap<String, String>,
    /// Off by default: `spawn` waits for `/readyz` unless a test asks not to.
    skip_ready_wait: bool,
    sim: SimConfig,
    s3: bool,
    /// A cluster's node URLs (`amqp.urls`) and quorum replicas; none: the machine's broker.
    amqp_nodes: Vec<String>,
    quorum_initial_group_size: Option<u32>,
}

impl TestAppBuilder {
    /// Start `n` worker processes (default 0: API only).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Override one setting for every process (`GENGATE__SECTION__KEY`).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    /// Start the provider simulator with this configuration (default: [`SimConfig::default`]
    /// with short delays and fast callback retries).
    pub fn simulator(mut self, config: SimConfig) -> Self {
        self.sim = config;
        self
    }

    /// Polls come only after a minute, so that within a test only webhooks (and the queries that
    /// confirm them) settle a job. (A poll delay is capped at the longest delay tier, hence the
    /// extra tier.)
    pub fn webhook_only(self) -> Self {
        self.env("GENGATE__WORKER__POLL_INTERVALS_MS", "60000,60000")
            .env("GENGATE__AMQP__DELAY_TIERS_MS", "1000,2000,5000,60000")
    }

    /// Keep result files in a real S3-protocol server started for this stack (instead of the
    /// filesystem store under the test's directory).
    pub fn s3_storage(mut self) -> Self {
        self.s3 = true;
        self
    }

    /// Connect every process (and the test's own broker connections) to these RabbitMQ nodes,
    /// a cluster's (`amqp.urls`), instead of the machine's broker, and declare quorum queues with
    /// `quorum_initial_group_size` replicas (`amqp.quorum_initial_group_size`).
    pub fn amqp_nodes(mut self, urls: &[String], quorum_initial_group_size: Option<u32>) -> Self {
        self.amqp_nodes = urls.to_vec();
        self.quorum_initial_group_size = quorum_initial_group_size;
        self
    }

    /// Don't wait for `/readyz` to answer 200 (for tests of an unready stack).
    pub fn without_waiting_for_ready(mut self) -> Self {
        self.skip_ready_wait = true;
        self
    }

    /// Creates the database and namespace and starts the processes.
    pub async fn spawn(self) -> TestApp {
        gengate_shared::install_crypto_provider();
        let db = TestDatabase::create().await;
        // A test may set tiers of its own; the broker must know them to clean up every queue.
        let broker = TestBroker::on_nodes(
            self.env
                .get("GENGATE__AMQP__DELAY_TIERS_MS")
                .map_or(super::broker::TEST_DELAY_TIERS_MS, String::as_str),
            &self.amqp_nodes,
            self.quorum_initial_group_size,
        );
        let sim = Simulator::start(self.sim).expect("start the provider simulator");
        let run_id = Uuid::now_v7().simple().to_string();
        let log_dir = log_dir(&run_id);

        let mut env = BTreeMap::new();
        env.insert("GENGATE__DATABASE__URL".to_owned(), db.url().to_owned());
        // Small pools: several tests, each with an API and workers, share one PostgreSQL server.
        env.insert("GENGATE__DATABASE__MAX_CONNECTIONS".to_owned(), "4".to_owned());
        // …and on a busy two-core machine a request may wait a while for one of them.
        env.insert("GENGATE__DATABASE__ACQUIRE_TIMEOUT_MS".to_owned(), "30000".to_owned());
        env.insert("GENGATE__AMQP__URL".to_owned(), amqp_url());
        env.insert("GENGATE__AMQP__PREFIX".to_owned(), broker.prefix().to_owned());
        if !self.amqp_nodes.is_empty() {
            env.insert("GENGATE__AMQP__URLS".to_owned(), self.amqp_nodes.join(","));
        }
        if let Some(size) = self.quorum_initial_group_size {
            env.insert("GENGATE__AMQP__QUORUM_INITIAL_GROUP_SIZE".to_owned(), size.to_string());
        }
        // The API's address is chosen before it starts: callback URLs and file links are built
        // from it (`api.public_base_url`), by the workers and by the API itself.
        // With `api.tls_cert_file` set, the API serves HTTPS only (its operations listener stays
        // plain HTTP).
        let api_scheme =
            if self.env.contains_key("GENGATE__API__TLS_CERT_FILE") { "https" } else { "http" };
        let api_address = free_address();
        env.insert("GENGATE__API__LISTEN".to_owned(), api_address.clone());
        env.insert(
            "GENGATE__API__PUBLIC_BASE_URL".to_owned(),
            format!("{api_scheme}://{api_address}"),
        );
        env.insert("GENGATE__API__OPS_LISTEN".to_owned(), "127.0.0.1:0".to_owned());
        // Tests send bad credentials on purpose, many from one address; the security suite
        // sets its own limit to test it.
        env.insert("GENGATE__LIMITS__AUTH_FAILURE_BURST".to_owned(), "100000".to_owned());
        env.insert("GENGATE__WORKER__LISTEN".to_owned(), "127.0.0.1:0".to_owned());
        env.insert("GENGATE__API__ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned());
        env.insert("GENGATE__API__INTERNAL_TOKEN".to_owned(), INTERNAL_TOKEN.to_owned());
        env.insert("GENGATE__WEBHOOK__SECRET".to_owned(), "test-webhook-secret".to_owned());
        // Providers are the simulator; its result files are served over plain http on loopback,
        // so exactly its origin is allowlisted (the production default stays https-only).
        let sim_url = sim.url().trim_end_matches('/').to_owned();
        let defaults = SimConfig::default();
        env.insert("GENGATE__PROVIDERS__KLING__BASE_URL".to_owned(), sim_url.clone());
        env.insert(
            "GENGATE__PROVIDERS__KLING__ACCESS_KEY".to_owned(),
            defaults.kling_access_key.clone(),
        );
        env.insert(
            "GENGATE__PROVIDERS__KLING__SECRET_KEY".to_owned(),
            defaults.kling_secret_key.clone(),
        );
        env.insert("GENGATE__PROVIDERS__KIE__BASE_URL".to_owned(), sim_url.clone());
        env.insert("GENGATE__PROVIDERS__KIE__API_KEY".to_owned(), defaults.kie_api_key.clone());
        env.insert("GENGATE__WEBHOOK__ALLOWED_RESULT_ORIGINS".to_owned(), sim_url);
        // Tests want answers in seconds, not minutes.
        env.insert("GENGATE__WORKER__POLL_INTERVALS_MS".to_owned(), "1000,1000".to_owned());
        env.insert("GENGATE__WORKER__LATE_POLL_INTERVAL_MS".to_owned(), "1000".to_owned());
        env.insert("GENGATE__WORKER__SWEEP_INTERVAL_MS".to_owned(), "1000".to_owned());
        env.insert(
            "GENGATE__AMQP__DELAY_TIERS_MS".to_owned(),
            super::broker::TEST_DELAY_TIERS_MS.to_owned(),
        );
        // Client webhooks go to receivers on loopback over plain http, and are retried within
        // seconds (the security tests turn the address rules back on).
        env.insert("GENGATE__CLIENT_WEBHOOKS__ALLOW_HTTP".to_owned(), "true".to_owned());
        env.insert(
            "GENGATE__CLIENT_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES".to_owned(),
            "true".to_owned(),
        );
        env.insert(
            "GENGATE__CLIENT_WEBHOOKS__RETRY_SCHEDULE_MS".to_owned(),
            "500,1000,1000".to_owned(),
        );
        env.insert("GENGATE__CLIENT_WEBHOOKS__TIMEOUT_MS".to_owned(), "3000".to_owned());
        env.insert("GENGATE__CLIENT_WEBHOOKS__SCHEDULE_MS".to_owned(), "200".to_owned());
        env.insert("GENGATE__API__SHUTDOWN_GRACE_MS".to_owned(), "5000".to_owned());
        env.insert("GENGATE__WORKER__SHUTDOWN_GRACE_MS".to_owned(), "5000".to_owned());
        env.insert("GENGATE__TELEMETRY__LOG_FILTER".to_owned(), "info,gengate=debug".to_owned());

        // Result files: a directory of this test's own, or an S3 server of its own.
        let objects = log_dir.join("objects");
        env.insert("GENGATE__STORAGE__PATH".to_owned(), objects.display().to_string());
        let s3 = if self.s3 { Some(S3Server::start().await) } else { None };
        if let Some(s3) = &s3 {
            env.extend(s3.settings().into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
        env.extend(self.env);

        let pool = db.pool().await;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if api_scheme == "https" {
            // The test's client trusts the API's (self-signed) certificate.
            let pem =
                std::fs::read(&env["GENGATE__API__TLS_CERT_FILE"]).expect("read the API cert");
            let cert = reqwest::Certificate::from_pem(&pem).expect("the API cert");
            http = http.add_root_certificate(cert);
        }
        let http = http.build().expect("HTTP client");
        let mut app = TestApp {
            sim,
            api: None,
            api_url: String::new(),
            api_scheme,
            ops_url: String::new(),
            workers: Vec::new(),
            http,
            pool,
            env,
            log_dir,
            s3,
            broker,
            db,
        };
        app.start_api().await;
        for _ in 0..self.workers {
            app.start_worker().await;
        }
        if !self.skip_ready_wait {
            app.wait_ready().await;
        }
        app
    }
}

/// A user of the stack under test and their API key.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// The user's id.
    pub id: String,
    /// An API key of the user.
    pub key: String,
}

/// A worker process and the URL of its health server.
#[derive(Debug)]
pub struct WorkerProcess {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:PORT` of its `/healthz`, `/readyz`, `/metrics`.
    pub url: String,
}

/// A running stack for one test. Dropping it kills the processes, drops the database and deletes
/// the broker namespace; when the test failed, it prints where the process logs are.
#[derive(Debug)]
pub struct TestApp {
    /// The provider simulator (embedded).
    pub sim: SimHandle,
    /// The API process.
    pub api: Option<Process>,
    /// `http://127.0.0.1:PORT` of the API (`https://` when it serves TLS).
    pub api_url: String,
    /// `http` or `https` (`api.tls_cert_file` set).
    api_scheme: &'static str,
    /// `http://127.0.0.1:PORT` of the API's operations listener (`/metrics`).
    pub ops_url: String,
    /// Worker processes.
    pub workers: Vec<WorkerProcess>,
    /// An HTTP client for the test's requests.
    pub http: reqwest::Client,
    /// A pool on the test database, for assertions on rows.
    pub pool: PgPool,
    env: BTreeMap<String, String>,
    log_dir: PathBuf,
    /// The S3 server, for stacks built with [`TestAppBuilder::s3_storage`].
    pub s3: Option<S3Server>,
    // Declared last: dropped after the processes are gone.
    /// The broker namespace.
    pub broker: TestBroker,
    /// The database.
    pub db: TestDatabase,
}

impl TestApp {
    /// The API and no workers, with default settings, ready.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// A builder for other shapes of stack.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// The environment every process of this stack is started with.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Changes one setting for processes started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_owned(), value.to_owned());
    }

    /// Starts (or restarts) the API process and waits until it listens.
    pub async fn start_api(&mut self) {
        let mut api =
            Process::start("api", &binary("gengate-api"), &["serve"], &self.env, &self.log_dir);
        let addrs = api.bound_addrs().await;
        self.api_url = format!("{}://{}", self.api_scheme, addrs[0]);
        self.ops_url = format!("http://{}", addrs[1]);
        self.api = Some(api);
    }

    /// Starts a second API process on the same database and broker (as behind a load balancer),
    /// on free ports; returns it with its URL. Dropping the process stops it.
    pub async fn start_another_api(&self, name: &str) -> (Process, String) {
        let mut env = self.env.clone();
        // The API's address is chosen before it starts: callback URLs and file links are built
        // from it (`api.public_base_url`), by the workers and by the API itself.
        let api_address = free_address();
        env.insert("GENGATE__API__LISTEN".to_owned(), api_address.clone());
        let scheme = self.api_scheme;
        env.insert("GENGATE__API__PUBLIC_BASE_URL".to_owned(), format!("{scheme}://{api_address}"));
        env.insert("GENGATE__API__OPS_LISTEN".to_owned(), "127.0.0.1:0".to_owned());
        let mut api = Process::start(name, &binary("gengate-api"), &["serve"], &env, &self.log_dir);
        let url = format!("{scheme}://{}", api.bound_addr().await);
        (api, url)
    }

    /// Starts one more API process with `settings` on top of this stack's, expecting it to refuse
    /// to start: asserts it exits unsuccessfully within 30 s, and returns what it wrote to stderr.
    pub async fn api_refusing_to_start(&self, settings: &[(&str, &str)]) -> String {
        let mut env = self.env.clone();
        env.insert("GENGATE__API__LISTEN".to_owned(), "127.0.0.1:0".to_owned());
        env.insert("GENGATE__API__OPS_LISTEN".to_owned(), "127.0.0.1:0".to_owned());
        env.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(binary("gengate-api"))
                .arg("serve")
                .env_clear()
                .envs(&env)
                .output(),
        )
        .await
        .expect("the API exits at once")
        .expect("run gengate-api");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "started with {settings:?}: {stderr}");
        stderr
    }

    /// Kills the API (SIGKILL) and starts it again on the same address, so callback URLs stay valid.
    pub async fn restart_api(&mut self, graceful: bool) {
        if let Some(api) = self.api.as_mut() {
            if graceful {
                api.terminate().await;
            } else {
                api.kill().await;
            }
        }
        let address = self.api_url.split_once("://").map_or("", |(_, a)| a).to_owned();
        self.set_env("GENGATE__API__LISTEN", &address);
        let ops = self.ops_url.trim_start_matches("http://").to_owned();
        self.set_env("GENGATE__API__OPS_LISTEN", &ops);
        self.start_api().await;
    }

    /// Starts one more worker and waits until its health server listens.
    pub async fn start_worker(&mut self) -> usize {
        self.start_worker_with(&[]).await
    }

    /// Starts one more worker with some settings of its own (e.g. a database it cannot reach).
    pub async fn start_worker_with(&mut self, overrides: &[(&str, &str)]) -> usize {
        let index = self.workers.len();
        let name = format!("worker{index}");
        let mut env = self.env.clone();
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut process =
            Process::start(&name, &binary("gengate-worker"), &[], &env, &self.log_dir);
        let url = format!("http://{}", process.bound_addr().await);
        self.workers.push(WorkerProcess { process, url });
        index
    }

    /// Waits until the API and every worker answer `/readyz` with 200.
    pub async fn wait_ready(&self) {
        let mut urls = vec![self.api_url.clone()];
        urls.extend(self.workers.iter().filter(|w| w.process.is_running()).map(|w| w.url.clone()));
        for url in urls {
            let http = self.http.clone();
            let readyz = format!("{url}/readyz");
            eventually(&format!("{readyz} to answer 200"), Duration::from_secs(30), || {
                let http = http.clone();
                let readyz = readyz.clone();
                async move {
                    let response = http.get(&readyz).send().await.ok()?;
                    response.status().is_success().then_some(())
                }
            })
            .await;
        }
    }

    /// `GET {api}{path}` without credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.api_url)).send().await.expect("GET")
    }

    /// `POST {api}{path}` with the admin token and a JSON body.
    pub async fn admin_post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.api_url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin POST")
    }

    /// `GET {api}{path}` with the admin token.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.api_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin GET")
    }

    /// `GET {api}{path}` with a user's API key.
    pub async fn user_get(&self, user: &TestUser, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.api_url))
            .bearer_auth(&user.key)
            .send()
            .await
            .expect("GET")
    }

    /// `POST {api}/v1/generations` with a user's API key.
    pub async fn submit(&self, user: &TestUser, body: &serde_json::Value) -> reqwest::Response {
        self.user_post(user, "/v1/generations", body).await
    }

    /// Submits a job and returns its id (asserting the 202).
    pub async fn submit_ok(&self, user: &TestUser, body: &serde_json::Value) -> String {
        let response = self.submit(user, body).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 202, "submit {body}: {text}");
        let generation: serde_json::Value = serde_json::from_str(&text).expect("generation JSON");
        generation["id"].as_str().expect("id").to_owned()
    }

    /// Waits until a generation has `status`, and returns it.
    pub async fn wait_for_status(
        &self,
        user: &TestUser,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let path = format!("/v1/generations/{id}");
        let mut last = serde_json::Value::Null;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let response = self.user_get(user, &path).await;
            if response.status().is_success() {
                last = response.json().await.expect("generation JSON");
                if last["status"] == status {
                    return last;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "generation {id} did not reach {status} within {timeout:?}; last seen: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST {api}{path}` with a user's API key and a JSON body.
    pub async fn user_post(
        &self,
        user: &TestUser,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.api_url))
            .bearer_auth(&user.key)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// A new user with an API key and `credits` credits (a `system_add` grant, if non-zero),
    /// created through the admin API.
    pub async fn create_user(&self, credits: i64) -> TestUser {
        self.create_user_with(credits, serde_json::json!({})).await
    }

    /// [`TestApp::create_user`] with the user created from `user` (`POST /admin/users`'s body,
    /// e.g. `{"max_in_flight": 3}`).
    pub async fn create_user_with(&self, credits: i64, user: serde_json::Value) -> TestUser {
        let response = self.admin_post("/admin/users", user).await;
        assert_eq!(
            response.status(),
            201,
            "create user: {}",
            response.text().await.unwrap_or_default()
        );
        let user: serde_json::Value = response.json().await.expect("user JSON");
        let id = user["id"].as_str().expect("user id").to_owned();
        let response =
            self.admin_post(&format!("/admin/users/{id}/api-keys"), serde_json::json!({})).await;
        assert_eq!(response.status(), 201);
        let key: serde_json::Value = response.json().await.expect("key JSON");
        if credits > 0 {
            let response = self
                .admin_post(
                    &format!("/admin/users/{id}/grants"),
                    serde_json::json!({"source": "system_add", "amount": credits}),
                )
                .await;
            assert_eq!(response.status(), 201);
        }
        TestUser { id, key: key["key"].as_str().expect("key").to_owned() }
    }

    /// The operator's view of a generation (`GET /admin/generations/{id}`): the object with its
    /// whole ledger (`ledger`) and audit log (`events`).
    pub async fn admin_generation(&self, id: &str) -> serde_json::Value {
        let response = self.admin_get(&format!("/admin/generations/{id}")).await;
        assert_eq!(response.status(), 200, "GET /admin/generations/{id}");
        response.json().await.expect("admin generation JSON")
    }

    /// Waits until a generation's audit log has more than `count` rows; returns the operator's
    /// view. For "the message was handled", however it was handled.
    pub async fn events_beyond(&self, id: &str, count: usize) -> serde_json::Value {
        eventually(
            &format!("more than {count} events of {id}"),
            Duration::from_secs(30),
            || async {
                let generation = self.admin_generation(id).await;
                let events = generation["events"].as_array().map_or(0, Vec::len);
                (events > count).then_some(generation)
            },
        )
        .await
    }

    /// The generation (as the admin API shows it) once its result files were copied into storage
    /// and that was recorded in its audit log: after that, nothing adds to the log by itself.
    pub async fn wait_for_archive(&self, id: &str) -> serde_json::Value {
        eventually(&format!("the archive copy of {id}"), Duration::from_secs(30), || async {
            let generation = self.admin_generation(id).await;
            let events = generation["events"].as_array().cloned().unwrap_or_default();
            events.iter().any(|e| e["cause"] == "archive").then_some(generation)
        })
        .await
    }

    /// The simulator's task of a generation (Kling: by `external_task_id`; kie: by the generation
    /// id in its callback URL), once a worker created it.
    pub async fn sim_task(&self, id: &str) -> gengate_sim::TaskView {
        eventually(&format!("the provider task of {id}"), Duration::from_secs(30), || async {
            self.sim_tasks_of(id).into_iter().next()
        })
        .await
    }

    /// The provider's URLs of a generation's videos as recorded at completion (what clients get
    /// until a file is archived, and what the audit trail keeps after).
    pub async fn source_urls(&self, id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT url FROM generation_videos WHERE generation_id = $1::uuid ORDER BY quality",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .expect("source URLs")
    }

    /// `POST url` with a JSON body and no credentials (as a provider calls back); the status.
    pub async fn post_json(&self, url: &str, body: &serde_json::Value) -> reqwest::StatusCode {
        self.http.post(url).json(body).send().await.expect("POST").status()
    }

    /// Messages waiting in each work queue (by suffix: `jobs`, `events`, …) and in the delay
    /// queues (`delay`); `None` while the broker cannot tell (a queue that cannot be counted is
    /// not taken for empty).
    pub async fn queue_depths(&self) -> Option<BTreeMap<&'static str, u32>> {
        use gengate_shared::queue::WorkQueue;
        let mut depths = BTreeMap::new();
        let channel = async { self.broker.broker().await.channel().await }.await.ok()?;
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let topology = self.broker.topology();
        let mut names: Vec<(&'static str, String)> =
            WorkQueue::ALL.iter().map(|q| (q.suffix(), topology.queue(*q))).collect();
        for tier in topology.delay_tiers() {
            names.push(("delay", topology.delay_queue(*tier)));
        }
        for (label, name) in names {
            let q = channel.queue_declare(name.into(), passive, Default::default()).await.ok()?;
            *depths.entry(label).or_default() += q.message_count();
        }
        Some(depths)
    }

    /// Waits until the outbox relay has published (and deleted) every message in the outbox.
    pub async fn job_messages_published(&self) {
        eventually("the outbox relayed", Duration::from_secs(30), || async {
            let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&self.pool)
                .await
                .expect("count the outbox");
            (unsent == 0).then_some(())
        })
        .await;
    }

    /// The job messages of a stack without workers, counted per generation id: once the outbox
    /// relay has published everything (and deleted it from the outbox), every message is on the
    /// jobs queue, and they are taken off it here.
    pub async fn job_messages(&self) -> BTreeMap<String, usize> {
        self.job_messages_published().await;
        let queue = self.broker.topology().queue(gengate_shared::queue::WorkQueue::Jobs);
        let mut counts = BTreeMap::new();
        for message in self.broker.drain(&queue).await {
            let id = message["generation_id"].as_str().expect("a job message names its job");
            *counts.entry(id.to_owned()).or_default() += 1;
        }
        counts
    }

    /// Asserts that the ledger reconciles: every grant, generation, user debt and hold adds up.
    pub async fn assert_reconciled(&self) {
        let report = gengate_shared::ledger::reconcile(&self.pool, None).await.expect("reconcile");
        assert!(report.is_clean(), "the ledger does not reconcile: {:?}", report.mismatches);
    }

    /// Runs `gengatectl args…` and parses its standard output as JSON (asserting it exits 0).
    pub async fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.ctl(args).await;
        assert!(
            output.status.success(),
            "gengatectl {args:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "gengatectl {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Runs `gengatectl args…` against this stack and returns its output.
    pub async fn ctl(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(binary("gengatectl"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&self.env)
            .output()
            .await
            .expect("run gengatectl")
    }

    /// The directory holding this stack's process logs.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\n--- process logs of the failed test: {} ---", self.log_dir.display());
            let processes = self.api.iter().chain(self.workers.iter().map(|w| &w.process));
            for process in processes {
                eprintln!(
                    "--- {} (last 30 lines) ---\n{}",
                    process.log_path().display(),
                    process.log_tail(30)
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}
