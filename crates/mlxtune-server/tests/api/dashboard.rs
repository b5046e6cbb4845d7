//! The dashboard's needs of the server: its files are public, and a browser's WebSocket
//! authenticates with the key as a subprotocol (`mlxtune.bearer.<key>` beside `mlxtune`,
//! which the server selects and echoes), never with the key in the URL.

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::helpers::*;

async fn connect(
    url: &str,
    protocols: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    tokio_tungstenite::connect_async(req).await
}

fn refused_status(e: WsError) -> u16 {
    match e {
        WsError::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_key_in_the_subprotocol_opens_the_job_stream_and_mlxtune_is_echoed() {
    let app = spawn_app(vec!["s3cret-key".into()]).await;
    let mut cfg = product_config();
    cfg["parameters"]["epochs"] = json!(1);
    let (status, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    assert_eq!(status, 200, "{job}");
    let id = job["id"].as_str().unwrap();
    let url = format!(
        "ws://127.0.0.1:{}/v1/fine_tuning/jobs/{id}/stream?after=0",
        app.port
    );

    let (mut ws, resp) = connect(&url, "mlxtune, mlxtune.bearer.s3cret-key")
        .await
        .expect("the key in the subprotocol is accepted");
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "mlxtune",
        "the server selects the plain subprotocol, never echoing the key"
    );
    let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    app.openapi.check_stream_message(&first);
    assert_eq!(first["type"], "snapshot");
    assert_eq!(first["job"]["id"], id);

    let wrong = connect(&url, "mlxtune, mlxtune.bearer.not-the-key")
        .await
        .unwrap_err();
    assert_eq!(refused_status(wrong), 403);
    let none = connect(&url, "mlxtune").await.unwrap_err();
    assert_eq!(refused_status(none), 401);
    let all = format!("ws://127.0.0.1:{}/v1/fine_tuning/stream", app.port);
    let (_, resp) = connect(&all, "mlxtune.bearer.s3cret-key, mlxtune")
        .await
        .expect("the all-jobs stream takes the key the same way");
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "mlxtune"
    );
}

#[tokio::test]
async fn the_dashboard_and_its_files_are_served_without_a_key_while_the_api_needs_one() {
    let app = spawn_app(vec!["s3cret-key".into()]).await;
    let page = reqwest::get(format!("{}/", app.base)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    let html = page.text().await.unwrap();
    let scripts: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .chain(html.split("href=\"").skip(1))
        .filter_map(|s| s.split('"').next())
        .filter(|s| s.starts_with("/dashboard/"))
        .collect();
    assert!(scripts.contains(&"/dashboard/app.js"), "{html}");
    assert!(scripts.contains(&"/dashboard/style.css"), "{html}");
    for path in scripts {
        let r = reqwest::get(format!("{}{path}", app.base)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let missing = reqwest::get(format!("{}/dashboard/nope.js", app.base))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let api = reqwest::get(format!("{}/v1/fine_tuning/jobs", app.base))
        .await
        .unwrap();
    assert_eq!(api.status(), 401, "the page is public, the API is not");
}
