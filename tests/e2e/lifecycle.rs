//! The cleanup worker, race-free creation and quotas.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

/// Worker settings for tests: a pass every 500 ms, a short grace.
const FAST_WORKER: [(&str, &str); 2] = [("CLEANUP_INTERVAL_SECONDS", "0.5"), ("CLEANUP_GRACE_SECONDS", "1")];

/// Waits until `done` holds, at most `within`.
pub async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_reaped_within_one_interval_and_a_busy_one_is_not() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("SESSION_TTL_SECONDS", "1.5")]);
    let worker = CleanupWorker::start(
        &api.instance,
        &[&FAST_WORKER[..], &[("REDIS_URL", &redis.url())]].concat(),
    );

    // Busy: the record expires while the command runs, and the container stays.
    let busy = run(&api, ALICE_KEY, "busy", "sh -c 'sleep 4; echo done'").await;
    assert_eq!(busy["stdout"], "done\n", "{busy}");
    assert!(
        worker.passes().iter().any(|p| p["skipped_busy"].as_u64() >= Some(1)),
        "no pass saw the busy sandbox"
    );

    // Idle: gone within TTL + one interval (+ grace and scheduling slack).
    run(&api, ALICE_KEY, "idle", "echo hi").await;
    assert_eq!(session_containers(&api.instance, "idle").len(), 1);
    eventually(Duration::from_secs(8), "idle container reaped", || {
        session_containers(&api.instance, "idle").is_empty()
    })
    .await;
    let pass = worker
        .passes()
        .into_iter()
        .find(|p| p["removed_session_gone"].as_u64() >= Some(1))
        .expect("a pass removed it");
    for field in [
        "found",
        "removed",
        "removed_over_age",
        "records_repaired",
        "errors",
        "duration_ms",
    ] {
        assert!(pass.get(field).is_some(), "summary lacks {field}: {pass}");
    }
    // The next use simply starts over.
    assert_eq!(
        run(&api, ALICE_KEY, "idle", "echo again").await["session_created"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_maximum_age_is_removed_even_while_active() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "0.5".into()),
        ("CLEANUP_MAX_CONTAINER_AGE_SECONDS", "3".into()),
    ];
    let worker_env = env_refs(&worker_env);
    let _worker = CleanupWorker::start(&api.instance, &worker_env);
    let started = Instant::now();
    let long = execute(&api, ALICE_KEY, "old", "sh -c 'sleep 20'").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the over-age container was not removed"
    );
    assert_eq!(long.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", long.body);
    assert_eq!(long.body["error"], "sandbox_unavailable");
    eventually(Duration::from_secs(10), "over-age container removed", || {
        session_containers(&api.instance, "old").is_empty()
    })
    .await;
    assert_eq!(
        call(&api, Method::GET, "/sessions/old", ALICE_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_container_is_gone_is_repaired_by_the_worker() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "lost", "echo hi").await;
    remove_instance_containers(&api.instance);
    assert_eq!(
        call(&api, Method::GET, "/sessions/lost", ALICE_KEY, None).await.status,
        StatusCode::OK
    );
    let worker = CleanupWorker::start(
        &api.instance,
        &[&FAST_WORKER[..], &[("REDIS_URL", &redis.url())]].concat(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&api, Method::GET, "/sessions/lost", ALICE_KEY, None).await.status == StatusCode::OK {
        assert!(Instant::now() < deadline, "record not repaired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(worker
        .passes()
        .iter()
        .any(|p| p["records_repaired"].as_u64() >= Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_creates_across_two_replicas_yield_one_container() {
    let redis = RedisServer::start();
    let log = ("RUST_LOG", "info,brig_core::sessions=debug");
    let first = BrigApi::start(&[("REDIS_URL", &redis.url()), log]);
    let second = BrigApi::start_in(&first.instance, &[("REDIS_URL", &redis.url()), log]);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let base = if i % 2 == 0 {
                first.base.clone()
            } else {
                second.base.clone()
            };
            tokio::spawn(async move {
                let reply = if i % 4 < 2 {
                    post(&base, "/sessions", ALICE_KEY, &json!({"session_id": "race"})).await
                } else {
                    post(
                        &base,
                        "/execute",
                        ALICE_KEY,
                        &json!({"command": "echo hi", "session_id": "race"}),
                    )
                    .await
                };
                let reply = reply.unwrap();
                (reply.status, reply.body)
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        if status == StatusCode::CREATED || body["session_created"] == true {
            created += 1;
        }
    }
    assert_eq!(session_containers(&first.instance, "race").len(), 1);
    if created != 1 {
        for line in first.logs().iter().chain(second.logs().iter()) {
            if [
                "WARN",
                "\"level\":40",
                "\"level\":50",
                "CREATE",
                "REMOVE",
                "reserved",
                "OPEN",
            ]
            .iter()
            .any(|m| line.contains(m))
            {
                eprintln!("{line}");
            }
        }
    }
    assert_eq!(created, 1, "exactly one request may report creating the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_under_thirty_parallel_creates() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[
        ("REDIS_URL", &redis.url()),
        ("MAX_SESSIONS_PER_USER", "3"),
        ("MAX_SESSIONS", "4"),
    ]);
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let base = api.base.clone();
            tokio::spawn(async move {
                let body = json!({"session_id": format!("q{i}")});
                let reply = post(&base, "/sessions", ALICE_KEY, &body).await.unwrap();
                (reply.status, reply.headers.contains_key("retry-after"), reply.body)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for task in tasks {
        let (status, retry_after, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => accepted.push(body["session_id"].as_str().unwrap().to_string()),
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"], "session_quota_exceeded");
                assert!(retry_after);
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 3);
    assert_eq!(instance_containers(&api.instance).len(), 3);

    // The instance-wide cap: bob gets one more, then capacity is exhausted.
    assert_eq!(execute(&api, BOB_KEY, "b1", "echo hi").await.status, StatusCode::OK);
    let full = execute(&api, BOB_KEY, "b2", "echo hi").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.body["error"], "capacity_exhausted");
    assert!(full.headers.contains_key("retry-after"));
    // Deleting frees a slot.
    let freed = format!("/sessions/{}", accepted[0]);
    assert_eq!(
        call(&api, Method::DELETE, &freed, ALICE_KEY, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(execute(&api, BOB_KEY, "b2", "echo hi").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_engine_never_touch_each_other() {
    let redis = RedisServer::start();
    let mine = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let theirs = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&mine, ALICE_KEY, "shared-name", "echo mine").await;
    run(
        &theirs,
        ALICE_KEY,
        "shared-name",
        "sh -c 'echo theirs > /workspace/mark'",
    )
    .await;
    // An aggressive worker for `mine`: everything of its own is over age.
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "0.5".into()),
        ("CLEANUP_MAX_CONTAINER_AGE_SECONDS", "1".into()),
    ];
    let worker_env = env_refs(&worker_env);
    let _worker = CleanupWorker::start(&mine.instance, &worker_env);
    eventually(Duration::from_secs(10), "own container reaped", || {
        instance_containers(&mine.instance).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(instance_containers(&theirs.instance).len(), 1);
    assert_eq!(
        run(&theirs, ALICE_KEY, "shared-name", "cat /workspace/mark").await["stdout"],
        "theirs\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_memory_store_brig_api_reaps_in_process() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("SESSION_TTL_SECONDS", "1"),
        ("CLEANUP_INTERVAL_SECONDS", "0.5"),
        ("CLEANUP_GRACE_SECONDS", "0.5"),
    ]);
    run(&api, ALICE_KEY, "embedded", "echo hi").await;
    assert_eq!(session_containers(&api.instance, "embedded").len(), 1);
    eventually(Duration::from_secs(8), "embedded reaper removed the container", || {
        session_containers(&api.instance, "embedded").is_empty()
    })
    .await;
    assert!(api
        .logs()
        .iter()
        .any(|line| line.contains("\"removed_session_gone\":1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_lock_left_by_a_dead_creator_frees_itself_at_its_ttl() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let owner = brig_core::session::Owner::of_principal("alice");
    let lock = format!("brig:{}:lock:{}:stuck", api.instance, owner.as_str());
    assert!(redis
        .command(&["SET", &lock, "dead-creator", "PX", "2000"])
        .starts_with("+OK"));
    let started = Instant::now();
    let reply = run(&api, ALICE_KEY, "stuck", "echo through").await;
    let waited = started.elapsed();
    assert_eq!(reply["stdout"], "through\n");
    assert!(
        waited >= Duration::from_millis(1500),
        "the lock was ignored ({waited:?})"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
}
