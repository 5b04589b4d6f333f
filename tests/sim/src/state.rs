//! What the simulator remembers: its live config, every request it received, every task it
//! created. One lock over all of it, never held across an `.await`, so handlers, the task
//! lifecycles and the test-side handle always see one consistent picture.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::AbortHandle;

use super::SimConfig;
use super::fate::Fate;
use super::{kie, kling};

/// The shared context every handler and background task holds.
#[derive(Debug, Clone)]
pub(crate) struct Sim {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base_url: String,
    http: reqwest::Client,
    state: Mutex<State>,
}

impl Sim {
    pub(crate) fn new(base_url: String, config: SimConfig) -> Self {
        let http = reqwest::Client::builder()
            // Callback URLs are the gateway's own: never follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the callback HTTP client builds (crypto provider installed)");
        let state = Mutex::new(State { config, ..State::default() });
        Self { inner: Arc::new(Inner { base_url, http, state }) }
    }

    /// Runs `f` under the lock. A panic elsewhere must not wedge the simulator, hence the poison
    /// recovery: the state is plain data and stays usable.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    pub(crate) fn config(&self) -> SimConfig {
        self.with(|state| state.config.clone())
    }

    /// `http://127.0.0.1:PORT` (or the configured public URL): the origin of result URLs.
    pub(crate) fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Spawns background work (a lifecycle, a callback deliverer) that `reset` can cancel.
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(work).abort_handle();
        self.with(|state| {
            state.background.retain(|handle| !handle.is_finished());
            state.background.push(handle);
        });
    }

    pub(crate) fn reset(&self) {
        let background = self.with(|state| {
            let config = state.config.clone();
            let background = std::mem::take(&mut state.background);
            *state = State { config, ..State::default() };
            background
        });
        for handle in background {
            handle.abort();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) config: SimConfig,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) tasks: HashMap<String, Task>,
    /// Task ids in creation order.
    pub(crate) order: Vec<String>,
    /// Kling `external_task_id` → task id.
    pub(crate) external_ids: HashMap<String, String>,
    /// Create requests seen per logical task key (see [`Task::key`]).
    pub(crate) create_attempts: HashMap<String, u32>,
    pub(crate) background: Vec<AbortHandle>,
    pub(crate) next_request_seq: u64,
}

impl State {
    /// Counts one more create request for a logical task and returns its number (from 1).
    pub(crate) fn count_create_attempt(&mut self, key: &str) -> u32 {
        let attempts = self.create_attempts.entry(key.to_owned()).or_default();
        *attempts += 1;
        *attempts
    }

    pub(crate) fn insert_task(&mut self, task: Task) {
        if let Some(external) = &task.external_task_id {
            self.external_ids.insert(external.clone(), task.task_id.clone());
        }
        self.order.push(task.task_id.clone());
        self.tasks.insert(task.task_id.clone(), task);
    }

    /// A task by its id or its Kling `external_task_id`.
    pub(crate) fn find_task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id).or_else(|| self.tasks.get(self.external_ids.get(id)?))
    }

    pub(crate) fn view(&self, task: &Task) -> TaskView {
        TaskView {
            provider: task.provider,
            endpoint: task.endpoint.clone(),
            task_id: task.task_id.clone(),
            external_task_id: task.external_task_id.clone(),
            model: task.model.clone(),
            prompt: task.prompt.clone(),
            callback_url: task.callback_url.clone(),
            key: task.key.clone(),
            state: task.status().to_owned(),
            fate: task.fate.clone(),
            create_attempts: self.create_attempts.get(&task.key).copied().unwrap_or(0),
            history: task.history.clone(),
            callbacks_queued: task.callbacks_queued,
            callbacks: task.callbacks.clone(),
            created_at_ms: task.created_at_ms,
        }
    }

    pub(crate) fn views(&self) -> Vec<TaskView> {
        self.order.iter().filter_map(|id| self.tasks.get(id)).map(|task| self.view(task)).collect()
    }
}

/// Which wire format a task was created through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Kling's direct API (`/v1/videos/…`).
    Kling,
    /// kie.ai (`/api/v1/jobs/…`).
    Kie,
}

/// Where a task is in its life, independent of provider. Each provider names the phases its own
/// way (`kling::status`, `kie::status`); a callback goes out when that name changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Just created (Kling `submitted`, kie `waiting`).
    Waiting,
    /// Accepted by the scheduler (Kling `submitted`, kie `queuing`).
    Queued,
    /// Generating (Kling `processing`, kie `generating` with a progress percentage).
    Running {
        progress: u8,
    },
    /// An undocumented status (Kling `queueing`, kie `pending_review`).
    Unknown,
    Succeeded,
    Failed,
}

