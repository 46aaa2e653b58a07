//! gVisor (`runsc`) as the runtime of the whole API or of chosen sessions.
//! scripts/gvisor.sh registers runsc with the engine; without it these fail.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

const ALLOWLIST: &str = "sh,echo,dmesg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_can_ask_for_gvisor_among_the_allowed_runtimes() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", ALLOWLIST),
        ("ALLOWED_RUNTIMES", "runsc"),
    ]);
    let created = call(
        &api,
        Method::POST,
        "/sessions",
        ALICE_KEY,
        Some(json!({"session_id": "g", "runtime": "runsc"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["runtime"], "runsc");
    let container = &session_containers(&api.instance, "g")[0];
    assert_eq!(docker_inspect(container, "{{.HostConfig.Runtime}}"), "runsc");
    let dmesg = run(&api, ALICE_KEY, "g", "dmesg").await;
    assert!(dmesg["stdout"].as_str().unwrap().contains("Starting gVisor"), "{dmesg}");

    // The default session stays on runc, whose kernel log is not readable.
    let plain = run(&api, ALICE_KEY, "plain", "dmesg").await;
    assert_ne!(plain["exit_code"], 0, "{plain}");
    let container = &session_containers(&api.instance, "plain")[0];
    assert_eq!(docker_inspect(container, "{{.HostConfig.Runtime}}"), "runc");

    let refused = call(
        &api,
        Method::POST,
        "/sessions",
        ALICE_KEY,
        Some(json!({"session_id": "k", "runtime": "kata"})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["error"], "runtime_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_api_can_run_under_gvisor_and_a_fork_bomb_stays_bounded() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", ALLOWLIST),
        ("CONTAINER_RUNTIME", "runsc"),
    ]);
    assert_eq!(call(&api, Method::GET, "/ready", "", None).await.status, StatusCode::OK);
    let dmesg = run(&api, ALICE_KEY, "g", "dmesg").await;
    assert!(dmesg["stdout"].as_str().unwrap().contains("Starting gVisor"), "{dmesg}");
    let body = json!({"command": "sh -c ':(){ :|:& };:; sleep 2'", "session_id": "g", "timeout": 3});
    let bomb = call(&api, Method::POST, "/execute", ALICE_KEY, Some(body)).await;
    assert_eq!(bomb.status, StatusCode::OK, "{:?}", bomb.body);
    assert_eq!(run(&api, ALICE_KEY, "g", "echo alive").await["stdout"], "alive\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_runtime_makes_the_api_not_ready() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("CONTAINER_RUNTIME", "no-such-runtime")]);
    let ready = call(&api, Method::GET, "/ready", "", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body["detail"].as_str().unwrap().contains("\"no-such-runtime\""),
        "{:?}",
        ready.body
    );
}
