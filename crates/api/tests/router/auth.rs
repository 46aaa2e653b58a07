use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::{app, assert_error, get, send, SECRET};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn bearer(token: &str) -> Request<Body> {
    Request::get("/sessions")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn every_credential_failure_is_a_401_with_www_authenticate() {
    let app = app(&[]);
    let valid_claims = json!({"sub": "carol", "exp": now() + 300});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(valid_claims.to_string())
    );
    let cases: Vec<(&str, Request<Body>)> = vec![
        ("missing", Request::get("/sessions").body(Body::empty()).unwrap()),
        ("wrong key", get("/sessions", "alice-key-but-wrong")),
        ("empty key", get("/sessions", "")),
        (
            "bad signature",
            bearer(&token(
                Algorithm::HS256,
                "another-secret-that-is-32-bytes-long!!",
                valid_claims.clone(),
            )),
        ),
        (
            "expired",
            bearer(&token(
                Algorithm::HS256,
                SECRET,
                json!({"sub": "carol", "exp": now() - 120}),
            )),
        ),
        ("alg none", bearer(&unsigned)),
        (
            "missing exp",
            bearer(&token(Algorithm::HS256, SECRET, json!({"sub": "carol"}))),
        ),
        (
            "missing sub",
            bearer(&token(Algorithm::HS256, SECRET, json!({"exp": now() + 300}))),
        ),
        (
            "other HMAC alg",
            bearer(&token(Algorithm::HS512, SECRET, valid_claims.clone())),
        ),
        ("not a token", bearer("abc.def.ghi")),
        (
            "basic scheme",
            Request::get("/sessions")
                .header(header::AUTHORIZATION, "Basic YWxpY2U6eA==")
                .body(Body::empty())
                .unwrap(),
        ),
    ];
    for (name, request) in cases {
        let reply = send(&app, request).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(
            reply.headers.contains_key(header::WWW_AUTHENTICATE),
            "{name}: no WWW-Authenticate"
        );
    }
}

#[tokio::test]
async fn a_valid_jwt_or_api_key_is_admitted() {
    let app = app(&[]);
    let jwt = token(Algorithm::HS256, SECRET, json!({"sub": "carol", "exp": now() + 300}));
    let reply = send(&app, bearer(&jwt)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, json!({"sessions": []}));
    let reply = send(&app, get("/sessions", "bob-key-0123456789")).await;
    assert_eq!(reply.status, StatusCode::OK);
    // An API key as a bearer (MCP clients that can send nothing else), and
    // not a wrong one.
    assert_eq!(send(&app, bearer("bob-key-0123456789")).await.status, StatusCode::OK);
    assert_eq!(send(&app, bearer("bob-key-not")).await.status, StatusCode::UNAUTHORIZED);
    // Within the explicit leeway (5 s by default) an expired token still passes.
    let just_expired = token(Algorithm::HS256, SECRET, json!({"sub": "carol", "exp": now() - 2}));
    assert_eq!(send(&app, bearer(&just_expired)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn rate_limit_applies_per_principal_with_retry_after() {
    let app = app(&[("RATE_LIMIT_REQUESTS", "3"), ("RATE_LIMIT_WINDOW_SECONDS", "60")]);
    for _ in 0..3 {
        assert_eq!(
            send(&app, get("/sessions", "alice-key-0123456789")).await.status,
            StatusCode::OK
        );
    }
    let limited = send(&app, get("/sessions", "alice-key-0123456789")).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = limited.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        send(&app, get("/sessions", "bob-key-0123456789")).await.status,
        StatusCode::OK
    );
    // Failed authentication is not charged to anyone and creates no limiter state.
    for _ in 0..10 {
        assert_eq!(
            send(&app, get("/sessions", "nobody")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        send(&app, get("/sessions", "bob-key-0123456789")).await.status,
        StatusCode::OK
    );
}

/// Readiness goes through the runtime seam: what the runtime says is missing
/// is what `/ready` reports, checked at most once a second (red team M4: each
/// unauthenticated call ran `docker info`).
#[tokio::test(start_paused = true)]
async fn ready_reports_what_the_runtime_lacks_checked_at_most_once_a_second() {
    let runtime = std::sync::Arc::new(brig_core::runtime::fake::FakeRuntime::new());
    let app = crate::app_on(&[], runtime.clone());
    let ready = || Request::get("/ready").body(Body::empty()).unwrap();
    assert_eq!(send(&app, ready()).await.status, StatusCode::OK);
    runtime.set_not_ready(Some("docker: no answer within 2 s"));
    // The answer of a moment ago stands...
    for _ in 0..5 {
        assert_eq!(send(&app, ready()).await.status, StatusCode::OK);
    }
    // ...for a second.
    tokio::time::advance(brig_api::service::readiness::FRESH_FOR).await;
    let reply = send(&app, ready()).await;
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(reply.body["detail"], "docker: no answer within 2 s");
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn health_needs_no_credentials() {
    let reply = send(&app(&[]), Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "ok");
}

/// Key rotation (newcomer trial P10): a principal's old and new keys are both
/// accepted and are the same principal, so its sessions stay its own.
#[tokio::test]
async fn a_principal_with_two_keys_keeps_its_sessions_under_either() {
    let app = app(&[(
        "API_KEYS",
        "me:old-key-0123456789,me:new-key-0123456789,bob:bob-key-0123456789",
    )]);
    let create = Request::post("/sessions")
        .header("x-api-key", "old-key-0123456789")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"session_id": "kept"}"#))
        .unwrap();
    assert_eq!(send(&app, create).await.status, StatusCode::CREATED);
    let listed = send(&app, get("/sessions", "new-key-0123456789")).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["sessions"][0]["session_id"], "kept");
    let bobs = send(&app, get("/sessions", "bob-key-0123456789")).await;
    assert_eq!(bobs.body["sessions"], json!([]));
}

/// Red team M3: a token whose `sub` is an API key's name is someone else
/// (its own sessions, rate limit and unread answers), unless the operator
/// maps that subject to the key's principal with `JWT_SUBJECT_ALIASES`.
#[tokio::test]
async fn a_token_never_stands_for_a_key_principal_unless_aliased() {
    let create = |key: &str| {
        Request::post("/sessions")
            .header("x-api-key", key)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"session_id": "alices"}"#))
            .unwrap()
    };
    let alice = token(Algorithm::HS256, SECRET, json!({"sub": "alice", "exp": now() + 300}));
    let app = app(&[]);
    assert_eq!(
        send(&app, create("alice-key-0123456789")).await.status,
        StatusCode::CREATED
    );
    let as_token = send(&app, bearer(&alice)).await;
    assert_eq!(as_token.status, StatusCode::OK);
    assert_eq!(
        as_token.body["sessions"],
        json!([]),
        "a token named alice saw the key's sessions"
    );
    let file = Request::get("/sessions/alices/files/x")
        .header(header::AUTHORIZATION, format!("Bearer {alice}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, file).await.status, StatusCode::NOT_FOUND);

    let aliased = crate::app(&[("JWT_SUBJECT_ALIASES", "alice=alice")]);
    assert_eq!(
        send(&aliased, create("alice-key-0123456789")).await.status,
        StatusCode::CREATED
    );
    let as_token = send(&aliased, bearer(&alice)).await;
    assert_eq!(
        as_token.body["sessions"][0]["session_id"], "alices",
        "{:?}",
        as_token.body
    );
}
