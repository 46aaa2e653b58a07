//! Tenancy, session lifecycle and TTL, through the API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stay_in_their_session_and_with_their_principal() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(
        &api,
        ALICE_KEY,
        "one",
        "sh -c 'echo secret > /workspace/f; echo tmp > /tmp/t'",
    )
    .await;
    assert_eq!(
        run(&api, ALICE_KEY, "one", "cat /workspace/f").await["stdout"],
        "secret\n"
    );
    for (key, session) in [(ALICE_KEY, "two"), (BOB_KEY, "one")] {
        for path in ["/workspace/f", "/tmp/t"] {
            let other = run(&api, key, session, &format!("cat {path}")).await;
            assert_ne!(other["exit_code"], 0, "{path} visible from {session}: {other}");
            assert_eq!(other["stdout"], "");
        }
        assert_eq!(run(&api, key, session, "ls -A /workspace").await["stdout"], "");
    }
    // Three sessions, three containers: (alice, one), (alice, two), (bob, one).
    assert_eq!(instance_containers(&api.instance).len(), 3);
    // Bob sees only his own session, and cannot reach or delete alice's.
    let bobs = call(&api, Method::GET, "/sessions", BOB_KEY, None).await;
    assert_eq!(bobs.body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        call(&api, Method::GET, "/sessions/two", BOB_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&api, Method::DELETE, "/sessions/two", BOB_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&api, Method::GET, "/sessions/two", ALICE_KEY, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_container_and_the_next_execute_gets_a_fresh_one() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let first = run(&api, ALICE_KEY, "gone", "sh -c 'echo x > /workspace/residue'").await;
    assert_eq!(first["session_created"], true);
    assert_eq!(
        run(&api, ALICE_KEY, "gone", "echo again").await["session_created"],
        false
    );
    assert_eq!(instance_containers(&api.instance).len(), 1);

    let deleted = call(&api, Method::DELETE, "/sessions/gone", ALICE_KEY, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(
        instance_containers(&api.instance).is_empty(),
        "container survived DELETE"
    );
    assert_eq!(
        call(&api, Method::DELETE, "/sessions/gone", ALICE_KEY, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&api, Method::GET, "/sessions/gone", ALICE_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );

    let fresh = run(&api, ALICE_KEY, "gone", "ls -A /workspace").await;
    assert_eq!(fresh["session_created"], true);
    assert_eq!(fresh["stdout"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_created_idempotently_and_each_execute_refreshes_the_ttl() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("SESSION_TTL_SECONDS", "60")]);
    let created = call(
        &api,
        Method::POST,
        "/sessions",
        ALICE_KEY,
        Some(json!({"session_id": "ttl"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    // The creator's answer says when the session expires (RFC 3339, same
    // format: the strings order as the times do).
    assert!(
        created.body["expires_at"].as_str() > created.body["created_at"].as_str(),
        "{:?}",
        created.body
    );
    let again = call(
        &api,
        Method::POST,
        "/sessions",
        ALICE_KEY,
        Some(json!({"session_id": "ttl"})),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["created_at"], created.body["created_at"]);

    let before = call(&api, Method::GET, "/sessions/ttl", ALICE_KEY, None).await.body["expires_at"].clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let executed = run(&api, ALICE_KEY, "ttl", "echo touch").await;
    assert_eq!(executed["session_created"], false);
    let after = call(&api, Method::GET, "/sessions/ttl", ALICE_KEY, None).await.body["expires_at"].clone();
    assert!(
        after.as_str().unwrap() > before.as_str().unwrap(),
        "expires_at {before} → {after}"
    );

    let generated = call(&api, Method::POST, "/sessions", ALICE_KEY, None).await;
    assert_eq!(generated.status, StatusCode::CREATED);
    let id = generated.body["session_id"].as_str().unwrap();
    assert!(id.starts_with("s-"), "{id}");
    assert_eq!(run(&api, ALICE_KEY, id, "echo ok").await["session_created"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_container_vanished_is_repaired_on_next_use() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "repair", "echo first").await;
    remove_instance_containers(&api.instance);
    let repaired = run(&api, ALICE_KEY, "repair", "echo second").await;
    assert_eq!(repaired["stdout"], "second\n");
    assert_eq!(repaired["session_created"], true);
    assert_eq!(instance_containers(&api.instance).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_working_directory_is_named_not_blamed_on_the_program() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory")]);
    let reply = call(
        &api,
        Method::POST,
        "/execute",
        ALICE_KEY,
        Some(json!({"command": "ls", "session_id": "wd", "working_dir": "/workspace/nope"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["exit_code"], 127, "{:?}", reply.body);
    assert_eq!(
        reply.body["stderr"], "brig: working directory /workspace/nope does not exist\n",
        "{:?}",
        reply.body
    );
}
