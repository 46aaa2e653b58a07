//! Router-level tests: the whole axum app called in-process (no socket), with
//! the memory store. They stop before any sandbox is needed: auth, rate limits,
//! validation and the error format. The same paths against the real binary,
//! Redis and engine are in the end-to-end suite (tests/).

mod auth;
mod validation;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use brig_api::AppState;
use brig_core::config::Env;
use brig_core::policy::rules::LiveRules;
use brig_core::runtime::fake::FakeRuntime;
use brig_core::store::MemoryStore;
use brig_core::Config;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const SECRET: &str = "router-test-secret-of-at-least-32-bytes!";

/// The app with `extra` environment on top of API keys `alice:alice-key-0123456789`,
/// `bob:bob-key-0123456789`, the JWT secret above and the memory store.
pub fn app(extra: &[(&str, &str)]) -> Router {
    app_on(extra, Arc::new(FakeRuntime::new()))
}

/// [`app`] over a given fake runtime (to steer what it answers).
pub fn app_on(extra: &[(&str, &str)], runtime: Arc<FakeRuntime>) -> Router {
    let mut vars = vec![
        ("API_KEYS", "alice:alice-key-0123456789,bob:bob-key-0123456789"),
        ("JWT_SECRET", SECRET),
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "ls,echo,cat"),
        ("MAX_REQUEST_BYTES", "4096"),
    ];
    vars.extend_from_slice(extra);
    let env = Env::from_fn(|name| vars.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()));
    let config = Config::from(env).expect("test config");
    // No engine: these tests stop before a sandbox, or use the fake runtime's.
    let rules = LiveRules::load(config.policy_path.clone(), &config.commands).expect("test policy");
    brig_api::router(AppState::from_parts(
        config,
        rules,
        Arc::new(MemoryStore::new()),
        runtime,
    ))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    Reply { status, headers, body }
}

/// `POST /execute` as alice with a JSON body.
pub fn execute(body: &str) -> Request<Body> {
    Request::post("/execute")
        .header("x-api-key", "alice-key-0123456789")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub fn get(path: &str, key: &str) -> Request<Body> {
    Request::get(path).header("x-api-key", key).body(Body::empty()).unwrap()
}

/// Asserts the error format: status, stable code, and a human detail.
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.body["error"], code, "{:?}", reply.body);
    assert!(
        reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{:?}",
        reply.body
    );
}
