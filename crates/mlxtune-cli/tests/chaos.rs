//! Chaos: real `mlxtune serve` processes killed with SIGKILL during checkpoint writes, a
//! burst of submissions and a pause; stopped with SIGTERM inside a long step; run out of
//! disk. After each: the database opens, every accepted job reaches a final state, every
//! step is recorded once, `latest` names a complete checkpoint.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::service::{
    control, http, http_status, setup, start, start_command, wait_final, Server,
};
use serde_json::{json, Value};

fn job(max_steps: u64, every: u64) -> Value {
    json!({
        "baseModel": "llama-tiny",
        "dataset": { "trainingData": "t.jsonl", "format": "text" },
        "parameters": { "learningRate": 1e-3, "batchSize": 2, "epochs": 1, "sequenceLength": 64 },
        "maxSteps": max_steps,
        "checkpoint": { "everySteps": every, "keepLast": 2 }
    })
}

fn submit(port: u16, cfg: &Value) -> String {
    let (status, j) = http_status(port, "POST", "/v1/fine_tuning/jobs", Some(cfg));
    assert_eq!(status, 200, "{j}");
    j["id"].as_str().unwrap().to_string()
}

fn wait_step(port: u16, id: &str, step: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = http(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
        if j["progress"]["step"].as_i64().unwrap_or(0) >= step {
            return;
        }
        assert!(Instant::now() < deadline, "no progress: {j}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill9(mut server: Server) {
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The steps of a job's metrics series and of its training-update events, in order.
fn recorded_steps(port: u16, id: &str) -> (Vec<u64>, Vec<u64>) {
    let m = http(
        port,
        "GET",
        &format!("/v1/fine_tuning/jobs/{id}/metrics"),
        None,
    );
    let metrics = m["data"].as_array().unwrap().iter();
    let metrics = metrics.map(|s| s["step"].as_u64().unwrap()).collect();
    let e = http(
        port,
        "GET",
        &format!("/v1/fine_tuning/jobs/{id}/events?limit=1000"),
        None,
    );
    let events = e["data"].as_array().unwrap().iter();
    let events = events
        .filter(|e| e["type"] == "mlx_training_update")
        .map(|e| e["data"]["step"].as_u64().unwrap())
        .collect();
    (metrics, events)
}

/// Every step 1..=n once, in order, in the metrics and the events; `latest` names a
/// complete checkpoint and no half-written one is left.
fn assert_whole(port: u16, d: &Path, id: &str, n: u64) {
    let (metrics, events) = recorded_steps(port, id);
    let want: Vec<u64> = (1..=n).collect();
    assert_eq!(metrics, want, "job {id}: every step's metrics once");
    assert_eq!(events, want, "job {id}: every step's event once, in order");
    let ckpts = d.join("data/jobs").join(id).join("checkpoints");
    let latest = std::fs::read_to_string(ckpts.join("latest")).unwrap();
    for f in ["state.json", "trainable.safetensors"] {
        assert!(ckpts.join(latest.trim()).join(f).is_file(), "{latest}/{f}");
    }
    let leftovers: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn kill_9_during_checkpoint_writes_and_a_burst_of_submissions_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (server, port) = start(d);
    // A checkpoint at every step: the kill lands in or near a checkpoint write.
    let first = submit(port, &job(40, 1));
    wait_step(port, &first, 5);
    let accepted = Arc::new(Mutex::new(vec![first]));
    let count = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (accepted, count) = (accepted.clone(), count.clone());
        std::thread::spawn(move || {
            for _ in 0..12 {
                let sent = std::panic::catch_unwind(|| {
                    http_status(port, "POST", "/v1/fine_tuning/jobs", Some(&job(20, 1)))
                });
                match sent {
                    Ok((200, j)) => accepted
                        .lock()
                        .unwrap()
                        .push(j["id"].as_str().unwrap().into()),
                    _ => return,
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while count.load(Ordering::SeqCst) < 4 {
        std::thread::sleep(Duration::from_millis(1));
    }
    kill9(server);
    let _ = burst.join();

    let (server, port) = start(d);
    let list = http(port, "GET", "/v1/fine_tuning/jobs?limit=100", None);
    let ids = list["data"].as_array().unwrap().iter();
    let ids: Vec<String> = ids.map(|j| j["id"].as_str().unwrap().to_string()).collect();
    for id in accepted.lock().unwrap().iter() {
        assert!(ids.contains(id), "accepted job {id} survives the kill");
    }
    for id in &ids {
        let j = wait_final(port, id);
        assert_eq!(j["status"], "succeeded", "{j}");
        let n = if *id == accepted.lock().unwrap()[0] {
            40
        } else {
            20
        };
        assert_whole(port, d, id, n);
    }
    kill9(server);
}

/// Runs SQL on the (stopped) server's database, as the crash left it.
fn sql(d: &Path, statement: &str) {
    let db = d.join("data/mlxtune.sqlite3");
    let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()";
    let out = Command::new("python3")
        .args(["-c", script, db.to_str().unwrap(), statement])
        .output();
    common::succeeded(out.unwrap());
}

#[test]
fn steps_the_database_lost_in_a_crash_are_restored_from_the_run_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (server, port) = start(d);
    let id = submit(port, &job(60, 10));
    wait_step(port, &id, 25);
    kill9(server);
    // The database trails the trainer: the kill came before the worker recorded steps the
    // trainer had written (and checkpointed at step 20 or later).
    sql(
        d,
        &format!("DELETE FROM metrics WHERE job_id = '{id}' AND step > 8; DELETE FROM events WHERE job_id = '{id}' AND step > 8; UPDATE jobs SET step = 8 WHERE id = '{id}';"),
    );
    let (server, port) = start(d);
    let j = wait_final(port, &id);
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_whole(port, d, &id, 60);
    let e = http(
        port,
        "GET",
        &format!("/v1/fine_tuning/jobs/{id}/events?limit=1000"),
        None,
    );
    let said = e["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"].as_str().unwrap().starts_with("recovered: "));
    assert!(said, "the recovery is an event on the job");
    kill9(server);
}

#[test]
fn kill_9_during_a_pause_leaves_a_job_that_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (server, port) = start(d);
    // Long enough that a loaded machine cannot finish it between the poll and the pause.
    let id = submit(port, &job(400, 5));
    wait_step(port, &id, 7);
    control(port, &id, "pause");
    kill9(server);
    let (server, port) = start(d);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = http(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
        match j["status"].as_str().unwrap() {
            "paused" => {
                http(
                    port,
                    "POST",
                    &format!("/v1/fine_tuning/jobs/{id}/resume"),
                    None,
                );
            }
            "succeeded" => break,
            "queued" | "running" => {}
            other => panic!("{other}: {j}"),
        }
        assert!(Instant::now() < deadline, "not finished: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_whole(port, d, &id, 400);
    kill9(server);
}

/// A dataset whose micro-batches take a while: a step of 1024 of them takes minutes.
fn long_step_job(d: &Path) -> Value {
    let text = "the quick brown fox jumps over the lazy dog again and again ".repeat(40);
    let lines: Vec<String> = (0..8)
        .map(|_| json!({ "text": text }).to_string())
        .collect();
    std::fs::write(d.join("datasets/long.jsonl"), lines.join("\n")).unwrap();
    json!({
        "baseModel": "llama-tiny",
        "dataset": { "trainingData": "long.jsonl", "format": "text" },
        "parameters": { "learningRate": 1e-3, "batchSize": 16, "epochs": 1, "sequenceLength": 256 },
        "gradientAccumulationSteps": 1024,
        "maxSteps": 2
    })
}

fn wait_status(port: u16, id: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let j = http(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
        if j["status"] == want {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "not {want} within {within:?}: {j}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_and_cancel_inside_a_long_step_are_honoured_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (mut server, port) = start(d);
    let id = submit(port, &long_step_job(d));
    wait_status(port, &id, "running", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert!(term.unwrap().success());
    let exit = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "SIGTERM not honoured in a long step"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");

    let (server, port) = start(d);
    let j = wait_status(port, &id, "running", Duration::from_secs(60));
    assert_eq!(j["progress"]["step"], 0, "still inside its first step");
    std::thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    control(port, &id, "cancel");
    wait_status(port, &id, "cancelled", Duration::from_secs(15));
    assert!(asked.elapsed() < Duration::from_secs(15));
    kill9(server);
}

/// A server whose data directory is a 48 MiB tmpfs of its own mount namespace.
fn start_on_small_disk(d: &Path) -> (Server, u16) {
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs -o size=48m tmpfs \"$0\" && exec \"$@\"",
    ])
    .arg(&data)
    .arg(env!("CARGO_BIN_EXE_mlxtune"))
    .args(["serve", "--config-dir", d.join("config").to_str().unwrap()]);
    start_command(cmd)
}

/// Fills the server's disk (seen through its mount namespace) until it is full.
fn fill(server: &Server, d: &Path) -> PathBuf {
    use std::io::Write;
    let inside = Path::new("/proc")
        .join(server.id().to_string())
        .join("root");
    let filler = inside.join(d.join("data/filler").strip_prefix("/").unwrap());
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    filler
}

#[test]
fn a_full_disk_fails_the_running_job_clearly_and_the_server_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (server, port) = start_on_small_disk(d);
    let id = submit(port, &job(100_000, 5));
    wait_step(port, &id, 6);
    let filler = fill(&server, d);

    let (status, body) = http_status(port, "POST", "/v1/fine_tuning/jobs", Some(&job(3, 1)));
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    let (status, _) = http_status(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
    assert_eq!(status, 200, "reads still work");
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&filler).unwrap();

    let j = wait_status(port, &id, "failed", Duration::from_secs(60));
    assert_eq!(j["error"]["code"], "disk_full", "{j}");
    let ckpts = Path::new("/proc")
        .join(server.id().to_string())
        .join("root");
    let ckpts = ckpts.join(
        d.join("data/jobs")
            .join(&id)
            .join("checkpoints")
            .strip_prefix("/")
            .unwrap(),
    );
    let names: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    // Writes may find the database busy for a moment after the disk fills up and empties
    // (503, nothing changed); the server recovers by itself within seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let next = loop {
        match http_status(port, "POST", "/v1/fine_tuning/jobs", Some(&job(3, 1))) {
            (200, j) => break j["id"].as_str().unwrap().to_string(),
            (503, j) if Instant::now() < deadline => {
                assert_eq!(j["error"]["code"], "database_busy")
            }
            (status, j) => panic!("{status}: {j}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(wait_final(port, &next)["status"], "succeeded");
    kill9(server);
}
