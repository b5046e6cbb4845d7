//! Jobs' checkpoints and outputs on an S3 artifacts store (a real moto server): uploaded
//! with checksummed manifests; downloaded and checked by a node that lacks them (a fresh
//! data directory sharing the database) to resume a job or serve its model; refused,
//! naming the object, when the bucket holds something else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use mlxtune_server::settings::S3Settings;
use object_store::path::Path as Key;
use object_store::ObjectStore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const BUCKET: &str = "artifacts";
const URL: &str = "s3://artifacts/runs";

/// A node named `name` with artifacts under `s3://artifacts/runs`, its own fresh data
/// directory, and the database `db` of another node (None: its own).
async fn node(s3: &S3Settings, url: &str, name: &str, db: Option<PathBuf>) -> TestApp {
    node_with(s3, url, name, db, |_| {}).await
}

/// [`node`], with more settings changed by `tune`.
async fn node_with(
    s3: &S3Settings,
    url: &str,
    name: &str,
    db: Option<PathBuf>,
    tune: impl FnOnce(&mut mlxtune_server::settings::Settings),
) -> TestApp {
    spawn_app_tuned(vec![], |s| {
        s.s3 = s3.clone();
        s.remote.allow_private_addresses = true;
        s.storage.artifacts_url = Some(url.parse().unwrap());
        s.server.node_name = name.into();
        if let Some(db) = db {
            s.storage.database_path = db.display().to_string();
        }
        tune(s);
    })
    .await
}

fn db_of(app: &TestApp) -> PathBuf {
    app.state.settings.database_path()
}

/// The node's own copy of a job's files.
fn job_dir(app: &TestApp, id: &str) -> PathBuf {
    app.root.join("data").join("jobs").join(id)
}

/// The product example for `steps` steps, a checkpoint every 2, the last 2 kept locally.
fn config(steps: u64) -> Value {
    let mut cfg = product_config();
    cfg["maxSteps"] = json!(steps);
    cfg["checkpoint"] = json!({ "everySteps": 2, "keepLast": 2 });
    cfg
}

async fn submit(app: &TestApp, cfg: &Value) -> String {
    let (s, job) = app.post("/v1/fine_tuning/jobs", cfg).await;
    assert_eq!(s, 200, "{job}");
    job["id"].as_str().unwrap().to_string()
}

/// Every object under `prefix`, with its bytes.
async fn objects(store: &impl ObjectStore, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let metas: Vec<_> = store
        .list(Some(&Key::from(prefix)))
        .try_collect()
        .await
        .unwrap();
    let mut all = BTreeMap::new();
    for m in metas {
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        all.insert(m.location.to_string(), bytes.to_vec());
    }
    all
}

/// Checks every manifest in `objs` against the objects it lists (size and sha256); the
/// folders of the manifests checked.
fn check_manifests(objs: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut folders = vec![];
    for (key, bytes) in objs.iter().filter(|(k, _)| k.ends_with("/manifest.json")) {
        let folder = key.trim_end_matches("/manifest.json").to_string();
        let m: Value = serde_json::from_slice(bytes).unwrap();
        for f in m["files"].as_array().unwrap() {
            let object = &objs[&format!("{folder}/{}", f["path"].as_str().unwrap())];
            assert_eq!(f["size"], json!(object.len()), "{key}: {f}");
            let sha = Sha256::digest(object);
            let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(f["sha256"], json!(hex), "{key}: {f}");
        }
        folders.push(folder);
    }
    folders
}

/// Replaces an object with its bytes, one flipped (same size, other sha256).
async fn corrupt(store: &impl ObjectStore, key: &str) {
    let key = Key::from(key);
    let mut bytes = store
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    store.put(&key, bytes.into()).await.unwrap();
}

