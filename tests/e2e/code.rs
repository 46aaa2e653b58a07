//! `{"code", "language"}` requests, and sessions with their own image and
//! limits (`POST /sessions {"image", "memory_limit", "cpu_limit"}`).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

const PYTHON_IMAGE: &str = "brig-sandbox-python:latest";

fn api() -> BrigApi {
    BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "sh,python3,echo"),
        ("ALLOWED_IMAGES", PYTHON_IMAGE),
        ("LANGUAGES", "python=python3 -,sh=sh -s,ruby=ruby -"),
    ])
}

async fn code(api: &BrigApi, session: &str, language: &str, source: &str) -> Reply {
    let body = json!({"code": source, "language": language, "session_id": session});
    call(api, Method::POST, "/execute", ALICE_KEY, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_sh_code_run_in_a_session_with_its_own_image_and_limits() {
    let api = api();
    let created = call(
        &api,
        Method::POST,
        "/sessions",
        ALICE_KEY,
        Some(json!({"session_id": "py", "image": PYTHON_IMAGE, "memory_limit": "1g", "cpu_limit": 0.5})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["image"], PYTHON_IMAGE);
    // Clamped to CONTAINER_MEM_LIMIT (256m by default); the CPUs were below the maximum.
    assert_eq!(created.body["memory_limit"], 256 << 20);
    assert_eq!(created.body["cpu_limit"], 0.5);
    let container = session_containers(&api.instance, "py");
    let inspected = docker_inspect(
        &container[0],
        "{{.Config.Image}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
    );
    assert_eq!(inspected, format!("{PYTHON_IMAGE} {} 500000000", 256 << 20));

    let python = code(
        &api,
        "py",
        "python",
        "import sys\nprint(sum(range(10)))\nprint('to stderr', file=sys.stderr)\nsys.exit(4)\n",
    )
    .await;
    assert_eq!(python.status, StatusCode::OK, "{:?}", python.body);
    assert_eq!(python.body["stdout"], "45\n");
    assert_eq!(python.body["stderr"], "to stderr\n");
    assert_eq!(python.body["exit_code"], 4);
    let sh = code(&api, "py", "sh", "x=6\necho $((x * 7))\n").await;
    assert_eq!(sh.body["stdout"], "42\n", "{:?}", sh.body);

    // The default image has no python: the same code elsewhere fails like a shell would.
    let missing = code(&api, "plain", "python", "print(1)").await;
    assert_eq!(missing.status, StatusCode::OK);
    assert_eq!(missing.body["exit_code"], 127, "{:?}", missing.body);

    // A lower limit is honoured; one below what the tmpfs mounts need is
    // raised to that, CPUs to a tenth.
    let small = call(
        &api,
        Method::POST,
        "/sessions",
        ALICE_KEY,
        Some(json!({"session_id": "small", "memory_limit": "1m", "cpu_limit": 0.01})),
    )
    .await;
    let floor = small.body["memory_limit"].as_i64().unwrap();
    assert!(floor > 200 << 20 && floor < 256 << 20, "{:?}", small.body);
    assert_eq!(small.body["cpu_limit"], 0.1);
    assert_eq!(small.body["image"], test_image());
    let container = session_containers(&api.instance, "small");
    assert_eq!(docker_inspect(&container[0], "{{.HostConfig.NanoCpus}}"), "100000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_code_requests_and_session_options_are_refused() {
    let api = api();
    for (body, status, error) in [
        (
            json!({"code": "1", "language": "cobol", "session_id": "s"}),
            422,
            "invalid_language",
        ),
        (json!({"code": "1", "session_id": "s"}), 422, "invalid_language"),
        (
            json!({"code": "1", "command": "echo", "language": "sh", "session_id": "s"}),
            422,
            "invalid_request",
        ),
        (
            json!({"command": "echo", "language": "sh", "session_id": "s"}),
            422,
            "invalid_request",
        ),
        (
            json!({"code": "1", "language": "sh", "stdin": "x", "session_id": "s"}),
            422,
            "invalid_request",
        ),
        (json!({"session_id": "s"}), 422, "invalid_request"),
        // The interpreter passes the allowlist like any command: ruby is not allowed.
        (
            json!({"code": "puts 1", "language": "ruby", "session_id": "s"}),
            403,
            "command_not_allowed",
        ),
    ] {
        let reply = call(&api, Method::POST, "/execute", ALICE_KEY, Some(body.clone())).await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {:?}", reply.body);
        assert_eq!(reply.body["error"], error, "{body}");
    }
    for (body, error) in [
        (
            json!({"session_id": "s", "image": "alpine:latest"}),
            "image_not_allowed",
        ),
        (
            json!({"session_id": "s", "image": "brig-sandbox-python"}),
            "image_not_allowed",
        ),
        (json!({"session_id": "s", "memory_limit": "lots"}), "invalid_limits"),
        (json!({"session_id": "s", "cpu_limit": -1}), "invalid_limits"),
        (json!({"session_id": "s", "cpu_limit": 0}), "invalid_limits"),
    ] {
        let reply = call(&api, Method::POST, "/sessions", ALICE_KEY, Some(body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error"], error, "{body}");
    }
    assert!(instance_containers(&api.instance).is_empty());
}
