//! Redis outages: clear 503s while it is gone, recovery without a restart.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_a_prompt_503_and_its_return_needs_no_restart() {
    let mut redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "outage", "echo before").await;
    assert_eq!(call(&api, Method::GET, "/ready", "", None).await.status, StatusCode::OK);

    redis.stop();
    let started = Instant::now();
    let down = execute(&api, ALICE_KEY, "outage", "echo during").await;
    let waited = started.elapsed();
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", down.body);
    assert_eq!(down.body["error"], "store_unavailable");
    assert!(down.headers.get("retry-after").is_some());
    assert!(waited < Duration::from_secs(3), "took {waited:?} to give up on Redis");
    // /ready's answer stands for a second (it is checked at most that often).
    let ready = ready_becomes(&api, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        ready.body["detail"].as_str().unwrap().starts_with("redis"),
        "{:?}",
        ready.body
    );

    redis.restart();
    // The connection manager reconnects on its own; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = execute(&api, ALICE_KEY, "outage", "echo after").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body["stdout"], "after\n");
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {:?}", reply.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ready_becomes(&api, StatusCode::OK).await;
}

/// `/ready`'s answer once it is `status`: within its caching second, plus a check.
async fn ready_becomes(api: &BrigApi, status: StatusCode) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reply = call(api, Method::GET, "/ready", "", None).await;
        if reply.status == status {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "/ready is not {status} after 3 s: {:?}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis restart between two requests costs the next one nothing: the store
/// reconnects and sends its call once more (before, the first request after a
/// restart was a 503 `store_unavailable`: broken pipe). The restarted Redis
/// is empty here, so the session starts over; what matters is the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_between_requests_costs_no_request_its_answer() {
    let mut redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "steady", "echo before").await;
    redis.restart();
    let after = execute(&api, ALICE_KEY, "steady", "echo after").await;
    assert_eq!(after.status, StatusCode::OK, "{:?}", after.body);
    assert_eq!(after.body["stdout"], "after\n");
}
