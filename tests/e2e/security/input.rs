//! Hostile input: sizes, types, fields that would loosen the sandbox, hostile
//! session ids and working directories. All are 4xx with a stable code, and
//! the sandbox that does get created still matches the contract.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::*;

async fn post(api: &BrigApi, body: Value) -> Reply {
    call(api, Method::POST, "/execute", ALICE_KEY, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_that_would_loosen_the_sandbox_are_rejected_and_change_nothing() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory")]);
    for (field, value) in [
        ("privileged", json!(true)),
        ("network_mode", json!("host")),
        ("network", json!(true)),
        ("user", json!("0:0")),
        ("binds", json!(["/:/host"])),
        ("cap_add", json!(["SYS_ADMIN"])),
        ("image", json!("alpine")),
        ("memory_limit", json!("100g")),
    ] {
        let mut body = json!({"command": "id", "session_id": "loosen"});
        body[field] = value;
        let reply = post(&api, body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error"], "invalid_body");
    }
    // The environment is a field now, but not the dynamic loader's part of it.
    for name in ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"] {
        let body = json!({"command": "id", "session_id": "loosen", "env": {name: "/workspace/x.so"}});
        let reply = post(&api, body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error"], "invalid_env");
        assert!(reply.body["detail"].as_str().unwrap().contains(name));
    }
    assert!(
        instance_containers(&api.instance).is_empty(),
        "a rejected request created a sandbox"
    );
    let ok = post(&api, json!({"command": "id", "session_id": "loosen"})).await;
    assert_eq!(ok.status, StatusCode::OK);
    let id = &instance_containers(&api.instance)[0];
    let inspect = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.HostConfig.Privileged}} {{.HostConfig.NetworkMode}} {{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}} {{.HostConfig.Binds}} {{.HostConfig.ReadonlyRootfs}}", id])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "false none 1000:1000 [ALL] [] [] true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_ill_typed_input_is_a_stable_4xx() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory")]);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"command": format!("echo {}", "a".repeat(70_000)), "session_id": "s"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_command",
        ),
        (
            json!({"command": "echo a ".repeat(5000), "session_id": "s"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_command",
        ),
        (
            json!({"command": "cat", "session_id": "s", "stdin": "x".repeat(1_100_000)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_stdin",
        ),
        (
            json!({"command": "echo", "session_id": "s", "stdin": "x".repeat(3_000_000)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            json!({"command": ["echo"], "session_id": "s"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"command": "echo", "session_id": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"command": "echo", "session_id": "s", "timeout": 1e308}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_timeout",
        ),
        (
            json!({"command": "echo", "session_id": "s", "timeout": null}),
            StatusCode::OK,
            "",
        ),
        (
            json!(["command", "echo"]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let reply = post(&api, body.clone()).await;
        assert_eq!(reply.status, status, "{:.120}: {:?}", body.to_string(), reply.body);
        if !code.is_empty() {
            assert_eq!(reply.body["error"], code);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_session_ids_and_working_dirs_are_refused() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory")]);
    for id in [
        "../x",
        "a/b",
        "%2e%2e",
        ".",
        "..",
        "a b",
        "ä",
        "-rf",
        &"x".repeat(129),
        "a\u{0}b",
        "brig-default-x\n",
    ] {
        let reply = post(&api, json!({"command": "echo", "session_id": id})).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{id:?}");
        assert_eq!(reply.body["error"], "invalid_session_id");
    }
    for dir in [
        "/proc/self/fd/7",
        "/proc/1/cwd",
        "/workspace/../proc",
        "/tmp/../../etc",
        "/",
        "relative",
        "/workspacex",
        "/sys",
        &format!("/workspace/{}", "a/".repeat(3000)),
    ] {
        let reply = post(
            &api,
            json!({"command": "pwd", "session_id": "dirs", "working_dir": dir}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{dir:?}");
        assert_eq!(reply.body["error"], "invalid_working_dir");
    }
    // A symlink inside the sandbox only leads elsewhere inside the same sandbox.
    run(&api, ALICE_KEY, "dirs", "sh -c 'ln -s /proc/self/fd /workspace/fd'").await;
    let followed = post(
        &api,
        json!({"command": "pwd", "session_id": "dirs", "working_dir": "/workspace/fd"}),
    )
    .await;
    assert_eq!(followed.status, StatusCode::OK);
    assert!(instance_containers(&api.instance).len() == 1);
}
