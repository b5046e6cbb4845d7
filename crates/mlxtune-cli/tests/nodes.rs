//! Several processes sharing one queue: an API process (`--role api`) and two worker
//! processes (`--role worker`), on one SQLite database in their data directory and again on
//! a PostgreSQL server (`storage.database_url`). Jobs run once each, a killed worker's job
//! is taken over by the other once its lease expires and resumes from its last checkpoint,
//! and the API process streams and controls jobs running in worker processes.
#![allow(clippy::unwrap_used)]

mod common;

use common::postgres::Postgres;
use common::service::{control, http, http_status, setup, start_command, wait_final, Server};

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Short leases keep the takeover quick (renewed every ~1.3 s).
const LEASE_SECONDS: &str = "4";

/// The database the processes of a test share.
enum Backend {
    /// `<data_dir>/mlxtune.sqlite3`, the default.
    Sqlite,
    /// A scratch PostgreSQL server.
    Postgres(Postgres),
    /// PostgreSQL, and no shared data directory: each process has its own, and jobs'
    /// checkpoints and outputs travel through an S3 bucket (moto) — machines that share
    /// nothing but the database and the bucket.
    PostgresAndS3(Postgres, Moto),
}

/// A moto S3 server with the bucket `mlxtune`, killed when dropped.
struct Moto(std::process::Child, u16);

impl Moto {
    fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server is installed (./test.sh installs it)");
        let moto = Moto(child, port);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, body) = http_status(port, "PUT", "/mlxtune", None);
        assert_eq!(status, 200, "create bucket: {body}");
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Backend {
    fn postgres() -> Backend {
        Backend::Postgres(Postgres::start())
    }

    /// Runs SQL on the shared database as another client would (Python's sqlite3; psql).
    fn sql(&self, d: &Path, statement: &str) {
        match self {
            Backend::Sqlite => sqlite(d, statement),
            Backend::Postgres(pg) | Backend::PostgresAndS3(pg, _) => {
                drop(pg.psql("mlxtune", statement))
            }
        }
    }
}

/// `mlxtune serve --role <role>` over the settings of `setup` and `backend`, named `node`.
fn serve(d: &Path, backend: &Backend, role: &str, node: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlxtune"));
    cmd.args(["serve", "--config-dir", d.join("config").to_str().unwrap()])
        .args(["--role", role])
        .env("MLXTUNE__SERVER__NODE_NAME", node)
        .env("MLXTUNE__WORKERS__LEASE_SECONDS", LEASE_SECONDS);
    match backend {
        Backend::Sqlite => {}
        Backend::Postgres(pg) => {
            cmd.env("MLXTUNE__STORAGE__DATABASE_URL", &pg.url);
        }
        Backend::PostgresAndS3(pg, moto) => {
            let own = d.join("nodes").join(node);
            cmd.env("MLXTUNE__STORAGE__DATABASE_URL", &pg.url)
                .env("MLXTUNE__STORAGE__DATA_DIR", own)
                .env("MLXTUNE__STORAGE__ARTIFACTS_URL", "s3://mlxtune/jobs")
                .env(
                    "MLXTUNE__S3__ENDPOINT",
                    format!("http://127.0.0.1:{}", moto.1),
                )
                .env("MLXTUNE__S3__REGION", "us-east-1")
                .env("MLXTUNE__S3__ACCESS_KEY_ID", "test")
                .env("MLXTUNE__S3__SECRET_ACCESS_KEY", "test")
                .env("MLXTUNE__REMOTE__ALLOW_PRIVATE_ADDRESSES", "true");
        }
    }
    cmd
}

fn start_role(d: &Path, backend: &Backend, role: &str, node: &str) -> (Server, u16) {
    start_command(serve(d, backend, role, node))
}

