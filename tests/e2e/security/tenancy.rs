//! Auth and tenancy: malformed and forged credentials, and one principal
//! probing another's sessions through every endpoint.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_forged_and_confused_credentials_are_all_401() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let now = unix_now();
    let valid = jwt(json!({"sub": "alice", "exp": now + 60}));
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&json!({"sub": "bob", "exp": now + 60})),
        parts[2]
    );
    let other_alg = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT"})),
        parts[1],
        parts[2]
    );
    let none_alg = format!("{}.{}.", b64(&json!({"alg": "none"})), parts[1]);
    let resigned = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": now + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"an-attacker-secret-of-32-bytes-or-more!"),
    )
    .unwrap();
    let not_yet = jwt(json!({"sub": "alice", "exp": now + 600, "nbf": now + 300}));
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no credentials", vec![]),
        ("empty key", vec![("x-api-key", String::new())]),
        ("wrong key", vec![("x-api-key", format!("{ALICE_KEY}x"))]),
        ("key prefix", vec![("x-api-key", ALICE_KEY[..8].to_string())]),
        ("bearer without token", vec![("authorization", "Bearer".into())]),
        ("bearer blank", vec![("authorization", "Bearer    ".into())]),
        (
            "two-part token",
            vec![("authorization", format!("Bearer {}.{}", parts[0], parts[1]))],
        ),
        (
            "tampered payload",
            vec![("authorization", format!("Bearer {tampered}"))],
        ),
        (
            "header asks RS256",
            vec![("authorization", format!("Bearer {other_alg}"))],
        ),
        ("alg none", vec![("authorization", format!("Bearer {none_alg}"))]),
        (
            "re-signed with another key",
            vec![("authorization", format!("Bearer {resigned}"))],
        ),
        ("not yet valid", vec![("authorization", format!("Bearer {not_yet}"))]),
        (
            "wrong key as bearer",
            vec![("authorization", format!("Bearer {ALICE_KEY}x"))],
        ),
        (
            "basic auth",
            vec![(
                "authorization",
                format!("Basic {}", URL_SAFE_NO_PAD.encode(format!("alice:{ALICE_KEY}"))),
            )],
        ),
    ];
    for (name, headers) in cases {
        let mut request = reqwest::Client::new().get(api.url("/sessions"));
        for (header, value) in &headers {
            request = request.header(*header, value);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{name}");
    }
    // A right key as a bearer is that key's principal (MCP clients can send
    // nothing else), exactly as in X-API-Key.
    let as_bearer = reqwest::Client::new()
        .get(api.url("/sessions"))
        .header("authorization", format!("Bearer {ALICE_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_bearer.status(), StatusCode::OK);
    // Keys in the query string are not credentials.
    for query in [
        format!("/sessions?api_key={ALICE_KEY}"),
        format!("/sessions?token={valid}"),
    ] {
        let reply = reqwest::Client::new().get(api.url(&query)).send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_cannot_reach_another_principals_session_through_any_endpoint() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "alices", "sh -c 'echo private > /workspace/p'").await;
    assert_eq!(
        call(&api, Method::GET, "/sessions/alices", BOB_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&api, Method::DELETE, "/sessions/alices", BOB_KEY, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&api, Method::GET, "/sessions", BOB_KEY, None).await.body,
        json!({"sessions": []})
    );
    // The same id from bob is bob's own, new sandbox.
    let bobs = run(&api, BOB_KEY, "alices", "cat /workspace/p").await;
    assert_ne!(bobs["exit_code"], 0);
    assert_eq!(bobs["session_created"], true);
    let created = call(
        &api,
        Method::POST,
        "/sessions",
        BOB_KEY,
        Some(json!({"session_id": "alices"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "bob's own session already exists");
    // Alice's is untouched.
    assert_eq!(
        run(&api, ALICE_KEY, "alices", "cat /workspace/p").await["stdout"],
        "private\n"
    );
}

/// Red team M1: every sandbox runs as host uid 1000 unless the engine remaps
/// users or the runtime is gVisor. brig says which holds, at start-up (a
/// warning when tenants share the host uid) and in `/ready`, as the engine
/// itself reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_separation_in_force_is_detected_and_reported() {
    let options = std::process::Command::new("docker")
        .args(["info", "--format", "{{json .SecurityOptions}}"])
        .output()
        .expect("docker info");
    let remapped = String::from_utf8_lossy(&options.stdout).contains("name=userns");
    let expected = if remapped { "userns-remap" } else { "shared-host-uid" };
    let api = BrigApi::start(&[("SESSION_STORE", "memory")]);
    let ready = call(&api, reqwest::Method::GET, "/ready", "", None).await;
    assert_eq!(ready.body["tenant_separation"], expected, "{:?}", ready.body);
    let warned = api
        .logs()
        .iter()
        .any(|line| line.contains("sandboxes run as host uid 1000"));
    assert_eq!(warned, !remapped, "the start-up warning");
    // scripts/gvisor.sh registers runsc with the engine (as for tests/e2e/gvisor.rs).
    let gvisor = BrigApi::start(&[("SESSION_STORE", "memory"), ("CONTAINER_RUNTIME", "runsc")]);
    let ready = call(&gvisor, reqwest::Method::GET, "/ready", "", None).await;
    assert_eq!(ready.body["tenant_separation"], "gvisor", "{:?}", ready.body);
    assert!(!gvisor
        .logs()
        .iter()
        .any(|line| line.contains("sandboxes run as host uid 1000")));
}
