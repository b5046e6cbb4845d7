//! Defect 9: nothing a client sends can hold a request or a connection: the pre-flight is
//! linear in a conversation's length, a FIFO is not read, headers and bodies must arrive in
//! time, and connections are capped.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config_with_data;
use crate::helpers::*;

/// One chat record of `n` messages, user and assistant in turn; `salt` makes it new to the
/// tokenized-data cache.
fn long_conversation(n: usize, salt: &str) -> String {
    let messages: Vec<_> = (0..n)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": format!("turn {i} {salt}")})
        })
        .collect();
    json!({ "messages": messages }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_of_thousands_of_messages_is_checked_in_linear_time() {
    let app = spawn_app_tuned(vec![], |s| s.workers.count = 0).await;
    let salt = uuid_like(&app);
    let mut seconds = vec![];
    for n in [2_000, 8_000] {
        let name = format!("long-{n}.jsonl");
        let record = long_conversation(n, &salt);
        std::fs::write(app.root.join("datasets").join(&name), record).unwrap();
        let start = Instant::now();
        let (s, v) = app
            .post("/v1/fine_tuning/jobs", &config_with_data(&name))
            .await;
        assert_eq!(s, 200, "{v}");
        seconds.push(start.elapsed().as_secs_f64());
    }
    eprintln!(
        "pre-flight of one record: 2k messages {:.2} s, 8k {:.2} s",
        seconds[0], seconds[1]
    );
    // Quadratic work would take 16x as long for 4x the messages (34 s before the fix).
    assert!(seconds[1] < 8.0 * seconds[0].max(0.25), "{seconds:?}");
}

/// Unique to this test run: the test's own directory name.
fn uuid_like(app: &TestApp) -> String {
    app.root.file_name().unwrap().to_string_lossy().into_owned()
}

fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.unwrap().success());
}

/// Submits `cfg`; a request still waiting after 20 s fails the test (after releasing the
/// reader of `fifo` with a writer that closes at once, so the test ends).
async fn submit_beside_fifo(app: &TestApp, cfg: &Value, fifo: &std::path::Path) -> (u16, Value) {
    let post = app.post("/v1/fine_tuning/jobs", cfg);
    let Ok(answer) = tokio::time::timeout(Duration::from_secs(20), post).await else {
        drop(std::fs::OpenOptions::new().write(true).open(fifo));
        panic!("the request waited on the FIFO {}", fifo.display());
    };
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_a_dataset_or_model_file_is_refused_without_reading_it() {
    let app = spawn_app_tuned(vec![], |s| s.workers.count = 0).await;
    let fifo = app.root.join("datasets/pipe.jsonl");
    mkfifo(&fifo);
    let (s, v) = submit_beside_fifo(&app, &config_with_data("pipe.jsonl"), &fifo).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["message"], "`pipe.jsonl` is not a regular file");

    // A model directory whose config.json is a FIFO.
    let model = app.root.join("models/piped");
    copy_dir(&fixture("lfm2"), &model);
    let fifo = model.join("config.json");
    std::fs::remove_file(&fifo).unwrap();
    mkfifo(&fifo);
    let mut cfg = product_config();
    cfg["baseModel"] = json!("piped");
    let (s, v) = submit_beside_fifo(&app, &cfg, &fifo).await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (422, Some("baseModel")),
        "{v}"
    );
    let why = "`config.json` in the model directory is not a regular file";
    assert_eq!(v["error"]["message"], why);
}

/// Reads until the server closes the connection (or `limit` passes); what it sent.
async fn until_closed(conn: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_time_out_and_connections_are_capped() {
    let app = spawn_app_tuned(vec![], |s| {
        s.workers.count = 0;
        s.server.header_read_timeout_secs = 1;
        s.server.body_read_timeout_secs = 1;
        s.server.max_connections = 8;
    })
    .await;
    let addr = format!("127.0.0.1:{}", app.port);

    // A body far shorter than its Content-Length: answered and closed, not held.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n{";
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut conn, Duration::from_secs(10)).await;
    let answer = answer.expect("the connection is closed after the body timeout");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Eight connections with half their headers fill the cap; the next request waits for
    // one to time out, then is served.
    let mut half = vec![];
    for _ in 0..8 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        half.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let waited = start.elapsed();
    assert_eq!(r.status(), 200);
    assert!(
        waited >= Duration::from_millis(500),
        "served at once: no cap ({waited:?})"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    for mut c in half {
        let closed = until_closed(&mut c, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "a half-sent request is closed after the header timeout"
        );
    }
}
