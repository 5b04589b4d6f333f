//! What a user sees of their credits (`GET /v1/credits`).

use serde_json::Value;

use super::app::{TestApp, TestUser};

impl TestApp {
    /// The user's `GET /v1/credits` answer: balance, held, available, debt, grants (asserting 200).
    pub async fn credits_view(&self, user: &TestUser) -> Value {
        let response = self.user_get(user, "/v1/credits").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("credits JSON")
    }

    /// `(balance, debt)` as the user sees them (asserting 200).
    pub async fn credits(&self, user: &TestUser) -> (i64, i64) {
        let body = self.credits_view(user).await;
        (body["balance"].as_i64().expect("balance"), body["debt"].as_i64().expect("debt"))
    }

    /// The balance as the user sees it (asserting 200).
    pub async fn balance(&self, user: &TestUser) -> i64 {
        self.credits_view(user).await["balance"].as_i64().expect("balance")
    }
}
