//! The same scenarios as on SQLite, on a scratch PostgreSQL server (`storage.database_url`):
//! training, streams, control, files and the registry behave alike on both backends. And
//! what only PostgreSQL does: many claimers at once (`FOR UPDATE SKIP LOCKED`) and event
//! ids that become visible in order under concurrent writers (the feed relies on it).

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_example_config_trains_to_success_and_the_stream_shows_the_loss_falling() {
    crate::jobs::the_product_example_config_trains_to_success_and_the_stream_shows_the_loss_falling_with(spawn_app_on_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_then_resume_ends_with_the_same_losses_and_illegal_transitions_are_409() {
    crate::jobs::pause_then_resume_ends_with_the_same_losses_and_illegal_transitions_are_409_with(
        spawn_app_on_postgres().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_run_in_order_and_cancel_works_queued_and_running() {
    crate::jobs::submissions_run_in_order_and_cancel_works_queued_and_running_with(
        spawn_app_on_postgres().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_wins_over_a_later_pause() {
    crate::control::a_cancel_wins_over_a_later_pause_with(spawn_app_on_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_of_a_finished_job_answer_once() {
    crate::control::concurrent_deletes_of_a_finished_job_answer_once_with(
        spawn_app_on_postgres().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_model_is_listed_with_lineage_and_serves_the_adapters_greedy_tokens() {
    crate::models::a_trained_model_is_listed_with_lineage_and_serves_the_adapters_greedy_tokens_with(spawn_app_on_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_holds_bases_and_fine_tunes_and_training_comes_first() {
    crate::models::registry_holds_bases_and_fine_tunes_and_training_comes_first_with(
        spawn_app_on_postgres().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_is_listed_read_back_trained_on_and_deleted() {
    crate::files::an_uploaded_file_is_listed_read_back_trained_on_and_deleted_with(
        spawn_app_on_postgres().await,
    )
    .await;
}

async fn connect(pg: &Postgres) -> mlxtune_server::db::Db {
    let location = mlxtune_server::db::Location::Postgres(pg.url.clone());
    mlxtune_server::db::connect(&location).await.unwrap()
}

/// Sixteen claimers at once on 120 queued jobs: each job is claimed once, by one worker, and
/// the queue ends empty (a claimer that finds every queued row held skips them, and those
/// holders claim them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_take_each_queued_job_exactly_once() {
    use mlxtune_server::db;
    let pg = Postgres::start();
    let db = connect(&pg).await;
    let ids: Vec<String> = (0..120).map(|i| format!("ftjob-{i:03}")).collect();
    for id in &ids {
        insert_queued(&db, id).await;
    }
    let claimers: Vec<_> = (0..16)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let worker = format!("node/worker-{w}");
                let mut got = Vec::new();
                while let Some(job) = db::claim_next(&db, &worker, 30).await.unwrap() {
                    assert_eq!(job.worker.as_deref(), Some(worker.as_str()));
                    got.push(job.id);
                }
                got
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for c in claimers {
        claimed.extend(c.await.unwrap());
    }
    claimed.sort();
    assert_eq!(claimed, ids, "each job claimed exactly once");
    let counts = db::count_by_status(&db).await.unwrap();
    assert_eq!(counts, vec![(mlxtune_server::api::JobStatus::Running, 120)]);
}

/// Sixteen writers add 40 events each while a reader follows `since`, moving past the last
/// id it read as every process's feed does: it reads all 640 events, each once, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_moving_past_the_last_id_misses_no_event_of_concurrent_writers() {
    use mlxtune_engine::train::Level;
    use mlxtune_server::api::EventKind;
    use mlxtune_server::db::events;
    let pg = Postgres::start();
    let db = connect(&pg).await;
    insert_queued(&db, "ftjob-events").await;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let text = format!("writer {w} event {i}");
                    let what = (Level::Info, EventKind::Message, text.as_str());
                    events::add_event(&db, "ftjob-events", what, None, true)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut last = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < 640 && std::time::Instant::now() < deadline {
        for (event, _) in events::since(&db, last, 7).await.unwrap() {
            last = event.id;
            seen.push(event.id);
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let stored: Vec<i64> = events::events(&db, "ftjob-events", 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored.len(), 640);
    assert_eq!(
        seen, stored,
        "the reader saw every stored event, once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_from_a_worker_that_lost_its_job_is_not_recorded() {
    let pg = Postgres::start();
    crate::control::step_fence_holds_on(connect(&pg).await).await;
}

/// A claim never waits on a queued row another transaction holds (`SKIP LOCKED`): with the
/// oldest queued job locked elsewhere, a worker takes the next one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_skips_a_job_another_transaction_holds_instead_of_waiting() {
    use mlxtune_server::db;
    let pg = Postgres::start();
    let db = connect(&pg).await;
    for id in ["ftjob-first", "ftjob-second"] {
        insert_queued(&db, id).await;
    }
    let db::Db::Postgres(pool) = &db else {
        unreachable!("connected to PostgreSQL")
    };
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM jobs WHERE id = 'ftjob-first' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let claim = db::claim_next(&db, "node/worker-0", 30);
    let claimed = tokio::time::timeout(std::time::Duration::from_secs(5), claim)
        .await
        .expect("the claim waited for the row another transaction holds")
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, "ftjob-second");
    holder.rollback().await.unwrap();
    let next = db::claim_next(&db, "node/worker-1", 30).await.unwrap();
    assert_eq!(next.map(|j| j.id).as_deref(), Some("ftjob-first"));
}
