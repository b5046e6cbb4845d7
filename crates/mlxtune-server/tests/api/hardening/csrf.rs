//! Defect 7: with no API keys, a page on another site cannot change anything (no simple
//! cross-site POST, no cross-site WebSocket); the server's own pages and the origins in
//! `server.cors_origins` can.

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;

use super::error_of;
use crate::helpers::*;

async fn ws_with_origin(url: &str, origin: Option<&str>) -> Result<u16, u16> {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, r)) => Ok(r.status().as_u16()),
        Err(WsError::Http(r)) => Err(r.status().as_u16()),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_and_websockets_are_refused_and_the_own_origin_works() {
    let app = spawn_app_tuned(vec![], |s| s.workers.count = 0).await;
    let (s, job) = app.post("/v1/fine_tuning/jobs", &product_config()).await;
    assert_eq!(s, 200, "{job}");
    let id = job["id"].as_str().unwrap();
    let cancel = format!("/v1/fine_tuning/jobs/{id}/cancel");
    let url = format!("{}{cancel}", app.base);

    // A form or `text/plain` fetch needs no preflight: refused by its content type.
    let r = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("x");
    let (s, v) = error_of(&app, r.send().await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    app.openapi.check_response("post", &cancel, s, &v);
    let form = app.client.post(format!("{}/v1/fine_tuning/jobs", app.base));
    let form = form
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=b");
    assert_eq!(form.send().await.unwrap().status(), 415);
    // A body-less cross-site POST: refused by its Origin.
    let r = app.client.post(&url).header("origin", "http://evil.test");
    let (s, v) = error_of(&app, r.send().await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("cross_origin"))
    );
    app.openapi.check_response("post", &cancel, s, &v);
    let (_, now) = app.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(now["status"], "queued", "nothing was cancelled");

    let stream = format!(
        "ws://127.0.0.1:{}/v1/fine_tuning/jobs/{id}/stream",
        app.port
    );
    let own = format!("http://127.0.0.1:{}", app.port);
    assert_eq!(
        ws_with_origin(&stream, Some("http://evil.test")).await,
        Err(403)
    );
    assert_eq!(ws_with_origin(&stream, Some(&own)).await, Ok(101));
    assert_eq!(
        ws_with_origin(&stream, Some("http://dashboard.test")).await,
        Ok(101)
    );
    assert_eq!(
        ws_with_origin(&stream, None).await,
        Ok(101),
        "not a browser"
    );

    // The server's own page (same origin) and a listed origin may.
    let r = app
        .client
        .post(&url)
        .header("origin", &own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, now) = app.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(now["status"], "cancelled");
    let r = app.client.post(format!("{}/v1/fine_tuning/jobs", app.base));
    let r = r
        .header("origin", "http://dashboard.test")
        .json(&product_config());
    assert_eq!(r.send().await.unwrap().status(), 200);
}
