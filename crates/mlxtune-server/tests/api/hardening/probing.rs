//! Defect 8: a path outside the configured roots gets the same answer whether or not it
//! exists, so the answers tell nothing about the server's files.

use super::config_with_data;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_and_missing_paths_outside_the_roots_get_the_same_answer() {
    let app = spawn_app_tuned(vec![], |s| s.workers.count = 0).await;
    let answer = |uri: &'static str| {
        let app = &app;
        async move {
            let (s, v) = app
                .post("/v1/fine_tuning/jobs", &config_with_data(uri))
                .await;
            assert_eq!(s, 422, "{v}");
            assert_eq!(v["error"]["param"], "dataset.trainingData");
            v["error"]["message"].as_str().unwrap().replace(uri, "PATH")
        }
    };
    let pairs = [
        ("/etc/passwd", "/etc/no-such-file-here"),
        ("local://../secret.jsonl", "local://../no-such.jsonl"),
        ("/etc", "/no-such-dir"),
    ];
    for (exists, missing) in pairs {
        assert_eq!(
            answer(exists).await,
            answer(missing).await,
            "{exists} / {missing}"
        );
    }
    assert_eq!(
        answer("/etc/passwd").await,
        "`PATH` was not found under the configured roots"
    );
}
