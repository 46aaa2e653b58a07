//! `/executions`: background commands, their status from any replica, and
//! cancel killing the whole process tree.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::*;

const ALLOWLIST: &str = "sh,echo,cat,ps,sleep";

async fn start(api: &BrigApi, key: &str, session: &str, command: &str, timeout: u32) -> String {
    let body = json!({"command": command, "session_id": session, "timeout": timeout});
    let reply = call(api, Method::POST, "/executions", key, Some(body)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "running");
    reply.body["execution_id"].as_str().unwrap().to_string()
}

async fn status(api: &BrigApi, key: &str, id: &str) -> Reply {
    call(api, Method::GET, &format!("/executions/{id}"), key, None).await
}

/// Polls until the execution is no longer running.
async fn finished(api: &BrigApi, id: &str) -> Value {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = status(api, ALICE_KEY, id).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        if reply.body["status"] != "running" {
            return reply.body;
        }
        assert!(Instant::now() < give_up, "still running: {:?}", reply.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_runs_in_the_background_and_its_result_is_kept() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", ALLOWLIST)]);
    let id = start(
        &api,
        ALICE_KEY,
        "bg",
        "sh -c 'echo started; sleep 1; echo done >&2; exit 3'",
        20,
    )
    .await;
    let running = status(&api, ALICE_KEY, &id).await;
    assert_eq!(running.body["status"], "running", "{:?}", running.body);
    assert_eq!(running.body["session_id"], "bg");
    assert!(running.body.get("exit_code").is_none());

    let done = finished(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["exit_code"], 3);
    assert_eq!(done["stdout"], "started\n");
    assert_eq!(done["stderr"], "done\n");
    assert_eq!(done["execution_id"], id.as_str());
    // Kept: asking again gives the same answer.
    assert_eq!(status(&api, ALICE_KEY, &id).await.body, done);

    let slow = start(&api, ALICE_KEY, "bg", "sleep 30", 1).await;
    let timed_out = finished(&api, &slow).await;
    assert_eq!(timed_out["status"], "timed_out", "{timed_out}");
    assert_eq!(timed_out["exit_code"], 124);

    // A failure before the command runs is a failed execution with the error
    // /execute would have given.
    let refused = call(
        &api,
        Method::POST,
        "/executions",
        ALICE_KEY,
        Some(json!({"command": "rm -rf /", "session_id": "bg"})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_command_and_its_children_and_is_idempotent() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", ALLOWLIST)]);
    run(&api, ALICE_KEY, "victim", "echo warm").await;
    let id = start(
        &api,
        ALICE_KEY,
        "victim",
        "sh -c 'sleep 300 & sleep 300 & sleep 300'",
        300,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sleepers(&api, "victim").await, 3);

    // Not alice's? Not found, and nothing is cancelled.
    for (key, path) in [
        (BOB_KEY, format!("/executions/{id}")),
        (BOB_KEY, format!("/executions/{id}/cancel")),
        (ALICE_KEY, "/executions/0123456789abcdef0123456789abcdef/cancel".into()),
        (ALICE_KEY, "/executions/..%2F..%2Fetc/cancel".into()),
    ] {
        let method = if path.ends_with("cancel") {
            Method::POST
        } else {
            Method::GET
        };
        let reply = call(&api, method, &path, key, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {:?}", reply.body);
        assert_eq!(reply.body["error"], "not_found");
    }
    assert_eq!(status(&api, ALICE_KEY, &id).await.body["status"], "running");

    let cancelled = call(&api, Method::POST, &format!("/executions/{id}/cancel"), ALICE_KEY, None).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled", "{:?}", cancelled.body);
    assert_eq!(
        sleepers(&api, "victim").await,
        0,
        "the process tree outlived the cancel"
    );

    let again = call(&api, Method::POST, &format!("/executions/{id}/cancel"), ALICE_KEY, None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, cancelled.body);

    // A finished execution stays as it finished.
    let quick = start(&api, ALICE_KEY, "victim", "echo quick", 10).await;
    assert_eq!(finished(&api, &quick).await["status"], "completed");
    let late = call(
        &api,
        Method::POST,
        &format!("/executions/{quick}/cancel"),
        ALICE_KEY,
        None,
    )
    .await;
    assert_eq!(late.body["status"], "completed");
    assert_eq!(late.body["stdout"], "quick\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_cancel_work_from_another_replica() {
    let redis = RedisServer::start();
    let env = [("REDIS_URL", redis.url()), ("ALLOWED_COMMANDS", ALLOWLIST.to_string())];
    let first = BrigApi::start(&env_refs(&env));
    let second = BrigApi::start_in(&first.instance, &env_refs(&env));

    let id = start(&first, ALICE_KEY, "shared", "sh -c 'sleep 300 & sleep 300'", 300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&second, ALICE_KEY, &id).await.body["status"], "running");
    assert_eq!(status(&second, BOB_KEY, &id).await.status, StatusCode::NOT_FOUND);

    let cancelled = call(
        &second,
        Method::POST,
        &format!("/executions/{id}/cancel"),
        ALICE_KEY,
        None,
    )
    .await;
    assert_eq!(cancelled.body["status"], "cancelled", "{:?}", cancelled.body);
    assert_eq!(status(&first, ALICE_KEY, &id).await.body["status"], "cancelled");
    assert_eq!(sleepers(&first, "shared").await, 0);

    // The second replica does not hold the sandbox's channel: its commands go
    // through the engine's exec, and cancel through `brig-agent kill-tag`.
    let via_exec = start(&second, ALICE_KEY, "shared", "sh -c 'sleep 300 & sleep 300'", 300).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sleepers(&first, "shared").await, 2);
    let cancelled = call(
        &second,
        Method::POST,
        &format!("/executions/{via_exec}/cancel"),
        ALICE_KEY,
        None,
    )
    .await;
    assert_eq!(cancelled.body["status"], "cancelled", "{:?}", cancelled.body);
    assert_eq!(sleepers(&first, "shared").await, 0);

    let quick = start(&second, ALICE_KEY, "shared", "echo from-second", 10).await;
    let done = finished(&first, &quick).await;
    assert_eq!(done["stdout"], "from-second\n", "{done}");
}

/// Bytes Redis uses, from `INFO memory`.
fn redis_memory(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "memory"]);
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("used_memory in INFO")
}

/// Red team H3: 10 executions and 10 idempotent executes of 2 MiB of NUL
/// bytes added 295 MiB to the Redis every tenant shares, and nothing bounded
/// a principal. Results are stored packed, and past `RESULT_STORE_QUOTA_BYTES`
/// a principal's results that expire soonest are evicted (410
/// `result_evicted`, and an evicted idempotent answer is never run again);
/// another principal's results stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_results_are_packed_and_bounded_per_principal() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[
        ("REDIS_URL", &redis.url()),
        ("ALLOWED_COMMANDS", "sh,cat,echo"),
        ("RESULT_STORE_QUOTA_BYTES", "2m"),
        ("IDEMPOTENCY_TTL_SECONDS", "600"),
    ]);
    let nul = "sh -c 'head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2'";
    let before = redis_memory(&redis);
    for i in 0..5 {
        let id = start(&api, ALICE_KEY, "flood", nul, 30).await;
        let done = finished(&api, &id).await;
        assert_eq!(done["stdout"].as_str().map(str::len), Some(1 << 20), "run {i}");
        let reply = reqwest::Client::new()
            .post(api.url("/execute"))
            .header("x-api-key", ALICE_KEY)
            .header("idempotency-key", format!("nul-{i}"))
            .json(&json!({"command": nul, "session_id": "flood"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
    }
    let grown = redis_memory(&redis).saturating_sub(before);
    assert!(grown < 8 << 20, "10 results of NUL floods took {grown} bytes of Redis");

    // Output deflate cannot shrink: each result is stored in about 0.8 MB.
    let noise = "sh -c 'head -c 600000 /dev/urandom | base64'";
    let once = |key: &'static str| {
        reqwest::Client::new()
            .post(api.url("/execute"))
            .header("x-api-key", ALICE_KEY)
            .header("idempotency-key", key)
            .json(&json!({"command": "sh -c 'echo ran >> /workspace/ran; head -c 600000 /dev/urandom | base64'", "session_id": "quota"}))
            .send()
    };
    assert_eq!(once("kept-once").await.unwrap().status(), StatusCode::OK);
    let bobs = start(&api, BOB_KEY, "quota", noise, 30).await;
    let mut alices = Vec::new();
    for _ in 0..3 {
        let id = start(&api, ALICE_KEY, "quota", noise, 30).await;
        finished(&api, &id).await;
        alices.push(id);
    }
    // The idempotent answer expired soonest (10 minutes), so it went first,
    // then the oldest execution; the newest are whole.
    let replay = once("kept-once").await.unwrap();
    assert_eq!(replay.status(), StatusCode::GONE);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "result_evicted", "{body}");
    let ran = call(
        &api,
        Method::POST,
        "/execute",
        ALICE_KEY,
        Some(json!({"command": "cat /workspace/ran", "session_id": "quota"})),
    )
    .await;
    assert_eq!(ran.body["stdout"], "ran\n", "an evicted idempotent request ran again");
    let first = status(&api, ALICE_KEY, &alices[0]).await;
    assert_eq!(
        (first.status, first.body["error"].as_str()),
        (StatusCode::GONE, Some("result_evicted"))
    );
    assert_eq!(
        status(&api, BOB_KEY, &alices[0]).await.status,
        StatusCode::NOT_FOUND,
        "bob learns nothing"
    );
    for id in &alices[1..] {
        let kept = status(&api, ALICE_KEY, id).await;
        assert_eq!(kept.status, StatusCode::OK, "{:?}", kept.body);
        assert!(kept.body["stdout"].as_str().unwrap().len() > 790_000);
    }
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let bob = status(&api, BOB_KEY, &bobs).await;
        assert_eq!(bob.status, StatusCode::OK, "bob paid for alice: {:?}", bob.body);
        if bob.body["status"] != "running" {
            assert!(bob.body["stdout"].as_str().unwrap().len() > 790_000);
            break;
        }
        assert!(Instant::now() < give_up);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
