//! The cleanup worker: expired, over-age and orphaned sandboxes reaped,
//! records repaired, instances kept apart; the in-process reaper of the
//! memory store.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::*;

/// Worker settings for tests: a pass every 500 ms, a short grace.
const FAST_WORKER: [(&str, &str); 2] = [("CLEANUP_INTERVAL_SECONDS", "0.5"), ("CLEANUP_GRACE_SECONDS", "1")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_reaped_within_one_interval_and_a_busy_one_is_not() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("SESSION_TTL_SECONDS", "1.5")]);
    let worker = CleanupWorker::start(
        &api.instance,
        &[&FAST_WORKER[..], &[("REDIS_URL", &redis.url())]].concat(),
    );

    // Busy: the record expires while the command runs, and the container stays.
    let busy = run(&api, ALICE_KEY, "busy", "sh -c 'sleep 4; echo done'").await;
    assert_eq!(busy["stdout"], "done\n", "{busy}");
    assert!(
        worker.passes().iter().any(|p| p["skipped_busy"].as_u64() >= Some(1)),
        "no pass saw the busy sandbox"
    );

    // Idle: gone within TTL + one interval (+ grace and scheduling slack).
    run(&api, ALICE_KEY, "idle", "echo hi").await;
    assert_eq!(session_containers(&api.instance, "idle").len(), 1);
    eventually(Duration::from_secs(8), "idle container reaped", || {
        session_containers(&api.instance, "idle").is_empty()
    })
    .await;
    let pass = worker
        .passes()
        .into_iter()
        .find(|p| p["removed_session_gone"].as_u64() >= Some(1))
        .expect("a pass removed it");
    for field in [
        "found",
        "removed",
        "removed_over_age",
        "records_repaired",
        "errors",
        "duration_ms",
    ] {
        assert!(pass.get(field).is_some(), "summary lacks {field}: {pass}");
    }
    // The next use simply starts over.
    assert_eq!(
        run(&api, ALICE_KEY, "idle", "echo again").await["session_created"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_maximum_age_is_removed_even_while_active() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "0.5".into()),
        ("CLEANUP_MAX_CONTAINER_AGE_SECONDS", "3".into()),
    ];
    let worker_env = env_refs(&worker_env);
    let _worker = CleanupWorker::start(&api.instance, &worker_env);
    let started = Instant::now();
    let long = execute(&api, ALICE_KEY, "old", "sh -c 'sleep 20'").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the over-age container was not removed"
    );
    assert_eq!(long.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", long.body);
    assert_eq!(long.body["error"], "sandbox_unavailable");
    eventually(Duration::from_secs(10), "over-age container removed", || {
        session_containers(&api.instance, "old").is_empty()
    })
    .await;
    assert_eq!(
        call(&api, Method::GET, "/sessions/old", ALICE_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_container_is_gone_is_repaired_by_the_worker() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "lost", "echo hi").await;
    remove_instance_containers(&api.instance);
    assert_eq!(
        call(&api, Method::GET, "/sessions/lost", ALICE_KEY, None).await.status,
        StatusCode::OK
    );
    let worker = CleanupWorker::start(
        &api.instance,
        &[&FAST_WORKER[..], &[("REDIS_URL", &redis.url())]].concat(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&api, Method::GET, "/sessions/lost", ALICE_KEY, None).await.status == StatusCode::OK {
        assert!(Instant::now() < deadline, "record not repaired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(worker
        .passes()
        .iter()
        .any(|p| p["records_repaired"].as_u64() >= Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_engine_never_touch_each_other() {
    let redis = RedisServer::start();
    let mine = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let theirs = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&mine, ALICE_KEY, "shared-name", "echo mine").await;
    run(
        &theirs,
        ALICE_KEY,
        "shared-name",
        "sh -c 'echo theirs > /workspace/mark'",
    )
    .await;
    // An aggressive worker for `mine`: everything of its own is over age.
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "0.5".into()),
        ("CLEANUP_MAX_CONTAINER_AGE_SECONDS", "1".into()),
    ];
    let worker_env = env_refs(&worker_env);
    let _worker = CleanupWorker::start(&mine.instance, &worker_env);
    eventually(Duration::from_secs(10), "own container reaped", || {
        instance_containers(&mine.instance).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(instance_containers(&theirs.instance).len(), 1);
    assert_eq!(
        run(&theirs, ALICE_KEY, "shared-name", "cat /workspace/mark").await["stdout"],
        "theirs\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_memory_store_brig_api_reaps_in_process() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("SESSION_TTL_SECONDS", "1"),
        ("CLEANUP_INTERVAL_SECONDS", "0.5"),
        ("CLEANUP_GRACE_SECONDS", "0.5"),
    ]);
    run(&api, ALICE_KEY, "embedded", "echo hi").await;
    assert_eq!(session_containers(&api.instance, "embedded").len(), 1);
    eventually(Duration::from_secs(8), "embedded reaper removed the container", || {
        session_containers(&api.instance, "embedded").is_empty()
    })
    .await;
    // The pass logs its summary once its removals are done.
    eventually(Duration::from_secs(5), "the pass's summary", || {
        api.logs()
            .iter()
            .any(|line| line.contains("\"removed_session_gone\":1"))
    })
    .await;
}

/// Newcomer trial P16: the embedded mode's records die with its process, so
/// its sandboxes go with it on SIGTERM instead of running on as orphans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_mode_takes_its_sandboxes_along_when_it_stops() {
    let mut api = BrigApi::start(&[("SESSION_STORE", "memory")]);
    for session in ["one", "two"] {
        run(&api, ALICE_KEY, session, "echo made").await;
    }
    assert_eq!(instance_containers(&api.instance).len(), 2);
    let code = api.service.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    assert!(
        instance_containers(&api.instance).is_empty(),
        "left running: {:?}",
        instance_containers(&api.instance)
    );
}

/// P16, the operator's side: `brig-cleanup-worker --purge` removes every
/// sandbox (a busy one too) and every record of its instance, and nothing of
/// another instance's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_everything_of_its_instance_and_nothing_else() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let neighbour = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "idle", "echo made").await;
    run(&neighbour, ALICE_KEY, "theirs", "echo made").await;
    let base = api.base.clone();
    let busy = tokio::spawn(async move {
        let body = serde_json::json!({"command": "sh -c 'sleep 20'", "session_id": "busy", "timeout": 30});
        post(&base, "/execute", ALICE_KEY, &body).await
    });
    // Until the busy session is made and its command runs (a purge while a
    // session is still being created races its creator, which is why the
    // README says to stop the API first).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = call(&api, Method::GET, "/sessions", ALICE_KEY, None).await;
        if listed.body["sessions"].as_array().is_some_and(|s| s.len() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the busy session never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let purged = worker_command(&api.instance, &[("REDIS_URL", &redis.url())])
        .arg("--purge")
        .output()
        .expect("run brig-cleanup-worker --purge");
    let stdout = String::from_utf8_lossy(&purged.stdout);
    assert!(
        purged.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    assert!(
        stdout.contains("2 containers removed, 2 session records deleted, 0 errors"),
        "{stdout}"
    );
    assert!(instance_containers(&api.instance).is_empty());
    assert_eq!(
        instance_containers(&neighbour.instance).len(),
        1,
        "the neighbour was touched"
    );
    let listed = call(&api, Method::GET, "/sessions", ALICE_KEY, None).await;
    assert_eq!(listed.body["sessions"], serde_json::json!([]), "{:?}", listed.body);
    // The command that was running is answered, not left hanging.
    let answered = tokio::time::timeout(Duration::from_secs(15), busy).await;
    assert!(answered.is_ok(), "the busy request hangs after its sandbox was purged");
}

/// Newcomer trial P4: two deployments (two stores) that share a
/// `BRIG_INSTANCE` on one engine reaped each other's live sandboxes, each
/// seeing the other's as orphans. A reaper now judges only its own store's
/// containers, says once that another store's are there, and its purge
/// leaves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deployment_on_the_same_instance_never_reaps_the_firsts_sandboxes() {
    let (ours, theirs) = (RedisServer::start(), RedisServer::start());
    let api = BrigApi::start(&[("REDIS_URL", &ours.url())]);
    let own_worker = CleanupWorker::start(
        &api.instance,
        &[&FAST_WORKER[..], &[("REDIS_URL", &ours.url())]].concat(),
    );
    run(&api, ALICE_KEY, "live", "echo made").await;
    let container = session_containers(&api.instance, "live");
    assert_eq!(container.len(), 1);
    // The other deployment: same instance name, its own Redis.
    let other = CleanupWorker::start(
        &api.instance,
        &[&FAST_WORKER[..], &[("REDIS_URL", &theirs.url())]].concat(),
    );
    eventually(
        Duration::from_secs(10),
        "the other worker reports a foreign store",
        || other.passes().iter().any(|p| p["foreign"].as_u64() >= Some(1)),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        session_containers(&api.instance, "live"),
        container,
        "the other deployment reaped it"
    );
    let warned = other
        .service
        .logs()
        .iter()
        .filter(|l| l.contains("belong to another store"))
        .count();
    assert_eq!(warned, 1, "reported once, not once per pass");
    let again = run(&api, ALICE_KEY, "live", "echo still").await;
    assert_eq!(
        (again["stdout"].as_str(), again["session_created"].as_bool()),
        (Some("still\n"), Some(false))
    );
    // Its purge leaves it too, and says so.
    let purged = worker_command(&api.instance, &[("REDIS_URL", &theirs.url())])
        .arg("--purge")
        .output()
        .expect("run brig-cleanup-worker --purge");
    let stdout = String::from_utf8_lossy(&purged.stdout);
    assert!(stdout.contains("left 1 containers of another store"), "{stdout}");
    assert_eq!(session_containers(&api.instance, "live"), container);
    // Our own worker, meanwhile, judged it by our records and kept it.
    assert!(own_worker.passes().iter().all(|p| p["foreign"] == 0));
}