/// The API process and two workers, started at once on a new database (they migrate it
/// one at a time).
fn cluster(d: &Path, backend: &Backend) -> (Server, u16, Vec<(Server, u16)>) {
    setup(d);
    let starts: Vec<_> = [("api", "api"), ("worker", "node-a"), ("worker", "node-b")]
        .into_iter()
        .map(|(role, node)| {
            let cmd = serve(d, backend, role, node);
            std::thread::spawn(move || start_command(cmd))
        })
        .collect();
    let mut started = starts.into_iter().map(|s| s.join().unwrap());
    let (api, port) = started.next().unwrap();
    (api, port, started.collect())
}

fn config(max_steps: u64, checkpoint_every: u64) -> Value {
    json!({
        "baseModel": "llama-tiny",
        "dataset": { "trainingData": "t.jsonl", "format": "text" },
        "parameters": { "learningRate": 1e-3, "batchSize": 2, "epochs": 1, "sequenceLength": 64 },
        "optimization": { "gradientCheckpointing": false, "mixedPrecision": "fp32", "appleSiliconOptimized": false },
        "maxSteps": max_steps,
        "checkpoint": { "everySteps": checkpoint_every }
    })
}

fn submit(port: u16, cfg: &Value) -> String {
    let (status, job) = http_status(port, "POST", "/v1/fine_tuning/jobs", Some(cfg));
    assert_eq!(status, 200, "{job}");
    job["id"].as_str().unwrap().to_string()
}

