//! Issue 10's attacks and accidents, each a test that failed before its fix: requests that
//! make the server fetch from its own network (ssrf), drive it from another site (csrf),
//! probe for files (probing), hold it up (slow), or get answers in another shape than the
//! JSON error object (errors).

mod csrf;
mod errors;
mod probing;
mod slow;
mod ssrf;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::helpers::*;

/// A file server on loopback that counts the requests it gets: `/data/chat.jsonl` (valid),
/// `/bad.jsonl` (not records), `/big` (`size` bytes with a length), `/big-stream` (the same,
/// chunked, no length).
pub struct FileServer {
    pub port: u16,
    hits: Arc<AtomicUsize>,
}

impl FileServer {
    pub async fn start(size: usize) -> FileServer {
        use axum::routing::get;
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let chat = chat_jsonl();
        let files = axum::Router::new()
            .route("/data/chat.jsonl", get(move || async move { chat }))
            .route("/bad.jsonl", get(|| async { "{\"messages\": 7}\n" }))
            .route("/big", get(move || async move { "x".repeat(size) }))
            .route(
                "/big-stream",
                get(move || async move {
                    let chunks =
                        (0..size / 1000).map(|_| Ok::<_, std::io::Error>("y".repeat(1000)));
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                }),
            )
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    next.run(req)
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, files).await });
        FileServer { port, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The product config training on `data`, queued only (no validation data).
pub fn config_with_data(data: &str) -> Value {
    let mut cfg = product_config();
    cfg["dataset"]["trainingData"] = Value::String(data.into());
    cfg["dataset"]
        .as_object_mut()
        .unwrap()
        .remove("validationData");
    cfg
}

/// The error object of a response, checked against the document's `ErrorBody` (for
/// responses of routes the document cannot name: unknown paths, raw requests).
pub async fn error_of(app: &TestApp, r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("an error body in JSON");
    app.openapi.check_schema("ErrorBody", &body);
    (status, body)
}
