//! Acting as the provider towards a running stack: waiting on the simulator's tasks, reading what
//! the provider's API says about them, and sending gengate webhooks and failure reports of one's
//! own (real, repeated or forged).

use std::time::Duration;

use gengate_sim::TaskView;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::app::{INTERNAL_TOKEN, TestApp};
use super::eventually;

/// The token in a callback URL (`…token=…`).
pub fn token_of(callback_url: &str) -> String {
    callback_url.split("token=").nth(1).expect("a token in the callback URL").to_owned()
}

/// kie's success callback body for a record, as the simulator sends it.
pub fn kie_success(record: &Value) -> Value {
    json!({"code": 200, "msg": "generation succeeded", "data": record})
}

/// A kie success callback body of `task_id` whose result is `url`.
pub fn kie_success_with_url(task_id: &str, url: &str) -> Value {
    kie_success(&json!({
        "taskId": task_id, "model": "sora-2-text-to-video", "state": "success",
        "resultJson": json!({"resultUrls": [url]}).to_string(),
        "failCode": "", "failMsg": "", "progress": 100,
    }))
}

/// kie's failure callback body for `task_id`.
pub fn kie_failure(task_id: &str) -> Value {
    json!({"code": 501, "msg": "generation failed", "data": {
        "taskId": task_id, "model": "sora-2-text-to-video", "state": "fail",
        "resultJson": null, "failCode": "501", "failMsg": "forged late failure",
    }})
}

impl TestApp {
    /// The simulator's tasks of a generation so far (Kling: by `external_task_id`; kie: by the
    /// generation id in its callback URL), oldest first.
    pub fn sim_tasks_of(&self, id: &str) -> Vec<TaskView> {
        self.sim
            .tasks()
            .into_iter()
            .filter(|task| {
                task.external_task_id.as_deref() == Some(id)
                    || task.callback_url.as_deref().is_some_and(|url| url.contains(id))
            })
            .collect()
    }

    /// Waits until the simulator's task reports `state`.
    pub async fn task_in_state(&self, task_id: &str, state: &str) -> TaskView {
        eventually(&format!("task {task_id} to be {state}"), Duration::from_secs(30), || async {
            self.sim.task(task_id).filter(|task| task.state == state)
        })
        .await
    }

    /// What kie's `recordInfo` says about a task now: the `data` of its callbacks.
    pub async fn kie_record(&self, task_id: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/jobs/recordInfo", self.sim.url()))
            .query(&[("taskId", task_id)])
            .bearer_auth(self.sim.config().kie_api_key)
            .send()
            .await
            .expect("recordInfo");
        let body: Value = response.json().await.expect("recordInfo JSON");
        assert_eq!(body["code"], 200, "{body}");
        body["data"].clone()
    }

    /// What Kling's query says about a task now: its callback body (the bare task object).
    pub async fn kling_object(&self, task: &TaskView) -> Value {
        let response = self
            .http
            .get(format!("{}/v1/videos/{}/{}", self.sim.url(), task.endpoint, task.task_id))
            .bearer_auth(self.sim.kling_token())
            .send()
            .await
            .expect("Kling query");
        let body: Value = response.json().await.expect("Kling JSON");
        assert_eq!(body["code"], 0, "{body}");
        body["data"].clone()
    }

    /// `POST url` with `body` as it is, labelled JSON, and no credentials (as a provider calls
    /// back, or a forger); the status.
    pub async fn post_raw(&self, url: &str, body: impl Into<reqwest::Body>) -> StatusCode {
        self.http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST callback")
            .status()
    }

    /// Reports a generation failed, as the poller does (`POST /api/generation/handle-failure` with
    /// the internal token); the status.
    pub async fn report_failure(&self, id: &str, reason: &str) -> StatusCode {
        self.http
            .post(format!("{}/api/generation/handle-failure", self.api_url))
            .bearer_auth(INTERNAL_TOKEN)
            .json(&json!({"generation_id": id, "reason": reason}))
            .send()
            .await
            .expect("handle-failure")
            .status()
    }
}
