//! Race-free creation and quotas: parallel creates across replicas, quotas
//! under load, a dead creator's lock.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_creates_across_two_replicas_yield_one_container() {
    let redis = RedisServer::start();
    let log = ("RUST_LOG", "info,brig_core::session=debug");
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
