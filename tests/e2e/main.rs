//! End-to-end: the real brig-api binary over real HTTP, a redis-server started
//! per test, and the real Docker engine. Needs the test image
//! (images/sandbox-test/build.sh) and redis-server (scripts/test.sh installs both).

mod auth;
mod churn;
mod cleanup;
mod cli;
mod code;
mod compose;
mod creation;
mod daemons;
mod durable;
mod egress;
mod executions;
mod faults;
mod files;
mod generate;
mod gvisor;
mod idempotency;
mod images;
mod mcp;
mod metrics;
mod newcomer;
mod nodes;
mod openapi;
mod policy;
mod pool;
mod readme;
mod redis_outage;
mod replicas;
mod sdk;
mod security;
mod sessions;
mod snapshots;
mod streaming;
mod suspension;
mod transfers;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

pub use brig_testkit::*;

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply { status, headers, body }
}

/// `POST base+path` with `X-API-Key: key` and a JSON body, from anywhere (a
/// spawned task holds only `base`); the transport error if nothing answers.
pub async fn post(base: &str, path: &str, key: &str, body: &Value) -> Result<Reply, reqwest::Error> {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await?;
    Ok(reply(response).await)
}

/// `method path` with `X-API-Key: key` and an optional JSON body.
pub async fn call(api: &BrigApi, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> Reply {
    let mut request = reqwest::Client::new()
        .request(method, api.url(path))
        .header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request.send().await.expect("request to brig-api")).await
}

/// `POST /execute` as the holder of `key`.
pub async fn execute(api: &BrigApi, key: &str, session: &str, command: &str) -> Reply {
    let body = serde_json::json!({"command": command, "session_id": session, "timeout": 20});
    call(api, reqwest::Method::POST, "/execute", key, Some(body)).await
}

/// Like [`execute`], asserting a 200 and returning the body.
pub async fn run(api: &BrigApi, key: &str, session: &str, command: &str) -> Value {
    let reply = execute(api, key, session, command).await;
    assert_eq!(reply.status, StatusCode::OK, "{command}: {:?}", reply.body);
    reply.body
}

/// How many `sleep` processes run in alice's `session` (needs `ps` allowed).
pub async fn sleepers(api: &BrigApi, session: &str) -> usize {
    let ps = run(api, ALICE_KEY, session, "ps -o args").await;
    ps["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("sleep"))
        .count()
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Waits until `done` holds, at most `within`.
pub async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