/// Stops a node's workers (its API keeps answering), as a node leaving the cluster.
async fn stop_workers(app: &TestApp) {
    let s = &app.state;
    s.shutting_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    s.wake.notify_waiters();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// A job of `steps` steps run on `app` until a few steps are done, then paused (its last
/// checkpoint uploaded before it reads `paused`); its id and step.
async fn paused_job(app: &TestApp, steps: u64) -> (String, i64) {
    let id = submit(app, &config(steps)).await;
    let metrics = format!("/v1/fine_tuning/jobs/{id}/metrics");
    loop {
        let (_, m) = app.get(&metrics).await;
        if m["data"].as_array().is_some_and(|d| d.len() >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = app
        .post(&format!("/v1/fine_tuning/jobs/{id}/pause"), &json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let job = app.wait_status(&id, &["paused"]).await;
    let step = job["progress"]["step"].as_i64().unwrap();
    assert!(step < steps as i64, "paused before the end: {job}");
    (id, step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_an_s3_artifacts_store_uploads_its_checkpoints_and_outputs_with_their_checksums() {
    let (_moto, s3) = start_moto(BUCKET).await;
    let app = node(&s3, URL, "gpu0", None).await;
    let id = submit(&app, &config(6)).await;
    app.wait_status(&id, &["succeeded"]).await;
    let objs = objects(&bucket(&s3, BUCKET), &format!("runs/{id}")).await;
    let folders = check_manifests(&objs);
    let ck = |step: u32| format!("runs/{id}/checkpoints/step-{step:08}");
    for want in [ck(2), ck(4), ck(6), format!("runs/{id}/outputs")] {
        assert!(folders.contains(&want), "{want} committed: {folders:?}");
    }
    assert_eq!(
        objs[&format!("runs/{id}/checkpoints/latest")],
        b"step-00000006"
    );
    // Nothing in the bucket but manifests, `latest` and the files manifests list.
    assert_eq!(objs.len(), folders.len() + 1 + count_listed(&objs));
    // The outputs are the files the job handed back, byte for byte.
    let out = job_dir(&app, &id);
    for f in [
        "adapters.safetensors",
        "adapter_config.json",
        "peft/adapter_model.safetensors",
    ] {
        let local = std::fs::read(out.join(f)).unwrap();
        assert_eq!(objs[&format!("runs/{id}/outputs/{f}")], local, "{f}");
    }
    // Deleting the job deletes its objects too.
    let (s, v) = app.delete(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(s, 200, "{v}");
    assert!(objects(&bucket(&s3, BUCKET), &format!("runs/{id}"))
        .await
        .is_empty());
    assert!(!out.exists());
}

/// How many files the manifests in `objs` list.
fn count_listed(objs: &BTreeMap<String, Vec<u8>>) -> usize {
    objs.iter()
        .filter(|(k, _)| k.ends_with("/manifest.json"))
        .map(|(_, b)| {
            let m: Value = serde_json::from_slice(b).unwrap();
            m["files"].as_array().unwrap().len()
        })
        .sum()
}

/// A job paused on node `gpu0`, whose workers then stopped (a node leaving the cluster).
struct Left {
    _moto: Moto,
    s3: S3Settings,
    first: TestApp,
    id: String,
    step: i64,
}

async fn paused_on_a_node_that_left() -> Left {
    let (moto, s3) = start_moto(BUCKET).await;
    let first = node(&s3, URL, "gpu0", None).await;
    let (id, step) = paused_job(&first, 30).await;
    stop_workers(&first).await;
    Left {
        _moto: moto,
        s3,
        first,
        id,
        step,
    }
}

impl Left {
    /// Node `gpu1`, with a fresh data directory and the same database, resumes the job.
    async fn resume_on_a_fresh_node(&self) -> TestApp {
        let b = node(&self.s3, URL, "gpu1", Some(db_of(&self.first))).await;
        let resume = format!("/v1/fine_tuning/jobs/{}/resume", self.id);
        let (s, v) = b.post(&resume, &json!({})).await;
        assert_eq!(s, 200, "{v}");
        b
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumed_on_a_fresh_node_downloads_its_checkpoint_and_records_every_step_once() {
    let left = paused_on_a_node_that_left().await;
    let (a, id) = (&left.first, &left.id);
    // Nothing of the first node's copy is left to read.
    std::fs::remove_dir_all(job_dir(a, id)).unwrap();
    let b = left.resume_on_a_fresh_node().await;
    let job = b.wait_status(id, &["succeeded", "failed"]).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, m) = b.get(&format!("/v1/fine_tuning/jobs/{id}/metrics")).await;
    let steps: Vec<i64> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, (1..=30).collect::<Vec<_>>(), "every step once");
    let said = b.messages(id).await;
    let downloaded = format!(
        "downloaded checkpoint step-{:08} from the artifacts store",
        left.step
    );
    assert!(said.iter().any(|m| m.starts_with(&downloaded)), "{said:?}");
    assert!(said.contains(&"training resumed from the last checkpoint by gpu1/worker-0".into()));
    assert!(job_dir(&b, id).join("adapters.safetensors").is_file());
    assert!(
        !job_dir(a, id).exists(),
        "the first node wrote nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_in_the_bucket_is_refused_naming_the_file_and_nothing_is_placed() {
    let left = paused_on_a_node_that_left().await;
    let (id, step) = (&left.id, left.step);
    let file = format!("runs/{id}/checkpoints/step-{step:08}/trainable.safetensors");
    corrupt(&bucket(&left.s3, BUCKET), &file).await;
    let b = left.resume_on_a_fresh_node().await;
    let job = b.wait_status(id, &["succeeded", "failed"]).await;
    assert_eq!(job["error"]["code"], "artifact_checksum_mismatch", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("s3://{BUCKET}/{file}: sha256 ")),
        "{message}"
    );
    // Neither the checkpoint nor a temporary directory is left on the node.
    let left: Vec<_> = std::fs::read_dir(job_dir(&b, id).join("checkpoints"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fine_tuned_model_is_served_and_exported_by_a_node_without_its_files() {
    let (_moto, s3) = start_moto(BUCKET).await;
    let a = node(&s3, URL, "gpu0", None).await;
    let id = submit(&a, &config(4)).await;
    let job = a.wait_status(&id, &["succeeded"]).await;
    let model = job["fine_tuned_model"].as_str().unwrap().to_string();
    let api = node(&s3, URL, "api1", Some(db_of(&a))).await;
    assert!(!job_dir(&api, &id).exists());
    // Listed as on the node that ran it, though the files are not here yet.
    let (_, here) = api.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(here["artifacts"], job["artifacts"]);
    assert_eq!(
        job["artifacts"],
        json!(["metrics.csv", "adapters.tar.gz", "peft.tar.gz"])
    );
    let ask = json!({ "model": model, "prompt": "Say it.", "max_tokens": 4 });
    let (s, v) = api.post("/v1/completions", &ask).await;
    assert_eq!(s, 200, "{v}");
    let adapters = |app: &TestApp| job_dir(app, &id).join("adapters.safetensors");
    assert_eq!(
        std::fs::read(adapters(&api)).unwrap(),
        std::fs::read(adapters(&a)).unwrap()
    );
    // Export: the artifacts route of another fresh node downloads them too.
    let export = node(&s3, URL, "api2", Some(db_of(&a))).await;
    let r = export
        .req(
            reqwest::Method::GET,
            &format!("/v1/fine_tuning/jobs/{id}/artifacts/peft.tar.gz"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().len() > 100);
    assert!(job_dir(&export, &id)
        .join("peft/adapter_model.safetensors")
        .is_file());
    // A corrupt object: refused by name, nothing placed.
    let file = format!("runs/{id}/outputs/adapters.safetensors");
    corrupt(&bucket(&s3, BUCKET), &file).await;
    let fresh = node(&s3, URL, "api3", Some(db_of(&a))).await;
    let (s, v) = fresh.post("/v1/completions", &ask).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("artifact_checksum_mismatch")),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("s3://{BUCKET}/{file}")),
        "{message}"
    );
    assert!(!adapters(&fresh).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_uploads_warns_at_each_checkpoint_and_fails_the_job_keeping_its_files()
{
    let (_moto, s3) = start_moto(BUCKET).await;
    let app = node(&s3, "s3://no-such-bucket/runs", "gpu0", None).await;
    let id = submit(&app, &config(4)).await;
    let job = app.wait_status(&id, &["succeeded", "failed"]).await;
    assert_eq!(job["error"]["code"], "artifact_upload_failed", "{job}");
    let said = app.messages(&id).await;
    for step in [2, 4] {
        let warned = format!("checkpoint step-{step:08} was not uploaded to the artifacts store");
        assert!(said.iter().any(|m| m.starts_with(&warned)), "{said:?}");
    }
    let out = job_dir(&app, &id);
    assert!(out.join("adapters.safetensors").is_file());
    assert!(out.join("checkpoints/step-00000004/state.json").is_file());
    assert!(!Path::new(&out).join(".outputs-manifest.json").exists());
}

/// A job accepted by an API node runs on a worker node that shares only the database and the
/// store: the dataset the API node keeps (an uploaded file) travels through the bucket and
/// is checked on arrival; a corrupted copy fails its job, naming the object. The API node's
/// data directory is named through a symbolic link (as `/tmp` is on macOS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_dataset_reaches_a_worker_on_another_node_through_the_store_checked() {
    let (_moto, s3) = start_moto(BUCKET).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let (real, link) = (elsewhere.path().join("data"), elsewhere.path().join("link"));
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let api = node_with(&s3, URL, "api0", None, |s| s.storage.data_dir = link).await;
    stop_workers(&api).await;
    let data = chat_jsonl();
    let (s, file) = crate::files::upload(&api, "train.jsonl", "fine-tune", &data).await;
    assert_eq!(s, 200, "{file}");
    let mut cfg = config(4);
    cfg["dataset"]["trainingData"] = file["id"].clone();
    cfg["dataset"]["validationData"] = file["id"].clone();
    let good = submit(&api, &cfg).await;
    let bad = submit(&api, &cfg).await;
    let store = bucket(&s3, BUCKET);
    let folder = format!("runs/{good}/datasets");
    let objs = objects(&store, &folder).await;
    assert_eq!(check_manifests(&objs), vec![folder.clone()]);
    assert_eq!(objs[&format!("{folder}/train.jsonl")], data.as_bytes());
    corrupt(&store, &format!("runs/{bad}/datasets/train.jsonl")).await;
    // The API node's copy is gone: the worker can only read the bucket's.
    std::fs::remove_dir_all(real.join("files")).unwrap();
    let worker = node(&s3, URL, "gpu1", Some(db_of(&api))).await;
    let job = worker.wait_status(&good, &["succeeded", "failed"]).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let said = worker.messages(&good).await;
    let fetched = "downloaded the job's datasets from the artifacts store";
    assert!(said.iter().any(|m| m.starts_with(fetched)), "{said:?}");
    let local = job_dir(&worker, &good).join("datasets").join("train.jsonl");
    assert_eq!(std::fs::read(local).unwrap(), data.as_bytes());
    let job = worker.wait_status(&bad, &["succeeded", "failed"]).await;
    assert_eq!(job["error"]["code"], "artifact_checksum_mismatch", "{job}");
    let named = format!("s3://{BUCKET}/runs/{bad}/datasets/train.jsonl: sha256 ");
    assert!(
        job["error"]["message"].as_str().unwrap().contains(&named),
        "{job}"
    );
}
