//! Small HTTP servers of a test's own (callback receivers, misbehaving providers) on loopback.

/// Serves `router` on a free port of 127.0.0.1, on the test's runtime, until the runtime ends;
/// returns its base URL (`http://127.0.0.1:PORT`).
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    base
}
