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
