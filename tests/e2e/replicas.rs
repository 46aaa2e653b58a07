//! Two API processes serving one session: one writes to the sandbox's attach
//! channel (it holds the lease), the other goes through the engine's exec, so
//! frames never interleave.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_serves_the_same_session_without_a_second_writer() {
    let redis = RedisServer::start();
    let first = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let second = BrigApi::start_in(
        &first.instance,
        &[
            ("REDIS_URL", &redis.url()),
            ("RUST_LOG", "info,brig_core::session=debug"),
        ],
    );
    run(&first, ALICE_KEY, "shared", "sh -c 'echo from-first > /workspace/f'").await;
    assert_eq!(
        run(&second, ALICE_KEY, "shared", "cat /workspace/f").await["stdout"],
        "from-first\n"
    );

    let with_stdin = call(
        &second,
        Method::POST,
        "/execute",
        ALICE_KEY,
        Some(json!({"command": "cat", "session_id": "shared", "stdin": "piped in"})),
    )
    .await;
    assert_eq!(with_stdin.body["stdout"], "piped in", "{:?}", with_stdin.body);
    let slow = call(
        &second,
        Method::POST,
        "/execute",
        ALICE_KEY,
        Some(json!({"command": "sh -c 'sleep 30 & sleep 30'", "session_id": "shared", "timeout": 1})),
    )
    .await;
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(slow.body["timed_out"], true);
    assert_eq!(slow.body["exit_code"], 124);

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let base = if i % 2 == 0 {
                first.base.clone()
            } else {
                second.base.clone()
            };
            tokio::spawn(async move {
                let body =
                    json!({"command": format!("sh -c 'echo out-{i}; echo err-{i} >&2'"), "session_id": "shared"});
                (i, post(&base, "/execute", ALICE_KEY, &body).await.unwrap().body)
            })
        })
        .collect();
    for task in tasks {
        let (i, body) = task.await.unwrap();
        assert_eq!(body["stdout"], format!("out-{i}\n"), "{body}");
        assert_eq!(body["stderr"], format!("err-{i}\n"), "{body}");
    }
    assert!(
        second.logs().iter().any(|line| line.contains("using docker exec")),
        "the second replica never used the exec path"
    );
    assert_eq!(
        run(&second, ALICE_KEY, "shared", "sh -c 'ps -o args'").await["stdout"]
            .as_str()
            .unwrap()
            .matches("sleep 30")
            .count(),
        0
    );
}