fn events(port: u16, id: &str) -> Vec<Value> {
    let path = format!("/v1/fine_tuning/jobs/{id}/events?limit=1000");
    http(port, "GET", &path, None)["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn messages(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// The claims of a job: its status events to `running` (each names the worker).
fn claims(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "status" && e["data"]["status"] == "running")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn metric_steps(port: u16, id: &str) -> Vec<u64> {
    let path = format!("/v1/fine_tuning/jobs/{id}/metrics");
    http(port, "GET", &path, None)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect()
}

/// Waits (2 minutes at most) until `done` holds for the job.
fn wait_job(port: u16, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = http(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
        if done(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "{what}: {j}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn step_of(j: &Value) -> u64 {
    j["progress"]["step"].as_u64().unwrap_or(0)
}

#[test]
fn twenty_jobs_on_two_worker_processes_each_run_exactly_once() {
    twenty_jobs_each_run_once(&Backend::Sqlite);
}

#[test]
fn on_postgres_twenty_jobs_on_two_worker_processes_each_run_exactly_once() {
    twenty_jobs_each_run_once(&Backend::postgres());
}

fn twenty_jobs_each_run_once(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_api, port, workers) = cluster(dir.path(), backend);
    // A worker process serves no API: liveness and metrics only.
    for (_, w) in &workers {
        assert_eq!(http_status(*w, "GET", "/healthz", None).0, 200);
        let (status, body) = http_status(*w, "GET", "/v1/fine_tuning/jobs", None);
        assert_eq!(status, 404, "{body}");
    }
    let ids: Vec<String> = (0..20).map(|_| submit(port, &config(3, 100))).collect();
    let mut ran_on = std::collections::BTreeSet::new();
    for id in &ids {
        let job = wait_final(port, id);
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(
            metric_steps(port, id),
            vec![1, 2, 3],
            "{id}: every step once"
        );
        let evs = events(port, id);
        let claims = claims(&evs);
        assert_eq!(claims.len(), 1, "{id} claimed once: {:?}", messages(&evs));
        assert!(
            claims[0].starts_with("training started by node-"),
            "{claims:?}"
        );
        ran_on.insert(claims[0].rsplit(' ').next().unwrap().to_string());
        let updates: Vec<u64> = evs
            .iter()
            .filter(|e| e["type"] == "mlx_training_update")
            .map(|e| e["data"]["step"].as_u64().unwrap())
            .collect();
        assert_eq!(updates, vec![1, 2, 3], "{id}: one event per step");
    }
    let expected = ["node-a/worker-0", "node-b/worker-0"].map(String::from);
    assert_eq!(
        ran_on,
        expected.into_iter().collect(),
        "both worker processes took jobs"
    );
}

#[test]
fn a_killed_workers_job_is_resumed_by_the_other_from_its_checkpoint_and_streamed_by_the_api() {
    killed_worker_resumed_elsewhere(&Backend::Sqlite);
}

#[test]
fn on_postgres_a_killed_workers_job_is_resumed_by_the_other_and_streamed_by_the_api() {
    killed_worker_resumed_elsewhere(&Backend::postgres());
}

/// The whole set-up: PostgreSQL, an S3 server, an API process and two workers that
/// share no directory: the other worker resumes from the checkpoint in the bucket.
#[test]
fn on_postgres_and_s3_a_killed_workers_job_is_resumed_by_a_node_without_its_files() {
    let backend = Backend::PostgresAndS3(Postgres::start(), Moto::start());
    killed_worker_resumed_elsewhere(&backend);
}

fn killed_worker_resumed_elsewhere(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (_api, port) = start_role(d, backend, "api", "api");
    let (mut a, _) = start_role(d, backend, "worker", "node-a");
    let id = submit(port, &config(200, 5));
    let mut ws = stream(port, &id);
    let j = wait_job(port, &id, "no progress", |j| step_of(j) >= 12);
    assert_eq!(j["status"], "running");
    // A process starting beside a running job leaves it to its holder.
    let (_b, _) = start_role(d, backend, "worker", "node-b");
    // The API process runs no trainer: the steps it streams come from a worker process.
    let seen = steps_streamed(&mut ws, 10);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    let claimed = claims(&events(port, &id));
    assert_eq!(claimed, ["training started by node-a/worker-0"]);
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();

    let job = wait_final(port, &id);
    assert_eq!(job["status"], "succeeded", "{job}");
    if let Backend::PostgresAndS3(..) = backend {
        // Node b trained in its own directory, from the checkpoint it downloaded.
        let own = d
            .join("nodes/node-b/jobs")
            .join(&id)
            .join("checkpoints/latest");
        assert!(own.exists(), "{}", own.display());
    }
    assert_eq!(
        metric_steps(port, &id),
        (1..=200).collect::<Vec<_>>(),
        "each step once"
    );
    let evs = events(port, &id);
    let texts = messages(&evs);
    let expired = "the lease of node-a/worker-0 expired";
    assert!(texts.iter().any(|t| t.starts_with(expired)), "{texts:?}");
    let claims = claims(&evs);
    let resumed = "training resumed from the last checkpoint by node-b/worker-0";
    assert_eq!(claims, ["training started by node-a/worker-0", resumed]);
    let resumed_at = texts
        .iter()
        .find_map(|t| {
            t.strip_prefix("resumed from ")
                .and_then(|r| r.rsplit_once("(step "))
        })
        .map(|(_, s)| s.trim_end_matches(')').parse::<u64>().unwrap())
        .expect("the trainer resumed from a checkpoint");
    assert!(resumed_at >= 10 && resumed_at % 5 == 0, "step {resumed_at}");
    // The stream on the API node carries on with the other worker's steps to the end.
    let rest = steps_streamed_until(&mut ws, 200);
    assert_eq!(rest.last(), Some(&200));
}

#[test]
fn a_worker_whose_job_was_taken_from_it_stops_the_trainer_and_records_nothing() {
    job_taken_from_a_stalled_worker(&Backend::Sqlite);
}

#[test]
fn on_postgres_a_worker_whose_job_was_taken_from_it_stops_and_records_nothing() {
    job_taken_from_a_stalled_worker(&Backend::postgres());
}

fn job_taken_from_a_stalled_worker(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (_api, port) = start_role(d, backend, "api", "api");
    let (_a, a_port) = start_role(d, backend, "worker", "node-a");
    let id = submit(port, &config(150, 5));
    wait_job(port, &id, "no progress", |j| step_of(j) >= 12);
    let (_b, _) = start_role(d, backend, "worker", "node-b");
    // What the sweep does to a job whose lease expired while its process stalled (a
    // SIGSTOP would do it too, but a process stopped inside a write transaction holds
    // SQLite's write lock and so stalls every process until it wakes).
    let requeue = format!(
        "UPDATE jobs SET status = 'queued', resume = 1 WHERE id = '{id}' AND status = 'running'"
    );
    backend.sql(d, &requeue);
    let job = wait_final(port, &id);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(metric_steps(port, &id), (1..=150).collect::<Vec<_>>());
    let evs = events(port, &id);
    let claims = claims(&evs);
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert_eq!(claims[0], "training started by node-a/worker-0");
    assert!(
        claims[1].starts_with("training resumed from the last checkpoint by node-"),
        "{claims:?}"
    );
    // The old run ended nothing: the one ending is the new run's.
    let endings: Vec<&Value> = evs
        .iter()
        .filter(|e| e["type"] == "status" && e["data"]["status"] != "running")
        .collect();
    assert_eq!(endings.len(), 1, "{endings:?}");
    assert_eq!(endings[0]["data"]["status"], "succeeded");
    // The worker that lost the job carries on: it answers and runs the next job.
    assert_eq!(http_status(a_port, "GET", "/healthz", None).0, 200);
    let next = submit(port, &config(3, 100));
    assert_eq!(wait_final(port, &next)["status"], "succeeded");
}

/// Runs SQL on the SQLite database of `d` (Python's sqlite3, as another client would).
fn sqlite(d: &Path, statement: &str) {
    let db = d.join("data/mlxtune.sqlite3");
    let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=30); c.executescript(sys.argv[2]); c.commit()";
    let out = Command::new("python3")
        .args(["-c", script, db.to_str().unwrap(), statement])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}

#[test]
fn pause_resume_and_cancel_on_the_api_process_reach_a_job_in_a_worker_process() {
    control_reaches_a_worker_process(&Backend::Sqlite);
}

#[test]
fn on_postgres_pause_resume_and_cancel_on_the_api_process_reach_a_worker_process() {
    control_reaches_a_worker_process(&Backend::postgres());
}

fn control_reaches_a_worker_process(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_api, port, _workers) = cluster(dir.path(), backend);
    let id = submit(port, &config(400, 5));
    wait_job(port, &id, "no progress", |j| step_of(j) >= 3);
    control(port, &id, "pause");
    let paused = wait_job(port, &id, "not paused", |j| j["status"] == "paused");
    let at = step_of(&paused);
    std::thread::sleep(Duration::from_millis(600));
    let still = http(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
    assert_eq!(
        (still["status"].as_str(), step_of(&still)),
        (Some("paused"), at)
    );

    control(port, &id, "resume");
    wait_job(port, &id, "not resumed", |j| {
        j["status"] == "running" && step_of(j) > at
    });
    control(port, &id, "cancel");
    let job = wait_final(port, &id);
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(step_of(&job) < 400, "stopped early: {job}");
    let texts = messages(&events(port, &id));
    for note in ["pause requested", "cancellation requested"] {
        assert!(texts.iter().any(|t| t == note), "{note}: {texts:?}");
    }
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// A WebSocket on the job's stream, read with a timeout.
fn stream(port: u16, id: &str) -> Socket {
    let url = format!("ws://127.0.0.1:{port}/v1/fine_tuning/jobs/{id}/stream");
    let (ws, _) = tungstenite::connect(url).unwrap();
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    }
    ws
}

/// The step of a training update the stream sent (None for other messages).
fn next_step(ws: &mut Socket) -> Option<u64> {
    match ws.read().unwrap() {
        Message::Text(t) => {
            let v: Value = serde_json::from_str(&t).unwrap();
            (v["type"] == "mlx_training_update").then(|| v["data"]["step"].as_u64().unwrap())
        }
        _ => None,
    }
}

/// The steps of the next `n` training updates on the stream.
fn steps_streamed(ws: &mut Socket, n: usize) -> Vec<u64> {
    let mut steps = Vec::new();
    while steps.len() < n {
        steps.extend(next_step(ws));
    }
    steps
}

/// Training updates until step `last`.
fn steps_streamed_until(ws: &mut Socket, last: u64) -> Vec<u64> {
    let mut steps = Vec::new();
    while steps.last() != Some(&last) {
        steps.extend(next_step(ws));
    }
    steps
}
