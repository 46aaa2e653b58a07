use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::{app, assert_error, execute, get, send};

#[tokio::test]
async fn bad_bodies_get_stable_4xx_codes() {
    let app = app(&[]);
    let no_content_type = Request::post("/execute")
        .header("x-api-key", "alice-key-0123456789")
        .body(Body::from(r#"{"command":"ls","session_id":"s"}"#))
        .unwrap();
    assert_error(
        &send(&app, no_content_type).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let cases = [
        (r#"{"command":"ls","session_id":"s","network":true}"#, "invalid_body"),
        (r#"{"command":"ls"}"#, "invalid_body"),
        (r#"{"command":1,"session_id":"s"}"#, "invalid_body"),
        (r#"{"command":"ls","session_id":"s""#, "malformed_json"),
        (r#"{"command":"ls","session_id":"../etc"}"#, "invalid_session_id"),
        (r#"{"command":"ls","session_id":""}"#, "invalid_session_id"),
        (r#"{"command":"","session_id":"s"}"#, "invalid_command"),
        (r#"{"command":"echo 'unclosed","session_id":"s"}"#, "invalid_command"),
        (r#"{"command":"ls\u0000","session_id":"s"}"#, "invalid_command"),
        (r#"{"command":"ls\n-la","session_id":"s"}"#, "invalid_command"),
        (r#"{"command":"ls","session_id":"s","timeout":0}"#, "invalid_timeout"),
        (r#"{"command":"ls","session_id":"s","timeout":-1}"#, "invalid_timeout"),
        (r#"{"command":"ls","session_id":"s","timeout":301}"#, "invalid_timeout"),
        (r#"{"command":"ls","session_id":"s","timeout":"30"}"#, "invalid_body"),
        (
            r#"{"command":"ls","session_id":"s","working_dir":"/proc/self/fd/3"}"#,
            "invalid_working_dir",
        ),
        (
            r#"{"command":"ls","session_id":"s","working_dir":"/workspace/../etc"}"#,
            "invalid_working_dir",
        ),
        (
            r#"{"command":"ls","session_id":"s","working_dir":"tmp"}"#,
            "invalid_working_dir",
        ),
    ];
    for (body, code) in cases {
        assert_error(&send(&app, execute(body)).await, StatusCode::UNPROCESSABLE_ENTITY, code);
    }
}

#[tokio::test]
async fn commands_off_the_allowlist_are_forbidden() {
    let app = app(&[]);
    for command in ["id", "sh -c ls", "/bin/ls", "LS", "ls; id", "ls&&id", "./ls", "ｌｓ"] {
        let body = serde_json::json!({"command": command, "session_id": "s"}).to_string();
        let reply = send(&app, execute(&body)).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "command_not_allowed");
        // The refusal says what is allowed and which setting changes it.
        let detail = reply.body["detail"].as_str().unwrap();
        assert!(detail.contains("allowed: cat, echo, ls (ALLOWED_COMMANDS)"), "{detail}");
        if command.contains([';', '&']) {
            assert!(detail.contains("sh -c"), "{command}: {detail}");
        }
    }
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let app = app(&[]);
    let body = serde_json::json!({"command": "echo", "session_id": "s", "stdin": "x".repeat(10_000)}).to_string();
    assert_error(
        &send(&app, execute(&body)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[tokio::test]
async fn unknown_or_foreign_sessions_and_routes_are_404_and_wrong_methods_405() {
    let app = app(&[]);
    assert_error(
        &send(&app, get("/sessions/nope", "alice-key-0123456789")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &send(&app, get("/sessions/..%2Fetc", "alice-key-0123456789")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let delete = Request::delete("/sessions/nope")
        .header("x-api-key", "alice-key-0123456789")
        .body(Body::empty())
        .unwrap();
    assert_error(&send(&app, delete).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &send(&app, get("/nowhere", "alice-key-0123456789")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let put = Request::put("/execute")
        .header("x-api-key", "alice-key-0123456789")
        .body(Body::empty())
        .unwrap();
    assert_error(
        &send(&app, put).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let bad_create = Request::post("/sessions")
        .header("x-api-key", "alice-key-0123456789")
        .header("content-type", "text/plain")
        .body(Body::from("session_id=x"))
        .unwrap();
    assert_error(
        &send(&app, bad_create).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let bad_id = Request::post("/sessions")
        .header("x-api-key", "alice-key-0123456789")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"session_id":"a b"}"#))
        .unwrap();
    assert_error(
        &send(&app, bad_id).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_session_id",
    );
}
