//! `/metrics`: the counters move by exactly what happened; access needs the
//! token (or the separate port); the cleanup worker exposes its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

const TOKEN: &str = "metrics-token-0123456789";

/// Prometheus text → series (name plus sorted labels) → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort_unstable();
                    (name, format!("{{{}}}", labels.join(",")))
                }
                None => (series, String::new()),
            };
            Some((format!("{name}{labels}"), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(url: &str, token: Option<&str>) -> (StatusCode, BTreeMap<String, f64>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, parse(&response.text().await.unwrap()))
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_happened_and_need_the_token() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "sh,echo"),
        ("METRICS_TOKEN", TOKEN),
    ]);
    let url = api.url("/metrics");
    assert_eq!(scrape(&url, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(&url, Some("metrics-token-wrong-0000")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, before) = scrape(&url, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);

    run(&api, ALICE_KEY, "m", "echo a").await;
    run(&api, ALICE_KEY, "m", "echo b").await;
    run(&api, ALICE_KEY, "m", "sh -c 'exit 3'").await;
    let slow = json!({"command": "sh -c 'sleep 5'", "session_id": "m", "timeout": 1});
    assert_eq!(
        call(&api, Method::POST, "/execute", ALICE_KEY, Some(slow)).await.body["timed_out"],
        true
    );
    let oom = run(
        &api,
        ALICE_KEY,
        "m",
        "sh -c 'dd if=/dev/zero of=/dev/null bs=400M count=1'",
    )
    .await;
    assert_eq!(oom["exit_code"], 137, "{oom}");
    assert_eq!(execute(&api, ALICE_KEY, "m", "id").await.status, StatusCode::FORBIDDEN);
    let (_, during) = scrape(&url, Some(TOKEN)).await;
    assert_eq!(during["brig_sessions_live"], 1.0);
    let deleted = call(&api, Method::DELETE, "/sessions/m", ALICE_KEY, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let (_, after) = scrape(&url, Some(TOKEN)).await;
    for (series, expected) in [
        (r#"brig_commands_total{outcome="ok"}"#, 2.0),
        (r#"brig_commands_total{outcome="nonzero"}"#, 1.0),
        (r#"brig_commands_total{outcome="timed_out"}"#, 1.0),
        (r#"brig_commands_total{outcome="oom_killed"}"#, 1.0),
        (r#"brig_commands_total{outcome="cancelled"}"#, 0.0),
        (
            r#"brig_http_requests_total{method="POST",route="/execute",status="200"}"#,
            5.0,
        ),
        (
            r#"brig_http_requests_total{method="POST",route="/execute",status="403"}"#,
            1.0,
        ),
        (
            r#"brig_http_requests_total{method="DELETE",route="/sessions/{session_id}",status="204"}"#,
            1.0,
        ),
        (r#"brig_containers_created_total{source="new"}"#, 1.0),
        (r#"brig_containers_removed_total{reason="deleted"}"#, 1.0),
        ("brig_command_duration_seconds_count", 5.0),
    ] {
        assert_eq!(delta(&before, &after, series), expected, "{series}");
    }
    assert_eq!(after["brig_sessions_live"], 0.0);
    assert!(after
        .keys()
        .any(|k| k.starts_with("brig_http_request_duration_seconds_bucket")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_metrics_live_only_on_their_own_port_and_the_worker_has_its_own() {
    let plain = BrigApi::start(&[("SESSION_STORE", "memory")]);
    assert_eq!(scrape(&plain.url("/metrics"), None).await.0, StatusCode::NOT_FOUND);

    let redis = RedisServer::start();
    let port = free_port();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("METRICS_PORT", &port.to_string())]);
    assert_eq!(scrape(&api.url("/metrics"), None).await.0, StatusCode::NOT_FOUND);
    run(&api, ALICE_KEY, "p", "echo counted").await;
    let (status, metrics) = scrape(&format!("http://127.0.0.1:{port}/metrics"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metrics[r#"brig_commands_total{outcome="ok"}"#], 1.0);

    let worker_port = free_port();
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "1".into()),
        ("METRICS_PORT", worker_port.to_string()),
        ("METRICS_TOKEN", TOKEN.to_string()),
    ];
    let _worker = CleanupWorker::start(&api.instance, &env_refs(&worker_env));
    let url = format!("http://127.0.0.1:{worker_port}/metrics");
    assert_eq!(scrape(&url, None).await.0, StatusCode::UNAUTHORIZED);
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, metrics) = scrape(&url, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        if metrics.get("brig_cleanup_passes_total").copied().unwrap_or(0.0) >= 2.0 {
            break;
        }
        assert!(Instant::now() < give_up, "{metrics:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Red team H1: any method string became a label value, a series kept forever
/// (1,500 requests with 100 kB methods: +146 MiB). Labels come from a fixed set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_methods_and_paths_never_become_series() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("METRICS_TOKEN", TOKEN)]);
    let client = reqwest::Client::new();
    for i in 0..20 {
        let method = Method::from_bytes(format!("BRIGX{i}{}", "Z".repeat(2000)).as_bytes()).unwrap();
        for path in ["/execute", "/sessions/s", &format!("/nowhere-{i}")] {
            let response = client.request(method.clone(), api.url(path)).send().await.unwrap();
            assert!(response.status().is_client_error(), "{path}: {}", response.status());
        }
    }
    let (status, series) = scrape(&api.url("/metrics"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let leaked: Vec<&String> = series
        .keys()
        .filter(|name| name.contains("BRIGX") || name.contains("nowhere"))
        .collect();
    assert!(leaked.is_empty(), "client input became series: {leaked:?}");
    let other: f64 = series
        .iter()
        .filter(|(name, _)| name.starts_with("brig_http_requests_total") && name.contains(r#"method="other""#))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(other, 40.0, "the 40 requests to known routes count as method=\"other\"");
}

/// The metrics ports (API and worker) hold connections to the API port's
/// bounds: a client that never finishes its headers is dropped after
/// `HTTP_HEADER_TIMEOUT_SECONDS`, not kept for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_port_drops_a_client_that_never_finishes_its_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let redis = RedisServer::start();
    let (api_port, worker_port) = (free_port(), free_port());
    let api = BrigApi::start(&[
        ("REDIS_URL", &redis.url()),
        ("METRICS_PORT", &api_port.to_string()),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "1"),
    ]);
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("METRICS_PORT", worker_port.to_string()),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "1".into()),
    ];
    let _worker = CleanupWorker::start(&api.instance, &env_refs(&worker_env));
    for port in [api_port, worker_port] {
        let give_up = Instant::now() + Duration::from_secs(15);
        let mut stream = loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => break stream,
                Err(err) => assert!(Instant::now() < give_up, "port {port}: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = Instant::now();
        let mut buf = [0; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(stream.read(&mut buf).await, Ok(0) | Err(_)) {}
        })
        .await;
        assert!(closed.is_ok(), "port {port}: a half-sent request kept its connection");
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "port {port}: closed before the timeout"
        );
    }
}