impl Phase {
    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// One task as the simulator holds it.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) provider: Provider,
    /// Kling: the create path's last segment (`text2video`, …); kie: `jobs`.
    pub(crate) endpoint: String,
    pub(crate) task_id: String,
    pub(crate) external_task_id: Option<String>,
    pub(crate) model: String,
    pub(crate) prompt: String,
    pub(crate) callback_url: Option<String>,
    /// The logical task: Kling `external_task_id`, else the callback URL, else the prompt,
    /// prefixed by provider. Create attempts and rate rolls are keyed by it.
    pub(crate) key: String,
    /// The create request body as received.
    pub(crate) request: Value,
    /// Kling's requested `duration` in seconds, as the string it reports back.
    pub(crate) duration: String,
    pub(crate) fate: Fate,
    pub(crate) phase: Phase,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    pub(crate) completed_at_ms: Option<i64>,
    pub(crate) history: Vec<StatusChange>,
    pub(crate) callbacks_queued: u32,
    pub(crate) callbacks: Vec<CallbackAttempt>,
    /// Ended through `finish` (the admin API): its own timeline stops.
    pub(crate) finished_by_hand: bool,
}

/// The failure message of a failed task.
pub const FAILURE_MESSAGE: &str = "simulated failure: the generation did not pass review";

/// The failure message of a `[[sim:dirty-failure]]` task: control characters a database may refuse
/// to store (PostgreSQL text cannot hold NUL) and a log line may be split by.
pub const DIRTY_FAILURE_MESSAGE: &str = "simulated\u{0} failure\u{7}\r\nforged: log line";

impl Task {
    /// A task just created: waiting, stamped now, nothing reported or called back yet. Callers
    /// fill in what their provider's request says.
    pub(crate) fn new(
        provider: Provider,
        task_id: String,
        key: String,
        request: Value,
        fate: Fate,
    ) -> Self {
        let now = now_ms();
        Self {
            provider,
            endpoint: String::new(),
            task_id,
            external_task_id: None,
            model: String::new(),
            prompt: String::new(),
            callback_url: None,
            key,
            request,
            duration: "5".to_owned(),
            fate,
            phase: Phase::Waiting,
            created_at_ms: now,
            updated_at_ms: now,
            completed_at_ms: None,
            history: Vec::new(),
            callbacks_queued: 0,
            callbacks: Vec::new(),
            finished_by_hand: false,
        }
    }

    /// What a failed task's record says about the failure.
    pub(crate) fn failure_message(&self) -> &'static str {
        if super::fate::Directives::parse(&self.prompt).dirty_failure {
            DIRTY_FAILURE_MESSAGE
        } else {
            FAILURE_MESSAGE
        }
    }

    /// The provider's name for the current phase.
    pub(crate) fn status(&self) -> &'static str {
        match self.provider {
            Provider::Kling => kling::status(self.phase),
            Provider::Kie => kie::status(self.phase),
        }
    }
}

/// A status the task reported, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The provider's status name.
    pub status: String,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
}

/// One delivery attempt of one callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAttempt {
    /// The task status the callback reports.
    pub status: String,
    /// Which copy (1–3 for `dup-callback`, else 1).
    pub copy: u32,
    /// 1 for the first try, then up to `callback_attempts`.
    pub attempt: u32,
    /// The receiver's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// The connection error, if it did not.
    pub error: Option<String>,
    /// When the attempt ended, in Unix milliseconds.
    pub at_ms: i64,
}

impl CallbackAttempt {
    /// Whether the receiver accepted it (2xx).
    pub fn delivered(&self) -> bool {
        self.http_status.is_some_and(|status| (200..300).contains(&status))
    }
}

/// A task as the admin API and [`super::SimHandle`] show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Which API created it.
    pub provider: Provider,
    /// Kling create endpoint (`text2video`, …) or `jobs` for kie.
    pub endpoint: String,
    /// The provider's task id.
    pub task_id: String,
    /// Kling's `external_task_id`, if the client sent one.
    pub external_task_id: Option<String>,
    /// The model the client asked for.
    pub model: String,
    /// The prompt (Kling `prompt`, kie `input.prompt`).
    pub prompt: String,
    /// Kling `callback_url` / kie `callBackUrl`.
    pub callback_url: Option<String>,
    /// The logical key create attempts and rates are keyed by.
    pub key: String,
    /// The current status in the provider's words.
    pub state: String,
    /// What was decided for it.
    pub fate: Fate,
    /// Create requests seen for its key, the accepted one included.
    pub create_attempts: u32,
    /// Every status it reported.
    pub history: Vec<StatusChange>,
    /// Callbacks handed to delivery (each `dup-callback` copy counts): decided under the same lock
    /// as the status change, so after a terminal status this number is final.
    pub callbacks_queued: u32,
    /// Every delivery attempt so far.
    pub callbacks: Vec<CallbackAttempt>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
}

/// One HTTP request the simulator received (admin and health requests excepted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Order of arrival, from 1.
    pub seq: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// Query parameters (the last value wins for repeated keys).
    pub query: HashMap<String, String>,
    /// Headers, lower-case names; repeated headers joined with `, `.
    pub headers: HashMap<String, String>,
    /// The body parsed as JSON, if it was JSON.
    pub body: Option<Value>,
    /// The body as text, if it was not JSON but not empty either.
    pub body_text: Option<String>,
    /// The claims of a `Bearer` JWT, unverified: what a Kling client put in its token.
    pub jwt_claims: Option<Value>,
    /// What the simulator answered (None while the response is still pending).
    pub response_status: Option<u16>,
    /// Arrival time, Unix milliseconds.
    pub received_at_ms: i64,
}

pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn now_unix() -> i64 {
    now_ms() / 1000
}
