//! `Idempotency-Key`: a retry replays the first answer and the command runs
//! once (the command appends to a file, which counts its runs).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::*;

async fn post_with_key(api: &BrigApi, path: &str, principal_key: &str, idempotency_key: &str, body: &Value) -> Reply {
    let response = reqwest::Client::new()
        .post(api.url(path))
        .header("x-api-key", principal_key)
        .header("idempotency-key", idempotency_key)
        .json(body)
        .send()
        .await
        .unwrap();
    reply(response).await
}

/// How many times the counting command has run in alice's `session`.
async fn runs(api: &BrigApi, session: &str) -> usize {
    let log = run(api, ALICE_KEY, session, "sh -c 'cat /workspace/runs 2>/dev/null'").await;
    log["stdout"].as_str().unwrap().lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_replays_the_first_answer_and_the_command_runs_once() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("ALLOWED_COMMANDS", "sh")]);
    let body = json!({"command": "sh -c 'echo run >> /workspace/runs; wc -l < /workspace/runs'", "session_id": "idem"});
    let first = post_with_key(&api, "/execute", ALICE_KEY, "order-42", &body).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["stdout"].as_str().unwrap().trim(), "1");
    assert!(first.headers.get("idempotent-replayed").is_none());
    let retry = post_with_key(&api, "/execute", ALICE_KEY, "order-42", &body).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(
        retry.body, first.body,
        "the retry is the first answer, timestamps included"
    );
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(runs(&api, "idem").await, 1);

    // Same key, another body (or endpoint): refused, nothing runs.
    let other = json!({"command": "sh -c 'echo run >> /workspace/runs'", "session_id": "idem"});
    let reused = post_with_key(&api, "/execute", ALICE_KEY, "order-42", &other).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.body["error"], "idempotency_key_reused");
    let elsewhere = post_with_key(&api, "/executions", ALICE_KEY, "order-42", &body).await;
    assert_eq!(elsewhere.body["error"], "idempotency_key_reused");
    assert_eq!(runs(&api, "idem").await, 1);

    // Keys are per principal: bob's "order-42" is his own.
    let bobs = post_with_key(&api, "/execute", BOB_KEY, "order-42", &body).await;
    assert_eq!(bobs.status, StatusCode::OK);
    assert!(bobs.headers.get("idempotent-replayed").is_none());

    // A bad key is refused before anything runs.
    let bad = post_with_key(&api, "/execute", ALICE_KEY, "has space", &body).await;
    assert_eq!(bad.body["error"], "invalid_idempotency_key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_wait_for_the_first_and_executions_are_started_once() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("ALLOWED_COMMANDS", "sh")]);
    run(&api, ALICE_KEY, "dup", "sh -c true").await;
    let body = json!({"command": "sh -c 'echo run >> /workspace/runs; sleep 1; wc -l < /workspace/runs'", "session_id": "dup"});
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (base, body) = (api.base.clone(), body.clone());
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(format!("{base}/execute"))
                    .header("x-api-key", ALICE_KEY)
                    .header("idempotency-key", "dup-key")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        answers.push(body);
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "{answers:?}");
    assert_eq!(runs(&api, "dup").await, 1);

    let start = json!({"command": "sh -c 'echo run >> /workspace/runs'", "session_id": "dup"});
    let first = post_with_key(&api, "/executions", ALICE_KEY, "exec-key", &start).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    let again = post_with_key(&api, "/executions", ALICE_KEY, "exec-key", &start).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["execution_id"], first.body["execution_id"]);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(runs(&api, "dup").await, 2);
}

/// Red team L2: a first request whose client went away held its key until the
/// marker expired (6 minutes); the retry, which is what the key is for, got
/// no answer. Now the abandoned key is released and the retry runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_client_went_away_runs_at_once() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "sh,echo"),
        ("MAX_EXEC_TIMEOUT_SECONDS", "20"),
        ("DEFAULT_EXEC_TIMEOUT_SECONDS", "10"),
    ]);
    run(&api, ALICE_KEY, "gone", "echo warm").await;
    let body = json!({"command": "sh -c 'sleep 2; echo done'", "session_id": "gone"});
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(700))
        .build()
        .unwrap();
    let first = impatient
        .post(api.url("/execute"))
        .header("x-api-key", ALICE_KEY)
        .header("idempotency-key", "left-early")
        .json(&body)
        .send()
        .await;
    assert!(first.is_err(), "the first request should have been cut off");
    // The server notices the closed connection and drops the request.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let retry = post_with_key(&api, "/execute", ALICE_KEY, "left-early", &body).await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(retry.body["stdout"], "done\n");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "the retry waited {:?} for an abandoned key",
        started.elapsed()
    );
}
