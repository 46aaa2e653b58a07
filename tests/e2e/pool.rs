//! The warm pool: unique claims under concurrency, refills, surplus, quotas.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_never_share_a_spare_and_the_pool_refills() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("WARM_POOL_SIZE", "3")]);
    eventually(Duration::from_secs(20), "pool filled", || {
        spare_containers(&api.instance).len() == 3
    })
    .await;
    let spares: HashSet<String> = spare_containers(&api.instance).into_iter().collect();

    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let base = api.base.clone();
            tokio::spawn(async move {
                let body = serde_json::json!({
                    "command": format!("sh -c 'echo {i} >> /workspace/owners; cat /workspace/owners'"),
                    "session_id": format!("p{i}")
                });
                let reply = post(&base, "/execute", ALICE_KEY, &body).await.unwrap();
                (i, reply.status, reply.body)
            })
        })
        .collect();
    for task in tasks {
        let (i, status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        // Only this session ever wrote into its container.
        assert_eq!(
            body["stdout"],
            format!("{i}\n"),
            "session p{i} shares a container: {body}"
        );
        assert_eq!(body["session_created"], true);
    }
    // A claimed spare takes its session's name in the background.
    eventually(
        Duration::from_secs(10),
        "every session's container has its name",
        || (0..10).all(|i| session_containers_by_name(&api.instance, &format!("p{i}")).len() == 1),
    )
    .await;
    let mut session_containers_seen = HashSet::new();
    for i in 0..10 {
        let containers = session_containers_by_name(&api.instance, &format!("p{i}"));
        assert_eq!(containers.len(), 1, "session p{i}");
        session_containers_seen.extend(containers);
    }
    assert_eq!(session_containers_seen.len(), 10);
    let claimed = spares
        .iter()
        .filter(|s| session_containers_seen.iter().any(|c| c.starts_with(s.as_str())))
        .count();
    assert!(claimed >= 1, "no session got a pre-started spare");
    eventually(Duration::from_secs(30), "pool refilled to 3", || {
        spare_containers(&api.instance).len() == 3
    })
    .await;
}

/// The container currently serving (alice, session), found through the API.
fn session_containers_by_name(instance: &str, session: &str) -> Vec<String> {
    let owner = brig_core::session::Owner::of_principal("alice");
    let name = deterministic_name(instance, owner.as_str(), session);
    let listed = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("name=^/{name}$")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn deterministic_name(instance: &str, owner: &str, session: &str) -> String {
    let config = brig_core::SandboxConfig {
        instance: instance.into(),
        ..Default::default()
    };
    let runtime = brig_core::DockerRuntime::new(brig_core::DockerConfig::default().client().unwrap(), config, None);
    let request = brig_core::CreateSandbox {
        owner: owner.into(),
        session_id: session.into(),
        options: Default::default(),
        store: String::new(),
    };
    brig_core::SandboxRuntime::sandbox_name(&runtime, &request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spares_survive_a_restart_and_surplus_is_reaped_down_to_the_size() {
    let redis = RedisServer::start();
    let mut api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("WARM_POOL_SIZE", "3")]);
    let instance = api.instance.clone();
    eventually(Duration::from_secs(20), "pool filled", || {
        spare_containers(&instance).len() == 3
    })
    .await;
    let before: HashSet<String> = spare_containers(&instance).into_iter().collect();
    api.service.kill();

    // Redis still knows the spares: a restarted API with a smaller pool starts none.
    let restarted = BrigApi::start_in(&instance, &[("REDIS_URL", &redis.url()), ("WARM_POOL_SIZE", "1")]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: HashSet<String> = spare_containers(&instance).into_iter().collect();
    assert_eq!(after, before, "the restarted API replaced or added spares");

    let _worker = CleanupWorker::start(
        &instance,
        &[
            ("REDIS_URL", &redis.url()),
            ("WARM_POOL_SIZE", "1"),
            ("CLEANUP_INTERVAL_SECONDS", "0.5"),
            ("CLEANUP_GRACE_SECONDS", "1"),
        ],
    );
    eventually(Duration::from_secs(15), "surplus reaped", || {
        spare_containers(&instance).len() == 1
    })
    .await;
    // The remaining spare still serves a session.
    let reply = run(&restarted, ALICE_KEY, "after-restart", "echo ok").await;
    assert_eq!(reply["session_created"], true);
    drop(api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spares_do_not_count_against_the_session_capacity() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[
        ("REDIS_URL", &redis.url()),
        ("WARM_POOL_SIZE", "3"),
        ("MAX_SESSIONS", "2"),
    ]);
    eventually(Duration::from_secs(20), "pool filled", || {
        spare_containers(&api.instance).len() == 3
    })
    .await;
    assert_eq!(execute(&api, ALICE_KEY, "c1", "echo 1").await.status, StatusCode::OK);
    assert_eq!(execute(&api, BOB_KEY, "c2", "echo 2").await.status, StatusCode::OK);
    let full = execute(&api, ALICE_KEY, "c3", "echo 3").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.body["error"], "capacity_exhausted");
}
