//! Load generator for the job stream: N WebSocket clients on one URL, each counting
//! messages until the job's terminal status event. Used by `scripts/bench/ws_load.sh`.
//!
//! `cargo run --release -p mlxtune-server --example ws_clients -- URL N [READY_FILE]`
//! prints `{"clients", "connected", "min_messages", "max_messages", "snapshots"}`; once every
//! client has connected it creates READY_FILE (if given), so a measurement can start after
//! the connection phase.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{json, Value};

async fn client(url: String, snapshots: Arc<AtomicU64>, connected: Arc<AtomicU64>) -> Option<u64> {
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.ok()?;
    connected.fetch_add(1, Ordering::Relaxed);
    let (_, mut read) = ws.split();
    let mut n = 0u64;
    while let Some(Ok(msg)) = read.next().await {
        n += 1;
        let Ok(text) = msg.into_text() else { continue };
        // Cheap checks first: only status events and snapshots are parsed.
        if text.contains("\"snapshot\"") {
            snapshots.fetch_add(1, Ordering::Relaxed);
        }
        if text.contains("\"status\"") {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let s = v["data"]["status"].as_str().unwrap_or("");
            if v["type"] == "status" && ["succeeded", "failed", "cancelled"].contains(&s) {
                break;
            }
        }
    }
    Some(n)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: ws_clients URL N"))?;
    let n: usize = args.next().unwrap_or_else(|| "1000".into()).parse()?;
    let ready_file = args.next();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let snapshots = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..n)
            .map(|_| tokio::spawn(client(url.clone(), snapshots.clone(), connected.clone())))
            .collect();
        if let Some(path) = ready_file {
            let connected = connected.clone();
            tokio::spawn(async move {
                while connected.load(Ordering::Relaxed) < n as u64 {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                let _ = std::fs::write(path, "ready\n");
            });
        }
        let mut counts = vec![];
        for t in tasks {
            if let Ok(Some(c)) = t.await {
                counts.push(c);
            }
        }
        println!(
            "{}",
            json!({
                "clients": n,
                "connected": counts.len(),
                "min_messages": counts.iter().min(),
                "max_messages": counts.iter().max(),
                "snapshots": snapshots.load(Ordering::Relaxed),
            })
        );
    });
    Ok(())
}
